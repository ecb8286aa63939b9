//! From a CRI container request to an OCI runtime spec, with the defaults
//! containerd applies (capabilities, masked and read-only paths, mounts,
//! devices, seccomp RuntimeDefault).
//!
//! The spec is assembled as the OCI JSON document (the format the runtime
//! spec defines) and parsed into `oci_spec`'s types, which validates it.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crisp_executor::{seccomp, Error, Spec};
use crisp_proto::cri;
use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};

/// Paths of the pod's namespaces a container joins.
#[derive(Clone, Debug, Default)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Set when the pod shares one PID namespace among its containers.
    pub pid: Option<PathBuf>,
}

/// Files crispd writes per pod and bind-mounts into each container.
#[derive(Clone, Debug, Default)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
}

/// Everything the spec depends on besides the request itself.
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a cri::PodSandboxConfig,
    pub image: &'a ImageConfiguration,
    /// The mounted root filesystem.
    pub rootfs: &'a Path,
    pub namespaces: &'a PodNamespaces,
    pub files: &'a PodFiles,
    /// The container's cgroup, relative to the cgroup root(s).
    pub cgroup_path: &'a str,
}

/// containerd's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// runc's (and containerd's) default masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build the OCI spec for a container.
pub fn container_spec(input: &SpecInput<'_>) -> Result<Spec, Error> {
    let cfg = input.config;
    let linux = cfg.linux.as_ref();
    let sc = linux
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    let res = linux.and_then(|l| l.resources.clone()).unwrap_or_default();
    let privileged = sc.privileged;
    let image = input.image.config().clone().unwrap_or_default();
    let ns_opts = sc.namespace_options.clone().unwrap_or_default();
    let host_network = ns_opts.network == cri::NamespaceMode::Node as i32;

    let args = command_line(cfg, image.entrypoint().as_deref(), image.cmd().as_deref())?;
    let user = resolve_user(input.rootfs, &sc, image.user().as_deref().unwrap_or(""))?;
    let hostname = if host_network {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    } else {
        input.sandbox.hostname.clone()
    };

    // Environment: defaults, then the image's, then the request's; a later
    // value replaces an earlier one of the same name, in place.
    let mut env: Vec<String> = vec![DEFAULT_PATH_ENV.to_string()];
    if !hostname.is_empty() {
        merge_env(&mut env, &format!("HOSTNAME={hostname}"));
    }
    if cfg.tty {
        merge_env(&mut env, "TERM=xterm");
    }
    for e in image.env().iter().flatten() {
        merge_env(&mut env, e);
    }
    for kv in &cfg.envs {
        merge_env(&mut env, &format!("{}={}", kv.key, kv.value));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }

    let cwd = if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else {
        image
            .working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };

    let caps = capabilities(&sc)?;
    let cap_names: Vec<String> = caps.to_vec();
    let ambient: Vec<String> = sc
        .capabilities
        .as_ref()
        .map(|c| {
            c.add_ambient_capabilities
                .iter()
                .map(|n| cap_name(n))
                .collect()
        })
        .unwrap_or_default();
    let cap_set: HashSet<String> = caps.iter().cloned().collect();

    let (mounts, root_propagation) = mounts(input, &sc, privileged)?;
    let (devices, device_rules) = devices(cfg, privileged)?;

    let mut namespaces = vec![json!({"type": "mount"})];
    let pod_opts = input
        .sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.namespace_options.clone())
        .unwrap_or_default();
    let node = cri::NamespaceMode::Node as i32;
    let mut ns = |typ: &str, mode: i32, pod_mode: i32, path: &Option<PathBuf>| {
        if mode == node {
            return;
        }
        match path {
            Some(p) if mode != cri::NamespaceMode::Container as i32 => {
                namespaces.push(json!({"type": typ, "path": p}))
            }
            // The pod uses the host's namespace and the container did not
            // repeat `NODE`: it shares the pod's, the host's, as containerd
            // joins whatever namespace the sandbox is in.
            None if mode == cri::NamespaceMode::Pod as i32 && pod_mode == node => {}
            _ => namespaces.push(json!({"type": typ})),
        }
    };
    let pods = input.namespaces;
    ns("network", ns_opts.network, pod_opts.network, &pods.net);
    ns("ipc", ns_opts.ipc, pod_opts.ipc, &pods.ipc);
    ns("uts", ns_opts.network, pod_opts.network, &pods.uts);
    ns("pid", ns_opts.pid, pod_opts.pid, &pods.pid);

    let seccomp = if privileged {
        None
    } else {
        seccomp_profile(&sc, &cap_set)?
    };

    let (masked, readonly): (Vec<String>, Vec<String>) = if privileged {
        (vec![], vec![])
    } else {
        (
            if sc.masked_paths.is_empty() {
                DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
            } else {
                sc.masked_paths.clone()
            },
            if sc.readonly_paths.is_empty() {
                DEFAULT_READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                sc.readonly_paths.clone()
            },
        )
    };

    let sysctl: serde_json::Map<String, Value> = input
        .sandbox
        .linux
        .as_ref()
        .map(|l| {
            l.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect()
        })
        .unwrap_or_default();

    let mut doc = json!({
        "ociVersion": "1.1.0",
        "process": {
            "terminal": cfg.tty,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": user.additional_gids,
            },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": cap_names,
                "effective": cap_names,
                "permitted": cap_names,
                "inheritable": [],
                "ambient": ambient,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": sc.no_new_privs,
            "oomScoreAdj": res.oom_score_adj,
        },
        "root": {"path": input.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": cfg.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            "io.crisp.container-id": input.container_id,
        },
        "linux": {
            "namespaces": namespaces,
            "devices": devices,
            "resources": resources(&res, device_rules),
            "cgroupsPath": input.cgroup_path,
            "maskedPaths": masked,
            "readonlyPaths": readonly,
            "sysctl": sysctl,
        },
    });
    if !hostname.is_empty() {
        doc["hostname"] = json!(hostname);
    }
    if let Some(p) = root_propagation {
        doc["linux"]["rootfsPropagation"] = json!(p);
    }
    if let Some(s) = seccomp {
        doc["linux"]["seccomp"] =
            serde_json::to_value(s).map_err(|e| Error::Invalid(format!("seccomp profile: {e}")))?;
    }
    serde_json::from_value(doc).map_err(|e| Error::Invalid(format!("building the OCI spec: {e}")))
}

