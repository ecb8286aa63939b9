//! The executor against the real kernel: a busybox root filesystem on an
//! overlay, containers built with `container_spec` and run with `create`,
//! `start` and `waitpid`. Needs root and Debian's `busybox-static`
//! (scripts/install-test-deps), so every test is `#[ignore]`d: a plain
//! `cargo test` lists them as ignored, and scripts/test runs them as root
//! with `-- --include-ignored`, where a missing prerequisite fails the test.
//! Every test removes its mounts, cgroup and files, and checks that nothing
//! is left.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use crisp_proto::cri;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxPidsBuilder, Spec};
use serde_json::json;

use crisp_executor::cgroup::{self, Cgroups};
use crisp_executor::rootfs::{self, Overlay};
use crisp_executor::Stdio;

use crate::oci_spec::{container_spec, PodFiles, PodNamespaces, SpecInput};

const BUSYBOX: &str = "/bin/busybox";

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "{BUSYBOX} missing (Debian busybox-static; scripts/install-test-deps)"
        ));
    }
    None
}

/// Fails the test when it cannot run here: these tests are ignored unless
/// asked for, and one asked for must not pass without running.
macro_rules! require_root {
    () => {
        if let Some(reason) = skip_reason() {
            panic!("this test needs root and {BUSYBOX}: {reason}");
        }
    };
}

/// The fixture of a test that needs root and busybox (see `require_root`).
fn fixture() -> Fixture {
    require_root!();
    Fixture::new()
}

/// A busybox rootfs (the overlay's only lower layer), the overlay mounted
/// on it, and a cgroup path; all removed on drop, and checked to be gone.
struct Fixture {
    dir: PathBuf,
    rootfs: PathBuf,
    cgroup_path: String,
    files: PodFiles,
}

static N: AtomicU32 = AtomicU32::new(0);

