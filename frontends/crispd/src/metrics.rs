//! Pod and container metrics for kubelet's CRI metrics collector
//! (`ListMetricDescriptors`, `ListPodSandboxMetrics`,
//! `StreamPodSandboxMetrics`): cAdvisor's metric names and label keys, so
//! that `/metrics/cadvisor` reads the same with crisp as with cAdvisor;
//! values from the cgroups (`Cgroups::stats`) and the pod's network
//! namespace (`/proc/<holder>/net/dev`). Also the PSI and network parts
//! of ContainerStats and PodSandboxStats.
//!
//! Metric values are whole numbers (`UInt64Value`): seconds are truncated,
//! as containerd and CRI-O do. `Metric.timestamp` is 0: gathered live.

use std::collections::HashMap;
use std::fs;

use crisp_executor::cgroup::{Pressure, PressureLine, Stats};
use crisp_proto::cri;

use crate::pods::{self, container, Host};

/// Every container metric's label keys, in kubelet's collector's order
/// (cAdvisor's labels).
const BASE_LABELS: &[&str] = &["pod", "namespace", "container", "id", "image"];

/// What a metric adds to the base labels.
#[derive(Clone, Copy)]
enum Extra {
    None,
    /// `cpu="total"`, as cAdvisor without per-CPU figures.
    Cpu,
    /// `failure_type`, `scope`.
    Failure,
    /// Block device name.
    Device,
    /// Network interface name.
    Interface,
}

impl Extra {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Extra::None => &[],
            Extra::Cpu => &["cpu"],
            Extra::Failure => &["failure_type", "scope"],
            Extra::Device => &["device"],
            Extra::Interface => &["interface"],
        }
    }
}

use cri::MetricType::{Counter, Gauge};

/// Name, help, type, extra labels of every metric crisp reports.
const METRICS: &[(&str, &str, cri::MetricType, Extra)] = &[
    ("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", Counter, Extra::Cpu),
    ("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", Counter, Extra::None),
    ("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", Counter, Extra::None),
    ("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", Counter, Extra::None),
    ("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", Counter, Extra::None),
    ("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", Counter, Extra::None),
    ("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", Gauge, Extra::None),
    ("container_memory_working_set_bytes", "Current working set in bytes.", Gauge, Extra::None),
    ("container_memory_rss", "Size of RSS in bytes.", Gauge, Extra::None),
    ("container_memory_cache", "Number of bytes of page cache memory.", Gauge, Extra::None),
    ("container_memory_mapped_file", "Size of memory mapped files in bytes.", Gauge, Extra::None),
    ("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", Gauge, Extra::None),
    ("container_memory_swap", "Container swap usage in bytes.", Gauge, Extra::None),
    ("container_memory_failcnt", "Number of memory usage hits limits", Counter, Extra::None),
    ("container_memory_failures_total", "Cumulative count of memory allocation failures.", Counter, Extra::Failure),
    ("container_oom_events_total", "Count of out of memory events observed for the container", Counter, Extra::None),
    ("container_spec_memory_limit_bytes", "Memory limit for the container.", Gauge, Extra::None),
    ("container_processes", "Number of processes running inside the container.", Gauge, Extra::None),
    ("container_fs_reads_bytes_total", "Cumulative count of bytes read", Counter, Extra::Device),
    ("container_fs_writes_bytes_total", "Cumulative count of bytes written", Counter, Extra::Device),
    ("container_fs_reads_total", "Cumulative count of reads completed", Counter, Extra::Device),
    ("container_fs_writes_total", "Cumulative count of writes completed", Counter, Extra::Device),
    ("container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", Counter, Extra::None),
    ("container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", Counter, Extra::None),
    ("container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", Counter, Extra::None),
    ("container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", Counter, Extra::None),
    ("container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", Counter, Extra::None),
    ("container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", Counter, Extra::None),
    ("container_network_receive_bytes_total", "Cumulative count of bytes received", Counter, Extra::Interface),
    ("container_network_receive_packets_total", "Cumulative count of packets received", Counter, Extra::Interface),
    ("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", Counter, Extra::Interface),
    ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", Counter, Extra::Interface),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", Counter, Extra::Interface),
    ("container_network_transmit_packets_total", "Cumulative count of packets transmitted", Counter, Extra::Interface),
    ("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", Counter, Extra::Interface),
    ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", Counter, Extra::Interface),
];

