//! `crispd monitor`: one per container, detached from crispd (its own
//! session; the process crispd started forks it and exits), so it outlives
//! crispd restarts and upgrades. Usually it was started ahead of need as
//! `crispd monitor-spare` and told its container on stdin (see `spare`). It creates the container with the
//! executor (becoming its parent), holds its stdout and stderr and writes
//! them to the CRI log file, records the exit atomically in `exit.json`,
//! and answers crispd on `<dir>/sock`, one line per request:
//!
//! ```text
//! start        → ok <pid> <started_at_ns> | error <why>
//! signal <n>   → ok | error <why>
//! reopen-log   → ok | error <why>
//! state        → created <pid> | running <pid> <started_at_ns> | exited
//! wait         → exited          (when the container has exited)
//! attach       → ok | error <why>, then frames both ways (crisp_monitor::attach)
//! ```
//!
//! The container's stdio: with `tty` (the spec's `process.terminal`), a
//! pty whose replica is its stdin, stdout and stderr and whose master the
//! monitor reads as `stdout`; else pipes for stdout and stderr. With
//! `stdin` (the CRI's, not in the spec: [`StdinMode`]), a pipe whose write
//! end the monitor holds for attached clients (for a tty, the master);
//! without, /dev/null.
//!
//! Once the container is created and the socket bound, this process execs
//! the tiny monitor (`frontends/monitor/src/main.rs`, see `tiny` below), which carries
//! on with the same descriptors, files and protocol in ~1/50 of the memory;
//! the threads below run only where it cannot (another architecture,
//! `CRISP_STD_MONITOR` set, or a failed exec).
//!
//! A Unix socket's address holds at most 107 bytes, and `<dir>` (under the
//! configured runtime_dir, with a 64-hex container ID) may be longer:
//! both sides name the socket as `/proc/self/fd/<fd>/sock` through a
//! descriptor of `<dir>` ([`bind_in`], [`connect_in`]), as conmon does, so
//! any runtime_dir works.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crisp_core::cri::Exit;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::Deserialize;

use super::now_ns;
use crisp_executor as executor;
// The pure parts (log lines, requests, exit.json) are the tiny monitor's
// own, so that both monitors write and answer the same.
use crisp_monitor::{self as tiny_logic, Out, Request};

/// `dir` opened as a path-only descriptor and `name` addressed through
/// it: an address of at most 35 bytes, whatever `dir`'s length. The
/// descriptor must stay open while the address is used.
fn short_address(dir: &Path, name: &str) -> std::io::Result<(File, PathBuf)> {
    use std::os::fd::AsRawFd;
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY)
        .open(dir)?;
    let addr = PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()));
    Ok((d, addr))
}

/// Listen on the Unix socket `dir/name`, however long `dir` is.
pub fn bind_in(dir: &Path, name: &str) -> std::io::Result<UnixListener> {
    let (_dir, addr) = short_address(dir, name)?;
    UnixListener::bind(addr)
}

/// Connect to the Unix socket `dir/name`, however long `dir` is.
pub fn connect_in(dir: &Path, name: &str) -> std::io::Result<UnixStream> {
    let (_dir, addr) = short_address(dir, name)?;
    UnixStream::connect(addr)
}

/// [`connect_in`] without blocking: the stream is non-blocking from the
/// start, and a full listen backlog is `WouldBlock` rather than a wait.
pub fn connect_in_nonblocking(dir: &Path, name: &str) -> std::io::Result<mio::net::UnixStream> {
    let (_dir, addr) = short_address(dir, name)?;
    mio::net::UnixStream::connect(addr)
}

/// The exit as recorded on disk (written by [`tiny_logic::exit_json`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ExitFile {
    pub exit_code: i32,
    pub signal: i32,
    pub oom_killed: bool,
    pub finished_at: i64,
}

