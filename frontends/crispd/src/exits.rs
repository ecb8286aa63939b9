//! Container exits, watched from the event loop: one connection per
//! running container to its monitor, with a `wait` request outstanding,
//! registered with the loop's poll. The monitor answers `exited` once it
//! has recorded the exit; a connection that ends without the answer
//! means the monitor died (or dropped us). Either way a job on the worker
//! pool reads what the monitor recorded and ends the container's
//! leftovers ([`container::wait_ended`]), and the exit goes to the state
//! machine as [`Notice::ContainerExited`]. Connecting also runs on the
//! pool (it opens the container's directory), so the loop only polls.
//!
//! So crispd's threads do not grow with its containers: each running
//! container costs one descriptor and a few hundred bytes here, and its
//! monitor one connection slot, as a thread per container did before.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crisp_core::cri::Notice;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use crate::pods::container::{self, WaitEnded};
use crate::pods::Host;
use crate::workers::{caught, Done, Workers};

/// Tokens from this one up to `streaming::FIRST_TOKEN` are the exit
/// watchers'; the gRPC connections' are below (counting up from 16, they
/// would need 2^39 connections to get here).
pub const FIRST_TOKEN: usize = 1 << 39;

/// A watch that could not be set up, or whose monitor dropped it while
/// the container runs, is tried again after this.
const RETRY: Duration = Duration::from_millis(200);

/// Watch jobs on the pool at once: many containers restored (or exiting)
/// together leave room in its queue for the calls.
const MAX_JOBS: usize = 8;

/// What a job on the pool found for a watched container
/// ([`Done::Watch`]).
#[derive(Debug)]
pub enum Step {
    /// Connected, `wait` asked: the loop watches the connection.
    Armed(UnixStream),
    /// The `wait` ended: what it means.
    Ended(WaitEnded),
}

/// Where one container's watch is.
enum State {
    /// A job (connect, or read the exit) is queued or running.
    Busy,
    /// Waiting on its connection (in `conns`).
    Waiting,
    /// To connect again at this time.
    Retry(Instant),
}

/// The jobs a watch hands to the pool.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// Connect and ask `wait`.
    Arm,
    /// The `wait` ended: read the exit.
    Ended,
}

pub struct ExitWatchers {
    host: Arc<Host>,
    /// Every watched container, by ID.
    watched: HashMap<String, State>,
    /// The waiting connections, by token.
    conns: HashMap<usize, (String, UnixStream)>,
    next_token: usize,
    /// Jobs not handed to the pool yet, in order.
    unsubmitted: VecDeque<(String, Job)>,
    /// Jobs on the pool.
    in_flight: usize,
    /// Watches to set up again, earliest first.
    retries: BTreeSet<(Instant, String)>,
}

impl ExitWatchers {
    pub fn new(host: Arc<Host>) -> Self {
        Self {
            host,
            watched: HashMap::new(),
            conns: HashMap::new(),
            next_token: FIRST_TOKEN,
            unsubmitted: VecDeque::new(),
            in_flight: 0,
            retries: BTreeSet::new(),
        }
    }

    /// Watch container `id` until it exits (a container already watched
    /// is left as it is).
    pub fn watch(&mut self, id: String) {
        if self.watched.contains_key(&id) {
            return;
        }
        self.watched.insert(id.clone(), State::Busy);
        self.unsubmitted.push_back((id, Job::Arm));
    }