/// ListMetricDescriptors: every metric [`pod_metrics`] may report. Static,
/// as the CRI asks.
pub fn descriptors() -> cri::ListMetricDescriptorsResponse {
    let descriptors = METRICS
        .iter()
        .map(|(name, help, _, extra)| cri::MetricDescriptor {
            name: (*name).into(),
            help: (*help).into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(extra.keys())
                .map(|k| (*k).into())
                .collect(),
        })
        .collect();
    cri::ListMetricDescriptorsResponse { descriptors }
}

/// Collects metrics under one set of base label values.
struct Sink<'a> {
    base: [&'a str; 5],
    out: Vec<cri::Metric>,
}

impl Sink<'_> {
    fn put(&mut self, name: &str, extra: &[&str], value: Option<u64>) {
        let Some(value) = value else { return };
        let Some((_, _, kind, _)) = METRICS.iter().find(|m| m.0 == name) else {
            debug_assert!(false, "metric {name} has no descriptor");
            return;
        };
        self.out.push(cri::Metric {
            name: name.into(),
            timestamp: 0,
            metric_type: *kind as i32,
            label_values: self
                .base
                .iter()
                .chain(extra)
                .map(|v| (*v).to_owned())
                .collect(),
            value: Some(cri::UInt64Value { value }),
        });
    }

    fn cgroup(&mut self, st: &Stats) {
        const NS: u64 = 1_000_000_000;
        if let Some(cpu) = &st.cpu {
            self.put(
                "container_cpu_usage_seconds_total",
                &["total"],
                Some(cpu.usage_ns / NS),
            );
            self.put(
                "container_cpu_user_seconds_total",
                &[],
                cpu.user_ns.map(|v| v / NS),
            );
            self.put(
                "container_cpu_system_seconds_total",
                &[],
                cpu.system_ns.map(|v| v / NS),
            );
            self.put("container_cpu_cfs_periods_total", &[], cpu.periods);
            self.put(
                "container_cpu_cfs_throttled_periods_total",
                &[],
                cpu.throttled_periods,
            );
            let throttled = cpu.throttled_ns.map(|v| v / NS);
            self.put("container_cpu_cfs_throttled_seconds_total", &[], throttled);
        }
        if let Some(m) = &st.memory {
            self.put("container_memory_usage_bytes", &[], Some(m.usage_bytes));
            self.put(
                "container_memory_working_set_bytes",
                &[],
                Some(m.working_set_bytes),
            );
            self.put("container_memory_rss", &[], m.rss_bytes);
            self.put("container_memory_cache", &[], m.cache_bytes);
            self.put("container_memory_mapped_file", &[], m.mapped_file_bytes);
            self.put("container_memory_max_usage_bytes", &[], m.max_usage_bytes);
            self.put("container_memory_swap", &[], m.swap_bytes);
            self.put("container_memory_failcnt", &[], m.failcnt);
            let failures = "container_memory_failures_total";
            self.put(failures, &["pgfault", "container"], m.page_faults);
            self.put(failures, &["pgmajfault", "container"], m.major_page_faults);
            self.put("container_oom_events_total", &[], m.oom_kills);
            // cAdvisor reports 0 for "no limit".
            self.put(
                "container_spec_memory_limit_bytes",
                &[],
                Some(m.limit_bytes.unwrap_or(0)),
            );
        }
        self.put("container_processes", &[], st.pids);
        for d in &st.io {
            let dev = device_name(d.major, d.minor);
            self.put(
                "container_fs_reads_bytes_total",
                &[&dev],
                Some(d.read_bytes),
            );
            self.put(
                "container_fs_writes_bytes_total",
                &[&dev],
                Some(d.write_bytes),
            );
            self.put("container_fs_reads_total", &[&dev], Some(d.reads));
            self.put("container_fs_writes_total", &[&dev], Some(d.writes));
        }
        let secs = |l: &PressureLine| l.total_us / 1_000_000;
        for (res, p) in [
            ("cpu", &st.cpu_pressure),
            ("memory", &st.memory_pressure),
            ("io", &st.io_pressure),
        ] {
            let Some(p) = p else { continue };
            let waiting = format!("container_pressure_{res}_waiting_seconds_total");
            self.put(&waiting, &[], Some(secs(&p.some)));
            let stalled = format!("container_pressure_{res}_stalled_seconds_total");
            self.put(&stalled, &[], p.full.as_ref().map(secs));
        }
    }

    fn network(&mut self, interfaces: &[NetDev]) {
        for i in interfaces {
            let n = [i.name.as_str()];
            self.put(
                "container_network_receive_bytes_total",
                &n,
                Some(i.rx_bytes),
            );
            self.put(
                "container_network_receive_packets_total",
                &n,
                Some(i.rx_packets),
            );
            self.put(
                "container_network_receive_packets_dropped_total",
                &n,
                Some(i.rx_dropped),
            );
            self.put(
                "container_network_receive_errors_total",
                &n,
                Some(i.rx_errors),
            );
            self.put(
                "container_network_transmit_bytes_total",
                &n,
                Some(i.tx_bytes),
            );
            self.put(
                "container_network_transmit_packets_total",
                &n,
                Some(i.tx_packets),
            );
            self.put(
                "container_network_transmit_packets_dropped_total",
                &n,
                Some(i.tx_dropped),
            );
            self.put(
                "container_network_transmit_errors_total",
                &n,
                Some(i.tx_errors),
            );
        }
    }
}