/// kubelet's rules: `command` replaces the image's entrypoint and drops its
/// cmd; `args` replace the cmd.
pub fn command_line(
    cfg: &cri::ContainerConfig,
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
) -> Result<Vec<String>, Error> {
    let mut argv: Vec<String> = if !cfg.command.is_empty() {
        cfg.command.clone()
    } else {
        entrypoint.unwrap_or(&[]).to_vec()
    };
    if !cfg.args.is_empty() {
        argv.extend(cfg.args.iter().cloned());
    } else if cfg.command.is_empty() {
        argv.extend(cmd.unwrap_or(&[]).iter().cloned());
    }
    if argv.is_empty() {
        return Err(Error::Invalid("no command specified".into()));
    }
    Ok(argv)
}

fn merge_env(env: &mut Vec<String>, kv: &str) {
    let name = kv.split('=').next().unwrap_or(kv);
    match env.iter_mut().find(|e| e.split('=').next() == Some(name)) {
        Some(slot) => *slot = kv.to_string(),
        None => env.push(kv.to_string()),
    }
}

/// The process's identity.
#[derive(Debug, PartialEq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_in_root(root: &Path, path: &str) -> String {
    fs::read_to_string(crisp_executor::resolve_in_root(root, Path::new(path))).unwrap_or_default()
}

fn passwd(root: &Path) -> Vec<PasswdEntry> {
    read_in_root(root, "/etc/passwd")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then_some(())?;
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f
                    .get(5)
                    .filter(|h| !h.is_empty())
                    .unwrap_or(&"/")
                    .to_string(),
            })
        })
        .collect()
}

