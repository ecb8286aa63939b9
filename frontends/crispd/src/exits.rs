//! Exits, watched from the event loop: each running container's and
//! each pod sandbox holder's, without a thread for any of them.
//!
//! A container: one connection to its monitor with the request `wait`
//! outstanding. The monitor answers `exited` once it has recorded the
//! exit; a connection that ends without the answer means the monitor died
//! (or dropped us). Either way a job on the worker pool reads what the
//! monitor recorded and ends the container's leftovers
//! ([`container::wait_ended`]), and the exit goes to the state machine as
//! [`Notice::ContainerExited`]. A pod: a pidfd of its holder, readable
//! once the holder has exited; a job then ends the pod's containers
//! ([`sandbox::holder_exited`]) and the state machine hears
//! [`Notice::SandboxExited`]. Setting a watch up (connecting, opening the
//! pidfd) also runs on the pool, as it reads files: the loop only polls.
//!
//! So crispd's threads do not grow with its pods and containers: each
//! costs a descriptor and a few hundred bytes here (and a container's
//! monitor one of its connection slots, as a thread per container did).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crisp_core::cri::Notice;
use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::pods::container::{self, WaitEnded};
use crate::pods::sandbox::{self, HolderWatch};
use crate::pods::Host;
use crate::workers::{caught, Done, Workers};

/// Tokens from this one up to `streaming::FIRST_TOKEN` are the exit
/// watchers'; the gRPC connections' are below (counting up from 16, they
/// would need 2^39 connections to get here).
pub const FIRST_TOKEN: usize = 1 << 39;

/// A container's watch that could not be set up, or whose monitor dropped
/// it while the container runs, is tried again after this.
const RETRY: Duration = Duration::from_millis(200);
/// Without pidfds, a holder is looked for in /proc this often.
const HOLDER_POLL: Duration = Duration::from_secs(1);

/// Watch jobs on the pool at once: many watches set up (or ending)
/// together leave room in its queue for the calls.
const MAX_JOBS: usize = 8;

/// Whose exit is watched.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Container(String),
    /// A pod's sandbox holder.
    Pod(String),
}

/// What a job on the pool found for a watch ([`Done::Watch`]).
#[derive(Debug)]
pub enum Step {
    /// The loop watches this until it is readable.
    Armed(Source),
    /// The exit, for the state machine.
    Exited(Notice),
    /// Gone (removed), with nothing to report.
    Gone,
    /// Look again in a while.
    Again,
}

/// What the loop polls for one watch.
#[derive(Debug)]
pub enum Source {
    /// A container monitor's connection, `wait` asked.
    Monitor(UnixStream),
    /// A holder's pidfd.
    Pidfd(OwnedFd),
}

impl Source {
    fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        match self {
            Source::Monitor(s) => registry.register(s, token, Interest::READABLE),
            Source::Pidfd(fd) => {
                registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)
            }
        }
    }

    fn deregister(&mut self, registry: &Registry) {
        let _ = match self {
            Source::Monitor(s) => registry.deregister(s),
            Source::Pidfd(fd) => registry.deregister(&mut SourceFd(&fd.as_raw_fd())),
        };
    }

    /// Whether what it waits for has come (after a readiness event).
    fn ended(&mut self) -> bool {
        let Source::Monitor(stream) = self else {
            // A pidfd is readable only once the process has exited.
            return true;
        };
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf) {
                // `exited`, or the end: nothing else comes on it.
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

/// Where one watch is.
enum State {
    /// A job (set up, or read the exit) is queued or running.
    Busy,
    /// Polled (its source in `sources`).
    Waiting,
    /// To set up again at this time.
    Retry(Instant),
}

/// The jobs a watch hands to the pool.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// Connect and ask `wait`, or open the pidfd.
    Arm,
    /// What was waited for came: read the exit.
    Ended,
}

pub struct ExitWatchers {
    host: Arc<Host>,
    /// Every watch.
    watched: HashMap<Subject, State>,
    /// The polled sources, by token.
    sources: HashMap<usize, (Subject, Source)>,
    next_token: usize,
    /// Jobs not handed to the pool yet, in order.
    unsubmitted: VecDeque<(Subject, Job)>,
    /// Jobs on the pool.
    in_flight: usize,
    /// Watches to set up again, earliest first.
    retries: BTreeSet<(Instant, Subject)>,
}