/// `/dev/<name>` of a block device, as cAdvisor labels it, or `major:minor`.
fn device_name(major: u32, minor: u32) -> String {
    fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// ListPodSandboxMetrics: one entry per READY pod (`pods`, the skeletons of
/// ListPodSandboxStats), with the pod cgroup's and the pod network's
/// metrics (label `container` empty, `id` the pod's ID), and one entry
/// per container whose cgroup can be read (`images`: container ID →
/// image name). Runs on a worker.
pub fn pod_metrics(
    host: &Host,
    pods: Vec<cri::PodSandboxStats>,
    images: &HashMap<String, String>,
) -> Vec<cri::PodSandboxMetrics> {
    pods.into_iter()
        .filter_map(|p| {
            let attrs = p.attributes?;
            let meta = attrs.metadata.unwrap_or_default();
            let mut sink = Sink {
                base: [&meta.name, &meta.namespace, "", &attrs.id, ""],
                out: Vec::new(),
            };
            if let Some(sb) = pods::sandbox::read_meta(host, &attrs.id) {
                if let Ok(st) = host.cgroups.stats(&sb.pod_cgroup) {
                    sink.cgroup(&st);
                }
                if let Some(net) = pod_network(host, &attrs.id) {
                    sink.network(&net);
                }
            }
            let metrics = sink.out;
            let container_metrics = p
                .linux
                .map(|l| l.containers)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| {
                    let c = c.attributes?;
                    let cg = container::read_meta(host, &c.id)?.cgroup;
                    let st = host.cgroups.stats(&cg).ok()?;
                    let name = c.metadata.map(|m| m.name).unwrap_or_default();
                    let image = images.get(&c.id).map(String::as_str).unwrap_or("");
                    let mut sink = Sink {
                        base: [&meta.name, &meta.namespace, &name, &c.id, image],
                        out: Vec::new(),
                    };
                    sink.cgroup(&st);
                    let metrics = sink.out;
                    Some(cri::ContainerMetrics {
                        container_id: c.id,
                        metrics,
                    })
                })
                .collect();
            Some(cri::PodSandboxMetrics {
                pod_sandbox_id: attrs.id,
                metrics,
                container_metrics,
            })
        })
        .collect()
}

