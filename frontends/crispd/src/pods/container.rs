//! Containers on the host: the rootfs overlay, the OCI spec, and the
//! per-container monitor process (see [`super::monitor`]) that creates the
//! container with the executor, holds its stdio and records its exit.
//! crispd talks to the monitor over `<runtime_dir>/containers/<id>/sock`
//! (addressed through a descriptor of its directory, so the path's length
//! does not matter: see [`super::monitor::connect_in`]).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crisp_core::cri::{Exit, ImageVolume, Observed, UNKNOWN_EXIT_CODE, UNKNOWN_EXIT_REASON};
use crisp_core::grpc::Status;
use crisp_executor::{self as executor, rootfs};
use crisp_proto::cri;
use serde::{Deserialize, Serialize};

use super::monitor::ExitFile;
use super::{container_cgroup, exec_status, internal, mounts, remove_tree, sandbox, Host};
use crate::oci_spec::{self as spec, PodFiles, PodNamespaces};

/// What crispd keeps about a container next to its monitor.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    pub pod_id: String,
    pub cgroup: String,
    pub image_id: String,
    /// The image's StopSignal, e.g. `SIGQUIT`; empty for SIGTERM.
    pub stop_signal: String,
    /// The CRI's `stdin_once`: an attached client's end of stdin closes
    /// the container's.
    #[serde(default)]
    pub stdin_once: bool,
}

/// What CreateContainer made, for the state machine's record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Created {
    /// The resolved image ID.
    pub image_ref: String,
    pub image_id: String,
    /// The identity the process runs as: the spec's `process.user`, which
    /// the executor applies exactly (setgroups, setgid, setuid; a failure
    /// fails the start), as containerd reports it from its spec.
    pub user: cri::ContainerUser,
    /// The image's StopSignal as a `cri::Signal` value (0: none).
    pub image_stop_signal: i32,
    /// The image volumes mounted for it.
    pub image_volumes: Vec<ImageVolume>,
}

pub fn read_meta(host: &Host, id: &str) -> Option<Meta> {
    serde_json::from_slice(&fs::read(host.ctr_dir(id).join("meta.json")).ok()?).ok()
}

/// The cgroups of the pod's containers that have host state.
pub fn cgroups_of_pod(host: &Host, pod_id: &str) -> Vec<String> {
    let Ok(dir) = fs::read_dir(host.config.runtime_dir.join("containers")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| read_meta(host, &e.file_name().to_string_lossy()))
        .filter(|m| m.pod_id == pod_id)
        .map(|m| m.cgroup)
        .collect()
}

pub fn socket_path(host: &Host, id: &str) -> PathBuf {
    host.ctr_dir(id).join("sock")
}

fn connect(host: &Host, id: &str) -> std::io::Result<UnixStream> {
    super::monitor::connect_in(&host.ctr_dir(id), "sock")
}

/// A CreateContainer as the host sees it.
#[derive(Clone, Copy)]
pub struct NewContainer<'a> {
    pub id: &'a str,
    pub pod_id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox_config: &'a cri::PodSandboxConfig,
    /// The image reference to resolve in the store.
    pub image: &'a str,
    pub log_path: &'a str,
}

pub fn create(host: &Host, new: &NewContainer) -> Result<Created, Status> {
    let result = create_inner(host, new);
    if result.is_err() {
        if let Err(e) = remove(host, new.id) {
            tracing::warn!(container = new.id, error = %e.message, "cleanup after a failed CreateContainer");
        }
    }
    result
}

