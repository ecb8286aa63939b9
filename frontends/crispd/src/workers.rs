//! A bounded pool of threads for work that may block (disk, child
//! processes, image pulls), so the event loop never does. Results come
//! back through a channel, and a `mio::Waker` wakes the loop to collect
//! them.
//!
//! Every job's completion comes back, whatever happens to the job: a job
//! that panics completes with an INTERNAL status (its thread lives on),
//! and [`Workers::spawn`] says when it cannot start a thread, so that its
//! caller answers instead of waiting forever.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crisp_core::cri::{ActionId, Notice, Outcome};
use crisp_core::grpc::Status;

/// What a job produced for one call: the encoded response message, or the
/// status the call fails with.
pub type Reply = Result<Vec<u8>, Status>;

/// What a job produced for one server-streaming call that ends once its
/// messages are sent (the `Stream*` listings): every encoded message, in
/// order (none is fine), or the status the call fails with.
pub type StreamReply = Result<Vec<Vec<u8>>, Status>;

/// A finished job: a reply addressed to the call that asked for it, or
/// the outcome of a CRI action (or a host notice) for the state machine.
pub enum Done {
    Call {
        conn: usize,
        call: u32,
        reply: Reply,
    },
    /// A `Stream*` listing: its messages, then the end of the call.
    Stream {
        conn: usize,
        call: u32,
        reply: StreamReply,
    },
    Action {
        id: ActionId,
        outcome: Outcome,
    },
    Notice(Notice),
    /// A step of watching a container's or a holder's exit
    /// ([`crate::exits`]).
    Watch {
        subject: crate::exits::Subject,
        step: crate::exits::Step,
    },
    /// The streaming server's connection `conn` got what it waited for.
    Streaming {
        conn: usize,
        started: crate::streaming::Started,
    },
}

type Job = Box<dyn FnOnce() -> Done + Send>;

struct Task {
    job: Job,
}

pub struct Workers {
    tx: Option<SyncSender<Task>>,
    /// The pull pool's queue: pulls wait on registries for as long as
    /// their callers allow, so they never hold the threads of `tx`.
    pulls_tx: Option<SyncSender<Task>>,
    /// For threads outside the pool (long waits: a stop's grace period).
    done_tx: Sender<Done>,
    waker: Arc<mio::Waker>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    /// Stack size of the threads [`Workers::spawn`] starts (`None`: std's).
    spawn_stack: Option<usize>,
}

/// The queue is full: the caller answers RESOURCE_EXHAUSTED.
pub struct Busy;

/// The size of one pool: threads, and jobs that may wait for them.
#[derive(Clone, Copy, Debug)]
pub struct PoolSize {
    pub threads: usize,
    pub queue: usize,
}

impl Workers {
    /// The general pool (`general`) and the pull pool (`pulls`).
    pub fn new(
        general: PoolSize,
        pulls: PoolSize,
        waker: Arc<mio::Waker>,
    ) -> std::io::Result<Self> {
        let (done_tx, done) = mpsc::channel();
        let mut threads = Vec::new();
        let tx = start_pool("crispd-worker", general, &done_tx, &waker, &mut threads)?;
        let pulls_tx = start_pool("crispd-pull", pulls, &done_tx, &waker, &mut threads)?;
        Ok(Self {
            tx: Some(tx),
            pulls_tx: Some(pulls_tx),
            done_tx,
            waker,
            done,
            threads,
            spawn_stack: None,
        })
    }

    /// Start the threads of [`Workers::spawn`] with `bytes` of stack (tests
    /// use a stack no system can map, to see a thread fail to start).
    #[cfg(test)]
    pub fn with_spawn_stack(mut self, bytes: usize) -> Self {
        self.spawn_stack = Some(bytes);
        self
    }

    /// Queue `job` for call `call` on connection `conn`.
    pub fn submit(
        &self,
        conn: usize,
        call: u32,
        job: impl FnOnce() -> Reply + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit_done(move || Done::Call {
            conn,
            call,
            reply: caught("the call", job).unwrap_or_else(Err),
        })
    }

    /// Queue `job`, whose messages answer the server-streaming call
    /// `call` on connection `conn`.
    pub fn submit_stream(
        &self,
        conn: usize,
        call: u32,
        job: impl FnOnce() -> StreamReply + Send + 'static,
    ) -> Result<(), Busy> {
        self.submit_done(move || Done::Stream {
            conn,
            call,
            reply: caught("the call", job).unwrap_or_else(Err),
        })
    }

    /// Queue a pull for call `call` on connection `conn`, on the pull
    /// pool.
    pub fn submit_pull(
        &self,
        conn: usize,
        call: u32,
        job: impl FnOnce() -> Reply + Send + 'static,
    ) -> Result<(), Busy> {
        let task = Task {
            job: Box::new(move || Done::Call {
                conn,
                call,
                reply: caught("the pull", job).unwrap_or_else(Err),
            }),
        };
        queue(self.pulls_tx.as_ref(), task)
    }

    /// Queue a job that produces its own completion.
    pub fn submit_done(&self, job: impl FnOnce() -> Done + Send + 'static) -> Result<(), Busy> {
        queue(self.tx.as_ref(), Task { job: Box::new(job) })
    }