impl ExitFile {
    pub fn to_exit(&self) -> Exit {
        Exit {
            exit_code: self.exit_code,
            finished_at: self.finished_at,
            reason: if self.oom_killed {
                "OOMKilled".into()
            } else {
                String::new()
            },
            message: if self.signal > 0 {
                format!("killed by signal {}", self.signal)
            } else {
                String::new()
            },
        }
    }
}

#[derive(Default)]
struct State {
    created: Option<executor::Created>,
    pid: i32,
    started_at: i64,
    started: bool,
    exited: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// How many output pumps have seen their stream's end.
    pumps_done: Mutex<usize>,
    pumped: Condvar,
    log: Mutex<LogFile>,
}

/// The CRI log file: `<RFC3339Nano> <stream> <P|F> <text>` per line.
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
}

impl LogFile {
    pub fn open(path: &str) -> std::io::Result<Self> {
        let mut l = LogFile {
            path: PathBuf::from(path),
            file: None,
        };
        l.reopen()?;
        Ok(l)
    }

    pub fn reopen(&mut self) -> std::io::Result<()> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        Ok(())
    }

    pub fn write(&mut self, stream: &str, partial: bool, text: &[u8], now: i64) {
        let Some(f) = self.file.as_mut() else { return };
        let mut head = [0u8; 64];
        let mut out = Out::new(&mut head);
        tiny_logic::log_head(stream, partial, now, &mut out);
        let mut line = Vec::with_capacity(out.bytes().len() + text.len() + 1);
        line.extend_from_slice(out.bytes());
        line.extend_from_slice(text);
        line.push(b'\n');
        let _ = f.write_all(&line);
    }
}

/// Split a stream into CRI log lines.
fn pump(mut r: File, stream: &'static str, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let now = now_ns();
        let mut log = shared.log.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((text, used, partial)) = tiny_logic::next_line(&pending) {
            log.write(stream, partial, &pending[..text], now);
            pending.drain(..used);
        }
    }
    if !pending.is_empty() {
        let mut log = shared.log.lock().unwrap_or_else(|p| p.into_inner());
        log.write(stream, false, &pending, now_ns());
    }
}

/// The CRI's `stdin` and `stdin_once`, which the OCI spec has no field
/// for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdinMode {
    /// The container has a stdin that attached clients write to.
    pub stdin: bool,
    /// Its stdin is closed once the first client that wrote to it
    /// detaches (for a pipe; a tty's stays).
    pub once: bool,
}

/// The container's ends of its stdio and the monitor's.
struct Stdio {
    container: executor::Stdio,
    /// stdout, or the pty master for a tty.
    out: OwnedFd,
    /// stderr (none for a tty).
    err: Option<OwnedFd>,
    /// The stdin pipe's write end (none for a tty: the master is its stdin).
    stdin: Option<OwnedFd>,
}

/// Pipes, or a pty for a tty; a stdin pipe if `mode` asks for one.
fn make_stdio(tty: bool, mode: StdinMode) -> Result<Stdio, String> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    if tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
        fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| format!("fcntl: {e}"))?;
        // The executor dup's the replica over 0-2; stderr is not used.
        let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
        return Ok(Stdio {
            container: executor::Stdio {
                stdin: None,
                stdout: pty.slave,
                stderr: OwnedFd::from(null),
            },
            out: pty.master,
            err: None,
            stdin: None,
        });
    }
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_r, stdin_w) = if mode.stdin {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    Ok(Stdio {
        container: executor::Stdio {
            stdin: stdin_r,
            stdout: out_w,
            stderr: err_w,
        },
        out: out_r,
        err: Some(err_r),
        stdin: stdin_w,
    })
}

fn fail(msg: String) -> ExitCode {
    println!("error {msg}");
    let _ = std::io::stdout().flush();
    ExitCode::FAILURE
}

