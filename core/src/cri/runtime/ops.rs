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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crisp_proto::cri;

use crate::cri::ids::{hex_id, lookup, IdSource, Lookup, MAX_DRAWS};
use crate::cri::record::{
    ContainerRecord, Observation, Observed, PodPhase, PodRecord, Record, RecordKey, RecordKind,
};
use crate::cri::types::{
    Action, ActionId, CallId, Exit, Handled, InputError, Notice, Outcome, Request, Response,
};
use crate::cri::validate::{self, HostSupport};
use crate::cri::{container_name, join_log_path, pod_name};
use crate::grpc::{Code, Status};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PodState {
    /// RunPodSandbox in flight: the name is reserved, nothing is visible.
    Creating,
    Ready,
    /// The holder process died; resources not yet reclaimed.
    Exited,
    /// StopPodSandbox done.
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CtrState {
    /// CreateContainer in flight: the name is reserved, nothing is visible.
    Creating,
    Created,
    Running,
    Exited,
    Unknown,
}

impl CtrState {
    pub(crate) fn cri(self) -> cri::ContainerState {
        match self {
            CtrState::Creating | CtrState::Created => cri::ContainerState::ContainerCreated,
            CtrState::Running => cri::ContainerState::ContainerRunning,
            CtrState::Exited => cri::ContainerState::ContainerExited,
            CtrState::Unknown => cri::ContainerState::ContainerUnknown,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Pod {
    pub id: String,
    pub name: String,
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    pub created_at: i64,
    pub state: PodState,
    pub pid: u32,
    pub netns_path: String,
    pub ip: String,
    pub additional_ips: Vec<String>,
    /// StopPodSandbox / RemovePodSandbox calls working on this pod; while
    /// any is, containers may not be created or started in it.
    pub stoppers: u32,
    pub create_action: Option<ActionId>,
    pub stop_action: Option<ActionId>,
    pub remove_action: Option<ActionId>,
}

impl Pod {
    pub(crate) fn visible(&self) -> bool {
        self.state != PodState::Creating
    }

    pub(crate) fn cri_state(&self) -> cri::PodSandboxState {
        match self.state {
            PodState::Ready => cri::PodSandboxState::SandboxReady,
            _ => cri::PodSandboxState::SandboxNotready,
        }
    }

    pub(crate) fn metadata(&self) -> cri::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Ctr {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub config: cri::ContainerConfig,
    pub image_ref: String,
    pub image_id: String,
    /// The IDs of the images mounted as volumes (in use while it exists).
    pub volume_image_ids: Vec<String>,
    /// The identity its process runs as, from the host (ContainerStatus.user).
    pub user: Option<cri::ContainerUser>,
    /// The image's StopSignal as a `cri::Signal` value (0: none).
    pub image_stop_signal: i32,
    pub log_path: String,
    pub state: CtrState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: u32,
    pub create_action: Option<ActionId>,
    pub start_action: Option<ActionId>,
    /// An exit reported while the start was in flight, applied after it.
    pub pending_exit: Option<Exit>,
    /// Outstanding stop actions with their kill deadlines (unix nanos).
    pub stops: Vec<(ActionId, i64)>,
    pub remove_action: Option<ActionId>,
    /// An outstanding UpdateContainerResources and the limits it sets.
    pub update: Option<(ActionId, Box<cri::LinuxContainerResources>)>,
}

impl Ctr {
    pub(crate) fn visible(&self) -> bool {
        self.state != CtrState::Creating
    }

    fn busy(&self) -> bool {
        self.create_action.is_some()
            || self.start_action.is_some()
            || !self.stops.is_empty()
            || self.remove_action.is_some()
            || self.update.is_some()
    }

    /// An action other than a stop or removal is in flight: stops and
    /// removals wait for it.
    fn changing(&self) -> bool {
        self.start_action.is_some() || self.update.is_some()
    }
}

/// What an outstanding action is about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    CreateSandbox(String),
    StopSandbox(String),
    RemoveSandbox(String),
    CreateContainer(String),
    StartContainer(String),
    StopContainer(String),
    RemoveContainer(String),
    UpdateContainer(String),
    Record(RecordKey),
}

impl Target {
    fn expects(&self) -> &'static str {
        match self {
            Target::CreateSandbox(_) => "SandboxCreated or Failed",
            Target::CreateContainer(_) => "ContainerCreated or Failed",
            Target::StartContainer(_) => "ContainerStarted or Failed",
            Target::StopContainer(_) => "ContainerExited or Failed",
            _ => "Done or Failed",
        }
    }

    fn fits(&self, outcome: &Outcome) -> bool {
        matches!(
            (self, outcome),
            (_, Outcome::Failed(_))
                | (Target::CreateSandbox(_), Outcome::SandboxCreated(_))
                | (Target::CreateContainer(_), Outcome::ContainerCreated { .. })
                | (Target::StartContainer(_), Outcome::ContainerStarted { .. })
                | (Target::StopContainer(_), Outcome::ContainerExited(_))
                | (
                    Target::StopSandbox(_)
                        | Target::RemoveSandbox(_)
                        | Target::RemoveContainer(_)
                        | Target::UpdateContainer(_)
                        | Target::Record(_),
                    Outcome::Done,
                )
        )
    }
}

#[derive(Debug)]
struct PendingAction {
    target: Target,
    /// Calls that fail if this action fails.
    waiters: Vec<CallId>,
}

/// Where a record stands relative to the in-memory object.
#[derive(Clone, Debug, Default)]
struct Sync {
    /// The stored record is older than the object (or should be deleted).
    dirty: bool,
    /// What is wanted is deletion.
    deleted: bool,
    inflight: Option<ActionId>,
    /// The last write failed; not retried until a call needs it, the
    /// object changes again, or [`Runtime::retry_records`].
    failed: bool,
}

#[derive(Clone, Debug)]
enum OpKind {
    RunPod {
        pod_id: String,
    },
    CreateCtr {
        ctr_id: String,
    },
    StartCtr {
        ctr_id: String,
    },
    StopCtr {
        ctr_id: String,
        deadline: i64,
    },
    RemoveCtr {
        ctr_id: String,
        deadline: i64,
    },
    UpdateCtr {
        ctr_id: String,
    },
    StopPod {
        pod_id: String,
        remove: bool,
        deadline: i64,
        /// Containers this call removed, whose record deletions it awaits.
        removed: BTreeSet<String>,
    },
}

#[derive(Clone, Debug)]
struct Op {
    kind: OpKind,
    error: Option<Status>,
}

/// How a call starts: an op to run, or an answer now.
type Begin = Result<OpKind, Box<Result<Response, Status>>>;

fn refuse(st: Status) -> Begin {
    Err(Box::new(Err(st)))
}

fn answer(r: Response) -> Begin {
    Err(Box::new(Ok(r)))
}

enum Find {
    Found(String),
    NotFound,
    Bad(Status),
}

/// The CRI state machine. See the [module documentation](crate::cri) for how a
/// frontend drives it.
pub struct Runtime {
    ids: Box<dyn IdSource + Send>,
    pub(crate) pods: BTreeMap<String, Pod>,
    pub(crate) ctrs: BTreeMap<String, Ctr>,
    pod_names: BTreeMap<String, String>,
    ctr_names: BTreeMap<String, String>,
    sync: BTreeMap<RecordKey, Sync>,
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

fn failure(st: Status) -> Status {
    if st.code == Code::Ok {
        Status::unknown(st.message)
    } else {
        st
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
                        self.emit(
                            &pod_id,
                            &pod_id,
                            cri::ContainerEventType::ContainerStoppedEvent,
                            now,
                        );
                        Ok(())
                    }
                },
            },
        };
        self.run_ops(now);
        result
    }

    /// Writes again every record whose last write failed. Calls that need
    /// a record retry it themselves; this is for a periodic sweep.
    pub fn retry_records(&mut self) {
        let keys: Vec<RecordKey> = self
            .sync
            .iter()
            .filter(|(_, s)| s.failed)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(s) = self.sync.get_mut(&k) {
                s.failed = false;
            }
            self.flush(&k);
        }
    }

    // ---- starting calls -----------------------------------------------

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

    fn begin_run_pod(&mut self, call: CallId, req: cri::RunPodSandboxRequest, now: i64) -> Begin {
        let bad = |m: &str| refuse(Status::invalid_argument(m.to_owned()));
        let Some(config) = req.config else {
            return bad("RunPodSandbox needs a pod sandbox config");
        };
        let Some(meta) = config.metadata.as_ref() else {
            return bad("the pod sandbox config needs metadata");
        };
        if meta.name.is_empty() {
            return bad("the pod sandbox metadata needs a name");
        }
        if meta.namespace.is_empty() {
            return bad("the pod sandbox metadata needs a namespace");
        }
        if meta.uid.is_empty() {
            return bad("the pod sandbox metadata needs a uid");
        }
        if let Err(st) = validate::sandbox_config(&config, self.host_support) {
            return refuse(st);
        }
        let name = pod_name(meta);
        if let Some(owner) = self.pod_names.get(&name) {
            return refuse(Status::already_exists(format!(
                "pod sandbox name {name:?} is already reserved for pod sandbox {owner}"
            )));
        }
        let id = match self.new_id() {
            Ok(id) => id,
            Err(st) => return refuse(st),
        };
        self.pod_names.insert(name.clone(), id.clone());
        let action = self.issue(
            Target::CreateSandbox(id.clone()),
            Action::CreateSandbox {
                pod_id: id.clone(),
                name: name.clone(),
                config: Box::new(config.clone()),
                runtime_handler: req.runtime_handler.clone(),
            },
            Some(call),
        );
        self.pods.insert(
            id.clone(),
            Pod {
                id: id.clone(),
                name,
                config,
                runtime_handler: req.runtime_handler,
                created_at: now,
                state: PodState::Creating,
                pid: 0,
                netns_path: String::new(),
                ip: String::new(),
                additional_ips: Vec::new(),
                stoppers: 0,
                create_action: Some(action),
                stop_action: None,
                remove_action: None,
            },
        );
        Ok(OpKind::RunPod { pod_id: id })
    }

    /// PID namespace mode TARGET joins the PID namespace of another
    /// container of the pod, which must be running (kubelet's ephemeral
    /// containers with a target). Its ID, possibly a prefix, is replaced by
    /// the full one, which the host looks up.
    fn resolve_pid_target(
        &self,
        pod_id: &str,
        config: &mut cri::ContainerConfig,
    ) -> Result<(), Status> {
        let Some(ns) = config
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
            .filter(|ns| ns.pid == cri::NamespaceMode::Target as i32)
        else {
            return Ok(());
        };
        const FIELD: &str = "ContainerConfig.linux.security_context.namespace_options.target_id";
        if ns.target_id.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{FIELD}: PID namespace mode TARGET needs a target container"
            )));
        }
        let target = self.resolve_ctr(&ns.target_id)?;
        let Some(t) = self.ctrs.get(&target) else {
            return Err(Status::not_found(format!("container {target:?} not found")));
        };
        if t.pod_id != pod_id {
            return Err(Status::invalid_argument(format!(
                "{FIELD}: container {target} is in another pod sandbox"
            )));
        }
        if t.state != CtrState::Running {
            return Err(Status::failed_precondition(format!(
                "{FIELD}: container {target} is not running; its PID namespace cannot be joined"
            )));
        }
        ns.target_id = target;
        Ok(())
    }

    fn begin_stop_pod(&mut self, key: &str, remove: bool, now: i64) -> Begin {
        match self.find_pod(key) {
            Find::Bad(st) => refuse(st),
            // Both calls are idempotent: an unknown sandbox is already
            // stopped and removed (containerd answers OK for both too).
            // Removed moments ago: answer once the deletion is durable.
            Find::NotFound if remove && self.sync.contains_key(&RecordKey::Pod(key.to_owned())) => {
                Ok(OpKind::StopPod {
                    pod_id: key.to_owned(),
                    remove,
                    deadline: now,
                    removed: BTreeSet::new(),
                })
            }
            Find::NotFound => answer(if remove {
                Response::RemovePodSandbox(cri::RemovePodSandboxResponse {})
            } else {
                Response::StopPodSandbox(cri::StopPodSandboxResponse {})
            }),
            Find::Found(pod_id) => {
                if let Some(p) = self.pods.get_mut(&pod_id) {
                    p.stoppers = p.stoppers.saturating_add(1);
                }
                Ok(OpKind::StopPod {
                    pod_id,
                    remove,
                    deadline: now,
                    removed: BTreeSet::new(),
                })
            }
        }
    }

    fn begin_create_ctr(
        &mut self,
        call: CallId,
        req: cri::CreateContainerRequest,
        now: i64,
    ) -> Begin {
        let bad = |m: &str| refuse(Status::invalid_argument(m.to_owned()));
        let pod_id = match self.find_pod(&req.pod_sandbox_id) {
            Find::Found(id) => id,
            Find::Bad(st) => return refuse(st),
            Find::NotFound => {
                return refuse(Status::not_found(format!(
                    "pod sandbox {:?} not found",
                    req.pod_sandbox_id
                )))
            }
        };
        let Some(mut config) = req.config else {
            return bad("CreateContainer needs a container config");
        };
        let Some(meta) = config.metadata.clone() else {
            return bad("the container config needs metadata");
        };
        if meta.name.is_empty() {
            return bad("the container metadata needs a name");
        }
        let image = config.image.clone().unwrap_or_default();
        if image.image.is_empty() {
            return bad("the container config needs an image");
        }
        if let Err(st) = crate::cri::mounts::check_mounts(&config.mounts) {
            return refuse(st);
        }
        if let Err(st) = validate::container_config(&config, self.host_support) {
            return refuse(st);
        }
        if let Err(st) = self.resolve_pid_target(&pod_id, &mut config) {
            return refuse(st);
        }
        let Some(pod) = self.pods.get(&pod_id) else {
            return refuse(Status::not_found(format!(
                "pod sandbox {pod_id:?} not found"
            )));
        };
        if pod.state != PodState::Ready {
            return refuse(Status::failed_precondition(format!(
                "pod sandbox {pod_id} is not ready; cannot create containers in it"
            )));
        }
        if pod.stoppers > 0 {
            return refuse(Status::failed_precondition(format!(
                "pod sandbox {pod_id} is being stopped; cannot create containers in it"
            )));
        }
        if let Err(st) = validate::privilege(&config, &pod.config) {
            return refuse(st);
        }
        let name = container_name(&meta, &pod.metadata());
        if let Some(owner) = self.ctr_names.get(&name) {
            return refuse(Status::already_exists(format!(
                "container name {name:?} is already reserved for container {owner}"
            )));
        }
        let log_path = join_log_path(&pod.config.log_directory, &config.log_path);
        let sandbox_config = Box::new(pod.config.clone());
        let (sandbox_pid, netns_path) = (pod.pid, pod.netns_path.clone());
        let id = match self.new_id() {
            Ok(id) => id,
            Err(st) => return refuse(st),
        };
        self.ctr_names.insert(name.clone(), id.clone());
        let action = self.issue(
            Target::CreateContainer(id.clone()),
            Action::CreateContainer {
                container_id: id.clone(),
                pod_id: pod_id.clone(),
                name: name.clone(),
                config: Box::new(config.clone()),
                sandbox_config,
                sandbox_pid,
                netns_path,
                image,
                log_path: log_path.clone(),
            },
            Some(call),
        );
        self.ctrs.insert(
            id.clone(),
            Ctr {
                id: id.clone(),
                pod_id,
                name,
                config,
                image_ref: String::new(),
                image_id: String::new(),
                volume_image_ids: Vec::new(),
                user: None,
                image_stop_signal: 0,
                log_path,
                state: CtrState::Creating,
                created_at: now,
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                pid: 0,
                create_action: Some(action),
                start_action: None,
                pending_exit: None,
                stops: Vec::new(),
                remove_action: None,
                update: None,
            },
        );
        Ok(OpKind::CreateCtr { ctr_id: id })
    }

    fn begin_start(&mut self, call: CallId, key: &str) -> Begin {
        let id = match self.resolve_ctr(key) {
            Ok(id) => id,
            Err(st) => return refuse(st),
        };
        let Some(c) = self.ctrs.get(&id) else {
            return refuse(Status::not_found(format!("container {key:?} not found")));
        };
        if c.state != CtrState::Created {
            return refuse(Status::failed_precondition(format!(
                "container {id} is in state {}, not CONTAINER_CREATED; it cannot be started",
                c.state.cri().as_str_name()
            )));
        }
        if c.start_action.is_some() {
            return refuse(Status::failed_precondition(format!(
                "container {id} is already being started"
            )));
        }
        if c.remove_action.is_some() {
            return refuse(Status::failed_precondition(format!(
                "container {id} is being removed; it cannot be started"
            )));
        }
        if c.update.is_some() {
            return refuse(Status::failed_precondition(format!(
                "container {id}'s resources are being updated; start it after that"
            )));
        }
        let pod_id = c.pod_id.clone();
        let sandbox_pid = match self.pods.get(&pod_id) {
            Some(p) if p.state == PodState::Ready && p.stoppers == 0 => p.pid,
            _ => {
                return refuse(Status::failed_precondition(format!(
                    "pod sandbox {pod_id} of container {id} is not ready; the container cannot be started"
                )))
            }
        };
        let action = self.issue(
            Target::StartContainer(id.clone()),
            Action::StartContainer {
                container_id: id.clone(),
                pod_id,
                sandbox_pid,
            },
            Some(call),
        );
        if let Some(c) = self.ctrs.get_mut(&id) {
            c.start_action = Some(action);
        }
        Ok(OpKind::StartCtr { ctr_id: id })
    }

    fn begin_stop_ctr(&mut self, key: &str, timeout: i64, now: i64) -> Begin {
        match self.find_ctr(key) {
            Find::Bad(st) => refuse(st),
            // Idempotent: an unknown container is stopped (containerd 2).
            Find::NotFound => answer(Response::StopContainer(cri::StopContainerResponse {})),
            Find::Found(ctr_id) => Ok(OpKind::StopCtr {
                ctr_id,
                deadline: now.saturating_add(timeout.max(0).saturating_mul(NANOS_PER_SEC)),
            }),
        }
    }

    fn begin_remove_ctr(&mut self, key: &str, now: i64) -> Begin {
        match self.find_ctr(key) {
            Find::Bad(st) => refuse(st),
            Find::NotFound
                if self
                    .sync
                    .contains_key(&RecordKey::Container(key.to_owned())) =>
            {
                Ok(OpKind::RemoveCtr {
                    ctr_id: key.to_owned(),
                    deadline: now,
                })
            }
            Find::NotFound => answer(Response::RemoveContainer(cri::RemoveContainerResponse {})),
            Find::Found(ctr_id) => Ok(OpKind::RemoveCtr {
                ctr_id,
                deadline: now,
            }),
        }
    }

    fn begin_update(&mut self, call: CallId, req: cri::UpdateContainerResourcesRequest) -> Begin {
        let id = match self.resolve_ctr(&req.container_id) {
            Ok(id) => id,
            Err(st) => return refuse(st),
        };
        let Some(c) = self.ctrs.get(&id) else {
            return refuse(Status::not_found(format!(
                "container {:?} not found",
                req.container_id
            )));
        };
        // Any state, as containerd (an exited container's limits are
        // recorded too); not beside another action on it.
        if c.busy() {
            return refuse(Status::failed_precondition(format!(
                "container {id} is being started, stopped, removed or updated; try again"
            )));
        }
        let resources = Box::new(req.linux.unwrap_or_default());
        let action = Action::UpdateContainerResources {
            container_id: id.clone(),
            pod_id: c.pod_id.clone(),
            resources: resources.clone(),
        };
        let a = self.issue(Target::UpdateContainer(id.clone()), action, Some(call));
        if let Some(c) = self.ctrs.get_mut(&id) {
            c.update = Some((a, resources));
        }
        Ok(OpKind::UpdateCtr { ctr_id: id })
    }

    // ---- the ops ------------------------------------------------------

    fn issue(&mut self, target: Target, action: Action, waiter: Option<CallId>) -> ActionId {
        let id = ActionId(self.next_action);
        self.next_action = self.next_action.wrapping_add(1);
        self.actions.insert(
            id,
            PendingAction {
                target,
                waiters: waiter.into_iter().collect(),
            },
        );
        self.out_actions.push_back((id, action));
        self.changed = true;
        id
    }

    fn wait_on(&mut self, action: ActionId, call: CallId) {
        if let Some(p) = self.actions.get_mut(&action) {
            if !p.waiters.contains(&call) {
                p.waiters.push(call);
            }
        }
    }

    fn run_ops(&mut self, now: i64) {
        for _ in 0..MAX_PASSES {
            self.changed = false;
            let calls: Vec<CallId> = self.ops.keys().copied().collect();
            for call in calls {
                let Some(mut op) = self.ops.remove(&call) else {
                    continue;
                };
                match self.advance(call, &mut op, now) {
                    None => {
                        self.ops.insert(call, op);
                    }
                    Some(result) => {
                        if let OpKind::StopPod { pod_id, .. } = &op.kind {
                            if let Some(p) = self.pods.get_mut(pod_id) {
                                p.stoppers = p.stoppers.saturating_sub(1);
                            }
                        }
                        self.out_replies.push_back((call, result));
                        self.changed = true;
                    }
                }
            }
            if !self.changed {
                break;
            }
        }
    }

    /// Whether `key`'s record is durable. If not, makes sure a write is on
    /// its way and makes `call` wait on it.
    fn durable(&mut self, key: &RecordKey, call: CallId) -> bool {
        let Some(s) = self.sync.get_mut(key) else {
            return true;
        };
        if s.inflight.is_none() {
            if !s.dirty {
                self.sync.remove(key);
                return true;
            }
            s.failed = false;
            self.flush(key);
        }
        if let Some(a) = self.sync.get(key).and_then(|s| s.inflight) {
            self.wait_on(a, call);
        }
        false
    }

    /// Makes sure the container is being stopped with a kill deadline no
    /// later than `deadline`, and makes `call` wait on that stop.
    fn ensure_stopping(&mut self, ctr_id: &str, deadline: i64, call: CallId, now: i64) {
        let Some(c) = self.ctrs.get(ctr_id) else {
            return;
        };
        if let Some((a, _)) = c.stops.iter().find(|(_, d)| *d <= deadline) {
            let a = *a;
            self.wait_on(a, call);
            return;
        }
        let remaining = deadline.saturating_sub(now).max(0);
        let timeout = remaining
            .saturating_add(NANOS_PER_SEC.saturating_sub(1))
            .checked_div(NANOS_PER_SEC)
            .unwrap_or(0);
        let action = Action::StopContainer {
            container_id: c.id.clone(),
            pod_id: c.pod_id.clone(),
            timeout,
            stop_signal: c.config.stop_signal,
        };
        let a = self.issue(Target::StopContainer(ctr_id.to_owned()), action, Some(call));
        if let Some(c) = self.ctrs.get_mut(ctr_id) {
            c.stops.push((a, deadline));
        }
    }

    /// Makes sure the (stopped) container's removal is under way, once no
    /// other action on it is outstanding, and makes `call` wait on it.
    fn ensure_removing(&mut self, ctr_id: &str, call: CallId) {
        let Some(c) = self.ctrs.get(ctr_id) else {
            return;
        };
        if let Some(a) = c.remove_action {
            self.wait_on(a, call);
            return;
        }
        if c.busy() {
            return;
        }
        let action = Action::RemoveContainer {
            container_id: c.id.clone(),
            pod_id: c.pod_id.clone(),
        };
        let a = self.issue(
            Target::RemoveContainer(ctr_id.to_owned()),
            action,
            Some(call),
        );
        if let Some(c) = self.ctrs.get_mut(ctr_id) {
            c.remove_action = Some(a);
        }
    }

    fn advance(&mut self, call: CallId, op: &mut Op, now: i64) -> Option<Result<Response, Status>> {
        if let Some(e) = op.error.take() {
            return Some(Err(e));
        }
        match &mut op.kind {
            OpKind::RunPod { pod_id } => {
                let state = self.pods.get(pod_id.as_str()).map(|p| p.state);
                match state {
                    None => Some(Err(Status::internal(format!(
                        "pod sandbox {pod_id} vanished while being created"
                    )))),
                    Some(PodState::Creating) => None,
                    Some(_) => self
                        .durable(&RecordKey::Pod(pod_id.clone()), call)
                        .then(|| {
                            Ok(Response::RunPodSandbox(cri::RunPodSandboxResponse {
                                pod_sandbox_id: pod_id.clone(),
                            }))
                        }),
                }
            }
            OpKind::CreateCtr { ctr_id } => {
                let state = self.ctrs.get(ctr_id.as_str()).map(|c| c.state);
                match state {
                    None => Some(Err(Status::internal(format!(
                        "container {ctr_id} vanished while being created"
                    )))),
                    Some(CtrState::Creating) => None,
                    Some(_) => self
                        .durable(&RecordKey::Container(ctr_id.clone()), call)
                        .then(|| {
                            Ok(Response::CreateContainer(cri::CreateContainerResponse {
                                container_id: ctr_id.clone(),
                            }))
                        }),
                }
            }
            OpKind::StartCtr { ctr_id } => {
                let starting = self.ctrs.get(ctr_id.as_str()).map(|c| c.start_action);
                match starting {
                    None => Some(Err(Status::internal(format!(
                        "container {ctr_id} vanished while being started"
                    )))),
                    Some(Some(_)) => None,
                    Some(None) => self
                        .durable(&RecordKey::Container(ctr_id.clone()), call)
                        .then_some(Ok(Response::StartContainer(cri::StartContainerResponse {}))),
                }
            }
            OpKind::StopCtr { ctr_id, deadline } => {
                let ctr_id = ctr_id.clone();
                let deadline = *deadline;
                let Some(c) = self.ctrs.get(&ctr_id) else {
                    return Some(Ok(Response::StopContainer(cri::StopContainerResponse {})));
                };
                if c.changing() {
                    return None;
                }
                match c.state {
                    CtrState::Creating => None,
                    CtrState::Running | CtrState::Unknown => {
                        self.ensure_stopping(&ctr_id, deadline, call, now);
                        None
                    }
                    CtrState::Created | CtrState::Exited => self
                        .durable(&RecordKey::Container(ctr_id), call)
                        .then_some(Ok(Response::StopContainer(cri::StopContainerResponse {}))),
                }
            }
            OpKind::RemoveCtr { ctr_id, deadline } => {
                let ctr_id = ctr_id.clone();
                let deadline = *deadline;
                let Some(c) = self.ctrs.get(&ctr_id) else {
                    return self
                        .durable(&RecordKey::Container(ctr_id), call)
                        .then_some(Ok(Response::RemoveContainer(
                            cri::RemoveContainerResponse {},
                        )));
                };
                if c.changing() {
                    return None;
                }
                match c.state {
                    CtrState::Creating => {}
                    // Forcibly stopped first, as containerd does.
                    CtrState::Running | CtrState::Unknown => {
                        self.ensure_stopping(&ctr_id, deadline, call, now)
                    }
                    CtrState::Created | CtrState::Exited => self.ensure_removing(&ctr_id, call),
                }
                None
            }
            OpKind::UpdateCtr { ctr_id } => {
                let updating = self.ctrs.get(ctr_id.as_str()).map(|c| c.update.is_some());
                match updating {
                    None => Some(Err(Status::internal(format!(
                        "container {ctr_id} vanished while its resources were updated"
                    )))),
                    Some(true) => None,
                    Some(false) => self
                        .durable(&RecordKey::Container(ctr_id.clone()), call)
                        .then_some(Ok(Response::UpdateContainerResources(
                            cri::UpdateContainerResourcesResponse {},
                        ))),
                }
            }
            OpKind::StopPod {
                pod_id,
                remove,
                deadline,
                removed,
            } => {
                let pod_id = pod_id.clone();
                let (remove, deadline) = (*remove, *deadline);
                let Some(pod) = self.pods.get(&pod_id) else {
                    if !remove {
                        return Some(Ok(Response::StopPodSandbox(cri::StopPodSandboxResponse {})));
                    }
                    let mut ok = self.durable(&RecordKey::Pod(pod_id), call);
                    for c in removed.iter() {
                        ok &= self.durable(&RecordKey::Container(c.clone()), call);
                    }
                    return ok.then_some(Ok(Response::RemovePodSandbox(
                        cri::RemovePodSandboxResponse {},
                    )));
                };
                let pod_state = pod.state;
                let members: Vec<(String, CtrState, bool)> = self
                    .ctrs
                    .values()
                    .filter(|c| c.pod_id == pod_id)
                    .map(|c| (c.id.clone(), c.state, c.changing()))
                    .collect();
                // Let creations, starts and updates in flight finish first.
                if members
                    .iter()
                    .any(|(_, s, starting)| *s == CtrState::Creating || *starting)
                {
                    return None;
                }
                // Forcibly stop the running containers (timeout 0).
                let mut waiting = false;
                for (id, s, _) in &members {
                    if matches!(s, CtrState::Running | CtrState::Unknown) {
                        self.ensure_stopping(id, deadline, call, now);
                        waiting = true;
                    }
                }
                if waiting {
                    return None;
                }
                match pod_state {
                    PodState::Creating => return None,
                    PodState::Ready | PodState::Exited => {
                        match self.pods.get(&pod_id).and_then(|p| p.stop_action) {
                            Some(a) => self.wait_on(a, call),
                            None => {
                                let a = self.issue(
                                    Target::StopSandbox(pod_id.clone()),
                                    Action::StopSandbox {
                                        pod_id: pod_id.clone(),
                                    },
                                    Some(call),
                                );
                                if let Some(p) = self.pods.get_mut(&pod_id) {
                                    p.stop_action = Some(a);
                                }
                            }
                        }
                        return None;
                    }
                    PodState::Stopped => {}
                }
                if !remove {
                    let mut ok = self.durable(&RecordKey::Pod(pod_id.clone()), call);
                    for (id, _, _) in &members {
                        ok &= self.durable(&RecordKey::Container(id.clone()), call);
                    }
                    return ok
                        .then_some(Ok(Response::StopPodSandbox(cri::StopPodSandboxResponse {})));
                }
                if !members.is_empty() {
                    for (id, _, _) in &members {
                        removed.insert(id.clone());
                        self.ensure_removing(id, call);
                    }
                    return None;
                }
                match self.pods.get(&pod_id).and_then(|p| p.remove_action) {
                    Some(a) => self.wait_on(a, call),
                    None => {
                        let a = self.issue(
                            Target::RemoveSandbox(pod_id.clone()),
                            Action::RemoveSandbox {
                                pod_id: pod_id.clone(),
                            },
                            Some(call),
                        );
                        if let Some(p) = self.pods.get_mut(&pod_id) {
                            p.remove_action = Some(a);
                        }
                    }
                }
                None
            }
        }
    }

    // ---- outcomes -----------------------------------------------------

    /// Applies an outcome to the objects. Returns the status the calls
    /// waiting on the action fail with, if it failed.
    fn apply(
        &mut self,
        action: ActionId,
        target: &Target,
        outcome: Outcome,
        now: i64,
    ) -> Option<Status> {
        match target {
            Target::CreateSandbox(pod_id) => {
                let p = self.pods.get_mut(pod_id)?;
                p.create_action = None;
                match outcome {
                    Outcome::SandboxCreated(info) if p.state == PodState::Creating => {
                        p.state = PodState::Ready;
                        p.pid = info.pid;
                        p.netns_path = info.netns_path;
                        p.ip = info.ip;
                        p.additional_ips = info.additional_ips;
                        self.mark_dirty(RecordKey::Pod(pod_id.clone()));
                        // As containerd: CREATED then STARTED, with the
                        // sandbox ID as the container ID.
                        self.emit(
                            pod_id,
                            pod_id,
                            cri::ContainerEventType::ContainerCreatedEvent,
                            now,
                        );
                        self.emit(
                            pod_id,
                            pod_id,
                            cri::ContainerEventType::ContainerStartedEvent,
                            now,
                        );
                        None
                    }
                    Outcome::Failed(st) => {
                        if p.state == PodState::Creating {
                            let name = p.name.clone();
                            self.pods.remove(pod_id);
                            self.pod_names.remove(&name);
                        }
                        Some(failure(st))
                    }
                    _ => None,
                }
            }
            Target::StopSandbox(pod_id) => {
                let p = self.pods.get_mut(pod_id)?;
                p.stop_action = None;
                match outcome {
                    Outcome::Failed(st) => Some(failure(st)),
                    _ => {
                        if matches!(p.state, PodState::Ready | PodState::Exited) {
                            let was_ready = p.state == PodState::Ready;
                            p.state = PodState::Stopped;
                            p.pid = 0;
                            self.mark_dirty(RecordKey::Pod(pod_id.clone()));
                            if was_ready {
                                self.emit(
                                    pod_id,
                                    pod_id,
                                    cri::ContainerEventType::ContainerStoppedEvent,
                                    now,
                                );
                            }
                        }
                        None
                    }
                }
            }
            Target::RemoveSandbox(pod_id) => {
                let p = self.pods.get_mut(pod_id)?;
                p.remove_action = None;
                match outcome {
                    Outcome::Failed(st) => Some(failure(st)),
                    _ => {
                        if self.ctrs.values().any(|c| c.pod_id == *pod_id) {
                            return Some(Status::internal(format!(
                                "pod sandbox {pod_id} still has containers"
                            )));
                        }
                        // The event carries the sandbox's last status.
                        self.emit(
                            pod_id,
                            pod_id,
                            cri::ContainerEventType::ContainerDeletedEvent,
                            now,
                        );
                        if let Some(p) = self.pods.remove(pod_id) {
                            self.pod_names.remove(&p.name);
                        }
                        self.mark_deleted(RecordKey::Pod(pod_id.clone()));
                        None
                    }
                }
            }
            Target::CreateContainer(ctr_id) => {
                let c = self.ctrs.get_mut(ctr_id)?;
                c.create_action = None;
                match outcome {
                    Outcome::ContainerCreated {
                        image_ref,
                        image_id,
                        image_volumes,
                        user,
                        image_stop_signal,
                    } if c.state == CtrState::Creating => {
                        c.state = CtrState::Created;
                        c.image_ref = image_ref;
                        c.image_id = image_id;
                        for v in image_volumes {
                            if let Some(m) = c.config.mounts.get_mut(v.index) {
                                m.host_path = v.host_path;
                            }
                            if !c.volume_image_ids.contains(&v.image_id) {
                                c.volume_image_ids.push(v.image_id);
                            }
                        }
                        c.user = user;
                        c.image_stop_signal = image_stop_signal;
                        let pod_id = c.pod_id.clone();
                        self.mark_dirty(RecordKey::Container(ctr_id.clone()));
                        self.emit(
                            ctr_id,
                            &pod_id,
                            cri::ContainerEventType::ContainerCreatedEvent,
                            now,
                        );
                        None
                    }
                    Outcome::Failed(st) => {
                        if c.state == CtrState::Creating {
                            let name = c.name.clone();
                            self.ctrs.remove(ctr_id);
                            self.ctr_names.remove(&name);
                        }
                        Some(failure(st))
                    }
                    _ => None,
                }
            }
            Target::StartContainer(ctr_id) => {
                let c = self.ctrs.get_mut(ctr_id)?;
                c.start_action = None;
                let pod_id = c.pod_id.clone();
                match outcome {
                    Outcome::ContainerStarted { pid, started_at }
                        if c.state == CtrState::Created =>
                    {
                        c.state = CtrState::Running;
                        c.pid = pid;
                        c.started_at = if started_at > 0 { started_at } else { now };
                        let pending = c.pending_exit.take();
                        self.mark_dirty(RecordKey::Container(ctr_id.clone()));
                        self.emit(
                            ctr_id,
                            &pod_id,
                            cri::ContainerEventType::ContainerStartedEvent,
                            now,
                        );
                        if let Some(exit) = pending {
                            let _ = self.apply_exit(ctr_id, exit, now);
                        }
                        None
                    }
                    Outcome::Failed(st) => {
                        c.pending_exit = None;
                        if c.state == CtrState::Created {
                            // As containerd: a failed start leaves the
                            // container EXITED with code 128, StartError.
                            c.state = CtrState::Exited;
                            c.finished_at = now;
                            c.exit_code = START_ERROR_EXIT_CODE;
                            c.reason = START_ERROR_REASON.to_owned();
                            c.message = st.message.clone();
                            self.mark_dirty(RecordKey::Container(ctr_id.clone()));
                            self.emit(
                                ctr_id,
                                &pod_id,
                                cri::ContainerEventType::ContainerStoppedEvent,
                                now,
                            );
                        }
                        Some(failure(st))
                    }
                    _ => None,
                }
            }
            Target::StopContainer(ctr_id) => {
                let c = self.ctrs.get_mut(ctr_id)?;
                c.stops.retain(|(a, _)| *a != action);
                match outcome {
                    Outcome::ContainerExited(exit) => {
                        let _ = self.apply_exit(ctr_id, exit, now);
                        None
                    }
                    Outcome::Failed(st) => Some(failure(st)),
                    _ => None,
                }
            }
            Target::RemoveContainer(ctr_id) => {
                let c = self.ctrs.get_mut(ctr_id)?;
                c.remove_action = None;
                match outcome {
                    Outcome::Failed(st) => Some(failure(st)),
                    _ => {
                        let pod_id = c.pod_id.clone();
                        let name = c.name.clone();
                        self.ctrs.remove(ctr_id);
                        self.ctr_names.remove(&name);
                        self.mark_deleted(RecordKey::Container(ctr_id.clone()));
                        self.emit(
                            ctr_id,
                            &pod_id,
                            cri::ContainerEventType::ContainerDeletedEvent,
                            now,
                        );
                        None
                    }
                }
            }
            Target::UpdateContainer(ctr_id) => {
                let c = self.ctrs.get_mut(ctr_id)?;
                let (_, new) = c.update.take()?;
                match outcome {
                    Outcome::Failed(st) => Some(failure(st)),
                    _ => {
                        let r = c
                            .config
                            .linux
                            .get_or_insert_with(Default::default)
                            .resources
                            .get_or_insert_with(Default::default);
                        merge_resources(r, &new);
                        self.mark_dirty(RecordKey::Container(ctr_id.clone()));
                        None
                    }
                }
            }
            Target::Record(key) => {
                let s = self.sync.get_mut(key)?;
                if s.inflight == Some(action) {
                    s.inflight = None;
                }
                match outcome {
                    Outcome::Failed(st) => {
                        s.dirty = true;
                        s.failed = true;
                        let st = failure(st);
                        Some(Status::new(
                            st.code,
                            format!("cannot persist the record of {key}: {}", st.message),
                        ))
                    }
                    _ => {
                        if s.dirty {
                            self.flush(key);
                        } else if s.inflight.is_none() {
                            self.sync.remove(key);
                        }
                        None
                    }
                }
            }
        }
    }

    fn apply_exit(&mut self, ctr_id: &str, exit: Exit, now: i64) -> Result<(), InputError> {
        let Some(c) = self.ctrs.get_mut(ctr_id) else {
            return Err(InputError::UnknownObject(ctr_id.to_owned()));
        };
        match c.state {
            CtrState::Running | CtrState::Unknown => {
                c.state = CtrState::Exited;
                c.finished_at = if exit.finished_at > 0 {
                    exit.finished_at
                } else {
                    now
                };
                c.exit_code = exit.exit_code;
                c.reason = exit.reason;
                c.message = exit.message;
                c.pid = 0;
                let pod_id = c.pod_id.clone();
                self.mark_dirty(RecordKey::Container(ctr_id.to_owned()));
                self.emit(
                    ctr_id,
                    &pod_id,
                    cri::ContainerEventType::ContainerStoppedEvent,
                    now,
                );
                Ok(())
            }
            CtrState::Created if c.start_action.is_some() => {
                c.pending_exit = Some(exit);
                Ok(())
            }
            CtrState::Exited => Ok(()),
            CtrState::Created | CtrState::Creating => Err(InputError::Ignored(format!(
                "container {ctr_id} has not been started"
            ))),
        }
    }

    // ---- records ------------------------------------------------------

    fn mark_dirty(&mut self, key: RecordKey) {
        let s = self.sync.entry(key.clone()).or_default();
        s.dirty = true;
        s.deleted = false;
        s.failed = false;
        self.flush(&key);
    }

    fn mark_deleted(&mut self, key: RecordKey) {
        let s = self.sync.entry(key.clone()).or_default();
        s.dirty = true;
        s.deleted = true;
        s.failed = false;
        self.flush(&key);
    }

    /// Issues the write (or delete) `key` needs, unless one is in flight or
    /// the last one failed.
    fn flush(&mut self, key: &RecordKey) {
        let Some(s) = self.sync.get(key) else {
            return;
        };
        if !s.dirty || s.inflight.is_some() || s.failed {
            return;
        }
        let action = match (s.deleted, self.record_of(key)) {
            (false, Some(r)) => Action::WriteRecord(Box::new(r)),
            _ => Action::DeleteRecord(key.clone()),
        };
        let a = self.issue(Target::Record(key.clone()), action, None);
        if let Some(s) = self.sync.get_mut(key) {
            s.inflight = Some(a);
            s.dirty = false;
        }
    }

    fn record_of(&self, key: &RecordKey) -> Option<Record> {
        match key {
            RecordKey::Pod(id) => self.pods.get(id).filter(|p| p.visible()).map(pod_record),
            RecordKey::Container(id) => self.ctrs.get(id).filter(|c| c.visible()).map(ctr_record),
        }
    }

    /// A record of every visible pod sandbox and container, as they are in
    /// memory now (whether or not durable yet).
    pub fn records(&self) -> Vec<Record> {
        self.pods
            .values()
            .filter(|p| p.visible())
            .map(pod_record)
            .chain(self.ctrs.values().filter(|c| c.visible()).map(ctr_record))
            .collect()
    }

    /// Rebuilds the state machine after a restart from the persisted
    /// records and what the host reports (see [`Observation`]). Returns the
    /// runtime and warnings about records it could not take. Objects whose
    /// state the observations changed are written again: their
    /// `WriteRecord` actions are waiting in [`Runtime::poll_action`].
    ///
    /// Rules, after containerd's recovery: a READY sandbox whose holder is
    /// gone becomes NOTREADY (StopPodSandbox will reclaim it); a RUNNING
    /// container whose monitor reports an exit takes that exit, one with no
    /// monitor at all becomes EXITED with code 255 and reason `Unknown`,
    /// one whose monitor cannot be reached becomes UNKNOWN; a CREATED
    /// container stays CREATED unless its monitor reports it started. A
    /// container whose sandbox has no record is dropped and its record
    /// deleted.
    pub fn restore(
        ids: impl IdSource + Send + 'static,
        records: impl IntoIterator<Item = Record>,
        observations: &[Observation],
        now: i64,
    ) -> (Runtime, Vec<String>) {
        let mut rt = Runtime::new(ids);
        let mut warnings = Vec::new();
        let mut alive = BTreeSet::new();
        let mut observed = BTreeMap::new();
        for o in observations {
            match o {
                Observation::SandboxAlive { id } => {
                    alive.insert(id.clone());
                }
                Observation::Container { id, observed: obs } => {
                    observed.insert(id.clone(), obs.clone());
                }
            }
        }
        let mut containers = Vec::new();
        let mut dirty = Vec::new();
        for r in records {
            match r.kind {
                None => warnings.push("skipped a record of no kind".to_owned()),
                Some(RecordKind::Container(c)) => containers.push(c),
                Some(RecordKind::Pod(p)) => {
                    let original = Record {
                        kind: Some(RecordKind::Pod(p.clone())),
                    };
                    let Some(config) = p.config else {
                        warnings.push(format!("skipped pod sandbox {:?}: no config", p.id));
                        continue;
                    };
                    let Some(meta) = config.metadata.as_ref() else {
                        warnings.push(format!("skipped pod sandbox {:?}: no metadata", p.id));
                        continue;
                    };
                    if p.id.is_empty() || rt.pods.contains_key(&p.id) {
                        warnings.push(format!(
                            "skipped pod sandbox {:?}: empty or duplicate ID",
                            p.id
                        ));
                        continue;
                    }
                    let name = pod_name(meta);
                    if let Some(owner) = rt.pod_names.get(&name) {
                        warnings.push(format!(
                            "skipped pod sandbox {}: its name {name:?} belongs to {owner}",
                            p.id
                        ));
                        continue;
                    }
                    let recorded = PodPhase::try_from(p.phase).unwrap_or(PodPhase::Unspecified);
                    let state = match recorded {
                        PodPhase::Ready if alive.contains(&p.id) => PodState::Ready,
                        PodPhase::Stopped => PodState::Stopped,
                        _ => PodState::Exited,
                    };
                    rt.pod_names.insert(name.clone(), p.id.clone());
                    let pod = Pod {
                        id: p.id,
                        name,
                        config,
                        runtime_handler: p.runtime_handler,
                        created_at: p.created_at,
                        state,
                        pid: if state == PodState::Ready { p.pid } else { 0 },
                        netns_path: p.netns_path,
                        ip: p.ip,
                        additional_ips: p.additional_ips,
                        stoppers: 0,
                        create_action: None,
                        stop_action: None,
                        remove_action: None,
                    };
                    if pod_record(&pod) != original {
                        dirty.push(RecordKey::Pod(pod.id.clone()));
                    }
                    rt.pods.insert(pod.id.clone(), pod);
                }
            }
        }
        for c in containers {
            let original = Record {
                kind: Some(RecordKind::Container(c.clone())),
            };
            let Some(pod) = rt.pods.get(&c.pod_id) else {
                warnings.push(format!(
                    "dropped container {:?}: its pod sandbox {:?} has no record",
                    c.id, c.pod_id
                ));
                if !c.id.is_empty() {
                    dirty.push(RecordKey::Container(c.id));
                }
                continue;
            };
            let Some(config) = c.config else {
                warnings.push(format!("skipped container {:?}: no config", c.id));
                continue;
            };
            let Some(meta) = config.metadata.as_ref() else {
                warnings.push(format!("skipped container {:?}: no metadata", c.id));
                continue;
            };
            if c.id.is_empty() || rt.ctrs.contains_key(&c.id) || rt.pods.contains_key(&c.id) {
                warnings.push(format!(
                    "skipped container {:?}: empty or duplicate ID",
                    c.id
                ));
                continue;
            }
            let name = container_name(meta, &pod.metadata());
            if let Some(owner) = rt.ctr_names.get(&name) {
                warnings.push(format!(
                    "skipped container {}: its name {name:?} belongs to {owner}",
                    c.id
                ));
                continue;
            }
            let recorded = match cri::ContainerState::try_from(c.state) {
                Ok(cri::ContainerState::ContainerCreated) => CtrState::Created,
                Ok(cri::ContainerState::ContainerRunning) => CtrState::Running,
                Ok(cri::ContainerState::ContainerExited) => CtrState::Exited,
                _ => CtrState::Unknown,
            };
            let mut ctr = Ctr {
                id: c.id.clone(),
                pod_id: c.pod_id,
                name: name.clone(),
                config,
                image_ref: c.image_ref,
                image_id: c.image_id,
                volume_image_ids: c.volume_image_ids,
                user: c.user,
                image_stop_signal: c.image_stop_signal,
                log_path: c.log_path,
                state: recorded,
                created_at: c.created_at,
                started_at: c.started_at,
                finished_at: c.finished_at,
                exit_code: c.exit_code,
                reason: c.reason,
                message: c.message,
                pid: c.pid,
                create_action: None,
                start_action: None,
                pending_exit: None,
                stops: Vec::new(),
                remove_action: None,
                update: None,
            };
            if recorded != CtrState::Exited {
                match observed.get(&c.id) {
                    Some(Observed::Running { pid, started_at }) => {
                        if recorded == CtrState::Created {
                            ctr.started_at = if *started_at > 0 { *started_at } else { now };
                        }
                        ctr.state = CtrState::Running;
                        ctr.pid = *pid;
                    }
                    Some(Observed::Exited(exit)) => {
                        ctr.state = CtrState::Exited;
                        ctr.finished_at = if exit.finished_at > 0 {
                            exit.finished_at
                        } else {
                            now
                        };
                        ctr.exit_code = exit.exit_code;
                        ctr.reason = exit.reason.clone();
                        ctr.message = exit.message.clone();
                        ctr.pid = 0;
                    }
                    Some(Observed::Unreachable) => ctr.state = CtrState::Unknown,
                    None => {
                        if recorded != CtrState::Created {
                            ctr.state = CtrState::Exited;
                            ctr.finished_at = now;
                            ctr.exit_code = UNKNOWN_EXIT_CODE;
                            ctr.reason = UNKNOWN_EXIT_REASON.to_owned();
                            ctr.message = String::new();
                            ctr.pid = 0;
                        }
                    }
                }
            }
            if ctr_record(&ctr) != original {
                dirty.push(RecordKey::Container(ctr.id.clone()));
            }
            rt.ctr_names.insert(name, ctr.id.clone());
            rt.ctrs.insert(ctr.id.clone(), ctr);
        }
        for key in dirty {
            if rt.record_of(&key).is_some() {
                rt.mark_dirty(key);
            } else {
                rt.mark_deleted(key);
            }
        }
        (rt, warnings)
    }

    // ---- events -------------------------------------------------------

    fn emit(&mut self, container_id: &str, pod_id: &str, kind: cri::ContainerEventType, now: i64) {
        let pod_sandbox_status = self
            .pods
            .get(pod_id)
            .filter(|p| p.visible())
            .map(|p| self.pod_status_of(p));
        let containers_statuses = self.container_statuses_of_pod(pod_id);
        self.out_events.push_back(cri::ContainerEventResponse {
            container_id: container_id.to_owned(),
            container_event_type: kind as i32,
            created_at: now,
            pod_sandbox_status,
            containers_statuses,
        });
    }

    // ---- invariants ---------------------------------------------------

    /// Checks the internal consistency of the state machine; `Err` names
    /// the first broken rule. Used by the tests and the fuzz driver.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, id) in &self.pod_names {
            match self.pods.get(id) {
                Some(p) if p.name == *name => {}
                _ => return Err(format!("pod name {name:?} reserved for missing pod {id}")),
            }
        }
        for (id, p) in &self.pods {
            if p.id != *id {
                return Err(format!("pod {id} stored under the wrong key"));
            }
            if self.pod_names.get(&p.name) != Some(id) {
                return Err(format!("pod {id} does not hold its name {:?}", p.name));
            }
            let stoppers = self
                .ops
                .values()
                .filter(|o| matches!(&o.kind, OpKind::StopPod { pod_id, .. } if pod_id == id))
                .count();
            if usize::try_from(p.stoppers).ok() != Some(stoppers) {
                return Err(format!(
                    "pod {id} counts {} stoppers, not {stoppers}",
                    p.stoppers
                ));
            }
            for a in [p.create_action, p.stop_action, p.remove_action]
                .into_iter()
                .flatten()
            {
                if !self.actions.contains_key(&a) {
                    return Err(format!("pod {id} waits on unknown action {}", a.0));
                }
            }
            if (p.state == PodState::Creating) != p.create_action.is_some() {
                return Err(format!(
                    "pod {id} is {:?} with create action {:?}",
                    p.state, p.create_action
                ));
            }
        }
        for (name, id) in &self.ctr_names {
            match self.ctrs.get(id) {
                Some(c) if c.name == *name => {}
                _ => {
                    return Err(format!(
                        "container name {name:?} reserved for missing container {id}"
                    ))
                }
            }
        }
        for (id, c) in &self.ctrs {
            if c.id != *id {
                return Err(format!("container {id} stored under the wrong key"));
            }
            if self.ctr_names.get(&c.name) != Some(id) {
                return Err(format!(
                    "container {id} does not hold its name {:?}",
                    c.name
                ));
            }
            match self.pods.get(&c.pod_id) {
                None => return Err(format!("container {id} is in missing pod {}", c.pod_id)),
                Some(p) if !p.visible() => {
                    return Err(format!(
                        "container {id} is in pod {} still being created",
                        c.pod_id
                    ))
                }
                _ => {}
            }
            if self.pods.contains_key(id) {
                return Err(format!("container {id} has the ID of a pod"));
            }
            let mut acts: Vec<ActionId> = c.stops.iter().map(|(a, _)| *a).collect();
            acts.extend(
                [
                    c.create_action,
                    c.start_action,
                    c.remove_action,
                    c.update.as_ref().map(|(a, _)| *a),
                ]
                .into_iter()
                .flatten(),
            );
            for a in acts {
                if !self.actions.contains_key(&a) {
                    return Err(format!("container {id} waits on unknown action {}", a.0));
                }
            }
            if (c.state == CtrState::Creating) != c.create_action.is_some() {
                return Err(format!(
                    "container {id} is {:?} with create action {:?}",
                    c.state, c.create_action
                ));
            }
            if c.start_action.is_some() && c.state != CtrState::Created {
                return Err(format!(
                    "container {id} is being started in state {:?}",
                    c.state
                ));
            }
            if c.remove_action.is_some() && !matches!(c.state, CtrState::Created | CtrState::Exited)
            {
                return Err(format!(
                    "container {id} is being removed in state {:?}",
                    c.state
                ));
            }
            if c.pending_exit.is_some() && c.start_action.is_none() {
                return Err(format!(
                    "container {id} holds an exit with no start in flight"
                ));
            }
        }
        for (key, s) in &self.sync {
            if let Some(a) = s.inflight {
                match self.actions.get(&a) {
                    Some(p) if p.target == Target::Record(key.clone()) => {}
                    _ => return Err(format!("record {key} waits on a foreign action {}", a.0)),
                }
            }
        }
        Ok(())
    }
}

