//! The one client of scripts/bench's end-to-end measurements, the same for
//! every server it drives.
//!
//!   bench-client latency SOCKET N WARMUP [RAW_RESP_BYTES]
//!       N sequential unary Version calls on one connection after WARMUP
//!       more; prints one JSON line (p50/p99/mean in ns, bytes per call).
//!       With RAW_RESP_BYTES: floor mode, no HTTP/2 (see uds-floor).
//!       CRISP_BENCH_SPIN=1: the client busy-polls its reads.
//!   bench-client req-body PATH
//!       writes the gRPC request body (5-byte prefix + protobuf) for h2load.
//!   bench-client hold SOCKET N
//!       opens N connections, makes one checked Version call on each, prints
//!       "ready", and keeps them open (idle) until stdin closes.
//!   bench-client pull SOCKET IMAGE
//!       PullImage through the CRI; prints the image ref.
//!   bench-client lifecycle SOCKET ITERS IMAGE [HOLD]
//!       ITERS × (RunPodSandbox, CreateContainer, StartContainer,
//!       StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox)
//!       of a host-network pod whose container runs /bin/stamp; prints one
//!       JSON line: per-step medians in ms, the Create+Start pair and the
//!       whole lifecycle (medians of per-iteration sums), StartContainer
//!       sent → the container's first instruction (from the CLOCK_MONOTONIC
//!       stamp it logs). With HOLD: then HOLD more pods with one running
//!       container each (not timed), "ready HOLD" on stdout, held until
//!       stdin closes (to measure the runtime's memory), then removed.
//!       CRISP_BENCH_SECCOMP=runtime-default: the containers ask for the
//!       RuntimeDefault seccomp profile (else none: unconfined).
//!   bench-client codecs SOCKET N CONTAINERS IMAGE
//!       CONTAINERS containers (10 per host-network pod; created, and the
//!       first also started, with labels, annotations and a mount), then
//!       N timed calls each (after N/10 more) of Version, ContainerStatus
//!       (that first container) and ListContainers (all of them), with
//!       protobuf (`application/grpc`) and then with JSON
//!       (`application/grpc+json`: the request in the proto3 JSON mapping,
//!       the answer parsed back into the typed message); then removes it
//!       all. One JSON line: per call and codec, p50/p99 in ns (and the
//!       client's decoding alone, p50), gRPC
//!       message bytes and HTTP/2 bytes read per answer.
//!   bench-client streaming SOCKET ITERS IMAGE MIB
//!       one pod with a sleeping container, then ITERS × exec of `true`
//!       (the Exec call, the SPDY upgrade, streams, exit status), ITERS ×
//!       exec of `echo x` to its first byte of output, and 3 × port
//!       forwarding of a connection to a local server (the pod has the
//!       host's network) that sends MIB MiB; one JSON line of medians.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crisp_benches::wire::{self, CoreClient, RawH2};
use crisp_core::grpc::json::JsonCodec;
use crisp_proto::cri;
use prost::Message as _;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn latency(socket: &Path, n: usize, warmup: usize, raw: Option<usize>) -> std::io::Result<()> {
    let mut c = RawH2::connect(socket)?;
    c.set_spin(std::env::var_os("CRISP_BENCH_SPIN").is_some_and(|v| v == "1"))?;
    let mut samples = Vec::with_capacity(n);
    match raw {
        None => {
            c.handshake()?;
            wire::checked_first_call(&mut c)?;
            for _ in 0..warmup {
                c.call(None)?;
            }
            for _ in 0..n {
                let t = Instant::now();
                c.call(None)?;
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        Some(resp) => {
            for _ in 0..warmup {
                c.ping_pong(resp)?;
            }
            for _ in 0..n {
                let t = Instant::now();
                c.ping_pong(resp)?;
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
    }
    let mean = samples.iter().sum::<u64>() / n as u64;
    samples.sort_unstable();
    println!(
        "{{\"n\": {n}, \"p50_ns\": {}, \"p99_ns\": {}, \"mean_ns\": {mean}, \"req_bytes\": {}, \"resp_bytes\": {}}}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        c.request_bytes(),
        raw.unwrap_or(c.last_response_bytes),
    );
    Ok(())
}

fn hold(socket: &Path, n: usize) -> std::io::Result<()> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = RawH2::connect(socket)?;
        c.handshake()?;
        wire::checked_first_call(&mut c)?;
        conns.push(c);
    }
    println!("ready {}", conns.len());
    std::io::Write::flush(&mut std::io::stdout())?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

const RS: &str = "/runtime.v1.RuntimeService/";
const IS: &str = "/runtime.v1.ImageService/";

/// CLOCK_MONOTONIC in ns: the clock `stamp` reads in the container (no
/// time namespaces: the same clock on both sides).
fn mono_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn call<Req: prost::Message, Resp: prost::Message + Default>(
    c: &mut CoreClient,
    method: &str,
    req: &Req,
) -> std::io::Result<Resp> {
    let prefix = if method.ends_with("Image") { IS } else { RS };
    c.unary(&format!("{prefix}{method}"), req)?
        .map_err(|s| std::io::Error::other(format!("{method}: {:?} {}", s.code, s.message)))
}

fn pull(socket: &Path, image: &str) -> std::io::Result<()> {
    let mut c = CoreClient::connect(socket)?;
    let r: cri::PullImageResponse = call(
        &mut c,
        "PullImage",
        &cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )?;
    println!("{}", r.image_ref);
    Ok(())
}

const STEPS: [&str; 7] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

/// One pod (host network, so no CNI for either runtime; a PID namespace
/// per container, as kubelet asks by default) and its container running
/// `/bin/stamp`.
struct Lifecycle {
    c: CoreClient,
    image: String,
    log_dir: std::path::PathBuf,
    tag: String,
    /// Each pod's cgroup goes under `<cgroup_root>/<pod name>-<tag>`
    /// (CRISP_BENCH_CGROUP, default /crisp-bench), as kubelet always names
    /// one; scripts/bench removes the root afterwards.
    cgroup_root: String,
    /// Containers ask for the RuntimeDefault seccomp profile.
    seccomp: bool,
}

impl Lifecycle {
    fn pod(&self, name: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-{}", self.tag),
                namespace: "bench".into(),
                attempt: 0,
            }),
            // No hostname: with the node network namespace the pod shares
            // the node UTS namespace, where runc may not set one.
            log_directory: self.log_dir.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/{name}-{}", self.cgroup_root, self.tag),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run_pod(&mut self, pod: &cri::PodSandboxConfig) -> std::io::Result<String> {
        let r: cri::RunPodSandboxResponse = call(
            &mut self.c,
            "RunPodSandbox",
            &cri::RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: String::new(),
            },
        )?;
        Ok(r.pod_sandbox_id)
    }

    fn create(
        &mut self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        log: &str,
    ) -> std::io::Result<String> {
        let config = self.container_config("stamp", log);
        self.create_config(pod_id, pod, config)
    }

    /// A container named `name` running `/bin/stamp`, logging to `log`.
    fn container_config(&self, name: &str, log: &str) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: vec!["/bin/stamp".into()],
            log_path: log.into(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    seccomp: self.seccomp.then(|| cri::SecurityProfile {
                        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn create_config(
        &mut self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> std::io::Result<String> {
        let r: cri::CreateContainerResponse = call(
            &mut self.c,
            "CreateContainer",
            &cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(pod.clone()),
            },
        )?;
        Ok(r.container_id)
    }

    fn start(&mut self, id: &str) -> std::io::Result<()> {
        let _: cri::StartContainerResponse = call(
            &mut self.c,
            "StartContainer",
            &cri::StartContainerRequest {
                container_id: id.into(),
            },
        )?;
        Ok(())
    }

    fn stop(&mut self, id: &str) -> std::io::Result<()> {
        let _: cri::StopContainerResponse = call(
            &mut self.c,
            "StopContainer",
            &cri::StopContainerRequest {
                container_id: id.into(),
                timeout: 0,
            },
        )?;
        Ok(())
    }

    fn remove(&mut self, id: &str) -> std::io::Result<()> {
        let _: cri::RemoveContainerResponse = call(
            &mut self.c,
            "RemoveContainer",
            &cri::RemoveContainerRequest {
                container_id: id.into(),
            },
        )?;
        Ok(())
    }

    fn stop_pod(&mut self, id: &str) -> std::io::Result<()> {
        let _: cri::StopPodSandboxResponse = call(
            &mut self.c,
            "StopPodSandbox",
            &cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    fn remove_pod(&mut self, id: &str) -> std::io::Result<()> {
        let _: cri::RemovePodSandboxResponse = call(
            &mut self.c,
            "RemovePodSandbox",
            &cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    /// The CLOCK_MONOTONIC ns `stamp` wrote first thing, from the CRI log
    /// (`<time> stdout F stamp <mono> <real>`); waits up to 5 s for it.
    fn stamp(&self, log: &str) -> Option<u64> {
        // The log is the pod's log directory + the container's log_path.
        let path = self.log_dir.join(log);
        let until = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let found = text.lines().find_map(|l| {
                let rest = &l[l.find(" stamp ")? + 7..];
                rest.split(' ').next()?.parse().ok()
            });
            if found.is_some() || Instant::now() > until {
                return found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// ITERS timed lifecycles; then, with HOLD > 0, HOLD pods with one running
/// container each, "ready" on stdout, held until stdin closes, removed.
/// Prints one JSON line: per-step medians in ms, the Create+Start pair and
/// the whole lifecycle (medians of the per-iteration sums), and StartContainer
/// sent → the container's first instruction.
fn lifecycle(socket: &Path, iters: usize, image: &str, hold: usize) -> std::io::Result<()> {
    let log_dir = std::env::temp_dir().join(format!("crisp-bench-logs-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;
    let mut l = Lifecycle {
        c: CoreClient::connect(socket)?,
        image: image.into(),
        log_dir: log_dir.clone(),
        tag: format!("{}", std::process::id()),
        cgroup_root: std::env::var("CRISP_BENCH_CGROUP").unwrap_or_else(|_| "/crisp-bench".into()),
        seccomp: std::env::var("CRISP_BENCH_SECCOMP").as_deref() == Ok("runtime-default"),
    };
    let mut times: HashMap<&str, Vec<f64>> = HashMap::new();
    let (mut pair, mut total, mut first, mut answered) = (vec![], vec![], vec![], vec![]);
    let mut missing = 0;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for i in 0..iters {
        let pod = l.pod(&format!("bench-pod-{i}"));
        let log = format!("stamp-{i}.log");
        let mut step = [0f64; 7];
        let t = Instant::now();
        let pod_id = l.run_pod(&pod)?;
        step[0] = ms(t);
        let t = Instant::now();
        let ctr = l.create(&pod_id, &pod, &log)?;
        step[1] = ms(t);
        let sent = mono_ns();
        let t = Instant::now();
        l.start(&ctr)?;
        step[2] = ms(t);
        let answer = mono_ns();
        // Not timed: wait for the stamp in the log. (runc's start returns
        // once the container is released, before its execve: stopping at
        // once could kill it before its first instruction.)
        match l.stamp(&log) {
            Some(s) => {
                first.push((s as f64 - sent as f64) / 1e6);
                answered.push((answer as f64 - s as f64) / 1e6);
            }
            None => missing += 1,
        }
        let t = Instant::now();
        l.stop(&ctr)?;
        step[3] = ms(t);
        let t = Instant::now();
        l.remove(&ctr)?;
        step[4] = ms(t);
        let t = Instant::now();
        l.stop_pod(&pod_id)?;
        step[5] = ms(t);
        let t = Instant::now();
        l.remove_pod(&pod_id)?;
        step[6] = ms(t);
        for (s, v) in STEPS.iter().zip(step) {
            times.entry(s).or_default().push(v);
        }
        pair.push(step[1] + step[2]);
        total.push(step.iter().sum());
    }
    let mut held = vec![];
    let mut hold_ms = 0.0;
    if hold > 0 {
        let t = Instant::now();
        for i in 0..hold {
            let pod = l.pod(&format!("bench-held-{i}"));
            let pod_id = l.run_pod(&pod)?;
            let ctr = l.create(&pod_id, &pod, &format!("held-{i}.log"))?;
            l.start(&ctr)?;
            held.push((pod_id, ctr));
        }
        hold_ms = ms(t);
        println!("ready {hold}");
        std::io::Write::flush(&mut std::io::stdout())?;
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        for (pod_id, ctr) in held {
            l.stop(&ctr)?;
            l.remove(&ctr)?;
            l.stop_pod(&pod_id)?;
            l.remove_pod(&pod_id)?;
        }
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    let mut fields: Vec<String> = STEPS
        .iter()
        .map(|s| format!("\"{s}\": {:.3}", median(times.entry(s).or_default())))
        .collect();
    fields.push(format!("\"create_start\": {:.3}", median(&mut pair)));
    fields.push(format!("\"total\": {:.3}", median(&mut total)));
    fields.push(format!("\"first_insn\": {:.3}", median(&mut first)));
    fields.push(format!(
        "\"first_insn_min\": {:.3}, \"first_insn_max\": {:.3}",
        first.first().copied().unwrap_or(f64::NAN),
        first.last().copied().unwrap_or(f64::NAN)
    ));
    fields.push(format!(
        "\"first_insn_to_answer\": {:.3}",
        median(&mut answered)
    ));
    fields.push(format!("\"stamps_missing\": {missing}"));
    fields.push(format!("\"hold\": {hold}, \"hold_setup_ms\": {hold_ms:.1}"));
    println!(
        "{{\"iters\": {iters}, {}}}",
        fields.join(", ").replace("NaN", "null")
    );
    Ok(())
}

/// Exec round trips and port-forward throughput through the runtime's
/// streaming server (see the top of the file).
fn streaming(socket: &Path, iters: usize, image: &str, mib: usize) -> std::io::Result<()> {
    use crisp_benches::streaming as s;
    let log_dir = std::env::temp_dir().join(format!("crisp-bench-slogs-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;
    let mut l = Lifecycle {
        c: CoreClient::connect(socket)?,
        image: image.into(),
        log_dir: log_dir.clone(),
        tag: format!("s{}", std::process::id()),
        cgroup_root: std::env::var("CRISP_BENCH_CGROUP").unwrap_or_else(|_| "/crisp-bench".into()),
        seccomp: false,
    };
    let pod = l.pod("bench-streaming");
    let pod_id = l.run_pod(&pod)?;
    let ctr = l.create(&pod_id, &pod, "streaming.log")?;
    l.start(&ctr)?;
    let exec_url = |c: &mut CoreClient, cmd: &[&str]| -> std::io::Result<String> {
        let r: cri::ExecResponse = call(
            c,
            "Exec",
            &cri::ExecRequest {
                container_id: ctr.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                stdout: true,
                ..Default::default()
            },
        )?;
        Ok(r.url)
    };
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let (mut round_trip, mut first_byte) = (vec![], vec![]);
    for _ in 0..iters {
        let t = Instant::now();
        let url = exec_url(&mut l.c, &["/bin/busybox", "true"])?;
        let e = s::exec(&url)?;
        if !String::from_utf8_lossy(&e.status).contains("Success") {
            return Err(std::io::Error::other(format!(
                "exec failed: {}",
                String::from_utf8_lossy(&e.status)
            )));
        }
        round_trip.push(ms(t.elapsed()));
        let t = Instant::now();
        let url = exec_url(&mut l.c, &["/bin/busybox", "echo", "x"])?;
        let e = s::exec(&url)?;
        let rpc = t.elapsed() - e.total;
        first_byte.push(ms(rpc + e.first_byte.unwrap_or(e.total)));
    }
    // A local server the pod reaches on its (the host's) loopback.
    let server = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = server.local_addr()?.port();
    let bytes = mib << 20;
    std::thread::spawn(move || {
        let chunk = vec![0x5au8; 1 << 20];
        for conn in server.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                if std::io::Write::write_all(&mut conn, &chunk[..n]).is_err() {
                    break;
                }
                left -= n;
            }
        }
    });
    let mut rates = vec![];
    for _ in 0..3 {
        let r: cri::PortForwardResponse = call(
            &mut l.c,
            "PortForward",
            &cri::PortForwardRequest {
                pod_sandbox_id: pod_id.clone(),
                port: vec![port as i32],
            },
        )?;
        let (got, took) = s::port_forward_read(&r.url, port)?;
        if got != bytes as u64 {
            return Err(std::io::Error::other(format!(
                "port forward brought {got} of {bytes} bytes"
            )));
        }
        rates.push(got as f64 / (1 << 20) as f64 / took.as_secs_f64());
    }
    l.stop(&ctr)?;
    l.remove(&ctr)?;
    l.stop_pod(&pod_id)?;
    l.remove_pod(&pod_id)?;
    let _ = std::fs::remove_dir_all(&log_dir);
    println!(
        "{{\"iters\": {iters}, \"exec_true_ms\": {:.3}, \"exec_first_byte_ms\": {:.3}, \"portforward_mib\": {mib}, \"portforward_mib_s\": {:.1}}}",
        median(&mut round_trip),
        median(&mut first_byte),
        median(&mut rates)
    );
    Ok(())
}

/// Containers per pod in `codecs` (100 pods for 1 000 containers).
const CODECS_PER_POD: usize = 10;

/// One call timed under both codecs: its method, request (protobuf) and
/// the fully qualified types of its messages.
struct CodecCall {
    method: &'static str,
    request: Vec<u8>,
    request_type: &'static str,
    response_type: &'static str,
}

/// N calls of `call` on `c`, after N/10 warm-up calls; `decode` turns the
/// answer's message into the typed response (timed: a client's decoding
/// is part of its call). Returns a JSON object: p50/p99 in ns (and the
/// p50 of the decoding alone), gRPC
/// message bytes (with the 5-byte prefix) and HTTP/2 bytes read per call.
fn time_calls(
    c: &mut CoreClient,
    method: &str,
    body: &[u8],
    n: usize,
    mut decode: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<String> {
    let path = format!("{RS}{method}");
    let mut samples = Vec::with_capacity(n);
    let mut decoding = Vec::with_capacity(n);
    let (mut msg_bytes, mut wire_bytes) = (0, 0);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        let a = c
            .unary_encoded(&path, body)?
            .map_err(|s| std::io::Error::other(format!("{method}: {:?} {}", s.code, s.message)))?;
        let answered = t.elapsed();
        decode(&a.message)?;
        let took = t.elapsed();
        if i >= n / 10 {
            samples.push(took.as_nanos() as u64);
            decoding.push((took - answered).as_nanos() as u64);
        }
        (msg_bytes, wire_bytes) = (5 + a.message.len(), a.wire_bytes);
    }
    samples.sort_unstable();
    decoding.sort_unstable();
    Ok(format!(
        "{{\"p50_ns\": {}, \"p99_ns\": {}, \"decode_p50_ns\": {}, \"msg_bytes\": {msg_bytes}, \"h2_bytes\": {wire_bytes}}}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&decoding, 0.5)
    ))
}

/// The same calls with protobuf and with JSON (`application/grpc+json`)
/// against a runtime holding CONTAINERS containers (see the top of the file).
fn codecs(socket: &Path, n: usize, containers: usize, image: &str) -> std::io::Result<()> {
    let log_dir = std::env::temp_dir().join(format!("crisp-bench-clogs-{}", std::process::id()));
    std::fs::create_dir_all(log_dir.join("data"))?;
    let mut l = Lifecycle {
        c: CoreClient::connect(socket)?,
        image: image.into(),
        log_dir: log_dir.clone(),
        tag: format!("c{}", std::process::id()),
        cgroup_root: std::env::var("CRISP_BENCH_CGROUP").unwrap_or_else(|_| "/crisp-bench".into()),
        seccomp: false,
    };
    let mut pods: Vec<String> = vec![];
    let mut ctrs: Vec<String> = vec![];
    let mut running = None;
    let result = codecs_measure(
        socket,
        &mut l,
        &mut pods,
        &mut ctrs,
        &mut running,
        n,
        containers,
    );
    // Everything goes, whether or not the measurement went through.
    let mut cleanup = || -> std::io::Result<()> {
        if let Some(id) = &running {
            l.stop(id)?;
        }
        for id in &ctrs {
            l.remove(id)?;
        }
        for id in &pods {
            l.stop_pod(id)?;
            l.remove_pod(id)?;
        }
        Ok(())
    };
    let cleaned = cleanup();
    let _ = std::fs::remove_dir_all(&log_dir);
    println!("{}", result?);
    cleaned
}

fn codecs_measure(
    socket: &Path,
    l: &mut Lifecycle,
    pods: &mut Vec<String>,
    ctrs: &mut Vec<String>,
    running: &mut Option<String>,
    n: usize,
    containers: usize,
) -> std::io::Result<String> {
    let t = Instant::now();
    // The first container, started, with labels, annotations and a mount:
    // ContainerStatus answers for it.
    let mut pod_cfg = None;
    for i in 0..containers {
        if i % CODECS_PER_POD == 0 {
            let pod = l.pod(&format!("bench-codecs-{}", i / CODECS_PER_POD));
            pods.push(l.run_pod(&pod)?);
            pod_cfg = Some(pod);
        }
        let (Some(pod), Some(pod_id)) = (pod_cfg.as_ref(), pods.last()) else {
            unreachable!("a pod was made for the first container")
        };
        let mut config =
            l.container_config(&format!("c{}", i % CODECS_PER_POD), &format!("c{i}.log"));
        if i == 0 {
            for k in 0..8 {
                config
                    .labels
                    .insert(format!("bench.crisp.dev/label-{k}"), format!("value-{k}"));
                config.annotations.insert(
                    format!("bench.crisp.dev/annotation-{k}"),
                    format!("a somewhat longer annotation value, number {k}"),
                );
            }
            config.mounts.push(cri::Mount {
                container_path: "/data".into(),
                host_path: l.log_dir.join("data").display().to_string(),
                readonly: true,
                ..Default::default()
            });
        }
        let pod_id = pod_id.clone();
        let pod = pod.clone();
        ctrs.push(l.create_config(&pod_id, &pod, config)?);
        if i == 0 {
            l.start(&ctrs[0])?;
            *running = Some(ctrs[0].clone());
        }
    }
    let setup_ms = t.elapsed().as_secs_f64() * 1e3;
    let Some(populated) = ctrs.first().cloned() else {
        return Err(std::io::Error::other("codecs needs at least one container"));
    };
    // The answers are checked once, typed, before anything is timed.
    let listed: cri::ListContainersResponse = call(
        &mut l.c,
        "ListContainers",
        &cri::ListContainersRequest::default(),
    )?;
    if listed.containers.len() != containers {
        return Err(std::io::Error::other(format!(
            "ListContainers lists {} containers, {containers} made",
            listed.containers.len()
        )));
    }
    let calls = [
        CodecCall {
            method: "Version",
            request: prost::Message::encode_to_vec(&cri::VersionRequest {
                version: "v1".into(),
            }),
            request_type: "runtime.v1.VersionRequest",
            response_type: "runtime.v1.VersionResponse",
        },
        CodecCall {
            method: "ContainerStatus",
            request: prost::Message::encode_to_vec(&cri::ContainerStatusRequest {
                container_id: populated,
                verbose: false,
            }),
            request_type: "runtime.v1.ContainerStatusRequest",
            response_type: "runtime.v1.ContainerStatusResponse",
        },
        CodecCall {
            method: "ListContainers",
            request: prost::Message::encode_to_vec(&cri::ListContainersRequest::default()),
            request_type: "runtime.v1.ListContainersRequest",
            response_type: "runtime.v1.ListContainersResponse",
        },
    ];
    let json = JsonCodec::new(crisp_proto::FILE_DESCRIPTOR_SET).map_err(std::io::Error::other)?;
    let mut proto_c = CoreClient::connect(socket)?;
    let mut json_c = CoreClient::connect_with(socket, "application/grpc+json")?;
    let mut out = vec![];
    for call in &calls {
        let decode_proto = |m: &[u8]| -> std::io::Result<()> {
            let r = match call.method {
                "Version" => cri::VersionResponse::decode(m).map(|_| ()),
                "ContainerStatus" => cri::ContainerStatusResponse::decode(m).map(|_| ()),
                _ => cri::ListContainersResponse::decode(m).map(|_| ()),
            };
            r.map_err(|e| std::io::Error::other(format!("{}: {e}", call.method)))
        };
        // A JSON client reads the proto3 JSON mapping into the same typed
        // message: prost-reflect's parser (crispd's own codec), then prost.
        let decode_json = |m: &[u8]| -> std::io::Result<()> {
            let proto = json
                .to_proto(call.response_type, m)
                .map_err(|s| std::io::Error::other(s.message))?;
            decode_proto(&proto)
        };
        let body = json
            .to_json(call.request_type, &call.request)
            .map_err(|s| std::io::Error::other(s.message))?;
        let p = time_calls(&mut proto_c, call.method, &call.request, n, decode_proto)?;
        let j = time_calls(&mut json_c, call.method, &body, n, decode_json)?;
        out.push(format!(
            "\"{}\": {{\"proto\": {p}, \"json\": {j}}}",
            call.method
        ));
    }
    Ok(format!(
        "{{\"n\": {n}, \"containers\": {containers}, \"per_pod\": {CODECS_PER_POD}, \"setup_ms\": {setup_ms:.0}, \"calls\": {{{}}}}}",
        out.join(", ")
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let num = |s: &str| s.parse::<usize>().expect("a number");
    let r = match a[..] {
        ["latency", sock, n, w] => latency(Path::new(sock), num(n), num(w), None),
        ["latency", sock, n, w, raw] => latency(Path::new(sock), num(n), num(w), Some(num(raw))),
        ["req-body", path] => std::fs::write(path, wire::version_request_body()),
        ["hold", sock, n] => hold(Path::new(sock), num(n)),
        ["pull", sock, image] => pull(Path::new(sock), image),
        ["lifecycle", sock, iters, image] => lifecycle(Path::new(sock), num(iters), image, 0),
        ["codecs", sock, n, containers, image] => {
            codecs(Path::new(sock), num(n), num(containers), image)
        }
        ["streaming", sock, iters, image, mib] => {
            streaming(Path::new(sock), num(iters), image, num(mib))
        }
        ["lifecycle", sock, iters, image, hold] => {
            lifecycle(Path::new(sock), num(iters), image, num(hold))
        }
        _ => {
            eprintln!("usage: see the comment at the top of benches/src/bin/bench-client.rs");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-client: {e}");
            ExitCode::FAILURE
        }
    }
}