fn create_inner(host: &Host, new: &NewContainer) -> Result<Created, Status> {
    let &NewContainer {
        id,
        pod_id,
        config,
        image,
        log_path,
        ..
    } = new;
    check_devices(config)?;
    check_unified(host, config)?;
    let (record, layers, config_bytes) = host.images.resolve(image).map_err(|e| e.to_status())?;
    let image_config: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| internal("parse the image config", e))?;
    let stop_signal = serde_json::from_slice::<serde_json::Value>(&config_bytes)
        .ok()
        .and_then(|v| {
            v.get("config")?
                .get("StopSignal")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let sb = sandbox::read_meta(host, pod_id).ok_or_else(|| {
        Status::failed_precondition(format!("pod sandbox {pod_id} has no host state"))
    })?;
    let dir = host.ctr_dir(id);
    let state = host.ctr_state_dir(id);
    fs::create_dir_all(&dir).map_err(|e| internal("create the container directory", e))?;
    fs::create_dir_all(&state).map_err(|e| internal("create the container state directory", e))?;
    // What this container is, before anything is made for it (mounts,
    // cgroup, monitor): the intent that lets a crispd killed from here on
    // find and undo it at its next start (see `reclaim`).
    let cgroup = container_cgroup(&sb.pod_cgroup, id);
    let meta = Meta {
        pod_id: pod_id.into(),
        cgroup: cgroup.clone(),
        image_id: record.id.clone(),
        stop_signal,
        stdin_once: config.stdin_once,
    };
    let meta_bytes = serde_json::to_vec(&meta).map_err(|e| internal("encode meta", e))?;
    crate::persist::write_runtime(&dir.join("meta.json"), &meta_bytes)
        .map_err(|e| internal("write the container meta", e))?;
    // Image volumes become host paths; then the host must be able to give
    // every mount what it asks for.
    let mut volumes_config;
    let (config, image_volumes) = if config.mounts.iter().any(|m| m.image.is_some()) {
        volumes_config = config.clone();
        let volumes = mounts::mount_image_volumes(host, id, &mut volumes_config.mounts)?;
        (&volumes_config, volumes)
    } else {
        (config, Vec::new())
    };
    mounts::check_host(&config.mounts)?;

    // The cgroup is made (empty) while the rootfs is mounted and the spec
    // built; on cgroup v1 that is a directory in every hierarchy, the
    // slowest part of this call. Its limits are applied once the spec is.
    let target = dir.join("rootfs");
    let (made, spec) = std::thread::scope(|scope| {
        let made = scope.spawn(|| {
            host.cgroups
                .create(&cgroup, &Default::default())
                .map_err(|e| exec_status(&format!("create cgroup {cgroup}"), &e))
        });
        let spec = container_spec(
            host,
            &NewContainer { config, ..*new },
            &image_config,
            layers,
            &target,
            &cgroup,
        );
        let made = made
            .join()
            .unwrap_or_else(|_| Err(Status::internal("creating the cgroup panicked")));
        (made, spec)
    });
    made?;
    let spec = spec?;
    let user = spec
        .process()
        .as_ref()
        .map(|p| p.user())
        .map(|u| cri::LinuxContainerUser {
            uid: i64::from(u.uid()),
            gid: i64::from(u.gid()),
            supplemental_groups: u
                .additional_gids()
                .iter()
                .flatten()
                .map(|g| i64::from(*g))
                .collect(),
        });
    if let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        host.cgroups
            .update(&cgroup, resources)
            .map_err(|e| exec_status(&format!("set the limits of cgroup {cgroup}"), &e))?;
    }
    let spec_bytes = serde_json::to_vec(&spec).map_err(|e| internal("encode the spec", e))?;
    crate::persist::write_runtime(&dir.join("config.json"), &spec_bytes)
        .map_err(|e| internal("write the container spec", e))?;
    // The monitor is a new process, slow to compile a profile: crispd
    // compiles it (kept for the next container) and hands it the programs.
    if let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        let programs = executor::seccomp::compile_cached(profile)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        crate::persist::write_runtime(
            &dir.join(super::monitor::SECCOMP_FILE),
            &executor::seccomp::encode(&programs),
        )
        .map_err(|e| internal("write the container's seccomp programs", e))?;
    }
    if !log_path.is_empty() {
        if let Some(parent) = Path::new(log_path).parent() {
            fs::create_dir_all(parent).map_err(|e| {
                internal(format!("create the log directory {}", parent.display()), e)
            })?;
        }
    }

    let stdout = host
        .monitors
        .launch(&super::spare::MonitorArgs {
            id: id.into(),
            dir: dir.clone(),
            log: log_path.into(),
            cgroup: cgroup.clone(),
            stdin: config.stdin,
            stdin_once: config.stdin_once,
        })
        .map_err(|e| internal("cannot start the container monitor", e))?;
    // `ready <pid>` or `error <why>`; other lines are diagnostics.
    let answer = stdout
        .lines()
        .find(|l| l.starts_with("ready ") || l.starts_with("error "));
    match answer {
        Some(l) if l.starts_with("ready ") => {}
        Some(l) => {
            return Err(Status::internal(format!(
                "the container monitor failed: {}",
                &l["error ".len()..]
            )))
        }
        None => {
            return Err(Status::internal(format!(
                "the container monitor exited without an answer: {}",
                stdout.trim()
            )))
        }
    }
    Ok(Created {
        image_ref: record.id.clone(),
        image_id: record.id,
        image_volumes,
        image_stop_signal: cri_signal(&meta.stop_signal),
        user: cri::ContainerUser { linux: user },
    })
}

/// Mount the container's root filesystem and build its OCI spec (which
/// reads the rootfs' /etc/passwd to resolve the user).
fn container_spec(
    host: &Host,
    new: &NewContainer,
    image_config: &oci_spec::image::ImageConfiguration,
    layers: Vec<PathBuf>,
    target: &Path,
    cgroup: &str,
) -> Result<executor::Spec, Status> {
    let &NewContainer {
        id,
        pod_id,
        config,
        sandbox_config,
        ..
    } = new;
    let state = host.ctr_state_dir(id);
    rootfs::mount_overlay(&rootfs::Overlay {
        lower: layers,
        upper: state.join("upper"),
        work: state.join("work"),
        target: target.to_path_buf(),
    })
    .map_err(|e| exec_status("mount the root filesystem", &e))?;
    let ns = |n: &str| sandbox::ns_path(host, pod_id, n);
    let namespaces = PodNamespaces {
        net: ns("net"),
        ipc: ns("ipc"),
        uts: ns("uts"),
        pid: match pid_target(config) {
            // The state machine checked that the target runs in this pod.
            Some(target) => Some(PathBuf::from(format!(
                "/proc/{}/ns/pid",
                pid(host, target)?
            ))),
            None => ns("pid"),
        },
    };
    let pod_dir = host.pod_dir(pod_id);
    let files = PodFiles {
        hostname: Some(pod_dir.join("hostname")),
        hosts: Some(pod_dir.join("hosts")),
        resolv_conf: Some(pod_dir.join("resolv.conf")),
    };
    let mut spec = spec::container_spec(&spec::SpecInput {
        container_id: id,
        config,
        sandbox: sandbox_config,
        image: image_config,
        rootfs: target,
        namespaces: &namespaces,
        files: &files,
        cgroup_path: cgroup,
    })
    .map_err(|e| exec_status("build the container spec", &e))?;
    if host.config.pids_limit > 0 {
        set_pids_limit(&mut spec, host.config.pids_limit)?;
    }
    Ok(spec)
}