impl Fixture {
    fn new() -> Self {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("crisp-exec-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let lower = dir.join("lower");
        for d in [
            "bin",
            "etc",
            "proc",
            "sys",
            "dev",
            "tmp",
            "root",
            "usr/bin",
            "home/nobody",
        ] {
            fs::create_dir_all(lower.join(d)).unwrap();
        }
        let status = std::process::Command::new(BUSYBOX)
            .args(["--install", "-s"])
            .arg(lower.join("bin"))
            .status()
            .unwrap();
        assert!(status.success(), "busybox --install");
        // The links point at the binary's real path (/usr/bin/busybox on a
        // merged-/usr system): put it there in the rootfs.
        let target = fs::read_link(lower.join("bin/sh")).unwrap();
        let dest = lower.join(target.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(BUSYBOX, &dest).unwrap();
        fs::write(
            lower.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            lower.join("etc/group"),
            "root:x:0:\nusers:x:100:nobody\nnobody:x:65534:\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/null", lower.join("etc/null-link")).unwrap();

        let rootfs = dir.join("rootfs");
        rootfs::mount_overlay(&Overlay {
            lower: vec![lower],
            upper: dir.join("upper"),
            work: dir.join("work"),
            target: rootfs.clone(),
        })
        .expect("mount overlay");
        assert!(crisp_executor::is_mounted(&rootfs));

        let pod = dir.join("pod");
        fs::create_dir_all(&pod).unwrap();
        fs::write(pod.join("hostname"), "pod-test\n").unwrap();
        fs::write(
            pod.join("hosts"),
            "127.0.0.1 localhost\n10.9.8.7 pod-test\n",
        )
        .unwrap();
        fs::write(pod.join("resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
        Fixture {
            files: PodFiles {
                hostname: Some(pod.join("hostname")),
                hosts: Some(pod.join("hosts")),
                resolv_conf: Some(pod.join("resolv.conf")),
            },
            cgroup_path: format!("crisp-test-{}-{n}", std::process::id()),
            dir,
            rootfs,
        }
    }

    fn spec(&self, config: &cri::ContainerConfig) -> Spec {
        let sandbox = cri::PodSandboxConfig {
            hostname: "pod-test".into(),
            ..Default::default()
        };
        let image: ImageConfiguration = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin:/usr/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": []},
        }))
        .unwrap();
        container_spec(&SpecInput {
            container_id: "test",
            config,
            sandbox: &sandbox,
            image: &image,
            rootfs: &self.rootfs,
            namespaces: &PodNamespaces::default(),
            files: &self.files,
            cgroup_path: &self.cgroup_path,
        })
        .expect("container_spec")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let cg = cgroup::detect().unwrap();
        let cg_removed = cg.remove(&self.cgroup_path);
        let left_cgroups: Vec<PathBuf> = cg
            .procs_files(&self.cgroup_path)
            .into_iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .filter(|d| d.exists())
            .collect();
        rootfs::unmount(&self.rootfs).unwrap();
        rootfs::unmount(&self.rootfs).expect("unmount is idempotent");
        let mounted = crisp_executor::is_mounted(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
        if !thread::panicking() {
            cg_removed.expect("remove cgroup");
            assert!(
                left_cgroups.is_empty(),
                "cgroup directories left: {left_cgroups:?}"
            );
            assert!(!mounted, "mounts left under {}", self.dir.display());
        }
    }
}

/// `o`'s stdout contains `want` (shown when it does not).
fn assert_stdout_has(o: &Outcome, want: &str) {
    assert!(o.stdout.contains(want), "stdout: {}", o.stdout);
}

/// `o`'s stderr contains `want` (shown when it does not).
fn assert_stderr_has(o: &Outcome, want: &str) {
    assert!(o.stderr.contains(want), "stderr: {}", o.stderr);
}

/// A container running `script` with `sh -c`.
fn sh(script: &str) -> cri::ContainerConfig {
    config(&["sh", "-c", script])
}

fn config(command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "test".into(),
            attempt: 0,
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(Default::default()),
            security_context: Some(cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile::default()), // RuntimeDefault
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

fn sc(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux.as_mut().unwrap().security_context.as_mut().unwrap()
}

fn res(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    c.linux.as_mut().unwrap().resources.as_mut().unwrap()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

fn reader(fd: OwnedFd) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = fs::File::from(fd).read_to_string(&mut s);
        s
    })
}

struct Outcome {
    status: WaitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn code(&self) -> i32 {
        match self.status {
            WaitStatus::Exited(_, c) => c,
            other => panic!("not exited: {other:?} (stderr: {})", self.stderr),
        }
    }
}

/// Create a container of `spec` with its stdout and stderr on new pipes;
/// also returns their read ends.
fn create_piped(
    spec: &Spec,
) -> (
    Result<crisp_executor::Created, crisp_executor::Error>,
    OwnedFd,
    OwnedFd,
) {
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let created = crisp_executor::create(
        spec,
        Stdio {
            stdin: None,
            stdout: out_w,
            stderr: err_w,
        },
    );
    (created, out_r, err_r)
}

/// Create, start and wait for a container; collect its output.
fn run_spec(spec: &Spec) -> Outcome {
    let (created, out_r, err_r) = create_piped(spec);
    let created = created.expect("create");
    let pid = created.pid;
    let (out, err) = (reader(out_r), reader(err_r));
    created.start().expect("start");
    let status = waitpid(pid, None).unwrap();
    Outcome {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn run(f: &Fixture, c: &cri::ContainerConfig) -> Outcome {
    run_spec(&f.spec(c))
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn output_and_exit_code() {
    let f = fixture();
    let o = run(&f, &sh("echo out; echo err >&2; exit 3"));
    assert_eq!(o.stdout, "out\n");
    assert_eq!(o.stderr, "err\n");
    assert_eq!(o.code(), 3);
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn env_cwd_user_groups_and_rlimits() {
    let f = fixture();
    let mut c = sh("echo $FOO $HOSTNAME $HOME; pwd; id -u; id -g; id -G; ulimit -n");
    c.envs = vec![cri::KeyValue {
        key: "FOO".into(),
        value: "bar".into(),
    }];
    c.working_dir = "/tmp".into();
    sc(&mut c).run_as_user = Some(cri::Int64Value { value: 65534 });
    sc(&mut c).supplemental_groups = vec![4242];
    let o = run(&f, &c);
    assert_eq!(
        o.stdout, "bar pod-test /home/nobody\n/tmp\n65534\n65534\n65534 100 4242\n1024\n",
        "stderr: {}",
        o.stderr
    );
    assert_eq!(o.code(), 0);
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn hostname_and_pod_files() {
    let f = fixture();
    let o = run(
        &f,
        &sh("hostname; cat /etc/hostname; grep pod-test /etc/hosts; cat /etc/resolv.conf"),
    );
    assert_eq!(
        o.stdout, "pod-test\npod-test\n10.9.8.7 pod-test\nnameserver 127.0.0.53\n",
        "stderr: {}",
        o.stderr
    );
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn dev_and_oom_score_adj() {
    let f = fixture();
    let mut c = sh(
        "cat /proc/self/oom_score_adj; echo x > /dev/null && head -c 3 /dev/zero | wc -c; \
         readlink /dev/ptmx; readlink /dev/fd; ls /dev | tr '\\n' ' '",
    );
    res(&mut c).oom_score_adj = -500;
    let o = run(&f, &c);
    // Lowering below our own needs CAP_SYS_RESOURCE (absent on the build
    // machines): clamped, not refused.
    let own: i32 = fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let can_lower = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap();
    let want = if can_lower { -500 } else { own.max(-500) };
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "stdout: {} stderr: {}", o.stdout, o.stderr);
    assert_eq!(
        lines[..4],
        [want.to_string().as_str(), "3", "pts/ptmx", "/proc/self/fd"],
        "stderr: {}",
        o.stderr
    );
    for d in [
        "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
        "tty", "urandom", "zero",
    ] {
        assert!(
            lines[4].split(' ').any(|x| x == d),
            "no /dev/{d}: {}",
            lines[4]
        );
    }

    res(&mut c).oom_score_adj = 500;
    let o = run(&f, &c);
    assert!(o.stdout.starts_with("500\n"), "{}", o.stdout);
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn terminal_is_the_controlling_tty() {
    let f = fixture();
    let mut c = sh("[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo tty; echo $TERM");
    c.tty = true;
    let spec = f.spec(&c);
    let pty = nix::pty::openpty(None, None).unwrap();
    let (_unused_r, unused_w) = pipe();
    let created = crisp_executor::create(
        &spec,
        Stdio {
            stdin: None,
            // With a terminal, stdout is the replica; the rest is ignored.
            stdout: pty.slave,
            stderr: unused_w,
        },
    )
    .expect("create");
    let pid = created.pid;
    created.start().unwrap();
    let status = waitpid(pid, None).unwrap();
    // Read what the shell wrote (EIO once the replica is closed).
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = nix::unistd::read(&pty.master, &mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(status, WaitStatus::Exited(pid, 0));
    assert_eq!(String::from_utf8_lossy(&out), "tty\r\nxterm\r\n");
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn dropped_capability_is_missing() {
    let f = fixture();
    let script = "touch /f && chown 65534 /f && echo chowned";
    let o = run(&f, &sh(script));
    assert_eq!(
        (o.stdout.as_str(), o.code()),
        ("chowned\n", 0),
        "stderr: {}",
        o.stderr
    );

    let mut c = sh(script);
    sc(&mut c).capabilities = Some(cri::Capability {
        drop_capabilities: vec!["CHOWN".into()],
        ..Default::default()
    });
    let o = run(&f, &c);
    assert_ne!(o.code(), 0);
    assert_stderr_has(&o, "Operation not permitted");
    assert_eq!(o.stdout, "");
}

fn seccomp_status() -> &'static str {
    "grep '^Seccomp:' /proc/self/status; unshare -m true && echo unshared"
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn seccomp_runtime_default_blocks_unshare() {
    let f = fixture();
    let o = run(&f, &sh(seccomp_status()));
    assert!(
        o.stdout.starts_with("Seccomp:\t2\n"),
        "stdout: {}",
        o.stdout
    );
    assert!(!o.stdout.contains("unshared"));
    assert_stderr_has(&o, "Operation not permitted");
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn seccomp_unconfined_allows_unshare() {
    let f = fixture();
    let mut c = sh(seccomp_status());
    // unshare also needs CAP_SYS_ADMIN; with it, only seccomp could refuse.
    sc(&mut c).capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    sc(&mut c).seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    });
    let o = run(&f, &c);
    assert_eq!(o.stdout, "Seccomp:\t0\nunshared\n", "stderr: {}", o.stderr);
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn seccomp_localhost_profile() {
    let f = fixture();
    let profile = f.dir.join("profile.json");
    fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]}"#,
    )
    .unwrap();
    let mut c = sh(&format!("{}; mkdir /tmp/d", seccomp_status()));
    sc(&mut c).capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    sc(&mut c).seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Localhost as i32,
        localhost_ref: profile.to_string_lossy().into_owned(),
    });
    let o = run(&f, &c);
    assert_eq!(o.stdout, "Seccomp:\t2\n");
    assert_stderr_has(&o, "Operation not permitted");
    assert_stderr_has(&o, "not implemented");
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn readonly_rootfs_refuses_writes() {
    let f = fixture();
    let mut c = sh("touch /dev/shm/ok && echo shm; touch /x && echo wrote");
    sc(&mut c).readonly_rootfs = true;
    let o = run(&f, &c);
    assert_eq!(o.stdout, "shm\n");
    assert_stderr_has(&o, "Read-only file system");
    assert!(!f.dir.join("upper/x").exists());
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn masked_and_readonly_paths() {
    let f = fixture();
    let o = run(
        &f,
        &config(&[
            "sh",
            "-c",
            // /proc/kcore is masked too, but not every kernel has it.
            "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l; echo x > /proc/sys/kernel/domainname && echo wrote",
        ]),
    );
    assert_eq!(o.stdout, "0\n0\n", "stderr: {}", o.stderr);
    assert_stderr_has(&o, "Read-only file system");
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn privileged_is_unmasked_with_all_capabilities() {
    let f = fixture();
    let mut c =
        sh("grep -E '^(CapBnd|Seccomp):' /proc/self/status; head -c 4 /proc/timer_list | wc -c");
    sc(&mut c).privileged = true;
    let o = run(&f, &c);
    assert_stdout_has(&o, "Seccomp:\t0");
    assert!(
        o.stdout.ends_with("4\n"),
        "stdout: {} stderr: {}",
        o.stdout,
        o.stderr
    );
    let ours = fs::read_to_string("/proc/self/status").unwrap();
    let bnd = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("CapBnd:"))
            .map(str::to_string)
    };
    assert_eq!(bnd(&o.stdout), bnd(&ours));
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn missing_executable_fails_create() {
    let f = fixture();
    let err = create_piped(&f.spec(&config(&["/bin/nope"])))
        .0
        .err()
        .expect("create must fail");
    assert!(err.to_string().starts_with("exec: /bin/nope"), "{err}");
    assert_eq!(err.errno(), Some(nix::errno::Errno::ENOENT));

    let err = create_piped(&f.spec(&config(&["nope"])))
        .0
        .err()
        .expect("create must fail");
    assert!(err.to_string().contains("not found in $PATH"), "{err}");
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn memory_limit_oom_kill_is_detected() {
    let f = fixture();
    let mut c = sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived");
    res(&mut c).memory_limit_in_bytes = 32 << 20;
    let o = run(&f, &c);
    assert!(!o.stdout.contains("survived"));
    let cg = cgroup::detect().unwrap();
    assert!(cg.oom_killed(&f.cgroup_path), "status {:?}", o.status);
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn pids_limit_is_enforced() {
    let f = fixture();
    let c = sh("i=0; while [ $i -lt 20 ]; do sleep 1000 & i=$((i+1)); done; echo forked all");
    let mut spec = f.spec(&c);
    let linux = spec.linux_mut().as_mut().unwrap();
    let mut r = linux.resources().clone().unwrap();
    r.set_pids(Some(LinuxPidsBuilder::default().limit(5).build().unwrap()));
    linux.set_resources(Some(r));
    let (created, out_r, err_r) = create_piped(&spec);
    let created = created.expect("create");
    let pid = created.pid;
    created.start().unwrap();
    // The shell exits after its loop; the sleeps it managed to fork keep
    // the output pipes open: wait for the shell, then end the container
    // (killing its PID namespace's init kills them all).
    let status = waitpid(pid, None).unwrap();
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let (out, err) = (reader(out_r).join().unwrap(), reader(err_r).join().unwrap());
    assert!(matches!(status, WaitStatus::Exited(_, _)), "{status:?}");
    assert!(err.contains("can't fork"), "stderr: {err} stdout: {out}");
    let usage = cgroup::detect().unwrap().usage(&f.cgroup_path);
    assert!(usage.is_ok());
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn exec_joins_a_running_container() {
    let f = fixture();
    let mut c = config(&["cat"]);
    c.stdin = true;
    let spec = f.spec(&c);
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    let created = crisp_executor::create(
        &spec,
        Stdio {
            stdin: Some(in_r),
            stdout: out_w,
            stderr: err_w,
        },
    )
    .expect("create");
    let pid = created.pid;
    created.start().unwrap();
    let (out, err) = (reader(out_r), reader(err_r));

    // The container's process is in its cgroup, in every hierarchy.
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = format!("/{}", f.cgroup_path);
    let cg = cgroup::detect().unwrap();
    if cg.version() == "v1" {
        for ctrl in ["memory", "pids", "cpu"] {
            let line = own
                .lines()
                .find(|l| {
                    l.split(':')
                        .nth(1)
                        .is_some_and(|c| c.split(',').any(|x| x == ctrl))
                })
                .unwrap_or_else(|| panic!("no {ctrl} line in {own}"));
            assert!(line.ends_with(&want), "{line} (want {want})");
        }
    } else {
        assert!(own.contains(&format!("0::{want}")), "{own}");
    }

    // Exec `args` in the container, its output on new pipes (read ends
    // returned).
    let exec_piped = |args: &[&str]| {
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        let (o_r, o_w) = pipe();
        let (e_r, e_w) = pipe();
        let stdio = Stdio {
            stdin: None,
            stdout: o_w,
            stderr: e_w,
        };
        (crisp_executor::exec(pid, &spec, &process, stdio), o_r, e_r)
    };
    let exec = |args: &[&str]| -> (String, i32) {
        let (p, o_r, e_r) = exec_piped(args);
        let p = p.expect("exec");
        let (o, e) = (reader(o_r), reader(e_r));
        let code = match waitpid(p, None).unwrap() {
            WaitStatus::Exited(_, c) => c,
            other => panic!("{other:?}"),
        };
        let (o, e) = (o.join().unwrap(), e.join().unwrap());
        assert!(e.is_empty(), "exec stderr: {e}");
        (o, code)
    };
    assert_eq!(exec(&["hostname"]), ("pod-test\n".into(), 0));
    assert_eq!(exec(&["cat", "/proc/1/cmdline"]), ("cat\0".into(), 0));
    let (status, code) = exec(&[
        "sh",
        "-c",
        "grep ^Seccomp: /proc/self/status; cat /proc/self/cgroup | grep -c crisp-test",
    ]);
    assert_eq!(code, 0);
    assert!(status.starts_with("Seccomp:\t2\n"), "{status}");

    let e = exec_piped(&["/bin/nope"])
        .0
        .expect_err("exec of a missing binary fails");
    assert!(e.to_string().starts_with("exec: /bin/nope"), "{e}");

    drop(in_w); // cat sees EOF and exits
    assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
    assert_eq!(out.join().unwrap(), "");
    assert_eq!(err.join().unwrap(), "");
}

/// Mount `count` layers at `base/<prefix>NNN/fs`, check the overlay's view
/// (the topmost layer wins), unmount, and check nothing is left.
fn overlay_of_layers(prefix: &str, count: usize) {
    let base = std::env::temp_dir().join(format!(
        "crisp-layers-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut lower = Vec::new();
    for i in 0..count {
        let l = base.join(format!("{prefix}{i:03}/fs"));
        fs::create_dir_all(&l).unwrap();
        fs::write(l.join(format!("f{i}")), format!("{i}")).unwrap();
        fs::write(l.join("top"), format!("{i}")).unwrap();
        lower.push(l);
    }
    lower.reverse(); // topmost first: the last layer written
    let target = base.join("rootfs");
    let mounted = rootfs::mount_overlay(&Overlay {
        lower,
        upper: base.join("upper"),
        work: base.join("work"),
        target: target.clone(),
    });
    let top = fs::read_to_string(target.join("top"));
    let f0 = fs::read_to_string(target.join("f0"));
    rootfs::unmount(&target).unwrap();
    let left = crisp_executor::is_mounted(&base);
    fs::remove_dir_all(&base).unwrap();
    mounted.expect("mount overlay");
    assert_eq!(top.unwrap(), (count - 1).to_string());
    assert_eq!(f0.unwrap(), "0");
    assert!(!left);
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn many_layers_overlay_relative_paths() {
    require_root!();
    // Absolute lowerdirs ~9 KiB, relative to their common parent ~0.5 KiB:
    // mounted from a helper process that chdirs there.
    overlay_of_layers(&format!("{}/l", "d".repeat(120)), 60);
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn many_layers_overlay_new_mount_api() {
    require_root!();
    // Even relative, the list is over a page: one `lowerdir+` at a time.
    overlay_of_layers(&format!("layers/sha256-{}-", "0".repeat(60)), 120);
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn cgroup_v2_interface_on_the_unified_mount() {
    require_root!();
    // On a hybrid host (this one) the v2 tree is at /sys/fs/cgroup/unified;
    // on a pure v2 host at /sys/fs/cgroup.
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|r| Path::new(r).join("cgroup.controllers").exists());
    let Some(root) = root else {
        eprintln!("skipping: no cgroup2 mount");
        return;
    };
    let v2 = cgroup::V2::at(root);
    let path = format!("crisp-test-v2-{}", std::process::id());
    v2.create(&path, &Default::default()).unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    v2.add(&path, child.id() as i32).unwrap();
    let procs = fs::read_to_string(Path::new(root).join(&path).join("cgroup.procs")).unwrap();
    assert!(procs.contains(&child.id().to_string()));
    let usage = v2.usage(&path).unwrap();
    let _ = usage.cpu_usage_ns;
    assert!(!v2.oom_killed(&path));
    child.kill().unwrap();
    child.wait().unwrap();
    v2.remove(&path).unwrap();
    v2.remove(&path).expect("remove is idempotent");
    assert!(!Path::new(root).join(&path).exists());
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn cgroup_limits_are_written() {
    require_root!();
    let cg = cgroup::detect().unwrap();
    let path = format!("crisp-test-limits-{}", std::process::id());
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(json!({
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "memory": {"limit": 67108864, "swap": 67108864},
        "pids": {"limit": 42},
    }))
    .unwrap();
    cg.create(&path, &resources).unwrap();
    let read = |rel: &str| -> Option<String> {
        cg.procs_files(&path)
            .iter()
            .filter_map(|f| fs::read_to_string(f.parent().unwrap().join(rel)).ok())
            .next()
            .map(|s| s.trim().to_string())
    };
    let got: HashMap<&str, Option<String>> = if cg.version() == "v1" {
        [
            ("cpu.shares", read("cpu.shares")),
            ("cpu.cfs_quota_us", read("cpu.cfs_quota_us")),
            ("memory.limit_in_bytes", read("memory.limit_in_bytes")),
            ("pids.max", read("pids.max")),
        ]
        .into_iter()
        .collect()
    } else {
        [
            ("cpu.weight", read("cpu.weight")),
            ("cpu.max", read("cpu.max")),
            ("memory.max", read("memory.max")),
            ("pids.max", read("pids.max")),
        ]
        .into_iter()
        .collect()
    };
    cg.remove(&path).unwrap();
    if cg.version() == "v1" {
        assert_eq!(got["cpu.shares"].as_deref(), Some("512"));
        assert_eq!(got["cpu.cfs_quota_us"].as_deref(), Some("50000"));
        assert_eq!(got["memory.limit_in_bytes"].as_deref(), Some("67108864"));
    } else {
        assert_eq!(got["cpu.weight"].as_deref(), Some("20"));
        assert_eq!(got["cpu.max"].as_deref(), Some("50000 100000"));
        assert_eq!(got["memory.max"].as_deref(), Some("67108864"));
    }
    assert_eq!(got["pids.max"].as_deref(), Some("42"));
}

/// A shell put into `cgroup` (of `cg`) that then starts a background
/// `sleep` and execs another: a process and the child it leaves behind.
/// Returns the shell (now `sleep`) and the background child's pid.
fn daemonizing_process_in(cg: &dyn Cgroups, cgroup: &str) -> (std::process::Child, i32) {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new("/bin/sh")
        .args([
            "-c",
            "read go || exit; sleep 1000 & echo $!; exec sleep 1000",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    if let Err(e) = cg.add(cgroup, child.id() as i32) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("cannot put the shell into {cgroup}: {e}");
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

/// Whether `pid` runs (a zombie does not: it waits only for its reaper).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Every pid in the cgroup directory `dir` and below.
fn pids_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().map(str::to_owned));
    }
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(pids_below(&e.path()));
        }
    }
    out
}

/// What a kill-all test started and made, ended and removed whatever the
/// test's outcome (the code under test may be what failed).
struct Leftovers {
    pids: Vec<i32>,
    /// Cgroup directories, deepest first.
    dirs: Vec<PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &pid in &self.pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        for d in &self.dirs {
            for _ in 0..100 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// Two daemonizing processes, in `<top>/a` and `<top>/b` (leaves: cgroup
/// v2 keeps processes out of a cgroup with controllers enabled for its
/// children, as a pod's cgroup is); `kill` on `<top>` ends all four, and
/// the cgroups can be removed.
fn kill_all_ends_the_tree(
    cg: &dyn Cgroups,
    roots: &[PathBuf],
    top: &str,
    kill: impl Fn(&str) -> Result<(), crisp_executor::Error>,
) {
    let leaves = [format!("{top}/a"), format!("{top}/b")];
    let mut leftovers = Leftovers {
        pids: Vec::new(),
        dirs: Vec::new(),
    };
    for r in roots {
        leftovers.dirs.extend(leaves.iter().map(|l| r.join(l)));
        leftovers.dirs.push(r.join(top));
    }
    let mut shells = Vec::new();
    for leaf in &leaves {
        cg.create(leaf, &Default::default()).unwrap();
        let (shell, child) = daemonizing_process_in(cg, leaf);
        leftovers.pids.extend([shell.id() as i32, child]);
        shells.push(shell);
    }
    let pids = leftovers.pids.clone();
    assert!(pids.iter().all(|p| alive(*p)));
    let killed = kill(top);
    let left: Vec<_> = roots
        .iter()
        .flat_map(|r| pids_below(&r.join(top)))
        .collect();
    let statuses: Vec<_> = shells.iter_mut().map(|s| s.wait().unwrap()).collect();
    let still: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    let removed = leaves
        .iter()
        .try_for_each(|l| cg.remove(l))
        .and_then(|()| cg.remove(top));
    killed.expect("kill all");
    assert!(left.is_empty(), "left in the cgroups: {left:?}");
    assert!(still.is_empty(), "still running: {still:?}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        statuses.iter().all(|s| s.signal() == Some(9)),
        "{statuses:?}"
    );
    removed.expect("the emptied cgroups are removed");
    assert!(roots.iter().all(|r| !r.join(top).exists()));
    // Gone: nothing to kill, no error.
    kill(top).expect("kill all of a missing cgroup");
}

fn unified_root() -> Option<&'static str> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|r| Path::new(r).join("cgroup.controllers").exists())
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn cgroup_v2_kill_all_ends_every_process() {
    require_root!();
    let Some(root) = unified_root() else {
        eprintln!("skipping: no cgroup2 mount");
        return;
    };
    let v2 = cgroup::V2::at(root);
    let top = format!("crisp-test-killall-{}", std::process::id());
    v2.create(&top, &Default::default()).unwrap();
    if !Path::new(root).join(&top).join("cgroup.kill").exists() {
        eprintln!("no cgroup.kill (Linux before 5.14): the freezer path stands in");
    }
    kill_all_ends_the_tree(&v2, &[PathBuf::from(root)], &top, |p| v2.kill_all(p));
    assert!(v2.kill_all("/").is_err(), "the root cgroup is refused");
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn cgroup_v2_kill_all_by_freezing() {
    require_root!();
    let Some(root) = unified_root() else {
        eprintln!("skipping: no cgroup2 mount");
        return;
    };
    let v2 = cgroup::V2::at(root);
    let top = format!("crisp-test-killfrozen-{}", std::process::id());
    kill_all_ends_the_tree(&v2, &[PathBuf::from(root)], &top, |p| v2.kill_all_frozen(p));
}

#[test]
#[ignore = "needs root and /bin/busybox: run as root with --include-ignored (scripts/test does)"]
fn cgroup_v1_kill_all_ends_every_process() {
    require_root!();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let v1 = cgroup::V1::from_mountinfo(&mountinfo);
    if v1.hierarchies.is_empty() {
        eprintln!("skipping: no cgroup v1 hierarchy");
        return;
    }
    if !v1
        .hierarchies
        .iter()
        .any(|h| h.controllers.iter().any(|c| c == "freezer"))
    {
        eprintln!("no freezer hierarchy: killing without freezing");
    }
    let top = format!("crisp-test-killall-v1-{}", std::process::id());
    let roots: Vec<_> = v1.hierarchies.iter().map(|h| h.mount.clone()).collect();
    kill_all_ends_the_tree(&v1, &roots, &top, |p| v1.kill_all(p));
    assert!(v1.kill_all("").is_err(), "the root cgroup is refused");
}