/// `crispd monitor`: leave the process crispd waits for (the monitor is a
/// grandchild), then [`run`].
pub fn main(id: &str, dir: &Path, log: &str, cgroup: &str, stdin: StdinMode) -> ExitCode {
    // SAFETY: single-threaded here (just exec'd).
    match unsafe { nix::unistd::fork() } {
        Err(e) => fail(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Parent { .. }) => ExitCode::SUCCESS,
        Ok(nix::unistd::ForkResult::Child) => {
            // Out of crispd's session: no signal meant for it reaches us.
            let _ = nix::unistd::setsid();
            run(id, dir, log, cgroup, stdin)
        }
    }
}

/// Beside config.json: the spec's seccomp profile, compiled by crispd
/// ([`executor::seccomp::encode`]). Without it the monitor compiles the
/// profile itself.
pub const SECCOMP_FILE: &str = "seccomp.bpf";

/// Create the container described by `<dir>/config.json`, answer `ready
/// <pid>` or `error <why>` on stdout, then monitor it until it exits.
/// Called single-threaded, detached from crispd.
pub fn run(id: &str, dir: &Path, log: &str, cgroup: &str, stdin: StdinMode) -> ExitCode {
    let spec: executor::Spec = match fs::read(dir.join("config.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot read the spec: {e}")),
    };
    let seccomp = match fs::read(dir.join(SECCOMP_FILE)) {
        Ok(b) => match executor::seccomp::decode(&b) {
            Ok(programs) => Some(programs),
            Err(e) => return fail(e.to_string()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return fail(format!("cannot read {SECCOMP_FILE}: {e}")),
    };
    let log_file = match LogFile::open(log) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot open the log {log}: {e}")),
    };
    let tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let Stdio {
        container: stdio,
        out: out_r,
        err: err_r,
        stdin: stdin_w,
    } = match make_stdio(tty, stdin) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // crispd made the container's cgroup (and removes it).
    let created = match executor::create_with(&spec, stdio, executor::CgroupSetup::Made, seccomp) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let pid = created.pid.as_raw();
    let sock = dir.join("sock");
    let _ = fs::remove_file(&sock);
    let listener = match bind_in(dir, "sock") {
        Ok(l) => l,
        Err(e) => {
            let _ = kill(created.pid, Signal::SIGKILL);
            return fail(format!("cannot listen on {}: {e}", sock.display()));
        }
    };
    println!("ready {pid}");
    let _ = std::io::stdout().flush();
    // Our own output goes to a file from now on; crispd sees EOF.
    if let Ok(f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("monitor.log"))
    {
        let _ = nix::unistd::dup2_stdout(&f);
        let _ = nix::unistd::dup2_stderr(&f);
    }
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    let _ = std::env::set_current_dir("/");

    // From here on, the tiny monitor does the same with a fraction of the
    // memory (see `tiny`); this process carries on only if it cannot run.
    #[cfg(tiny_monitor)]
    if std::env::var_os("CRISP_STD_MONITOR").is_none() {
        let flags = u32::from(tty) | u32::from(stdin.stdin) << 1 | u32::from(stdin.once) << 2;
        let Err(e) = tiny::exec(
            id,
            &created,
            &listener,
            tiny::Fds {
                out: &out_r,
                err: err_r.as_ref(),
                stdin: stdin_w.as_ref(),
            },
            flags,
            dir,
            log,
            cgroup,
        );
        eprintln!("crispd monitor {id}: cannot run the tiny monitor ({e}); carrying on");
    }

    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            created: Some(created),
            pid,
            ..State::default()
        }),
        changed: Condvar::new(),
        pumps_done: Mutex::new(0),
        pumped: Condvar::new(),
        log: Mutex::new(log_file),
    });
    // This monitor does not serve attach: the stdin pipe stays open and
    // unwritten, as for a container nobody has attached to yet.
    let _stdin = stdin_w;
    spawn_pump(File::from(out_r), "stdout", &shared);
    let mut pumps = 1;
    if let Some(err_r) = err_r {
        spawn_pump(File::from(err_r), "stderr", &shared);
        pumps += 1;
    }
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(conn, &shared));
            }
        });
    }

    // The container is our child: wait for it.
    let status = loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, c)) => break (c, 0),
            Ok(WaitStatus::Signaled(_, s, _)) => break (128 + s as i32, s as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // Not our child after all: poll until it is gone.
                while kill(Pid::from_raw(pid), None).is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                break (super::UNKNOWN_CODE, 0);
            }
        }
    };
    let finished_at = now_ns();
    // Drain what the container wrote (a daemonized grandchild may keep the
    // pipes open: do not wait for it forever).
    {
        let until = std::time::Instant::now() + Duration::from_secs(2);
        let mut done = shared.pumps_done.lock().unwrap_or_else(|p| p.into_inner());
        while *done < pumps && std::time::Instant::now() < until {
            let left = until.saturating_duration_since(std::time::Instant::now());
            done = shared
                .pumped
                .wait_timeout(done, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
    let oom_killed = executor::cgroup::detect().is_ok_and(|cg| cg.oom_killed(cgroup));
    let mut json = [0u8; 160];
    let mut record = Out::new(&mut json);
    tiny_logic::exit_json(status.0, status.1, oom_killed, finished_at, &mut record);
    let bytes = record.bytes();
    if let Err(e) = crate::persist::write_runtime(&dir.join("exit.json"), bytes) {
        eprintln!("crispd monitor {id}: cannot record the exit: {e}");
    }
    {
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.exited = true;
        shared.changed.notify_all();
    }
    // Let the waiters read their answer, then go.
    std::thread::sleep(Duration::from_millis(200));
    let _ = fs::remove_file(&sock);
    ExitCode::SUCCESS
}

/// The tiny monitor (`frontends/monitor/src/main.rs`, built by build.rs): a static
/// program without libc that does this module's steady-state work (log
/// pumps, requests, reaping, `exit.json`) in one thread with ~1/20 of the
/// memory. It is embedded in crispd and run from a sealed memfd, so that
/// it is always the one this crispd was built with, and a crispd upgrade
/// leaves running monitors alone. `exec` keeps the pid: the container stays
/// its child.
#[cfg(tiny_monitor)]
mod tiny {
    use std::ffi::CString;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::net::UnixListener;
    use std::path::{Path, PathBuf};

    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};

    use crisp_executor as executor;

    static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crispd-monitor"));

    /// The monitor's ends of the container's stdio.
    pub struct Fds<'a> {
        /// stdout's read end, or the pty master.
        pub out: &'a OwnedFd,
        pub err: Option<&'a OwnedFd>,
        /// The stdin pipe's write end.
        pub stdin: Option<&'a OwnedFd>,
    }

    /// Exec the tiny monitor with the descriptors it carries on with and
    /// its `flags` (1 tty, 2 stdin, 4 stdin_once). Returns only on
    /// failure.
    #[allow(clippy::too_many_arguments)]
    pub fn exec(
        id: &str,
        created: &executor::Created,
        listener: &UnixListener,
        stdio: Fds,
        flags: u32,
        dir: &Path,
        log: &str,
        cgroup: &str,
    ) -> std::io::Result<std::convert::Infallible> {
        // For exit.json: written and synced through this descriptor.
        let dir_fd = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY)
            .open(dir)?;
        let (start, sync) = created.fds();
        let fds = [
            Some(listener.as_fd()),
            Some(stdio.out.as_fd()),
            stdio.err.map(|f| f.as_fd()),
            Some(start),
            Some(sync),
            Some(dir_fd.as_fd()),
            stdio.stdin.map(|f| f.as_fd()),
        ];
        for fd in fds.iter().flatten() {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        // The tiny monitor never blocks on the container's stdio (the std
        // monitor's threads do: only set here).
        for fd in [Some(stdio.out), stdio.err, stdio.stdin]
            .into_iter()
            .flatten()
        {
            fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        }
        let number = |fd: Option<BorrowedFd>| fd.map_or(-1, |f| f.as_raw_fd()).to_string();
        let [oom, oom_fallback] = oom_files(cgroup);
        let program = memfd_create(
            c"crispd-monitor",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        std::fs::File::from(program.try_clone()?).write_all(PROGRAM)?;
        fcntl(
            &program,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SEAL
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE,
            ),
        )?;
        let arg =
            |s: &str| CString::new(s).map_err(|_| std::io::Error::other(format!("NUL in {s:?}")));
        let mut argv = vec![
            arg("crispd-monitor")?,
            arg(id)?,
            arg(&created.pid.to_string())?,
        ];
        for fd in &fds[..6] {
            argv.push(arg(&number(*fd))?);
        }
        for s in [
            log,
            &*oom.to_string_lossy(),
            &*oom_fallback.to_string_lossy(),
            &number(fds[6]),
            &flags.to_string(),
        ] {
            argv.push(arg(s)?);
        }
        let env: [&std::ffi::CStr; 0] = [];
        match nix::unistd::fexecve(&program, &argv, &env) {
            Ok(never) => match never {},
            Err(e) => Err(e.into()),
        }
    }

    /// Where the tiny monitor reads whether the container was OOM-killed
    /// (as `Cgroups::oom_killed` does): v2 `memory.events`; v1
    /// `memory.oom_control`, or `memory.failcnt` on kernels without the
    /// kill counter. Empty paths: no memory cgroup.
    fn oom_files(cgroup: &str) -> [PathBuf; 2] {
        let Ok(cg) = executor::cgroup::detect() else {
            return Default::default();
        };
        for procs in cg.procs_files(cgroup) {
            let Some(d) = procs.parent() else { continue };
            if cg.version() == "v2" {
                return [d.join("memory.events"), PathBuf::new()];
            }
            if d.join("memory.oom_control").exists() {
                return [d.join("memory.oom_control"), d.join("memory.failcnt")];
            }
        }
        Default::default()
    }
}