/// Every requested device is a device node, or a directory of them (as
/// containerd takes it); anything else would be left out silently.
fn check_devices(config: &cri::ContainerConfig) -> Result<(), Status> {
    use std::os::unix::fs::FileTypeExt;
    for (i, d) in config.devices.iter().enumerate() {
        let field = format!("ContainerConfig.devices[{i}].host_path");
        let md = fs::metadata(&d.host_path)
            .map_err(|e| Status::invalid_argument(format!("{field}: {:?}: {e}", d.host_path)))?;
        let t = md.file_type();
        if !(t.is_char_device() || t.is_block_device() || t.is_dir()) {
            return Err(Status::invalid_argument(format!(
                "{field}: {:?} is not a device node",
                d.host_path
            )));
        }
    }
    Ok(())
}

/// cgroup v2 settings cannot be written on a v1 host (runc refuses them
/// too); left unchecked they would be skipped without a word.
fn check_unified(host: &Host, config: &cri::ContainerConfig) -> Result<(), Status> {
    let unified = config
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .map(|r| &r.unified);
    match unified.and_then(|u| u.keys().min()) {
        Some(key) if host.cgroups.version() == "v1" => Err(Status::invalid_argument(format!(
            "ContainerConfig.linux.resources.unified: {key:?} is a cgroup v2 setting and this host runs cgroup v1"
        ))),
        _ => Ok(()),
    }
}

/// The container whose PID namespace this one joins (mode TARGET).
fn pid_target(config: &cri::ContainerConfig) -> Option<&str> {
    config
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()
        .filter(|ns| ns.pid == cri::NamespaceMode::Target as i32)
        .map(|ns| ns.target_id.as_str())
}

/// The configured `pids_limit` in the spec's resources.
fn set_pids_limit(spec: &mut executor::Spec, limit: u64) -> Result<(), Status> {
    let pids = oci_spec::runtime::LinuxPidsBuilder::default()
        .limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .build()
        .map_err(|e| internal("the pids limit", e))?;
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_pids(Some(pids));
    linux.set_resources(Some(resources));
    Ok(())
}

/// One request to the monitor, one line back.
pub fn ask(host: &Host, id: &str, req: &str, timeout: Option<Duration>) -> std::io::Result<String> {
    let mut s = connect(host, id)?;
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the monitor closed the connection",
        ));
    }
    Ok(line.trim_end().to_owned())
}

/// Attach to the container's stdio through its monitor: connect, ask
/// `attach`, read `ok`. The stream (blocking) then carries the frames of
/// [`crisp_monitor::attach`]: stdin, resize and stdin-close from us;
/// stdout, stderr and finally the exit code from the monitor, which then
/// closes it.
///
/// A monitor that is gone (the container has exited, or never ran) is
/// FAILED_PRECONDITION; its `error <why>` (too many clients attached, or
/// a monitor that cannot attach) is FAILED_PRECONDITION too, with its
/// text; an unreachable or garbled monitor is UNAVAILABLE or INTERNAL.
pub fn attach(host: &Host, id: &str) -> Result<UnixStream, Status> {
    let s = connect(host, id).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            Status::failed_precondition(format!("container {id} is not running"))
        }
        _ => monitor_error("attach", e),
    })?;
    attach_on(s, id)
}

/// [`attach`] on a connected monitor socket.
fn attach_on(mut s: UnixStream, id: &str) -> Result<UnixStream, Status> {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(5))))
        .and_then(|()| s.write_all(b"attach\n"))
        .map_err(|e| monitor_error("attach", e))?;
    // One byte at a time: nothing after the line may be taken from the
    // stream (frames may follow at once).
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 1024 {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(monitor_error("attach", e)),
        }
    }
    let line = String::from_utf8_lossy(&line);
    match line.trim_end() {
        "ok" => {
            s.set_read_timeout(None)
                .and_then(|()| s.set_write_timeout(None))
                .map_err(|e| monitor_error("attach", e))?;
            Ok(s)
        }
        "" => Err(Status::failed_precondition(format!(
            "attach to container {id}: the monitor closed the connection"
        ))),
        other => match other.strip_prefix("error ") {
            Some(why) => Err(Status::failed_precondition(format!(
                "attach to container {id}: {why}"
            ))),
            None => Err(Status::internal(format!(
                "attach to container {id}: the monitor said {other:?}"
            ))),
        },
    }
}

fn monitor_error(what: &str, e: std::io::Error) -> Status {
    Status::unavailable(format!("{what}: cannot reach the container monitor: {e}"))
}