fn groups(root: &Path) -> Vec<GroupEntry> {
    read_in_root(root, "/etc/group")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3).then_some(())?;
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The user as containerd resolves it: `run_as_username` (must exist),
/// else `run_as_user` (its primary group from the image's /etc/passwd,
/// else 0), else the image's `User` (`name`, `uid`, `name:group`,
/// `uid:gid`); `run_as_group` overrides the group. Additional groups: the
/// primary one, then (policy Merge, the default) the groups of the image's
/// /etc/group that list the user by name, except one named after the user
/// (containerd's `WithAdditionalGIDs`), then `supplemental_groups`; with
/// policy Strict, the image's /etc/group is not read for them. The kernel
/// keeps the set sorted; the spec and ContainerStatus.user keep this order.
pub fn resolve_user(
    root: &Path,
    sc: &cri::LinuxContainerSecurityContext,
    image_user: &str,
) -> Result<User, Error> {
    let pw = passwd(root);
    let gr = groups(root);
    let by_uid = |uid: u32| pw.iter().find(|e| e.uid == uid);
    let by_name = |n: &str| pw.iter().find(|e| e.name == n);
    // Both set: the name wins, as in containerd's generateUserString.
    let (uid, mut gid, name, home) = if !sc.run_as_username.is_empty() {
        let e = by_name(&sc.run_as_username).ok_or_else(|| {
            Error::Invalid(format!(
                "user {:?} not found in the image's /etc/passwd",
                sc.run_as_username
            ))
        })?;
        (e.uid, e.gid, Some(e.name.clone()), e.home.clone())
    } else if let Some(u) = &sc.run_as_user {
        let uid = u32::try_from(u.value)
            .map_err(|_| Error::Invalid(format!("run_as_user {} out of range", u.value)))?;
        match by_uid(uid) {
            Some(e) => (uid, e.gid, Some(e.name.clone()), e.home.clone()),
            None => (uid, 0, None, "/".to_string()),
        }
    } else {
        let (u, g) = match image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image_user, None),
        };
        let (uid, gid, name, home) = if u.is_empty() {
            match by_uid(0) {
                Some(e) => (0, e.gid, Some(e.name.clone()), e.home.clone()),
                None => (0, 0, None, "/root".to_string()),
            }
        } else if let Ok(uid) = u.parse::<u32>() {
            match by_uid(uid) {
                Some(e) => (uid, e.gid, Some(e.name.clone()), e.home.clone()),
                None => (uid, 0, None, "/".to_string()),
            }
        } else {
            let e = by_name(u).ok_or_else(|| {
                Error::Invalid(format!(
                    "image user {u:?} not found in the image's /etc/passwd"
                ))
            })?;
            (e.uid, e.gid, Some(e.name.clone()), e.home.clone())
        };
        let gid = match g {
            None | Some("") => gid,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => gr
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "image group {g:?} not found in the image's /etc/group"
                        ))
                    })?,
            },
        };
        (uid, gid, name, home)
    };
    if let Some(g) = &sc.run_as_group {
        gid = u32::try_from(g.value)
            .map_err(|_| Error::Invalid(format!("run_as_group {} out of range", g.value)))?;
    }
    let mut additional = vec![gid];
    let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
    if let (Some(name), false) = (&name, strict) {
        for g in &gr {
            if g.name != *name && g.members.iter().any(|m| m == name) {
                additional.push(g.gid);
            }
        }
    }
    for g in &sc.supplemental_groups {
        additional.push(
            u32::try_from(*g)
                .map_err(|_| Error::Invalid(format!("supplemental group {g} out of range")))?,
        );
    }
    let mut seen = HashSet::new();
    additional.retain(|g| seen.insert(*g));
    Ok(User {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}

/// `net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN`.
fn cap_name(n: &str) -> String {
    let up = n.trim().to_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Every capability both oci-spec and the running kernel know.
fn all_capabilities() -> Vec<String> {
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let mut all: Vec<String> = caps::all()
        .into_iter()
        .filter(|c| u32::from(c.index()) <= last)
        .map(|c| c.to_string())
        .filter(|n| oci_spec::runtime::Capability::from_str(n.trim_start_matches("CAP_")).is_ok())
        .collect();
    all.sort();
    all
}

/// The capability set, as containerd computes it: the default set (all
/// when privileged), "ALL" in add or drop first, then single adds, then
/// single drops.
pub fn capabilities(sc: &cri::LinuxContainerSecurityContext) -> Result<Vec<String>, Error> {
    if sc.privileged {
        return Ok(all_capabilities());
    }
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let Some(c) = &sc.capabilities else {
        return Ok(caps);
    };
    let is_all = |n: &String| n.eq_ignore_ascii_case("ALL");
    if c.add_capabilities.iter().any(is_all) {
        caps = all_capabilities();
    }
    if c.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    for a in c.add_capabilities.iter().filter(|n| !is_all(n)) {
        let n = cap_name(a);
        if oci_spec::runtime::Capability::from_str(n.trim_start_matches("CAP_")).is_err() {
            return Err(Error::Invalid(format!("unknown capability {a:?}")));
        }
        if !caps.contains(&n) {
            caps.push(n);
        }
    }
    for d in c.drop_capabilities.iter().filter(|n| !is_all(n)) {
        let n = cap_name(d);
        caps.retain(|c| *c != n);
    }
    Ok(caps)
}

fn seccomp_profile(
    sc: &cri::LinuxContainerSecurityContext,
    caps: &HashSet<String>,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, Error> {
    use cri::security_profile::ProfileType;
    let localhost = |path: &str| -> Result<Option<oci_spec::runtime::LinuxSeccomp>, Error> {
        if !Path::new(path).is_absolute() {
            return Err(Error::Invalid(format!(
                "seccomp profile {path:?}: not an absolute path"
            )));
        }
        seccomp::load_profile(Path::new(path), caps).map(Some)
    };
    match &sc.seccomp {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Some(seccomp::runtime_default(caps))),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(Error::Invalid(format!(
                "unknown seccomp profile type {}",
                p.profile_type
            ))),
        },
        // The deprecated string form; empty means unconfined.
        #[allow(deprecated)]
        None => match sc.seccomp_profile_path.as_str() {
            "runtime/default" | "docker/default" => Ok(Some(seccomp::runtime_default(caps))),
            "" | "unconfined" => Ok(None),
            p => match p.strip_prefix("localhost/") {
                Some(path) => localhost(path),
                None => Err(Error::Invalid(format!("unknown seccomp profile {p:?}"))),
            },
        },
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": typ, "source": source, "options": options})
}

/// Mounts: containerd's defaults (those a request mount replaces, and all
/// under /dev when the request mounts /dev, left out), the pod's
/// hostname/hosts/resolv.conf, then the request's mounts, parents first.
/// Also the rootfs propagation their propagation needs.
fn mounts(
    input: &SpecInput<'_>,
    sc: &cri::LinuxContainerSecurityContext,
    privileged: bool,
) -> Result<(Vec<Value>, Option<&'static str>), Error> {
    let sys_opts: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev", "rw"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let defaults = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", sys_opts),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ];
    let requested: Vec<&str> = input
        .config
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    let dev_requested = requested.iter().any(|d| Path::new(d) == Path::new("/dev"));
    let mut out: Vec<Value> = defaults
        .into_iter()
        .filter(|m| {
            let d = Path::new(m["destination"].as_str().unwrap_or(""));
            let replaced = requested.iter().any(|r| Path::new(r) == d);
            !(replaced || dev_requested && d.starts_with("/dev"))
        })
        .collect();

    let rw = if sc.readonly_rootfs { "ro" } else { "rw" };
    for (dest, file) in [
        ("/etc/hostname", &input.files.hostname),
        ("/etc/hosts", &input.files.hosts),
        ("/etc/resolv.conf", &input.files.resolv_conf),
    ] {
        if let Some(f) = file {
            if !requested.iter().any(|r| Path::new(r) == Path::new(dest)) {
                out.push(json!({
                    "destination": dest, "type": "bind", "source": f,
                    "options": ["rbind", "rprivate", rw],
                }));
            }
        }
    }

    let mut extra: Vec<&cri::Mount> = input.config.mounts.iter().collect();
    extra.sort_by_key(|m| Path::new(&m.container_path).components().count());
    let mut propagation = None;
    for m in extra {
        if !Path::new(&m.container_path).is_absolute() {
            return Err(Error::Invalid(format!(
                "mount {:?}: container path is not absolute",
                m.container_path
            )));
        }
        let src = Path::new(&m.host_path);
        if !src.exists() {
            // containerd creates a missing host path as a directory.
            fs::create_dir_all(src)
                .map_err(|e| Error::io(format!("mount source {}", src.display()), e))?;
        }
        let prop = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationHostToContainer) => {
                propagation.get_or_insert("rslave");
                "rslave"
            }
            Ok(cri::MountPropagation::PropagationBidirectional) => {
                propagation = Some("rshared");
                "rshared"
            }
            _ => "rprivate",
        };
        // `ro` makes only the bind itself read-only (submounts stay as
        // they are); `rro` (OCI runtime spec 1.1) every mount below it too.
        let access = match (m.recursive_read_only, m.readonly) {
            (true, _) => "rro",
            (false, true) => "ro",
            (false, false) => "rw",
        };
        out.push(json!({
            "destination": m.container_path, "type": "bind", "source": m.host_path,
            "options": ["rbind", prop, access],
        }));
    }
    Ok((out, propagation))
}

