//! Starting container monitors ahead of need.
//!
//! A monitor is crispd re-executed: the fork of a multi-threaded daemon,
//! the exec and the dynamic loader cost about 2 ms, a quarter of
//! CreateContainer. So crispd keeps one monitor started ahead of time
//! (`crispd monitor-spare --daemon <crispd's pid>`): detached like any monitor, it waits on its
//! stdin for the container it is to run. CreateContainer hands a spare its
//! arguments and reads the usual answer; a new spare is then started in
//! the background. With no spare at hand (the first container, or several
//! created at once) the monitor is started on the call's path, as before.
//!
//! A spare holds nothing of a container. It exits when its stdin reaches
//! end of file: when crispd exits, however it exits, since crispd holds
//! the only writer. A spare that died is noticed when it is handed work,
//! before it could have started anything, and the call falls back to a
//! fresh monitor.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What a monitor is told: the arguments of `crispd monitor`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MonitorArgs {
    pub id: String,
    pub dir: PathBuf,
    pub log: String,
    pub cgroup: String,
    /// The CRI's `stdin` and `stdin_once` (see [`super::monitor::StdinMode`]).
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
}

impl MonitorArgs {
    pub fn stdin_mode(&self) -> super::monitor::StdinMode {
        super::monitor::StdinMode {
            stdin: self.stdin,
            once: self.stdin_once,
        }
    }
}

/// A started spare: the write end of its stdin and the read end of its
/// stdout and stderr.
struct Spare {
    to: File,
    from: File,
}

/// Where monitors come from: a spare when one is ready, else a fresh
/// process.
pub struct Monitors {
    exe: PathBuf,
    spare: Arc<Mutex<Option<Spare>>>,
    refilling: Arc<AtomicBool>,
}

impl Monitors {
    pub fn new(exe: PathBuf) -> Self {
        Self {
            exe,
            spare: Arc::default(),
            refilling: Arc::default(),
        }
    }