/// One interface's counters from `/proc/<pid>/net/dev`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetDev {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of a `/proc/<pid>/net/dev` file, loopback left out (as
/// cAdvisor and kubelet do).
pub fn parse_net_dev(content: &str) -> Vec<NetDev> {
    content
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            if name == "lo" || v.len() < 16 {
                return None;
            }
            Some(NetDev {
                name: name.to_owned(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// The counters of a pod's own network namespace, read through its
/// holder process; `None` for a host-network pod (its counters are the
/// node's) or a holder that is gone.
pub fn pod_network(host: &Host, pod_id: &str) -> Option<Vec<NetDev>> {
    let meta = pods::sandbox::read_meta(host, pod_id)?;
    if meta.host_network {
        return None;
    }
    let pid = pods::sandbox::alive(host, pod_id)?;
    let content = fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    Some(parse_net_dev(&content))
}

/// The CRI's NetworkUsage of a pod: `eth0` (kubelet's default interface
/// name) as the default, the others beside it.
pub fn network_usage(interfaces: Vec<NetDev>, now: i64) -> cri::NetworkUsage {
    let to_cri = |i: NetDev| cri::NetworkInterfaceUsage {
        name: i.name,
        rx_bytes: Some(cri::UInt64Value { value: i.rx_bytes }),
        rx_errors: Some(cri::UInt64Value { value: i.rx_errors }),
        tx_bytes: Some(cri::UInt64Value { value: i.tx_bytes }),
        tx_errors: Some(cri::UInt64Value { value: i.tx_errors }),
    };
    let (default, others): (Vec<_>, Vec<_>) =
        interfaces.into_iter().partition(|i| i.name == "eth0");
    cri::NetworkUsage {
        timestamp: now,
        default_interface: default.into_iter().next().map(to_cri),
        interfaces: others.into_iter().map(to_cri).collect(),
    }
}

/// A cgroup's pressure file as the CRI's PsiStats (totals in
/// nanoseconds, the kernel's are microseconds).
pub fn psi(p: &Pressure) -> cri::PsiStats {
    let data = |l: &PressureLine| cri::PsiData {
        total: l.total_us.saturating_mul(1000),
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    cri::PsiStats {
        full: p.full.as_ref().map(data),
        some: Some(data(&p.some)),
    }
}

/// The CPU, memory and IO parts of ContainerStats and
/// LinuxPodSandboxStats from a cgroup's figures.
pub fn usage(
    st: &Stats,
    now: i64,
) -> (
    Option<cri::CpuUsage>,
    Option<cri::MemoryUsage>,
    Option<cri::IoUsage>,
) {
    let u64v = |v: u64| Some(cri::UInt64Value { value: v });
    let cpu = st.cpu.as_ref().map(|c| cri::CpuUsage {
        timestamp: now,
        usage_core_nano_seconds: u64v(c.usage_ns),
        psi: st.cpu_pressure.as_ref().map(psi),
        ..Default::default()
    });
    let memory = st.memory.as_ref().map(|m| cri::MemoryUsage {
        timestamp: now,
        working_set_bytes: u64v(m.working_set_bytes),
        available_bytes: m.limit_bytes.map(|l| cri::UInt64Value {
            value: l.saturating_sub(m.working_set_bytes),
        }),
        usage_bytes: u64v(m.usage_bytes),
        rss_bytes: m.rss_bytes.map(|v| cri::UInt64Value { value: v }),
        page_faults: m.page_faults.map(|v| cri::UInt64Value { value: v }),
        major_page_faults: m.major_page_faults.map(|v| cri::UInt64Value { value: v }),
        psi: st.memory_pressure.as_ref().map(psi),
    });
    // IoUsage carries nothing but pressure: set only where there is some.
    let io = st.io_pressure.as_ref().map(|p| cri::IoUsage {
        timestamp: now,
        psi: Some(psi(p)),
    });
    (cpu, memory, io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_cover_every_metric_with_cadvisor_labels() {
        let d = descriptors().descriptors;
        assert_eq!(d.len(), METRICS.len());
        let mut names: Vec<_> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), d.len(), "names are unique");
        let net = d
            .iter()
            .find(|d| d.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(
            net.label_keys,
            ["pod", "namespace", "container", "id", "image", "interface"]
        );
    }

    #[test]
    fn label_values_match_their_descriptor() {
        let st = Stats {
            cpu: Some(Default::default()),
            memory: Some(Default::default()),
            pids: Some(1),
            io: vec![Default::default()],
            cpu_pressure: Some(Pressure {
                some: PressureLine {
                    total_us: 3_000_000,
                    ..Default::default()
                },
                full: None,
            }),
            ..Default::default()
        };
        let mut sink = Sink {
            base: ["p", "ns", "c", "id", "img"],
            out: Vec::new(),
        };
        sink.cgroup(&st);
        sink.network(&[NetDev {
            name: "eth0".into(),
            ..Default::default()
        }]);
        let d = descriptors().descriptors;
        for m in &sink.out {
            let desc = d.iter().find(|d| d.name == m.name).unwrap();
            assert_eq!(desc.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        let waiting = sink
            .out
            .iter()
            .find(|m| m.name == "container_pressure_cpu_waiting_seconds_total")
            .unwrap();
        assert_eq!(waiting.value.as_ref().unwrap().value, 3);
        // No `full` line, no stalled figure.
        assert!(!sink
            .out
            .iter()
            .any(|m| m.name == "container_pressure_cpu_stalled_seconds_total"));
    }

    #[test]
    fn net_dev() {
        let content = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    1500      12    1    2    0     0          0         0      900       9    3    4    0     0       0          0
";
        let d = parse_net_dev(content);
        assert_eq!(
            d,
            [NetDev {
                name: "eth0".into(),
                rx_bytes: 1500,
                rx_packets: 12,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 900,
                tx_packets: 9,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
        let u = network_usage(d, 5);
        assert_eq!(u.default_interface.unwrap().rx_bytes.unwrap().value, 1500);
        assert!(u.interfaces.is_empty());
    }
}