/// The device cgroup rules containerd (with runc's defaults) applies.
fn default_device_rules() -> Vec<Value> {
    let mut v = vec![json!({"allow": false, "access": "rwm"})];
    for typ in ["c", "b"] {
        v.push(json!({"allow": true, "type": typ, "access": "m"}));
    }
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
        (10, Some(200)),
    ] {
        v.push(
            json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"}),
        );
    }
    v
}

fn device_json(container_path: &str, host: &Path) -> Result<Option<(Value, Value, String)>, Error> {
    let md = fs::metadata(host).map_err(|e| Error::io(format!("device {}", host.display()), e))?;
    let typ = if md.file_type().is_char_device() {
        "c"
    } else if md.file_type().is_block_device() {
        "b"
    } else {
        return Ok(None);
    };
    let rdev = md.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    Ok(Some((
        json!({
            "path": container_path, "type": typ, "major": major, "minor": minor,
            "fileMode": md.permissions().mode() & 0o777, "uid": md.uid(), "gid": md.gid(),
        }),
        json!({"allow": true, "type": typ, "major": major, "minor": minor}),
        typ.to_string(),
    )))
}

/// Every device node under the host's /dev (privileged containers).
fn host_devices(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let skip = [
                "pts",
                "shm",
                "mqueue",
                "fd",
                ".lxc",
                ".lxd-mounts",
                "hugepages",
            ];
            if depth < 3
                && !skip
                    .iter()
                    .any(|s| p.file_name() == Some(std::ffi::OsStr::new(s)))
            {
                host_devices(&p, depth + 1, out);
            }
        } else if (ft.is_char_device() || ft.is_block_device()) && p != Path::new("/dev/console") {
            out.push(p);
        }
    }
}