pub fn start(host: &Host, id: &str) -> Result<(u32, i64), Status> {
    let reply = ask(host, id, "start", Some(Duration::from_secs(30)))
        .map_err(|e| monitor_error("start", e))?;
    let mut parts = reply.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("ok"), Some(pid), Some(at)) => {
            Ok((pid.parse().unwrap_or(0), at.parse().unwrap_or(0)))
        }
        _ => Err(Status::internal(format!(
            "start: {}",
            reply.strip_prefix("error ").unwrap_or(&reply)
        ))),
    }
}

pub fn read_exit(host: &Host, id: &str) -> Option<Exit> {
    let f: ExitFile =
        serde_json::from_slice(&fs::read(host.ctr_dir(id).join("exit.json")).ok()?).ok()?;
    Some(f.to_exit())
}

/// glibc's SIGRTMIN and SIGRTMAX, the numbers `RTMIN+n` counts from (the
/// kernel's 32 and 33 are glibc's own), as Docker and containerd use them.
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// A signal's number from its name as images and the CRI write it:
/// `SIGUSR1`, `usr1`, `15`, `SIGRTMIN+3`, `RTMAX-1`, and the CRI enum's
/// `SIGRTMINPLUS3`, `SIGRTMAXMINUS1`.
pub fn signal_by_name(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return (1..=SIGRTMAX).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |s: &str| s.parse::<i32>().ok().filter(|n| (0..=30).contains(n));
    let rt = if let Some(n) = bare.strip_prefix("RTMIN") {
        match n {
            "" => Some(SIGRTMIN),
            _ => n
                .strip_prefix('+')
                .or_else(|| n.strip_prefix("PLUS"))
                .and_then(offset)
                .map(|n| SIGRTMIN + n),
        }
    } else if let Some(n) = bare.strip_prefix("RTMAX") {
        match n {
            "" => Some(SIGRTMAX),
            _ => n
                .strip_prefix('-')
                .or_else(|| n.strip_prefix("MINUS"))
                .and_then(offset)
                .map(|n| SIGRTMAX - n),
        }
    } else {
        None
    };
    if rt.is_some() {
        return rt;
    }
    let canonical = match bare {
        "CLD" => "CHLD",
        "POLL" => "IO",
        "IOT" => "ABRT",
        other => other,
    };
    format!("SIG{canonical}")
        .parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The CRI enum value of a signal named by an image's StopSignal (the
/// first of the enum's names for its number); RUNTIME_DEFAULT for none.
pub fn cri_signal(name: &str) -> i32 {
    let Some(n) = (!name.is_empty()).then(|| signal_by_name(name)).flatten() else {
        return cri::Signal::RuntimeDefault as i32;
    };
    (1..=cri::Signal::Sigrtmax as i32)
        .find(|v| {
            cri::Signal::try_from(*v)
                .ok()
                .and_then(|s| signal_by_name(s.as_str_name()))
                == Some(n)
        })
        .unwrap_or(cri::Signal::RuntimeDefault as i32)
}

/// The signal StopContainer sends: the config's (a `cri::Signal`), else
/// the image's StopSignal, else SIGTERM.
fn signal_number(stop_signal: i32, image: &str) -> i32 {
    let from_cri = cri::Signal::try_from(stop_signal)
        .ok()
        .filter(|s| *s != cri::Signal::RuntimeDefault)
        .and_then(|s| signal_by_name(s.as_str_name()));
    from_cri
        .or_else(|| signal_by_name(image))
        .unwrap_or(nix::sys::signal::Signal::SIGTERM as i32)
}

/// End whatever is left in the container's cgroup once its init is gone.
/// With its own PID namespace the kernel has done it already (the
/// namespace dies with its init); with the host's or the pod's, the
/// init's death takes nothing with it, and containerd's shim kills the
/// rest of the cgroup before it reports the exit: so does crisp, when the
/// exit is seen (watch, StopContainer, restore) and before removal. (With
/// a namespace of its own the cgroup is empty by then: a listing.)
pub fn kill_leftovers(host: &Host, id: &str) -> Result<(), Status> {
    match read_meta(host, id) {
        Some(meta) => super::kill_cgroup(host, &meta.cgroup),
        None => Ok(()),
    }
}

/// Whether the container's spec gives it a PID namespace of its own (the
/// kernel ends every process in it with its init), as containerd's
/// `ShouldKillAllOnExit` reads it; an unreadable spec counts as shared.
fn has_own_pid_namespace(host: &Host, id: &str) -> bool {
    let Ok(bytes) = fs::read(host.ctr_dir(id).join("config.json")) else {
        return false;
    };
    let Ok(spec) = serde_json::from_slice::<executor::Spec>(&bytes) else {
        return false;
    };
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none()
            })
        })
}

/// Stop signal, grace period, SIGKILL; then every process left in the
/// container's cgroup; the exit as the monitor recorded it.
pub fn stop(host: &Host, id: &str, timeout: i64, stop_signal: i32) -> Result<Exit, Status> {
    let exit = stop_init(host, id, timeout, stop_signal);
    kill_leftovers(host, id)?;
    Ok(exit)
}