    /// The connection behind `token` is readable or closed: when its
    /// `wait` has ended, it is closed and the exit read on the pool.
    pub fn ready(&mut self, token: usize, registry: &Registry) {
        let Some((_, stream)) = self.conns.get_mut(&token) else {
            return;
        };
        let mut buf = [0u8; 64];
        let ended = loop {
            match stream.read(&mut buf) {
                // `exited`, or the end: nothing else comes on it.
                Ok(_) => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if !ended {
            return;
        }
        if let Some((id, mut stream)) = self.conns.remove(&token) {
            let _ = registry.deregister(&mut stream);
            self.watched.insert(id.clone(), State::Busy);
            self.unsubmitted.push_back((id, Job::Ended));
        }
    }

    /// A job's finding for container `id`: the exit for the state
    /// machine, if it has one.
    pub fn done(
        &mut self,
        id: String,
        step: Step,
        registry: &Registry,
        now: Instant,
    ) -> Option<Notice> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !matches!(self.watched.get(&id), Some(State::Busy)) {
            return None;
        }
        match step {
            Step::Armed(mut stream) => {
                let token = self.next_token;
                match registry.register(&mut stream, Token(token), Interest::READABLE) {
                    Ok(()) => {
                        self.next_token += 1;
                        self.conns.insert(token, (id.clone(), stream));
                        self.watched.insert(id, State::Waiting);
                    }
                    Err(e) => {
                        tracing::warn!(container = id, error = %e, "cannot watch the container's exit");
                        self.retry(id, now);
                    }
                }
                None
            }
            Step::Ended(WaitEnded::Again) => {
                self.retry(id, now);
                None
            }
            Step::Ended(WaitEnded::Gone) => {
                self.watched.remove(&id);
                None
            }
            Step::Ended(WaitEnded::Exited(exit)) => {
                self.watched.remove(&id);
                Some(Notice::ContainerExited {
                    container_id: id,
                    exit,
                })
            }
        }
    }

    fn retry(&mut self, id: String, now: Instant) {
        let at = now + RETRY;
        self.retries.insert((at, id.clone()));
        self.watched.insert(id, State::Retry(at));
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
            let Some((id, job)) = self.unsubmitted.pop_front() else {
                break;
            };
            let host = Arc::clone(&self.host);
            let container_id = id.clone();
            let submitted = workers.submit_done(move || {
                let step = caught("watching a container's exit", || {
                    run(&host, &container_id, job)
                })
                // A panic: look again later.
                .unwrap_or(Step::Ended(WaitEnded::Again));
                Done::Watch { container_id, step }
            });
            if submitted.is_err() {
                self.unsubmitted.push_front((id, job));
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
            let Some((at, id)) = self.retries.pop_first() else {
                break;
            };
            if matches!(self.watched.get(&id), Some(State::Retry(t)) if *t == at) {
                self.watched.insert(id.clone(), State::Busy);
                self.unsubmitted.push_back((id, Job::Arm));
            }
        }
    }
}

/// One job of a watch, on the pool.
fn run(host: &Host, id: &str, job: Job) -> Step {
    match job {
        Job::Arm => match container::ask_wait(host, id) {
            Ok(stream) => Step::Armed(stream),
            // The monitor's backlog is full: it lives.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Ended(WaitEnded::Again),
            // Exited and gone, or dead: as if the `wait` had ended.
            Err(_) => Step::Ended(container::wait_ended(host, id)),
        },
        Job::Ended => Step::Ended(container::wait_ended(host, id)),
    }
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
        let dir = std::env::temp_dir().join(format!("crisp-exits-{name}-{}", std::process::id()));
        let config = Arc::new(crate::config::Config {
            state_dir: dir.join("state"),
            runtime_dir: dir.join("run"),
            ..Default::default()
        });
        let images = Arc::new(crisp_image::ImageService::new(&config.image_settings()).unwrap());
        let host = Arc::new(Host::new(config, images).unwrap());
        std::fs::create_dir_all(host.ctr_dir("c")).unwrap();
        let listener = crate::pods::monitor::bind_in(&host.ctr_dir("c"), "sock").unwrap();
        (dir, host, listener)
    }

    /// Run the next job as the pool would, and hand its step back.
    fn run_next(w: &mut ExitWatchers, poll: &Poll) -> Option<Notice> {
        let (id, job) = w.unsubmitted.pop_front().expect("a job");
        w.in_flight += 1;
        let step = run(&w.host.clone(), &id, job);
        w.done(id, step, poll.registry(), Instant::now())
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
        w.watch("c".into());
        w.watch("c".into());
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
        assert!(w.watched.is_empty() && w.conns.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_monitor_that_dies_without_a_record_is_an_unknown_exit() {
        let (dir, host, listener) = container("died");
        let mut poll = Poll::new().unwrap();
        let mut w = ExitWatchers::new(host);
        w.watch("c".into());
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
        w.watch("c".into());
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
        assert!(matches!(w.unsubmitted.front(), Some((id, Job::Arm)) if id == "c"));
        // Asked again; a removed container then ends the watch quietly.
        assert!(run_next(&mut w, &poll).is_none());
        drop(accept_wait(&listener));
        std::fs::remove_dir_all(&dir).unwrap();
        wait_ready(&mut w, &mut poll);
        assert!(run_next(&mut w, &poll).is_none());
        assert!(w.watched.is_empty() && w.retries.is_empty());
    }
}