/// linux.devices and the device cgroup rules.
fn devices(
    cfg: &cri::ContainerConfig,
    privileged: bool,
) -> Result<(Vec<Value>, Vec<Value>), Error> {
    let mut devs = Vec::new();
    let mut rules = if privileged {
        vec![json!({"allow": true, "access": "rwm"})]
    } else {
        default_device_rules()
    };
    if privileged {
        let mut paths = Vec::new();
        host_devices(Path::new("/dev"), 0, &mut paths);
        paths.sort();
        for p in paths {
            if let Ok(Some((d, _, _))) = device_json(&p.to_string_lossy(), &p) {
                devs.push(d);
            }
        }
    }
    for d in &cfg.devices {
        let host = Path::new(&d.host_path);
        let cpath = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        // A directory stands for every device node under it (containerd).
        let nodes = if host.is_dir() {
            let mut found = Vec::new();
            host_devices(host, 0, &mut found);
            found.sort();
            found
                .into_iter()
                .filter_map(|p| {
                    let inside = Path::new(cpath).join(p.strip_prefix(host).ok()?);
                    Some((inside.to_string_lossy().into_owned(), p))
                })
                .collect()
        } else {
            vec![(cpath.clone(), host.to_path_buf())]
        };
        for (cpath, host) in &nodes {
            let Some((dev, mut rule, _)) = device_json(cpath, host)? else {
                continue;
            };
            devs.retain(|x: &Value| x["path"] != dev["path"]);
            devs.push(dev);
            let perms = if d.permissions.is_empty() {
                "rwm"
            } else {
                d.permissions.as_str()
            };
            rule["access"] = json!(perms);
            rules.push(rule);
        }
    }
    Ok((devs, rules))
}