fn stop_init(host: &Host, id: &str, timeout: i64, stop_signal: i32) -> Exit {
    if let Some(exit) = read_exit(host, id) {
        return exit;
    }
    let image_signal = read_meta(host, id)
        .map(|m| m.stop_signal)
        .unwrap_or_default();
    let sig = signal_number(stop_signal, &image_signal);
    let unknown = || Exit {
        exit_code: UNKNOWN_EXIT_CODE,
        finished_at: 0,
        reason: UNKNOWN_EXIT_REASON.into(),
        message: "the container's monitor is gone".into(),
    };
    if timeout > 0 {
        match ask(
            host,
            id,
            &format!("signal {sig}"),
            Some(Duration::from_secs(5)),
        ) {
            Ok(_) => {
                let grace = Duration::from_secs(timeout.unsigned_abs());
                if ask(host, id, "wait", Some(grace)).is_ok() {
                    if let Some(exit) = read_exit(host, id) {
                        return exit;
                    }
                }
            }
            Err(_) => return read_exit(host, id).unwrap_or_else(unknown),
        }
    }
    // Read before the kill: the exit is awaited right after it.
    let own_pid_namespace = has_own_pid_namespace(host, id);
    if ask(host, id, "signal 9", Some(Duration::from_secs(5))).is_err() {
        return read_exit(host, id).unwrap_or_else(unknown);
    }
    // Sharing a PID namespace, the whole cgroup at once: a child left
    // holding the output pipes would keep the monitor draining them for a
    // while before it records the exit. (A failure shows again in `stop`.)
    if !own_pid_namespace {
        let _ = kill_leftovers(host, id);
    }
    let _ = ask(host, id, "wait", Some(Duration::from_secs(30)));
    read_exit(host, id).unwrap_or_else(unknown)
}

/// Kill whatever is left, the monitor too, unmount, remove the
/// directories and cgroup.
pub fn remove(host: &Host, id: &str) -> Result<(), Status> {
    let monitor = monitor_pid(host, id);
    if socket_path(host, id).exists()
        && read_exit(host, id).is_none()
        && ask(host, id, "signal 9", Some(Duration::from_secs(5))).is_ok()
    {
        let _ = ask(host, id, "wait", Some(Duration::from_secs(30)));
    }
    // Nothing of it may outlive it, nor hold its root filesystem.
    kill_leftovers(host, id)?;
    // Its exit is recorded (or will never be): the monitor, which would
    // linger a moment to answer, has nothing left to do.
    if let Some((pid, needle)) = monitor {
        super::kill_and_wait(pid, &needle, Duration::from_secs(5));
    }
    let dir = host.ctr_dir(id);
    rootfs::unmount(&dir.join("rootfs")).map_err(|e| exec_status("unmount the rootfs", &e))?;
    mounts::unmount_image_volumes(host, id)?;
    // Anything else still mounted there (a mount stacked twice, one made
    // before a crash).
    super::unmount_all_under(&dir)?;
    if let Some(meta) = read_meta(host, id) {
        super::remove_cgroup(host, &meta.cgroup)?;
    }
    remove_tree(&host.ctr_state_dir(id))?;
    remove_tree(&dir)
}

/// The container's monitor process, from the credentials of its socket's
/// peer, with a word of its command line that identifies it: the tiny
/// monitor's first argument is the container's ID; a std monitor's is
/// `monitor` or, started as a spare, `monitor-spare`.
fn monitor_pid(host: &Host, id: &str) -> Option<(u32, String)> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let s = connect(host, id).ok()?;
    let pid = u32::try_from(getsockopt(&s, PeerCredentials).ok()?.pid()).ok()?;
    [id, "monitor", "monitor-spare"]
        .into_iter()
        .find(|w| super::process_matches(pid, w))
        .map(|w| (pid, w.to_owned()))
}

/// What the monitor says, for restore. `None`: no monitor and no exit
/// recorded (or a container never started).
pub fn observe(host: &Host, id: &str) -> Option<Observed> {
    if let Some(exit) = read_exit(host, id) {
        return Some(Observed::Exited(exit));
    }
    if !socket_path(host, id).exists() {
        return None;
    }
    match ask(host, id, "state", Some(Duration::from_secs(5))) {
        Ok(reply) => {
            let parts: Vec<&str> = reply.split(' ').collect();
            match parts.as_slice() {
                ["running", pid, at] => Some(Observed::Running {
                    pid: pid.parse().unwrap_or(0),
                    started_at: at.parse().unwrap_or(0),
                }),
                ["exited", ..] => read_exit(host, id).map(Observed::Exited),
                _ => None,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            read_exit(host, id).map(Observed::Exited)
        }
        Err(_) => Some(Observed::Unreachable),
    }
}

/// Ask the container's monitor `wait` on a new non-blocking connection,
/// for the event loop to watch (see [`crate::exits`]): the monitor
/// answers `exited` once it has recorded the exit, or the connection
/// ends (the monitor died, or dropped us). `WouldBlock`: the monitor's
/// listen backlog is full, try again later.
pub fn ask_wait(host: &Host, id: &str) -> std::io::Result<mio::net::UnixStream> {
    let mut s = super::monitor::connect_in_nonblocking(&host.ctr_dir(id), "sock")?;
    // A new connection's send buffer is empty: the line goes at once.
    match s.write(b"wait\n")? {
        5 => Ok(s),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "the monitor's socket took part of the request",
        )),
    }
}

