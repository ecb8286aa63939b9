//! The state machine proper: objects, name reservations, in-flight calls
//! ("ops") and the actions they wait for.
//!
//! Every mutating request becomes an op keyed by its [`CallId`]. After each
//! input, [`Runtime::run_ops`] advances every op as far as the current state
//! allows: an op checks its condition (a container has exited, a record is
//! durable, ...), makes sure the host work it needs has been asked for (at
//! most one outstanding action of a kind per object, shared by every op
//! that needs it), registers itself as a waiter on those actions so that
//! their failure fails it, and finishes with a reply once its condition
//! holds. Nothing is ever answered before the records it depends on are
//! durable.
//!
//! The files, by concern: `types` (objects, ops, outstanding actions and
//! record sync states), `ops` (starting calls and advancing ops),
//! `outcomes` (applying the host's outcomes and exits), `records`
//! (persistence and events), `restore` (rebuilding after a restart) and
//! `invariants` (the consistency check the tests and fuzzers run).

mod invariants;
mod ops;
mod outcomes;
mod records;
mod restore;
mod types;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crisp_proto::cri;
use crisp_proto::cri::ContainerEventType as Event;

use super::ids::{hex_id, lookup, IdSource, Lookup, MAX_DRAWS};
use super::record::RecordKey;
use super::types::{
    Action, ActionId, CallId, Handled, InputError, Notice, Outcome, Request, Response,
};
use super::validate::HostSupport;
use crate::grpc::Status;
pub(crate) use types::{Ctr, CtrState, Pod, PodState};
use types::{Find, Op, PendingAction, RecordSync};

/// Exit code and reason containerd reports for a container that failed to
/// start.
pub const START_ERROR_EXIT_CODE: i32 = 128;
pub const START_ERROR_REASON: &str = "StartError";
/// Exit code and reason for a container found gone after a restart, its
/// exit unrecorded (containerd's `unknownExitCode`).
pub const UNKNOWN_EXIT_CODE: i32 = 255;
pub const UNKNOWN_EXIT_REASON: &str = "Unknown";

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Passes of [`Runtime::run_ops`] per input; each pass that changes nothing
/// ends the loop, so this only bounds pathological cases.
const MAX_PASSES: usize = 64;

/// The CRI state machine. See the [module documentation](super) for how a
/// frontend drives it.
pub struct Runtime {
    ids: Box<dyn IdSource + Send>,
    pub(crate) pods: BTreeMap<String, Pod>,
    pub(crate) ctrs: BTreeMap<String, Ctr>,
    pod_names: BTreeMap<String, String>,
    ctr_names: BTreeMap<String, String>,
    /// Records not durable yet.
    sync: BTreeMap<RecordKey, RecordSync>,
    actions: BTreeMap<ActionId, PendingAction>,
    ops: BTreeMap<CallId, Op>,
    out_actions: VecDeque<(ActionId, Action)>,
    out_replies: VecDeque<(CallId, Result<Response, Status>)>,
    out_events: VecDeque<cri::ContainerEventResponse>,
    next_action: u64,
    next_call: u64,
    changed: bool,
    host_support: HostSupport,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("pods", &self.pods.len())
            .field("containers", &self.ctrs.len())
            .field("outstanding_actions", &self.actions.len())
            .field("pending_calls", &self.ops.len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// An empty runtime drawing IDs from `ids`.
    pub fn new(ids: impl IdSource + Send + 'static) -> Runtime {
        Runtime {
            ids: Box::new(ids),
            pods: BTreeMap::new(),
            ctrs: BTreeMap::new(),
            pod_names: BTreeMap::new(),
            ctr_names: BTreeMap::new(),
            sync: BTreeMap::new(),
            actions: BTreeMap::new(),
            ops: BTreeMap::new(),
            out_actions: VecDeque::new(),
            out_replies: VecDeque::new(),
            out_events: VecDeque::new(),
            next_action: 0,
            next_call: 0,
            changed: false,
            host_support: HostSupport::default(),
        }
    }

    /// Tells the rules what the host offers (AppArmor, SELinux); without
    /// this call, neither.
    pub fn set_host_support(&mut self, support: HostSupport) {
        self.host_support = support;
    }

    // ---- outputs ------------------------------------------------------

    /// The next action for the host, in the order they were decided.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<(ActionId, Action)> {
        self.out_actions.pop_front()
    }

    /// The next reply to a call that was [`Handled::Pending`].
    #[must_use]
    pub fn poll_reply(&mut self) -> Option<(CallId, Result<Response, Status>)> {
        self.out_replies.pop_front()
    }