    /// Start the monitor of a container and return what it printed, up to
    /// its answer (`ready <pid>` or `error <why>`) and with any diagnostics
    /// before it. Starts the next spare in the background.
    pub fn launch(&self, args: &MonitorArgs) -> std::io::Result<String> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).take();
        let out = match spare.map(|s| hand(s, args)) {
            Some(Handed::Answered(out)) => out,
            // Dead before it could read anything: nothing was started.
            Some(Handed::Gone(e)) => {
                tracing::warn!(error = %e, "the spare container monitor was gone; starting one");
                launch_fresh(&self.exe, args)
            }
            None => launch_fresh(&self.exe, args),
        };
        self.refill();
        out
    }

    /// Make sure a spare is (being) started: a thread of its own starts
    /// it, off any call's path.
    pub fn refill(&self) {
        if self.spare.lock().is_ok_and(|s| s.is_some())
            || self.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let exe = self.exe.clone();
        let slot = Arc::clone(&self.spare);
        let refilling = Arc::clone(&self.refilling);
        let spawned = std::thread::Builder::new()
            .name("crispd-spare".into())
            .spawn(move || {
                match start_spare(&exe) {
                    Ok(s) => {
                        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                        if slot.is_none() {
                            *slot = Some(s);
                            tracing::debug!("spare container monitor ready");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot start a spare container monitor"),
                }
                refilling.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.refilling.store(false, Ordering::Release);
        }
    }
}

/// Set the calling thread's scheduling policy (priority 0: SCHED_OTHER or
/// SCHED_IDLE; the nice value is kept).
fn set_policy(policy: nix::libc::c_int) -> std::io::Result<()> {
    set_policy_of(0, policy)
}

/// Set process `pid`'s scheduling policy (0: the calling thread).
fn set_policy_of(pid: u32, policy: nix::libc::c_int) -> std::io::Result<()> {
    let pid = nix::libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    let param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on a pid (or the calling thread), with a
    // valid parameter struct.
    let rc = unsafe { nix::libc::sched_setscheduler(pid, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A pipe whose ends are both close-on-exec (as the child's stdio, the
/// write end is dup'ed without the flag).
fn pipe() -> std::io::Result<(File, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(r), w))
}

/// `crispd <args>`, stdout and stderr to one pipe whose read end is
/// returned with the child. The child forks the monitor, which makes a
/// session of its own, and exits at once (the monitor is detached: its
/// parent is gone); the caller reaps it.
fn spawn_detached(
    exe: &Path,
    args: &[&std::ffi::OsStr],
    stdin: Stdio,
) -> std::io::Result<(std::process::Child, File)> {
    let (from, w) = pipe()?;
    let mut cmd = Command::new(exe);
    // No pre_exec hook (the monitor calls setsid itself): std then starts
    // the child with posix_spawn, which does not copy crispd's page tables
    // as a fork would.
    cmd.args(args)
        .stdin(stdin)
        .stdout(Stdio::from(w.try_clone()?))
        .stderr(Stdio::from(w));
    // `cmd` (and with it our copies of the write end) is dropped on return:
    // end of file on `from` then means the monitor closed its stdout.
    let child = cmd.spawn()?;
    Ok((child, from))
}

/// The monitor's output up to its answer, `ready <pid>` or `error <why>`
/// (or until it closes stdout and stderr without one).
fn read_answer(from: File) -> std::io::Result<String> {
    let mut out = String::new();
    let mut lines = BufReader::new(from);
    loop {
        let start = out.len();
        if lines.read_line(&mut out)? == 0 {
            return Ok(out);
        }
        let line = &out[start..];
        if line.starts_with("ready ") || line.starts_with("error ") {
            return Ok(out);
        }
    }
}

/// A monitor started for `args` on the call's path.
fn launch_fresh(exe: &Path, args: &MonitorArgs) -> std::io::Result<String> {
    let mut argv: Vec<&std::ffi::OsStr> = vec![
        "monitor".as_ref(),
        "--id".as_ref(),
        args.id.as_ref(),
        "--dir".as_ref(),
        args.dir.as_os_str(),
        "--log".as_ref(),
        args.log.as_ref(),
        "--cgroup".as_ref(),
        args.cgroup.as_ref(),
    ];
    if args.stdin {
        argv.push("--stdin".as_ref());
    }
    if args.stdin_once {
        argv.push("--stdin-once".as_ref());
    }
    let (mut child, from) = spawn_detached(exe, &argv, Stdio::null())?;
    let out = read_answer(from);
    let _ = child.wait();
    out
}

fn start_spare(exe: &Path) -> std::io::Result<Spare> {
    let daemon = std::process::id().to_string();
    let argv: [&std::ffi::OsStr; 3] = [
        "monitor-spare".as_ref(),
        "--daemon".as_ref(),
        daemon.as_ref(),
    ];
    let (mut child, from) = spawn_detached(exe, &argv, Stdio::piped())?;
    // The spare's loader and setup run on idle CPU only, so that they do
    // not slow the calls that follow (the spare it forks inherits the
    // policy and restores the normal one before it waits). Set here, once
    // the child has exec'd (posix_spawn returns then), not inherited from
    // this thread: between clone and exec the child holds a copy of every
    // descriptor crispd has, its listening socket included, and at
    // SCHED_IDLE on a busy CPU it could hold them for seconds after a
    // crispd killed meanwhile, where the next crispd would find its socket
    // still accepting.
    let _ = set_policy_of(child.id(), nix::libc::SCHED_IDLE);
    let to = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
    // The direct child exits once the spare is forked off.
    let status = child.wait()?;
    match to {
        Some(to) if status.success() => Ok(Spare { to, from }),
        _ => Err(std::io::Error::other(format!(
            "crispd monitor-spare exited with {status}: {}",
            read_answer(from).unwrap_or_default().trim()
        ))),
    }
}

enum Handed {
    /// What the monitor printed (or why it could not be read).
    Answered(std::io::Result<String>),
    /// The spare was gone before it could read its arguments.
    Gone(std::io::Error),
}

/// Hand `args` to a spare and read its answer.
fn hand(mut spare: Spare, args: &MonitorArgs) -> Handed {
    let mut line = match serde_json::to_vec(args) {
        Ok(l) => l,
        Err(e) => return Handed::Answered(Err(std::io::Error::other(e))),
    };
    line.push(b'\n');
    // A spare that died has no reader left: EPIPE (crispd ignores SIGPIPE,
    // as every Rust program does). The write fails only when no reader is
    // left: the spare died before it had the whole line, so it started
    // nothing.
    if let Err(e) = spare.to.write_all(&line) {
        return Handed::Gone(e);
    }
    drop(spare.to);
    Handed::Answered(read_answer(spare.from))
}

/// `crispd monitor-spare`: fork off the waiting monitor (our parent, crispd,
/// reaps us at once), which reads one line of [`MonitorArgs`] from stdin
/// and then is the monitor of that container. Exits quietly at end of
/// file.
pub fn main() -> ExitCode {
    // SAFETY: single-threaded here (just exec'd).
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            println!("error fork: {e}");
            return ExitCode::FAILURE;
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => return ExitCode::SUCCESS,
        Ok(nix::unistd::ForkResult::Child) => {}
    }
    // Out of crispd's session: no signal meant for it reaches us.
    let _ = nix::unistd::setsid();
    // Started with SCHED_IDLE; the monitor and its container must run with
    // the normal policy: a spare that cannot have it does not serve.
    if let Err(e) = set_policy(nix::libc::SCHED_OTHER) {
        println!("error cannot leave SCHED_IDLE: {e}");
        return ExitCode::FAILURE;
    }
    // What every container needs, done while we wait.
    let _ = crisp_executor::cgroup::detect();
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => return ExitCode::SUCCESS,
        Ok(_) => {}
    }
    match serde_json::from_str::<MonitorArgs>(&line) {
        Ok(a) => super::monitor::run(&a.id, &a.dir, &a.log, &a.cgroup, a.stdin_mode()),
        Err(e) => {
            println!("error bad monitor arguments: {e}");
            ExitCode::FAILURE
        }
    }
}