/// What a container's exit watcher finds once its `wait` has ended,
/// answered or not.
#[derive(Debug)]
pub enum WaitEnded {
    /// The container has exited (what it left behind is ended, see
    /// [`kill_leftovers`]): as its monitor recorded it, or an unknown
    /// exit when the monitor died without a record.
    Exited(Exit),
    /// The container is gone (removed): nothing to report.
    Gone,
    /// The monitor is alive and no exit is recorded (it dropped our
    /// connection): ask again in a while.
    Again,
}

/// After a container's `wait` ended (on a worker): its exit, if it has
/// one, with its leftovers ended.
pub fn wait_ended(host: &Host, id: &str) -> WaitEnded {
    let exit = match read_exit(host, id) {
        Some(exit) => exit,
        None if !host.ctr_dir(id).exists() => return WaitEnded::Gone,
        // Alive (or its backlog full: alive too).
        None if connect(host, id).is_ok() => return WaitEnded::Again,
        // The monitor is gone without a record.
        None => match read_exit(host, id) {
            // ...unless it recorded the exit just now and left.
            Some(exit) => exit,
            None => Exit {
                exit_code: UNKNOWN_EXIT_CODE,
                finished_at: 0,
                reason: UNKNOWN_EXIT_REASON.into(),
                message: "the container's monitor died".into(),
            },
        },
    };
    if let Err(e) = kill_leftovers(host, id) {
        tracing::warn!(container = id, error = %e.message, "after the container's exit");
    }
    WaitEnded::Exited(exit)
}

/// The container's process pid, from its monitor.
pub fn pid(host: &Host, id: &str) -> Result<u32, Status> {
    let reply = ask(host, id, "state", Some(Duration::from_secs(5)))
        .map_err(|e| monitor_error("state", e))?;
    match reply.split(' ').collect::<Vec<_>>().as_slice() {
        ["running", pid, _] => pid
            .parse()
            .map_err(|_| Status::internal(format!("monitor said {reply:?}"))),
        _ => Err(Status::failed_precondition(format!(
            "container {id} is not running ({reply})"
        ))),
    }
}

pub fn reopen_log(host: &Host, id: &str) -> Result<(), Status> {
    let reply = ask(host, id, "reopen-log", Some(Duration::from_secs(10)))
        .map_err(|e| monitor_error("reopen-log", e))?;
    if reply == "ok" {
        Ok(())
    } else {
        Err(Status::internal(format!("reopen the log: {reply}")))
    }
}

/// Writable layer usage: bytes and inodes under the upper dir.
pub fn writable_usage(host: &Host, id: &str) -> (u64, u64) {
    fn walk(p: &Path, bytes: &mut u64, inodes: &mut u64, depth: usize) {
        let Ok(rd) = fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            *inodes += 1;
            *bytes += md.len();
            if md.is_dir() && depth < 256 {
                walk(&e.path(), bytes, inodes, depth + 1);
            }
        }
    }
    let (mut b, mut i) = (0, 0);
    walk(&host.ctr_state_dir(id).join("upper"), &mut b, &mut i, 0);
    (b, i)
}

/// Start `cmd` in running container `id` as its own process would run
/// (namespaces, cgroup, user, capabilities, seccomp, no_new_privs), with
/// `stdio`; with `terminal`, `stdio.stdout` is a pty replica that becomes
/// the controlling terminal. The process is our child.
fn spawn_exec(
    host: &Host,
    id: &str,
    cmd: Vec<String>,
    terminal: bool,
    stdio: executor::Stdio,
) -> Result<nix::unistd::Pid, Status> {
    let pid = pid(host, id)?;
    let spec_bytes = fs::read(host.ctr_dir(id).join("config.json"))
        .map_err(|e| internal("read the container spec", e))?;
    let spec: executor::Spec =
        serde_json::from_slice(&spec_bytes).map_err(|e| internal("parse the container spec", e))?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(cmd));
    process.set_terminal(Some(terminal));
    if terminal {
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        process.set_env(Some(env));
    }
    executor::exec(
        nix::unistd::Pid::from_raw(pid as i32),
        &spec,
        &process,
        stdio,
    )
    .map_err(|e| exec_status("exec in the container", &e))
}

/// A pipe whose ends no other child of crispd inherits (a process started
/// meanwhile holding a write end would keep the reader from seeing EOF).
fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), Status> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| internal("pipe", e))
}

