//! A bounded pool of threads for work that may block (disk, child
//! processes, image pulls), so the event loop never does. Results come
//! back through a channel, and a `mio::Waker` wakes the loop to collect
//! them.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crisp_core::cri::{ActionId, Notice, Outcome};
use crisp_core::grpc::Status;

/// What a job produced for one call: the encoded response message, or the
/// status the call fails with.
pub type Reply = Result<Vec<u8>, Status>;

/// A finished job: a reply addressed to the call that asked for it, or
/// the outcome of a CRI action (or a host notice) for the state machine.
pub enum Done {
    Call {
        conn: usize,
        call: u32,
        reply: Reply,
    },
    Action {
        id: ActionId,
        outcome: Outcome,
    },
    Notice(Notice),
}

type Job = Box<dyn FnOnce() -> Done + Send>;

struct Task {
    job: Job,
}

pub struct Workers {
    tx: Option<SyncSender<Task>>,
    /// For threads outside the pool (long waits, container watchers).
    done_tx: Sender<Done>,
    waker: Arc<mio::Waker>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

/// The queue is full: the caller answers RESOURCE_EXHAUSTED.
pub struct Busy;

impl Workers {
    pub fn new(threads: usize, queue: usize, waker: Arc<mio::Waker>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Task>(queue.max(1));
        let (done_tx, done) = mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let done_tx = done_tx.clone();
            let waker = Arc::clone(&waker);
            let handle = thread::Builder::new()
                .name(format!("crispd-worker-{i}"))
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
        Ok(Self {
            tx: Some(tx),
            done_tx,
            waker,
            done,
            threads: handles,
        })
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
            reply: job(),
        })
    }

    /// Queue a job that produces its own completion.
    pub fn submit_done(&self, job: impl FnOnce() -> Done + Send + 'static) -> Result<(), Busy> {
        let task = Task { job: Box::new(job) };
        match self.tx.as_ref().map(|tx| tx.try_send(task)) {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => Err(Busy),
        }
    }

    /// Run `job` on a thread of its own (work that waits long: a stop's
    /// grace period, a container's exit); its completion comes back like
    /// the pool's.
    pub fn spawn(&self, name: &str, job: impl FnOnce() -> Option<Done> + Send + 'static) {
        let tx = self.done_tx.clone();
        let waker = Arc::clone(&self.waker);
        let spawned = thread::Builder::new().name(name.to_owned()).spawn(move || {
            if let Some(done) = job() {
                if tx.send(done).is_ok() {
                    let _ = waker.wake();
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread");
        }
    }

    /// Finished jobs, without waiting.
    pub fn finished(&self) -> impl Iterator<Item = Done> + '_ {
        self.done.try_iter()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends each thread after its current job.
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