    /// The next container event for GetContainerEvents subscribers. Drain
    /// it after every input even without subscribers.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<cri::ContainerEventResponse> {
        self.out_events.pop_front()
    }

    /// Actions issued and not yet answered.
    pub fn outstanding_actions(&self) -> usize {
        self.actions.len()
    }

    /// Calls waiting for the host.
    pub fn pending_calls(&self) -> usize {
        self.ops.len()
    }

    // ---- inputs -------------------------------------------------------

    /// Takes one CRI request. `now` is the current time in unix nanoseconds
    /// (it stamps `created_at` and events).
    pub fn handle(&mut self, req: Request, now: i64) -> Handled {
        let call = CallId(self.next_call);
        self.next_call = self.next_call.wrapping_add(1);
        let begin = match req {
            Request::PodSandboxStatus(r) => {
                return Handled::Done(
                    self.pod_sandbox_status(&r, now)
                        .map(Response::PodSandboxStatus),
                )
            }
            Request::ListPodSandbox(r) => {
                return Handled::Done(Ok(Response::ListPodSandbox(self.list_pod_sandbox(&r))))
            }
            Request::ListContainers(r) => {
                return Handled::Done(Ok(Response::ListContainers(self.list_containers(&r))))
            }
            Request::ContainerStatus(r) => {
                return Handled::Done(self.container_status(&r).map(Response::ContainerStatus))
            }
            Request::ContainerStats(r) => {
                return Handled::Done(self.container_stats(&r).map(Response::ContainerStats))
            }
            Request::ListContainerStats(r) => {
                return Handled::Done(Ok(Response::ListContainerStats(
                    self.list_container_stats(&r),
                )))
            }
            Request::PodSandboxStats(r) => {
                return Handled::Done(self.pod_sandbox_stats(&r).map(Response::PodSandboxStats))
            }
            Request::ListPodSandboxStats(r) => {
                return Handled::Done(Ok(Response::ListPodSandboxStats(
                    self.list_pod_sandbox_stats(&r),
                )))
            }
            Request::RunPodSandbox(r) => self.begin_run_pod(call, r, now),
            Request::StopPodSandbox(r) => self.begin_stop_pod(&r.pod_sandbox_id, false, now),
            Request::RemovePodSandbox(r) => self.begin_stop_pod(&r.pod_sandbox_id, true, now),
            Request::CreateContainer(r) => self.begin_create_ctr(call, r, now),
            Request::StartContainer(r) => self.begin_start(call, &r.container_id),
            Request::StopContainer(r) => self.begin_stop_ctr(&r.container_id, r.timeout, now),
            Request::RemoveContainer(r) => self.begin_remove_ctr(&r.container_id, now),
            Request::UpdateContainerResources(r) => self.begin_update(call, r),
        };
        let kind = match begin {
            Ok(kind) => kind,
            Err(answer) => return Handled::Done(*answer),
        };
        self.ops.insert(call, Op { kind, error: None });
        self.run_ops(now);
        match self.out_replies.iter().position(|(c, _)| *c == call) {
            Some(pos) => match self.out_replies.remove(pos) {
                Some((_, result)) => Handled::Done(result),
                None => Handled::Pending(call),
            },
            None => Handled::Pending(call),
        }
    }

    /// Reports the outcome of an action. An outcome that does not fit the
    /// action is taken as a failure and reported back as
    /// [`InputError::UnexpectedOutcome`].
    pub fn handle_outcome(
        &mut self,
        action: ActionId,
        outcome: Outcome,
        now: i64,
    ) -> Result<(), InputError> {
        let Some(pending) = self.actions.remove(&action) else {
            return Err(InputError::UnknownAction(action));
        };
        let mut result = Ok(());
        let outcome = if pending.target.fits(&outcome) {
            outcome
        } else {
            result = Err(InputError::UnexpectedOutcome {
                action,
                expected: pending.target.expects(),
            });
            Outcome::Failed(Status::internal(format!(
                "crisp's host layer answered action {} with an unexpected outcome",
                action.0
            )))
        };
        if let Some(st) = self.apply(action, &pending.target, outcome, now) {
            for w in &pending.waiters {
                if let Some(op) = self.ops.get_mut(w) {
                    if op.error.is_none() {
                        op.error = Some(st.clone());
                    }
                }
            }
        }
        self.run_ops(now);
        result
    }

    /// Takes something the host noticed on its own.
    pub fn handle_notice(&mut self, notice: Notice, now: i64) -> Result<(), InputError> {
        let result = match notice {
            Notice::ContainerExited { container_id, exit } => {
                if self.ctrs.contains_key(&container_id) {
                    self.apply_exit(&container_id, exit, now)
                } else {
                    Err(InputError::UnknownObject(container_id))
                }
            }
            Notice::SandboxExited { pod_id } => match self.pods.get_mut(&pod_id) {
                None => Err(InputError::UnknownObject(pod_id)),
                Some(p) => match p.state {
                    PodState::Creating => Err(InputError::Ignored(format!(
                        "pod sandbox {pod_id} is still being created"
                    ))),
                    PodState::Exited | PodState::Stopped => Ok(()),
                    PodState::Ready => {
                        p.state = PodState::Exited;
                        p.pid = 0;
                        self.mark_dirty(RecordKey::Pod(pod_id.clone()));
                        self.emit(&pod_id, &pod_id, Event::ContainerStoppedEvent, now);
                        Ok(())
                    }
                },
            },
        };
        self.run_ops(now);
        result
    }

    /// Whether some record's last write failed (and waits for a call that
    /// needs it or [`Runtime::retry_records`]): the frontend sweeps while
    /// this holds, so records become durable again once the disk has room.
    pub fn has_failed_records(&self) -> bool {
        self.sync
            .values()
            .any(|s| matches!(s, RecordSync::Failed(_)))
    }

    /// Writes again every record whose last write failed. Calls that need
    /// a record retry it themselves; this is for a periodic sweep.
    pub fn retry_records(&mut self) {
        let keys: Vec<RecordKey> = self
            .sync
            .iter()
            .filter(|(_, s)| matches!(s, RecordSync::Failed(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(s) = self.sync.get_mut(&k) {
                if let RecordSync::Failed(change) = *s {
                    *s = RecordSync::Stale(change);
                }
            }
            self.flush(&k);
        }
    }

    // ---- lookups --------------------------------------------------------

    /// Forgets the pod sandbox and releases its name.
    pub(super) fn drop_pod(&mut self, id: &str) {
        if let Some(p) = self.pods.remove(id) {
            self.pod_names.remove(&p.name);
        }
    }

    /// Forgets the container and releases its name.
    pub(super) fn drop_ctr(&mut self, id: &str) {
        if let Some(c) = self.ctrs.remove(id) {
            self.ctr_names.remove(&c.name);
        }
    }

    fn new_id(&mut self) -> Result<String, Status> {
        for _ in 0..MAX_DRAWS {
            let id = hex_id(&self.ids.next_entropy());
            if !self.pods.contains_key(&id) && !self.ctrs.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(Status::internal(
            "could not draw a fresh ID: the ID source keeps repeating itself",
        ))
    }

    fn find_pod(&self, key: &str) -> Find {
        match lookup(&self.pods, key, Pod::visible) {
            Lookup::Found(id) => Find::Found(id.to_owned()),
            Lookup::NotFound => Find::NotFound,
            Lookup::Empty => Find::Bad(Status::invalid_argument("pod sandbox ID is empty")),
            Lookup::Ambiguous => Find::Bad(Status::invalid_argument(format!(
                "pod sandbox ID prefix {key:?} is ambiguous: it matches more than one pod sandbox"
            ))),
        }
    }

    fn find_ctr(&self, key: &str) -> Find {
        match lookup(&self.ctrs, key, Ctr::visible) {
            Lookup::Found(id) => Find::Found(id.to_owned()),
            Lookup::NotFound => Find::NotFound,
            Lookup::Empty => Find::Bad(Status::invalid_argument("container ID is empty")),
            Lookup::Ambiguous => Find::Bad(Status::invalid_argument(format!(
                "container ID prefix {key:?} is ambiguous: it matches more than one container"
            ))),
        }
    }

    /// The full ID of the visible pod `key` names, or the error to answer.
    pub(crate) fn resolve_pod(&self, key: &str) -> Result<String, Status> {
        match self.find_pod(key) {
            Find::Found(id) => Ok(id),
            Find::NotFound => Err(Status::not_found(format!("pod sandbox {key:?} not found"))),
            Find::Bad(st) => Err(st),
        }
    }

    /// The full ID of the visible container `key` names, or the error.
    pub(crate) fn resolve_ctr(&self, key: &str) -> Result<String, Status> {
        match self.find_ctr(key) {
            Find::Found(id) => Ok(id),
            Find::NotFound => Err(Status::not_found(format!("container {key:?} not found"))),
            Find::Bad(st) => Err(st),
        }
    }

    /// For list filters: a unique prefix becomes the full ID, anything else
    /// is compared as given (and so matches nothing), as containerd does.
    pub(crate) fn normalize_pod_id(&self, key: &str) -> String {
        match self.find_pod(key) {
            Find::Found(id) => id,
            _ => key.to_owned(),
        }
    }

    pub(crate) fn normalize_ctr_id(&self, key: &str) -> String {
        match self.find_ctr(key) {
            Find::Found(id) => id,
            _ => key.to_owned(),
        }
    }
}