fn pod_phase(state: PodState) -> PodPhase {
    match state {
        PodState::Creating => PodPhase::Unspecified,
        PodState::Ready => PodPhase::Ready,
        PodState::Exited => PodPhase::Exited,
        PodState::Stopped => PodPhase::Stopped,
    }
}

pub(crate) fn pod_record(p: &Pod) -> Record {
    Record {
        kind: Some(RecordKind::Pod(PodRecord {
            id: p.id.clone(),
            config: Some(p.config.clone()),
            runtime_handler: p.runtime_handler.clone(),
            phase: pod_phase(p.state) as i32,
            created_at: p.created_at,
            pid: p.pid,
            netns_path: p.netns_path.clone(),
            ip: p.ip.clone(),
            additional_ips: p.additional_ips.clone(),
        })),
    }
}

/// The limits UpdateContainerResources set over those recorded: the fields
/// the host applies (see the frontend), when set; the others stay.
fn merge_resources(r: &mut cri::LinuxContainerResources, new: &cri::LinuxContainerResources) {
    if new.cpu_period > 0 {
        r.cpu_period = new.cpu_period;
    }
    if new.cpu_quota != 0 {
        r.cpu_quota = new.cpu_quota;
    }
    if new.cpu_shares > 0 {
        r.cpu_shares = new.cpu_shares;
    }
    if new.memory_limit_in_bytes > 0 {
        r.memory_limit_in_bytes = new.memory_limit_in_bytes;
    }
    if new.memory_swap_limit_in_bytes != 0 {
        r.memory_swap_limit_in_bytes = new.memory_swap_limit_in_bytes;
    }
    if !new.cpuset_cpus.is_empty() {
        r.cpuset_cpus.clone_from(&new.cpuset_cpus);
    }
    if !new.cpuset_mems.is_empty() {
        r.cpuset_mems.clone_from(&new.cpuset_mems);
    }
}

pub(crate) fn ctr_record(c: &Ctr) -> Record {
    Record {
        kind: Some(RecordKind::Container(ContainerRecord {
            id: c.id.clone(),
            pod_id: c.pod_id.clone(),
            config: Some(c.config.clone()),
            image_ref: c.image_ref.clone(),
            image_id: c.image_id.clone(),
            log_path: c.log_path.clone(),
            state: c.state.cri() as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            message: c.message.clone(),
            pid: c.pid,
            volume_image_ids: c.volume_image_ids.clone(),
            user: c.user.clone(),
            image_stop_signal: c.image_stop_signal,
        })),
    }
}