fn resources(res: &cri::LinuxContainerResources, device_rules: Vec<Value>) -> Value {
    let mut cpu = serde_json::Map::new();
    if res.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(res.cpu_shares));
    }
    if res.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(res.cpu_quota));
    }
    if res.cpu_period > 0 {
        cpu.insert("period".into(), json!(res.cpu_period));
    }
    if !res.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(res.cpuset_cpus));
    }
    if !res.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(res.cpuset_mems));
    }
    let mut memory = serde_json::Map::new();
    if res.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), json!(res.memory_limit_in_bytes));
        // No swap unless asked for: memory+swap = memory.
        let swap = if res.memory_swap_limit_in_bytes != 0 {
            res.memory_swap_limit_in_bytes
        } else {
            res.memory_limit_in_bytes
        };
        memory.insert("swap".into(), json!(swap));
    }
    let mut r = json!({"devices": device_rules});
    if !cpu.is_empty() {
        r["cpu"] = Value::Object(cpu);
    }
    if !memory.is_empty() {
        r["memory"] = Value::Object(memory);
    }
    if !res.hugepage_limits.is_empty() {
        r["hugepageLimits"] = res
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
    }
    if !res.unified.is_empty() {
        r["unified"] = json!(res.unified);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(command: &[&str], args: &[&str]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_and_args_like_kubelet() {
        let ep = v(&["/ep", "-x"]);
        let cmd = v(&["default"]);
        let run = |c: &[&str], a: &[&str]| command_line(&cfg(c, a), Some(&ep), Some(&cmd)).unwrap();
        assert_eq!(run(&[], &[]), ["/ep", "-x", "default"]);
        assert_eq!(run(&[], &["a"]), ["/ep", "-x", "a"]);
        assert_eq!(run(&["/c"], &[]), ["/c"]);
        assert_eq!(run(&["/c"], &["a"]), ["/c", "a"]);
        assert!(command_line(&cfg(&[], &[]), None, None).is_err());
    }

    #[test]
    fn env_merge_replaces_in_place() {
        let mut env = v(&["PATH=/bin", "A=1"]);
        merge_env(&mut env, "PATH=/usr/bin");
        merge_env(&mut env, "B=2");
        assert_eq!(env, ["PATH=/usr/bin", "A=1", "B=2"]);
    }

    #[test]
    fn capabilities_add_drop_all() {
        let mut sc = cri::LinuxContainerSecurityContext::default();
        assert_eq!(capabilities(&sc).unwrap().len(), DEFAULT_CAPABILITIES.len());
        sc.capabilities = Some(cri::Capability {
            add_capabilities: v(&["sys_admin"]),
            drop_capabilities: v(&["CAP_CHOWN", "KILL"]),
            ..Default::default()
        });
        let c = capabilities(&sc).unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        assert!(!c.contains(&"CAP_KILL".to_string()));
        sc.capabilities = Some(cri::Capability {
            add_capabilities: v(&["NET_ADMIN"]),
            drop_capabilities: v(&["ALL"]),
            ..Default::default()
        });
        assert_eq!(capabilities(&sc).unwrap(), ["CAP_NET_ADMIN"]);
        sc.capabilities = Some(cri::Capability {
            add_capabilities: v(&["ALL"]),
            drop_capabilities: v(&["CHOWN"]),
            ..Default::default()
        });
        let c = capabilities(&sc).unwrap();
        assert!(c.len() > 30 && !c.contains(&"CAP_CHOWN".to_string()));
    }

    fn rootfs_with_users() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "crisp-spec-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
        )
        .unwrap();
        fs::write(
            dir.join("etc/group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\naudio:x:29:alice\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn users_resolve_like_containerd() {
        let root = rootfs_with_users();
        let mut sc = cri::LinuxContainerSecurityContext::default();
        let u = resolve_user(&root, &sc, "").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone(), u.home.as_str()),
            (0, 0, vec![0], "/root")
        );
        let u = resolve_user(&root, &sc, "alice").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone()),
            (1000, 1000, vec![1000, 10, 29])
        );
        let u = resolve_user(&root, &sc, "1000:audio").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
        let u = resolve_user(&root, &sc, "4242:7").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (4242, 7, vec![7]));
        assert!(resolve_user(&root, &sc, "mallory").is_err());
        sc.run_as_user = Some(cri::Int64Value { value: 65534 });
        sc.supplemental_groups = vec![5, 65534];
        let u = resolve_user(&root, &sc, "alice").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids),
            (65534, 65534, vec![65534, 5])
        );
        // The name wins over the uid.
        sc.run_as_username = "alice".into();
        assert_eq!(resolve_user(&root, &sc, "").unwrap().uid, 1000);
        sc.run_as_user = None;
        sc.run_as_group = Some(cri::Int64Value { value: 3 });
        sc.supplemental_groups = vec![];
        sc.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
        let u = resolve_user(&root, &sc, "").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 3, vec![3]));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn full_spec_from_a_request() {
        let root = rootfs_with_users();
        let mut config = cfg(&[], &["hello"]);
        config.envs = vec![cri::KeyValue {
            key: "A".into(),
            value: "b".into(),
        }];
        config.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: root.join("etc").to_string_lossy().into_owned(),
            readonly: true,
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }];
        config.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 1 << 25,
                cpu_shares: 512,
                oom_score_adj: 100,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_username: "alice".into(),
                seccomp: Some(cri::SecurityProfile::default()),
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        });
        let sandbox = cri::PodSandboxConfig {
            hostname: "pod1".into(),
            ..Default::default()
        };
        let image: ImageConfiguration = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/echo"], "Cmd": ["default"], "Env": ["A=image", "B=c"], "WorkingDir": "/w"},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap();
        let namespaces = PodNamespaces {
            net: Some("/proc/1/ns/net".into()),
            ..Default::default()
        };
        let input = SpecInput {
            container_id: "c1",
            config: &config,
            sandbox: &sandbox,
            image: &image,
            rootfs: &root,
            namespaces: &namespaces,
            files: &PodFiles::default(),
            cgroup_path: "crisp/c1",
        };
        let spec = container_spec(&input).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &v(&["/bin/echo", "hello"]));
        let env = p.env().as_ref().unwrap();
        assert!(env.contains(&"A=b".to_string()) && env.contains(&"B=c".to_string()));
        assert!(
            env.contains(&"HOSTNAME=pod1".to_string())
                && env.contains(&"HOME=/home/alice".to_string())
        );
        assert_eq!(p.cwd(), Path::new("/w"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.oom_score_adj(), Some(100));
        let l = spec.linux().as_ref().unwrap();
        assert!(l.seccomp().is_some());
        assert_eq!(l.rootfs_propagation().as_deref(), Some("rslave"));
        let ns: Vec<_> = l
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| (format!("{:?}", n.typ()), n.path().is_some()))
            .collect();
        assert!(ns.contains(&("Network".into(), true)));
        assert!(ns.contains(&("Pid".into(), false)));
        assert!(ns.contains(&("Mount".into(), false)));
        // The pod has its own IPC namespace, the container a new one
        // (the test gives no path for the pod's).
        assert!(ns.contains(&("Ipc".into(), false)));
        let mem = l.resources().as_ref().unwrap().memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(1 << 25), Some(1 << 25)));
        assert_eq!(
            l.masked_paths().as_ref().unwrap().len(),
            DEFAULT_MASKED_PATHS.len()
        );
        let data = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/data"))
            .unwrap();
        assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert_eq!(spec.hostname().as_deref(), Some("pod1"));

        // A host-network pod: its containers share the host's network
        // namespace, even when their own options leave it at POD; their
        // PID namespace is still their own.
        let mut host_net = sandbox.clone();
        let opts = host_net
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options
            .get_or_insert_with(Default::default);
        opts.network = cri::NamespaceMode::Node as i32;
        let no_paths = PodNamespaces::default();
        let input = SpecInput {
            sandbox: &host_net,
            namespaces: &no_paths,
            ..input
        };
        let spec = container_spec(&input).unwrap();
        let types: Vec<String> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| format!("{:?}", n.typ()))
            .collect();
        assert!(!types.contains(&"Network".to_string()), "{types:?}");
        assert!(types.contains(&"Pid".to_string()), "{types:?}");
        fs::remove_dir_all(root).unwrap();
    }
}