impl ExitWatchers {
    pub fn new(host: Arc<Host>) -> Self {
        Self {
            host,
            watched: HashMap::new(),
            sources: HashMap::new(),
            next_token: FIRST_TOKEN,
            unsubmitted: VecDeque::new(),
            in_flight: 0,
            retries: BTreeSet::new(),
        }
    }

    /// Watch until it exits (what is already watched is left as it is).
    pub fn watch(&mut self, subject: Subject) {
        if self.watched.contains_key(&subject) {
            return;
        }
        self.watched.insert(subject.clone(), State::Busy);
        self.unsubmitted.push_back((subject, Job::Arm));
    }

    /// The source behind `token` is readable or closed: when what it
    /// waits for has come, it is closed and the exit read on the pool.
    pub fn ready(&mut self, token: usize, registry: &Registry) {
        let Some((_, source)) = self.sources.get_mut(&token) else {
            return;
        };
        if !source.ended() {
            return;
        }
        if let Some((subject, mut source)) = self.sources.remove(&token) {
            source.deregister(registry);
            self.watched.insert(subject.clone(), State::Busy);
            self.unsubmitted.push_back((subject, Job::Ended));
        }
    }

    /// A job's finding: the exit for the state machine, if it has one.
    pub fn done(
        &mut self,
        subject: Subject,
        step: Step,
        registry: &Registry,
        now: Instant,
    ) -> Option<Notice> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !matches!(self.watched.get(&subject), Some(State::Busy)) {
            return None;
        }
        match step {
            Step::Armed(mut source) => {
                let token = self.next_token;
                match source.register(registry, Token(token)) {
                    Ok(()) => {
                        self.next_token += 1;
                        self.sources.insert(token, (subject.clone(), source));
                        self.watched.insert(subject, State::Waiting);
                    }
                    Err(e) => {
                        tracing::warn!(?subject, error = %e, "cannot watch for an exit");
                        self.retry(subject, now);
                    }
                }
                None
            }
            Step::Again => {
                self.retry(subject, now);
                None
            }
            Step::Gone => {
                self.watched.remove(&subject);
                None
            }
            Step::Exited(notice) => {
                self.watched.remove(&subject);
                Some(notice)
            }
        }
    }

    fn retry(&mut self, subject: Subject, now: Instant) {
        let at = now
            + match subject {
                Subject::Container(_) => RETRY,
                Subject::Pod(_) => HOLDER_POLL,
            };
        self.retries.insert((at, subject.clone()));
        self.watched.insert(subject, State::Retry(at));
    }

    /// When [`ExitWatchers::pump`] has a retry due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retries.first().map(|(at, _)| *at)
    }

    /// Retries that are due, and the jobs waiting, to the pool
    /// ([`MAX_JOBS`] at once). Jobs the pool has no room for wait for the
    /// next pump: the jobs filling it will complete, and wake the loop.
    pub fn pump(&mut self, workers: &Workers, now: Instant) {
        self.take_due(now);
        while self.in_flight < MAX_JOBS {
            let Some((subject, job)) = self.unsubmitted.pop_front() else {
                break;
            };
            let host = Arc::clone(&self.host);
            let of = subject.clone();
            let submitted = workers.submit_done(move || {
                let step = caught("watching for an exit", || run(&host, &of, job))
                    // A panic: look again later.
                    .unwrap_or(Step::Again);
                Done::Watch { subject: of, step }
            });
            if submitted.is_err() {
                self.unsubmitted.push_front((subject, job));
                break;
            }
            self.in_flight += 1;
        }
    }

    /// Retries whose time has come, to the jobs waiting.
    fn take_due(&mut self, now: Instant) {
        while let Some((at, _)) = self.retries.first() {
            if *at > now {
                break;
            }
            let Some((at, subject)) = self.retries.pop_first() else {
                break;
            };
            if matches!(self.watched.get(&subject), Some(State::Retry(t)) if *t == at) {
                self.watched.insert(subject.clone(), State::Busy);
                self.unsubmitted.push_back((subject, Job::Arm));
            }
        }
    }
}

