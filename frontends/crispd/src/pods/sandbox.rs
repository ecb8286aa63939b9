//! Pod sandboxes: a holder process (crispd re-executed as
//! `crispd sandbox`, no pause image) that keeps the pod's namespaces
//! alive, reaps zombies and sleeps until killed; its namespaces
//! bind-mounted under `<runtime_dir>/pods/<id>/ns/` so containers join
//! them by path; the pod's files (hostname, hosts, resolv.conf); its
//! cgroup; its network (CNI).

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crisp_core::cri::SandboxCreated;
use crisp_core::grpc::Status;
use crisp_proto::cri;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{
    cni, exec_status, internal, kill_and_wait, kill_cgroup, pod_cgroup, process_matches,
    remove_cgroup, remove_tree, sandbox_cgroup, Host,
};

/// What a pod set up on the host, kept in `<pod dir>/sandbox.json` so
/// that stop and remove undo exactly that, also after a crash.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub pid: u32,
    pub namespaces: Vec<String>,
    pub pod_cgroup: String,
    pub pod_cgroup_created: bool,
    pub host_network: bool,
}

pub fn read_meta(host: &Host, id: &str) -> Option<Meta> {
    let b = fs::read(host.pod_dir(id).join("sandbox.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

fn write_meta(host: &Host, id: &str, m: &Meta) -> Result<(), Status> {
    let p = host.pod_dir(id).join("sandbox.json");
    let b = serde_json::to_vec(m).map_err(|e| internal("encode sandbox meta", e))?;
    crate::persist::write_runtime(&p, &b).map_err(|e| internal(format!("write {}", p.display()), e))
}

/// The holder's pid when it is alive.
pub fn alive(host: &Host, id: &str) -> Option<u32> {
    let m = read_meta(host, id)?;
    process_matches(m.pid, id).then_some(m.pid)
}

/// How to learn that the pod's holder exits (see [`crate::exits`]).
pub enum HolderWatch {
    /// Readable once it has exited.
    Pidfd(std::os::fd::OwnedFd),
    /// It lives, but this kernel has no pidfds: look again later.
    Alive,
    /// It is not alive (or the pod is gone).
    Exited,
}

/// The pod's holder, for its watcher.
pub fn watch_holder(host: &Host, id: &str) -> HolderWatch {
    let Some(meta) = read_meta(host, id) else {
        return HolderWatch::Exited;
    };
    match super::exit_fd(meta.pid, id) {
        Ok(Some(fd)) => HolderWatch::Pidfd(fd),
        Ok(None) => HolderWatch::Exited,
        Err(_) if process_matches(meta.pid, id) => HolderWatch::Alive,
        Err(_) => HolderWatch::Exited,
    }
}

/// The pod's holder has exited: end the processes of its containers. A
/// pod whose holder is gone is NOTREADY (its namespaces may be gone with
/// it) and kubelet will stop it; its containers are stopped now, and
/// their monitors record their exits.
pub fn holder_exited(host: &Host, id: &str) {
    // Also when StopPodSandbox killed it: then this is done twice.
    let pid = read_meta(host, id).map(|m| m.pid).unwrap_or_default();
    tracing::info!(pod = id, pid, "the pod's sandbox holder exited");
    stop_containers(host, id);
}

/// End every process of the pod's containers (their monitors then record
/// the exits).
pub fn stop_containers(host: &Host, id: &str) {
    for cg in super::container::cgroups_of_pod(host, id) {
        if let Err(e) = kill_cgroup(host, &cg) {
            tracing::warn!(pod = id, cgroup = cg, error = %e.message, "cannot stop a container of a pod without its holder");
        }
    }
}

/// The namespace files of a pod, for containers to join.
pub fn ns_path(host: &Host, id: &str, ns: &str) -> Option<PathBuf> {
    let m = read_meta(host, id)?;
    m.namespaces
        .iter()
        .any(|n| n == ns)
        .then(|| host.pod_dir(id).join("ns").join(ns))
}

const NODE: i32 = cri::NamespaceMode::Node as i32;
const POD: i32 = cri::NamespaceMode::Pod as i32;

pub fn create(
    host: &Host,
    id: &str,
    config: &cri::PodSandboxConfig,
    runtime_handler: &str,
) -> Result<SandboxCreated, Status> {
    if !runtime_handler.is_empty() {
        return Err(Status::not_found(format!(
            "no runtime handler {runtime_handler:?} (crisp has only the default one)"
        )));
    }
    let result = create_inner(host, id, config);
    if result.is_err() {
        // Undo whatever was made; the state machine forgets the pod. What
        // cannot be undone now (a CNI DEL that fails too) keeps its
        // record, for the next start's reclaim.
        if let Err(e) = remove(host, id) {
            tracing::warn!(pod = id, error = %e.message, "cleanup after a failed RunPodSandbox");
        }
    }
    result
}

fn create_inner(
    host: &Host,
    id: &str,
    config: &cri::PodSandboxConfig,
) -> Result<SandboxCreated, Status> {
    let dir = host.pod_dir(id);
    fs::create_dir_all(dir.join("ns")).map_err(|e| internal("create the pod directory", e))?;
    let linux = config.linux.clone().unwrap_or_default();
    let opts = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let host_net = opts.network == NODE;
    let host_ipc = opts.ipc == NODE;
    let pod_pid = opts.pid == POD;

    // The pod's files.
    let hostname = if host_net || config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    write_file(&dir.join("hostname"), format!("{hostname}\n").as_bytes())?;
    let hosts = if host_net {
        fs::read("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".to_owned()
        .into_bytes()
    };
    write_file(&dir.join("hosts"), &hosts)?;
    write_file(
        &dir.join("resolv.conf"),
        &resolv_conf(config.dns_config.as_ref()),
    )?;

    let mut meta = Meta {
        host_network: host_net,
        ..Meta::default()
    };
    let pod_cg = pod_cgroup(&linux.cgroup_parent, id);
    meta.pod_cgroup = pod_cg.clone();
    // Remove it with the pod only when crisp made it (kubelet makes the
    // cgroup_parent it names, and removes it itself).
    meta.pod_cgroup_created = !host.cgroups.exists(&pod_cg);
    // Written before the cgroups and the holder are made: the intent that
    // lets a crispd killed from here on find and undo them at its next
    // start (see `reclaim`).
    write_meta(host, id, &meta)?;
    host.cgroups
        .create(&pod_cg, &Default::default())
        .map_err(|e| exec_status(&format!("cannot create the pod cgroup {pod_cg}"), &e))?;

    // The holder.
    let mut flags = CloneFlags::empty();
    let mut namespaces = Vec::new();
    if !host_net {
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
        namespaces.push("net");
        namespaces.push("uts");
    }
    if !host_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
        namespaces.push("ipc");
    }
    if pod_pid {
        namespaces.push("pid");
    }
    // The holder's cgroup, made now: the holder's parent joins it itself
    // before it forks the holder (see `main`).
    let sb_cg = sandbox_cgroup(&pod_cg, id);
    host.cgroups
        .create(&sb_cg, &Default::default())
        .map_err(|e| exec_status(&format!("cannot create the sandbox cgroup {sb_cg}"), &e))?;
    let mut cmd = Command::new(&host.exe);
    cmd.arg("sandbox")
        .arg("--id")
        .arg(id)
        .arg("--cgroup")
        .arg(&sb_cg);
    if !host_net {
        cmd.arg("--hostname").arg(&hostname);
    }
    if pod_pid {
        cmd.arg("--pid-ns");
    }
    let mut sysctls: Vec<_> = linux.sysctls.iter().collect();
    sysctls.sort();
    for (k, v) in sysctls {
        if k.contains('=') || k.contains('/') && k.contains("..") {
            return Err(Status::invalid_argument(format!("invalid sysctl {k:?}")));
        }
        if host_net && (k.starts_with("net.")) || host_ipc && is_ipc_sysctl(k) {
            return Err(Status::invalid_argument(format!(
                "sysctl {k} is not namespaced in this pod (host namespace)"
            )));
        }
        cmd.arg("--sysctl").arg(format!("{k}={v}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if !flags.is_empty() {
                nix::sched::unshare(flags).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    let out = cmd
        .output()
        .map_err(|e| internal("cannot start the sandbox process", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pid: u32 = match stdout.trim().strip_prefix("ready ") {
        Some(p) => p
            .parse()
            .map_err(|_| Status::internal(format!("sandbox process said {stdout:?}")))?,
        None => {
            let err = String::from_utf8_lossy(&out.stderr);
            let msg = stdout.trim().strip_prefix("error ").unwrap_or(err.trim());
            return Err(Status::internal(format!(
                "the sandbox process failed ({}): {msg}",
                out.status
            )));
        }
    };
    meta.pid = pid;
    write_meta(host, id, &meta)?;

    for ns in &namespaces {
        let target = dir.join("ns").join(ns);
        write_file(&target, b"")?;
        mount(
            Some(Path::new(&format!("/proc/{pid}/ns/{ns}"))),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| internal(format!("cannot bind-mount the pod's {ns} namespace"), e))?;
        meta.namespaces.push((*ns).to_owned());
        write_meta(host, id, &meta)?;
    }

    let mut created = SandboxCreated {
        pid,
        ..SandboxCreated::default()
    };
    if !host_net {
        let netns = dir.join("ns").join("net").display().to_string();
        let (ip, more) = cni::setup(host, id, &netns, config)?;
        created.netns_path = netns;
        created.ip = ip;
        created.additional_ips = more;
    }
    tracing::info!(pod = id, pid, ip = %created.ip, "pod sandbox ready");
    Ok(created)
}

fn is_ipc_sysctl(k: &str) -> bool {
    matches!(
        k,
        "kernel.shmmax"
            | "kernel.shmall"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
            | "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
    ) || k.starts_with("fs.mqueue.")
}

fn resolv_conf(dns: Option<&cri::DnsConfig>) -> Vec<u8> {
    match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                s.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for n in &d.servers {
                s.push_str(&format!("nameserver {n}\n"));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            s.into_bytes()
        }
        _ => fs::read("/etc/resolv.conf").unwrap_or_default(),
    }
}

fn write_file(p: &Path, data: &[u8]) -> Result<(), Status> {
    fs::File::create(p)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| internal(format!("cannot write {}", p.display()), e))
}

/// Kill the holder and every process of the pod, tear the network down,
/// release the namespaces and the holder's cgroup. Idempotent.
pub fn stop(host: &Host, id: &str) -> Result<(), Status> {
    let Some(mut meta) = read_meta(host, id) else {
        // Never got far enough to record anything but maybe the network.
        return cni::teardown(host, id);
    };
    kill_and_wait(meta.pid, id, Duration::from_secs(10));
    // Each step is tried whatever the one before did (a CNI plugin that
    // fails, or hangs until `cni_timeout_secs`, keeps its record for the
    // next try: DEL needs no namespace); the first failure is the answer.
    let mut first = kill_pod_processes(host, id, &meta).err();
    if let Err(e) = cni::teardown(host, id) {
        first.get_or_insert(e);
    }
    let dir = host.pod_dir(id).join("ns");
    for ns in std::mem::take(&mut meta.namespaces) {
        let p = dir.join(&ns);
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {
                let _ = fs::remove_file(&p);
            }
            Err(e) => {
                first.get_or_insert(internal(format!("cannot unmount {}", p.display()), e));
                meta.namespaces.push(ns);
            }
        }
    }
    // A namespace bound before a crash let crispd write it down.
    if let Err(e) = super::unmount_all_under(&dir) {
        first.get_or_insert(e);
    }
    let steps = write_meta(host, id, &meta)
        .and_then(|()| remove_cgroup(host, &sandbox_cgroup(&meta.pod_cgroup, id)));
    match first {
        Some(e) => Err(e),
        None => steps,
    }
}

/// End every process of the pod: with a host or pod-shared PID namespace
/// a container's init (or the holder) takes nothing with it when it dies.
/// The pod cgroup whole when crisp made it; in a `cgroup_parent` made by
/// someone else (kubelet, which kills what is left there itself), the
/// cgroups crisp put there: the holder's and the containers'.
fn kill_pod_processes(host: &Host, id: &str, meta: &Meta) -> Result<(), Status> {
    if meta.pod_cgroup.is_empty() {
        return Ok(());
    }
    if meta.pod_cgroup_created {
        return kill_cgroup(host, &meta.pod_cgroup);
    }
    for cg in super::container::cgroups_of_pod(host, id) {
        kill_cgroup(host, &cg)?;
    }
    kill_cgroup(host, &sandbox_cgroup(&meta.pod_cgroup, id))
}

/// Remove what is left: the pod cgroup crisp made (with whatever still
/// runs in it and the cgroups below it), the pod directory. In a pod
/// cgroup kubelet made, the `crisp-<id>` cgroups crisp left there (a
/// container's whose creation a crash cut short) go, those of another
/// pod's containers stay.
pub fn remove(host: &Host, id: &str) -> Result<(), Status> {
    // Its network may fail to go (kept for a retry); the rest goes anyway.
    let stopped = stop(host, id);
    if let Some(meta) = read_meta(host, id) {
        if meta.pod_cgroup_created {
            remove_cgroup(host, &meta.pod_cgroup)?;
        } else if !meta.pod_cgroup.is_empty() {
            super::reclaim::remove_stray_cgroups(host, &meta.pod_cgroup, |x| {
                x != id
                    && (host.pod_dir(x).exists()
                        || super::container::read_meta(host, x).is_some_and(|m| m.pod_id != id))
            });
        }
    }
    let dir = host.pod_dir(id);
    super::unmount_all_under(&dir)?;
    remove_tree(&dir)?;
    stopped
}

/// `crispd sandbox`: runs already inside the pod's new namespaces (the
/// parent unshared them before exec). Joins the holder's `cgroup`
/// (single-threaded, through [`crisp_executor::cgroup::Cgroups::self_attach_files`]: no RCU
/// grace period on cgroup v1, unlike crispd writing the holder's pid to
/// `cgroup.procs`), sets the hostname and sysctls, forks the holder (PID 1 of a new PID namespace with `pid_ns`), reports
/// `ready <holder pid>` or `error <why>` on stdout, and exits; the holder
/// reaps zombies and sleeps until killed.
pub fn main(
    hostname: Option<&str>,
    pid_ns: bool,
    sysctls: &[String],
    cgroup: Option<&str>,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |msg: String| {
        println!("error {msg}");
        ExitCode::FAILURE
    };
    if let Some(path) = cgroup {
        let cg = match crisp_executor::cgroup::detect() {
            Ok(cg) => cg,
            Err(e) => return fail(format!("cgroups: {e}")),
        };
        for f in cg.self_attach_files(path) {
            if let Err(e) = fs::write(&f, "0") {
                return fail(format!("cannot join cgroup {path} ({}): {e}", f.display()));
            }
        }
    }
    if let Some(h) = hostname {
        if let Err(e) = nix::unistd::sethostname(h) {
            return fail(format!("cannot set hostname {h:?}: {e}"));
        }
    }
    for s in sysctls {
        let Some((k, v)) = s.split_once('=') else {
            return fail(format!("bad sysctl {s:?}"));
        };
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        if let Err(e) = fs::write(&path, v) {
            return fail(format!("cannot set sysctl {k}={v}: {e}"));
        }
    }
    if pid_ns {
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWPID) {
            return fail(format!("cannot create a pid namespace: {e}"));
        }
    }
    // SAFETY: single-threaded here (just exec'd); the child only calls
    // async-signal-safe functions before its own loop.
    match unsafe { nix::unistd::fork() } {
        Err(e) => fail(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            println!("ready {child}");
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        Ok(nix::unistd::ForkResult::Child) => hold(),
    }
}

fn hold() -> ! {
    use nix::sys::signal::SigSet;
    use nix::sys::wait::{waitpid, WaitPidFlag};
    // Detach from crispd's pipes so it sees EOF once the parent exits.
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let _ = std::env::set_current_dir("/");
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if s == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => std::process::exit(0),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// UpdatePodSandboxResources: the pod's limits, its containers' sum
/// (`resources`) plus the runtime class's `overhead`, on the pod cgroup
/// when crisp made that cgroup. A pod cgroup crisp found in place
/// (`cgroup_parent`, kubelet's) is kubelet's to size: it resizes it
/// before this call, as the CRI says, and crisp leaves it alone (as
/// containerd, which only records the figures for NRI).
pub fn update_resources(
    host: &Host,
    id: &str,
    overhead: Option<&cri::LinuxContainerResources>,
    resources: Option<&cri::LinuxContainerResources>,
) -> Result<(), Status> {
    let meta = read_meta(host, id)
        .ok_or_else(|| Status::not_found(format!("pod sandbox {id} has no host state")))?;
    let json = pod_resources(overhead, resources, host.cgroups.version() == "v2")?;
    if !meta.pod_cgroup_created {
        return Ok(());
    }
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_value(json).map_err(|e| internal("convert the resources", e))?;
    host.cgroups
        .update(&meta.pod_cgroup, &resources)
        .map_err(|e| exec_status(&format!("update the pod cgroup {}", meta.pod_cgroup), &e))
}

/// The pod cgroup's limits (OCI `LinuxResources` as JSON) for a pod's
/// `resources` plus its `overhead`, or INVALID_ARGUMENT naming a field no
/// pod cgroup can take. A field left 0 changes nothing.
pub fn pod_resources(
    overhead: Option<&cri::LinuxContainerResources>,
    resources: Option<&cri::LinuxContainerResources>,
    unified_hierarchy: bool,
) -> Result<serde_json::Value, Status> {
    let zero = cri::LinuxContainerResources::default();
    let o = overhead.unwrap_or(&zero);
    let r = resources.unwrap_or(&zero);
    for (name, v) in [("overhead", o), ("resources", r)] {
        let bad = |field: &str, why: &str| {
            Err(Status::invalid_argument(format!("{name}.{field}: {why}")))
        };
        if v.oom_score_adj != 0 {
            return bad(
                "oom_score_adj",
                "a pod cgroup has no OOM score; set it per container",
            );
        }
        if v.cpu_shares < 0 || v.cpu_period < 0 || v.memory_limit_in_bytes < 0 {
            return bad(
                "cpu_shares, cpu_period, memory_limit_in_bytes",
                "must not be negative",
            );
        }
        if !v.unified.is_empty() && !unified_hierarchy {
            return bad("unified", "this host's cgroups are v1");
        }
    }
    if !o.cpuset_cpus.is_empty() || !o.cpuset_mems.is_empty() || !o.unified.is_empty() {
        return Err(Status::invalid_argument(
            "overhead.cpuset_cpus, cpuset_mems, unified: an overhead adds amounts, not sets",
        ));
    }
    let mut cpu = serde_json::Map::new();
    let shares = r.cpu_shares + o.cpu_shares;
    if shares > 0 {
        cpu.insert("shares".into(), shares.into());
    }
    // Quotas add up over one period: the pod's (or the overhead's, or the
    // kernel's default) period.
    let period = [r.cpu_period, o.cpu_period]
        .into_iter()
        .find(|p| *p > 0)
        .unwrap_or(100_000);
    let scaled = |v: &cri::LinuxContainerResources| {
        let p = if v.cpu_period > 0 {
            v.cpu_period
        } else {
            period
        };
        if v.cpu_quota > 0 {
            v.cpu_quota.saturating_mul(period) / p
        } else {
            0
        }
    };
    match r.cpu_quota {
        // No CPU limit on the containers: none on the pod.
        q if q < 0 => {
            cpu.insert("quota".into(), (-1).into());
        }
        0 => {}
        _ => {
            cpu.insert("quota".into(), (scaled(r) + scaled(o)).into());
        }
    }
    if r.cpu_period > 0 || o.cpu_period > 0 {
        cpu.insert("period".into(), period.into());
    }
    super::container::insert_cpuset(r, &mut cpu);
    let mut mem = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        let limit = r
            .memory_limit_in_bytes
            .saturating_add(o.memory_limit_in_bytes);
        mem.insert("limit".into(), limit.into());
        // No swap unless asked for, as for containers.
        let swap = match r.memory_swap_limit_in_bytes {
            s if s > 0 => s.saturating_add(o.memory_limit_in_bytes),
            s if s < 0 => -1,
            _ => limit,
        };
        mem.insert("swap".into(), swap.into());
    }
    let mut hugepages: Vec<serde_json::Value> = Vec::new();
    for h in r.hugepage_limits.iter().chain(&o.hugepage_limits) {
        if let Some(e) = hugepages
            .iter_mut()
            .find(|e| e["pageSize"] == h.page_size.as_str())
        {
            e["limit"] = (e["limit"].as_u64().unwrap_or(0).saturating_add(h.limit)).into();
        } else {
            hugepages.push(serde_json::json!({ "pageSize": h.page_size, "limit": h.limit }));
        }
    }
    let mut out = serde_json::json!({ "cpu": cpu, "memory": mem });
    if !hugepages.is_empty() {
        out["hugepageLimits"] = hugepages.into();
    }
    if !r.unified.is_empty() {
        out["unified"] = serde_json::to_value(&r.unified).unwrap_or_default();
    }
    Ok(out)
}