    /// Run `job` on a thread of its own (work that waits long: a stop's
    /// grace period); its completion comes back like
    /// the pool's. When no thread can be started the job is dropped unrun
    /// and the error returned: the caller must then answer for it.
    pub fn spawn(
        &self,
        name: &str,
        job: impl FnOnce() -> Option<Done> + Send + 'static,
    ) -> std::io::Result<()> {
        let tx = self.done_tx.clone();
        let waker = Arc::clone(&self.waker);
        let mut builder = thread::Builder::new().name(name.to_owned());
        if let Some(bytes) = self.spawn_stack {
            builder = builder.stack_size(bytes);
        }
        builder
            .spawn(move || {
                if let Some(done) = job() {
                    if tx.send(done).is_ok() {
                        let _ = waker.wake();
                    }
                }
            })
            .map(drop)
            .map_err(|e| {
                tracing::error!(thread = name, error = %e, "cannot start a thread");
                e
            })
    }

    /// Finished jobs, without waiting.
    pub fn finished(&self) -> impl Iterator<Item = Done> + '_ {
        self.done.try_iter()
    }
}

fn queue(tx: Option<&SyncSender<Task>>, task: Task) -> Result<(), Busy> {
    match tx.map(|tx| tx.try_send(task)) {
        Some(Ok(())) => Ok(()),
        Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => Err(Busy),
    }
}

/// Start `size.threads` threads named `name-N` taking jobs from a new
/// queue; their completions go to `done_tx`.
fn start_pool(
    name: &str,
    size: PoolSize,
    done_tx: &Sender<Done>,
    waker: &Arc<mio::Waker>,
    handles: &mut Vec<JoinHandle<()>>,
) -> std::io::Result<SyncSender<Task>> {
    let (tx, rx) = mpsc::sync_channel::<Task>(size.queue.max(1));
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..size.threads.max(1) {
        let rx = Arc::clone(&rx);
        let done_tx = done_tx.clone();
        let waker = Arc::clone(waker);
        let handle = thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || loop {
                let task = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(task) = task else { return };
                let done = (task.job)();
                if done_tx.send(done).is_err() {
                    return;
                }
                let _ = waker.wake();
            })?;
        handles.push(handle);
    }
    Ok(tx)
}

/// Run `job`, turning a panic into an INTERNAL status naming `what` and
/// the panic's message (the panic hook has already logged it).
pub fn caught<T>(what: &str, job: impl FnOnce() -> T) -> Result<T, Status> {
    catch_unwind(AssertUnwindSafe(job)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        tracing::error!(what, panic = %msg, "a job panicked");
        Status::internal(format!(
            "crispd failed carrying out {what}: it panicked: {msg}"
        ))
    })
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queues ends each thread after its current job.
        self.tx = None;
        self.pulls_tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crisp_core::grpc::Code;

    fn pool() -> (mio::Poll, Workers) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let one = PoolSize {
            threads: 1,
            queue: 4,
        };
        let workers = Workers::new(one, one, waker).unwrap();
        (poll, workers)
    }

    fn next(w: &Workers) -> Done {
        // The pool's own channel: blocks until the job completed.
        w.done.recv().unwrap()
    }

    #[test]
    fn a_job_that_panics_still_answers_and_the_pool_goes_on() {
        let (_poll, w) = pool();
        w.submit(7, 3, || panic!("boom")).ok().unwrap();
        match next(&w) {
            Done::Call { conn, call, reply } => {
                assert_eq!((conn, call), (7, 3));
                let st = reply.unwrap_err();
                assert_eq!(st.code, Code::Internal);
                assert!(st.message.contains("panicked: boom"), "{}", st.message);
            }
            _ => panic!("not the call's completion"),
        }
        // The single worker survived the panic.
        w.submit(7, 5, || Ok(b"ok".to_vec())).ok().unwrap();
        match next(&w) {
            Done::Call { call, reply, .. } => {
                assert_eq!(call, 5);
                assert_eq!(reply.unwrap(), b"ok");
            }
            _ => panic!("not the call's completion"),
        }
    }

    #[test]
    fn pulls_do_not_hold_the_general_pool() {
        let (_poll, w) = pool();
        // The only pull thread is stuck...
        let (release, stuck) = mpsc::channel::<()>();
        w.submit_pull(1, 1, move || {
            let _ = stuck.recv();
            Ok(Vec::new())
        })
        .ok()
        .unwrap();
        // ...and other calls are still served.
        w.submit(1, 3, || Ok(b"served".to_vec())).ok().unwrap();
        match next(&w) {
            Done::Call { call, reply, .. } => {
                assert_eq!(call, 3);
                assert_eq!(reply.unwrap(), b"served");
            }
            _ => panic!("not the call's completion"),
        }
        release.send(()).unwrap();
        assert!(matches!(next(&w), Done::Call { call: 1, .. }));
    }

    #[test]
    fn spawn_reports_a_thread_it_cannot_start() {
        let (_poll, w) = pool();
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = Arc::clone(&ran);
        w.spawn("ok", move || {
            r.store(true, std::sync::atomic::Ordering::SeqCst);
            Some(Done::Notice(Notice::SandboxExited { pod_id: "p".into() }))
        })
        .unwrap();
        assert!(matches!(next(&w), Done::Notice(_)));
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
        // No system can map a stack of half the address space.
        let w = w.with_spawn_stack(usize::MAX / 2);
        assert!(w.spawn("too-big", || None).is_err());
    }
}