/// One job of a watch, on the pool.
fn run(host: &Host, subject: &Subject, job: Job) -> Step {
    match (subject, job) {
        (Subject::Container(id), Job::Arm) => match container::ask_wait(host, id) {
            Ok(stream) => Step::Armed(Source::Monitor(stream)),
            // The monitor's backlog is full: it lives.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Again,
            // Exited and gone, or dead: as if the `wait` had ended.
            Err(_) => container_ended(host, id),
        },
        (Subject::Container(id), Job::Ended) => container_ended(host, id),
        (Subject::Pod(id), Job::Arm) => match sandbox::watch_holder(host, id) {
            HolderWatch::Pidfd(fd) => Step::Armed(Source::Pidfd(fd)),
            HolderWatch::Alive => Step::Again,
            HolderWatch::Exited => holder_ended(host, id),
        },
        (Subject::Pod(id), Job::Ended) => holder_ended(host, id),
    }
}

fn container_ended(host: &Host, id: &str) -> Step {
    match container::wait_ended(host, id) {
        WaitEnded::Exited(exit) => Step::Exited(Notice::ContainerExited {
            container_id: id.to_owned(),
            exit,
        }),
        WaitEnded::Gone => Step::Gone,
        WaitEnded::Again => Step::Again,
    }
}