/// A pty from the container's own devpts (its `/dev/ptmx`, reached
/// through `/proc/<pid>/root`), so that inside, `tty` names a
/// `/dev/pts/N` that exists; the host's devpts when that fails. Both ends
/// close-on-exec: nothing else crispd starts meanwhile inherits them.
fn container_pty(container_pid: u32) -> Result<(OwnedFd, OwnedFd), Status> {
    use nix::libc;
    use std::os::fd::FromRawFd;
    let own = || -> std::io::Result<(OwnedFd, OwnedFd)> {
        let master: OwnedFd = fs::File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(format!("/proc/{container_pid}/root/dev/ptmx"))?
            .into();
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads one int that lives for the call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
        let peer = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
        if peer < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just returned, owned by nobody else.
        Ok((master, unsafe { OwnedFd::from_raw_fd(peer) }))
    };
    match own() {
        Ok(pair) => Ok(pair),
        Err(e) => {
            tracing::debug!(error = %e, "no pty from the container's devpts; using the host's");
            let pty = nix::pty::openpty(None, None).map_err(|e| internal("open a pty", e))?;
            for fd in [&pty.master, &pty.slave] {
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )
                .map_err(|e| internal("fcntl", e))?;
            }
            Ok((pty.master, pty.slave))
        }
    }
}

/// A process started for a streaming exec, with crispd's ends of its
/// stdio (non-blocking).
pub struct StreamingExec {
    pub pid: nix::unistd::Pid,
    /// Where the client's stdin goes (with a tty: a duplicate of the pty).
    pub stdin: Option<OwnedFd>,
    /// Its output (with a tty: the pty, stdout and stderr merged).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The pty, for resizes.
    pub tty: bool,
}

/// Exec for the streaming server: `cmd` in container `id` with pipes, or
/// a pty when `tty`, for the streams the client asked for.
pub fn exec_streaming(
    host: &Host,
    id: &str,
    cmd: Vec<String>,
    options: crisp_core::remotecommand::StreamOptions,
    size: Option<(u16, u16)>,
) -> Result<StreamingExec, Status> {
    use nix::fcntl::OFlag;
    if cmd.is_empty() {
        return Err(Status::invalid_argument("Exec needs a command"));
    }
    let nonblocking = |fd: &OwnedFd| {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| internal("fcntl", e))?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map(|_| ())
            .map_err(|e| internal("fcntl", e))
    };
    let null = || {
        fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| internal("open /dev/null", e))
    };
    if options.tty {
        let (master, replica) = container_pty(pid(host, id)?)?;
        if let Some((width, height)) = size {
            super::set_window_size(master.as_fd(), width, height);
        }
        let stdio = executor::Stdio {
            stdin: None,
            stdout: replica.try_clone().map_err(|e| internal("dup", e))?,
            stderr: replica,
        };
        let pid = spawn_exec(host, id, cmd, true, stdio)?;
        nonblocking(&master)?;
        let stdin = match options.stdin {
            true => Some(master.try_clone().map_err(|e| internal("dup", e))?),
            false => None,
        };
        return Ok(StreamingExec {
            pid,
            stdin,
            stdout: Some(master),
            stderr: None,
            tty: true,
        });
    }
    let pipe = cloexec_pipe;
    let (stdin_ours, stdin_theirs) = match options.stdin {
        true => {
            let (r, w) = pipe()?;
            (Some(w), Some(r))
        }
        false => (None, None),
    };
    let (stdout_ours, stdout_theirs) = match options.stdout {
        true => {
            let (r, w) = pipe()?;
            (Some(r), w)
        }
        false => (None, null()?),
    };
    let (stderr_ours, stderr_theirs) = match options.stderr {
        true => {
            let (r, w) = pipe()?;
            (Some(r), w)
        }
        false => (None, null()?),
    };
    let stdio = executor::Stdio {
        stdin: stdin_theirs,
        stdout: stdout_theirs,
        stderr: stderr_theirs,
    };
    let pid = spawn_exec(host, id, cmd, false, stdio)?;
    for fd in [&stdin_ours, &stdout_ours, &stderr_ours]
        .into_iter()
        .flatten()
    {
        nonblocking(fd)?;
    }
    Ok(StreamingExec {
        pid,
        stdin: stdin_ours,
        stdout: stdout_ours,
        stderr: stderr_ours,
        tty: false,
    })
}

/// Whether container `id` was created with `stdin_once`.
pub fn stdin_once(host: &Host, id: &str) -> bool {
    read_meta(host, id).is_some_and(|m| m.stdin_once)
}

/// ExecSync: run `cmd` in the container, capture up to 16 MiB of each
/// stream, kill it when `timeout` seconds pass (0: no limit).
pub fn exec_sync(
    host: &Host,
    id: &str,
    cmd: Vec<String>,
    timeout: i64,
) -> Result<cri::ExecSyncResponse, Status> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    const CAP: usize = 16 << 20;
    if cmd.is_empty() {
        return Err(Status::invalid_argument("ExecSync needs a command"));
    }
    let (out_r, out_w) = cloexec_pipe()?;
    let (err_r, err_w) = cloexec_pipe()?;
    let stdio = executor::Stdio {
        stdin: None,
        stdout: out_w,
        stderr: err_w,
    };
    let child = spawn_exec(host, id, cmd, false, stdio)?;
    let reader = |fd: std::os::fd::OwnedFd| {
        std::thread::spawn(move || {
            let mut f = fs::File::from(fd);
            let mut out = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = CAP.saturating_sub(out.len());
                        out.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
            out
        })
    };
    let (so, se) = (reader(out_r), reader(err_r));
    let deadline = (timeout > 0)
        .then(|| std::time::Instant::now() + Duration::from_secs(timeout.unsigned_abs()));
    let mut timed_out = false;
    let code = loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) => {}
            Err(e) => return Err(internal("wait for the exec'd process", e)),
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) && !timed_out {
            timed_out = true;
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = so.join().unwrap_or_default();
    let stderr = se.join().unwrap_or_default();
    if timed_out {
        return Err(Status::deadline_exceeded(format!(
            "command timed out after {timeout}s and was killed"
        )));
    }
    Ok(cri::ExecSyncResponse {
        stdout,
        stderr,
        exit_code: code,
    })
}