/// A thread copying `f` to the log; it counts itself in `pumps_done` and
/// wakes the waiters when the stream ends.
fn spawn_pump(f: File, stream: &'static str, shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    std::thread::spawn(move || {
        pump(f, stream, Arc::clone(&shared));
        *shared.pumps_done.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        shared.pumped.notify_all();
    });
}

fn serve(conn: UnixStream, shared: &Shared) {
    // Only root (crispd) may drive the monitor.
    if let Ok(cred) =
        nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
    {
        if cred.uid() != 0 {
            return;
        }
    }
    let Ok(mut w) = conn.try_clone() else { return };
    let mut line = String::new();
    if BufReader::new(conn).read_line(&mut line).is_err() {
        return;
    }
    let reply = answer(line.trim(), shared);
    let _ = w.write_all(format!("{reply}\n").as_bytes());
}

fn answer(req: &str, shared: &Shared) -> String {
    match tiny_logic::parse_request(req) {
        Request::Start => {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(c) = st.created.take() else {
                return "error already started".into();
            };
            match c.start() {
                Ok(()) => {
                    st.started = true;
                    st.started_at = now_ns();
                    shared.changed.notify_all();
                    format!("ok {} {}", st.pid, st.started_at)
                }
                Err(e) => format!("error {e}"),
            }
        }
        Request::Signal(n) => {
            let st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.exited {
                return "ok".into();
            }
            let Ok(sig) = Signal::try_from(n) else {
                return format!("error unknown signal {n}");
            };
            match kill(Pid::from_raw(st.pid), sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => "ok".into(),
                Err(e) => format!("error {e}"),
            }
        }
        Request::ReopenLog => {
            let mut log = shared.log.lock().unwrap_or_else(|p| p.into_inner());
            match log.reopen() {
                Ok(()) => "ok".into(),
                Err(e) => format!("error {e}"),
            }
        }
        Request::State => {
            let st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.exited {
                "exited".into()
            } else if st.started {
                format!("running {} {}", st.pid, st.started_at)
            } else {
                format!("created {}", st.pid)
            }
        }
        Request::Wait => {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            while !st.exited {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            "exited".into()
        }
        // Attach needs the tiny monitor's loop (this one runs only where
        // it cannot: another architecture, or CRISP_STD_MONITOR set).
        Request::Attach => "error attach needs the tiny monitor".into(),
        Request::Unknown(other) => format!("error unknown request {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `f` writes into a roomy `Out`.
    fn show(f: impl FnOnce(&mut Out)) -> String {
        let mut b = [0u8; 256];
        let mut o = Out::new(&mut b);
        f(&mut o);
        assert!(!o.full);
        String::from_utf8(o.bytes().to_vec()).unwrap()
    }

    /// The tiny monitor's signals are nix's, its `exit.json` is what
    /// crispd reads back and its errno names are nix's.
    #[test]
    fn tiny_logic_agrees_with_nix_and_serde() {
        for n in -2..40 {
            assert_eq!(
                tiny_logic::known_signal(n),
                Signal::try_from(n).is_ok(),
                "{n}"
            );
        }
        for (exit_code, signal, oom_killed, finished_at) in [
            (0, 0, false, 0),
            (3, 0, false, 1_700_000_000_123_456_789),
            (137, 9, true, -5),
            (255, 0, false, i64::MAX),
        ] {
            let json =
                show(|o| tiny_logic::exit_json(exit_code, signal, oom_killed, finished_at, o));
            let read: ExitFile = serde_json::from_str(&json).unwrap();
            let want = ExitFile {
                exit_code,
                signal,
                oom_killed,
                finished_at,
            };
            assert_eq!(read, want, "{json}");
        }
        for e in 1..134 {
            let text = show(|o| tiny_logic::errno_nix(e, o));
            if !text.starts_with("Unknown") {
                let name = format!("{:?}", nix::errno::Errno::from_raw(e));
                assert!(text.starts_with(&format!("{name}: ")), "{text} vs {name}");
            }
        }
    }

    #[test]
    fn sockets_in_directories_longer_than_sun_path() {
        let mut dir = std::env::temp_dir().join(format!("crisp-sock-{}", std::process::id()));
        let base = dir.clone();
        while dir.as_os_str().len() < 300 {
            dir.push("a-directory-name-of-forty-bytes-or-so-x");
        }
        fs::create_dir_all(&dir).unwrap();
        // The plain path does not fit in a socket address...
        assert!(UnixListener::bind(dir.join("sock")).is_err());
        // ...the descriptor-relative one does, from both sides.
        let listener = bind_in(&dir, "sock").unwrap();
        assert!(dir.join("sock").exists());
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(conn.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            (&conn)
                .write_all(format!("echo {line}").as_bytes())
                .unwrap();
        });
        let mut c = connect_in(&dir, "sock").unwrap();
        c.write_all(b"state\n").unwrap();
        let mut reply = String::new();
        BufReader::new(c).read_line(&mut reply).unwrap();
        assert_eq!(reply, "echo state\n");
        server.join().unwrap();
        // Nothing listening: refused, as a plain connect would be.
        fs::remove_file(dir.join("sock")).unwrap();
        assert_eq!(
            connect_in(&dir, "sock").unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn log_lines_full_and_partial() {
        let dir = std::env::temp_dir().join(format!("crisp-log-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            pumps_done: Mutex::new(0),
            pumped: Condvar::new(),
            log: Mutex::new(LogFile::open(path.to_str().unwrap()).unwrap()),
        });
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = File::from(w);
        let long = vec![b'x'; tiny_logic::MAX_LINE + 10];
        w.write_all(b"hello\nworld\n").unwrap();
        w.write_all(&long).unwrap();
        w.write_all(b"\nend").unwrap();
        drop(w);
        pump(File::from(r), "stdout", Arc::clone(&shared));
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[0].ends_with(" stdout F hello"));
        assert!(lines[1].ends_with(" stdout F world"));
        assert!(lines[2].contains(" stdout P xxx"));
        assert!(lines[3].ends_with(" stdout F xxxxxxxxxx"));
        assert!(lines[4].ends_with(" stdout F end"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