fn holder_ended(host: &Host, id: &str) -> Step {
    sandbox::holder_exited(host, id);
    Step::Exited(Notice::SandboxExited {
        pod_id: id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    use mio::{Events, Poll};

    /// A host on temporary directories, and a container directory in it
    /// with a fake monitor listening on its `sock`.
    fn container(name: &str) -> (std::path::PathBuf, Arc<Host>, UnixListener) {
        let host = host(name);
        std::fs::create_dir_all(host.ctr_dir("c")).unwrap();
        let listener = crate::pods::monitor::bind_in(&host.ctr_dir("c"), "sock").unwrap();
        (
            host.config.runtime_dir.parent().unwrap().to_owned(),
            host,
            listener,
        )
    }

    /// A host on temporary directories.
    fn host(name: &str) -> Arc<Host> {
        let dir = std::env::temp_dir().join(format!("crisp-exits-{name}-{}", std::process::id()));
        let config = Arc::new(crate::config::Config {
            state_dir: dir.join("state"),
            runtime_dir: dir.join("run"),
            ..Default::default()
        });
        let images = Arc::new(crisp_image::ImageService::new(&config.image_settings()).unwrap());
        Arc::new(Host::new(config, images).unwrap())
    }

    /// Run the next job as the pool would, and hand its step back.
    fn run_next(w: &mut ExitWatchers, poll: &Poll) -> Option<Notice> {
        let (subject, job) = w.unsubmitted.pop_front().expect("a job");
        w.in_flight += 1;
        let step = run(&w.host.clone(), &subject, job);
        w.done(subject, step, poll.registry(), Instant::now())
    }

    fn c() -> Subject {
        Subject::Container("c".into())
    }

    /// Poll until the watched connection is ready, and tell the watchers.
    fn wait_ready(w: &mut ExitWatchers, poll: &mut Poll) {
        let mut events = Events::with_capacity(8);
        while w.unsubmitted.is_empty() {
            poll.poll(&mut events, Some(Duration::from_secs(30)))
                .unwrap();
            for ev in events.iter() {
                assert!(ev.token().0 >= FIRST_TOKEN);
                w.ready(ev.token().0, poll.registry());
            }
        }
    }

    /// The fake monitor's side: accept, read the request line (past the
    /// connections that only checked it lives).
    fn accept_wait(listener: &UnixListener) -> std::os::unix::net::UnixStream {
        loop {
            let (conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(conn.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            if !line.is_empty() {
                assert_eq!(line, "wait\n");
                return conn;
            }
        }
    }

    #[test]
    fn an_answered_wait_is_the_exit_the_monitor_recorded() {
        let (dir, host, listener) = container("answered");
        let mut poll = Poll::new().unwrap();
        let mut w = ExitWatchers::new(Arc::clone(&host));
        w.watch(c());
        w.watch(c());
        assert_eq!(w.unsubmitted.len(), 1, "watched once");
        assert!(run_next(&mut w, &poll).is_none(), "connected, waiting");
        let mut conn = accept_wait(&listener);
        std::fs::write(
            host.ctr_dir("c").join("exit.json"),
            r#"{"exit_code":137,"signal":9,"oom_killed":true,"finished_at":42}"#,
        )
        .unwrap();
        conn.write_all(b"exited\n").unwrap();
        drop(conn);
        wait_ready(&mut w, &mut poll);
        match run_next(&mut w, &poll) {
            Some(Notice::ContainerExited { container_id, exit }) => {
                assert_eq!(container_id, "c");
                assert_eq!(
                    (exit.exit_code, exit.reason.as_str(), exit.finished_at),
                    (137, "OOMKilled", 42)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(w.watched.is_empty() && w.sources.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_monitor_that_dies_without_a_record_is_an_unknown_exit() {
        let (dir, host, listener) = container("died");
        let mut poll = Poll::new().unwrap();
        let mut w = ExitWatchers::new(host);
        w.watch(c());
        assert!(run_next(&mut w, &poll).is_none());
        let conn = accept_wait(&listener);
        // Killed: its descriptors close, its socket file stays.
        drop(listener);
        drop(conn);
        wait_ready(&mut w, &mut poll);
        match run_next(&mut w, &poll) {
            Some(Notice::ContainerExited { exit, .. }) => {
                assert_eq!(exit.exit_code, crisp_core::cri::UNKNOWN_EXIT_CODE);
                assert!(exit.message.contains("monitor died"), "{}", exit.message);
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_live_monitor_that_drops_the_wait_is_asked_again() {
        let (dir, host, listener) = container("dropped");
        let mut poll = Poll::new().unwrap();
        let mut w = ExitWatchers::new(host);
        w.watch(c());
        assert!(run_next(&mut w, &poll).is_none());
        drop(accept_wait(&listener));
        wait_ready(&mut w, &mut poll);
        let before = Instant::now();
        assert!(run_next(&mut w, &poll).is_none(), "no exit");
        let at = w.poll_timeout().expect("a retry");
        assert!(at >= before + RETRY);
        w.take_due(at - Duration::from_millis(1));
        assert!(w.unsubmitted.is_empty(), "not yet");
        w.take_due(at);
        assert!(matches!(w.unsubmitted.front(), Some((s, Job::Arm)) if *s == c()));
        // Asked again; a removed container then ends the watch quietly.
        assert!(run_next(&mut w, &poll).is_none());
        drop(accept_wait(&listener));
        std::fs::remove_dir_all(&dir).unwrap();
        wait_ready(&mut w, &mut poll);
        assert!(run_next(&mut w, &poll).is_none());
        assert!(w.watched.is_empty() && w.retries.is_empty());
    }

    #[test]
    fn a_holder_is_watched_through_its_pidfd() {
        let host = host("holder");
        let dir = host.config.runtime_dir.parent().unwrap().to_owned();
        let pod_dir = host.pod_dir("p1");
        std::fs::create_dir_all(&pod_dir).unwrap();
        // A stand-in holder whose command line names the pod, as the
        // holder's does.
        let mut holder = std::process::Command::new("/bin/sh")
            .args(["-c", "read x", "p1"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Until it has exec'd, the child's command line is still ours.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !crate::pods::process_matches(holder.id(), "p1") && std::time::Instant::now() < until
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let meta = sandbox::Meta {
            pid: holder.id(),
            ..Default::default()
        };
        std::fs::write(
            pod_dir.join("sandbox.json"),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        let mut poll = Poll::new().unwrap();
        let mut w = ExitWatchers::new(Arc::clone(&host));
        w.watch(Subject::Pod("p1".into()));
        assert!(run_next(&mut w, &poll).is_none(), "alive: polled");
        assert_eq!(w.sources.len(), 1);
        holder.kill().unwrap();
        holder.wait().unwrap();
        wait_ready(&mut w, &mut poll);
        match run_next(&mut w, &poll) {
            Some(Notice::SandboxExited { pod_id }) => assert_eq!(pod_id, "p1"),
            other => panic!("{other:?}"),
        }
        assert!(w.watched.is_empty() && w.sources.is_empty());
        // A pod whose holder is gone already: at once.
        w.watch(Subject::Pod("p1".into()));
        assert!(matches!(
            run_next(&mut w, &poll),
            Some(Notice::SandboxExited { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