/// The CPU and memory node sets of `r`, where given, into a cgroup
/// update's `cpu` object (containers' and pods' alike).
pub(super) fn insert_cpuset(
    r: &cri::LinuxContainerResources,
    cpu: &mut serde_json::Map<String, serde_json::Value>,
) {
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), r.cpuset_cpus.clone().into());
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), r.cpuset_mems.clone().into());
    }
}

/// UpdateContainerResources: the new limits on the container's cgroup.
pub fn update_resources(
    host: &Host,
    id: &str,
    r: &cri::LinuxContainerResources,
) -> Result<(), Status> {
    let meta = read_meta(host, id)
        .ok_or_else(|| Status::not_found(format!("container {id} has no host state")))?;
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), r.cpu_shares.into());
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), r.cpu_quota.into());
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), r.cpu_period.into());
    }
    insert_cpuset(r, &mut cpu);
    let mut mem = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        mem.insert("limit".into(), r.memory_limit_in_bytes.into());
    }
    if r.memory_swap_limit_in_bytes != 0 {
        mem.insert("swap".into(), r.memory_swap_limit_in_bytes.into());
    } else if r.memory_limit_in_bytes > 0 {
        // No swap unless asked for, as at creation (oci_spec): on
        // cgroup v1 a limit above the old memory+swap limit is refused.
        mem.insert("swap".into(), r.memory_limit_in_bytes.into());
    }
    let json = serde_json::json!({ "cpu": cpu, "memory": mem });
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_value(json).map_err(|e| internal("convert the resources", e))?;
    host.cgroups
        .update(&meta.cgroup, &resources)
        .map_err(|e| exec_status("update the container's cgroup", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer line is read without taking the frames after it.
    #[test]
    fn attach_reads_the_answer_line_only() {
        use crisp_core::grpc::Code;
        use crisp_monitor::attach as frame;
        let answer = |reply: &[u8]| {
            let (ours, mut monitor) = UnixStream::pair().unwrap();
            monitor.write_all(reply).unwrap();
            drop(monitor.shutdown(std::net::Shutdown::Write));
            let r = attach_on(ours, "c1");
            let mut asked = [0u8; 7];
            monitor.read_exact(&mut asked).unwrap();
            assert_eq!(&asked, b"attach\n");
            r
        };
        let exit = frame::exit_frame(3);
        let mut s = answer(&[&b"ok\n"[..], &exit].concat()).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, exit);
        let e = answer(b"error too many attached clients\n").unwrap_err();
        assert_eq!(e.code, Code::FailedPrecondition);
        assert!(
            e.message.ends_with("c1: too many attached clients"),
            "{}",
            e.message
        );
        assert_eq!(answer(b"").unwrap_err().code, Code::FailedPrecondition);
        assert_eq!(answer(b"what\n").unwrap_err().code, Code::Internal);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_by_name("SIGUSR1"), Some(10));
        assert_eq!(signal_by_name("usr1"), Some(10));
        assert_eq!(signal_by_name("15"), Some(15));
        assert_eq!(signal_by_name("SIGRTMIN+3"), Some(37));
        assert_eq!(signal_by_name("RTMAX-1"), Some(63));
        assert_eq!(signal_by_name("SIGRTMAX"), Some(64));
        assert_eq!(signal_by_name("SIGCLD"), Some(17));
        assert_eq!(signal_by_name("SIGNOPE"), None);
        assert_eq!(signal_by_name("99"), None);
        // Every name of the CRI enum is a signal.
        for v in 1..=cri::Signal::Sigrtmax as i32 {
            let s = cri::Signal::try_from(v).unwrap();
            assert!(signal_by_name(s.as_str_name()).is_some(), "{s:?}");
        }
        assert_eq!(signal_by_name("SIGRTMINPLUS1"), Some(35));
        assert_eq!(signal_by_name("SIGRTMAXMINUS14"), Some(50));
    }

    #[test]
    fn stop_signal_choice() {
        let term = nix::sys::signal::Signal::SIGTERM as i32;
        assert_eq!(signal_number(0, ""), term);
        assert_eq!(signal_number(0, "SIGQUIT"), 3);
        assert_eq!(signal_number(cri::Signal::Sigusr2 as i32, "SIGQUIT"), 12);
        assert_eq!(signal_number(0, "bogus"), term);
        assert_eq!(cri_signal(""), 0);
        assert_eq!(cri_signal("SIGUSR1"), cri::Signal::Sigusr1 as i32);
        assert_eq!(cri_signal("17"), cri::Signal::Sigchld as i32);
        assert_eq!(cri_signal("RTMIN+1"), cri::Signal::Sigrtminplus1 as i32);
    }
}
