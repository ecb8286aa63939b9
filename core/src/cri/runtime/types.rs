//! The objects the state machine keeps, its in-flight calls ("ops"), the
//! actions they wait on and where each record stands.

use std::collections::BTreeSet;

use crisp_proto::cri;

use crate::cri::record::RecordKey;
use crate::cri::types::{ActionId, CallId, Exit, Outcome, Response};
use crate::grpc::{Code, Status};

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

    pub(super) fn busy(&self) -> bool {
        self.create_action.is_some()
            || self.start_action.is_some()
            || !self.stops.is_empty()
            || self.remove_action.is_some()
            || self.update.is_some()
    }

    /// Its process exited: EXITED with `exit`, stamped `now` when the exit
    /// carries no time.
    pub(super) fn exited(&mut self, exit: Exit, now: i64) {
        self.state = CtrState::Exited;
        self.finished_at = if exit.finished_at > 0 {
            exit.finished_at
        } else {
            now
        };
        self.exit_code = exit.exit_code;
        self.reason = exit.reason;
        self.message = exit.message;
        self.pid = 0;
    }

    /// An action other than a stop or removal is in flight: stops and
    /// removals wait for it.
    pub(super) fn changing(&self) -> bool {
        self.start_action.is_some() || self.update.is_some()
    }
}

/// What an outstanding action is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
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
    pub(super) fn expects(&self) -> &'static str {
        match self {
            Target::CreateSandbox(_) => "SandboxCreated or Failed",
            Target::CreateContainer(_) => "ContainerCreated or Failed",
            Target::StartContainer(_) => "ContainerStarted or Failed",
            Target::StopContainer(_) => "ContainerExited or Failed",
            _ => "Done or Failed",
        }
    }

    pub(super) fn fits(&self, outcome: &Outcome) -> bool {
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
pub(super) struct PendingAction {
    pub target: Target,
    /// Calls that fail if this action fails.
    pub waiters: Vec<CallId>,
}

/// What a record should become: the object's current state, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Write,
    Delete,
}

/// Where a record stands relative to the in-memory object, for a record
/// that is not durable yet (a durable one has no entry). At most one write
/// per record is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecordSync {
    /// Older than the object and no write in flight: the next flush issues
    /// one.
    Stale(Change),
    /// A write (or deletion) is in flight; once it is done the record is
    /// durable.
    Writing { action: ActionId, change: Change },
    /// A write is in flight, but the object changed since: `next` follows
    /// once it is answered.
    WritingStale { action: ActionId, next: Change },
    /// The last write failed; not retried until a call needs it, the
    /// object changes again, or [`Runtime::retry_records`](super::Runtime::retry_records).
    Failed(Change),
}

impl RecordSync {
    /// The write in flight, if any.
    pub(super) fn inflight(self) -> Option<ActionId> {
        match self {
            RecordSync::Writing { action, .. } | RecordSync::WritingStale { action, .. } => {
                Some(action)
            }
            RecordSync::Stale(_) | RecordSync::Failed(_) => None,
        }
    }

    /// After the object changed to want `change`.
    pub(super) fn changed(this: Option<RecordSync>, change: Change) -> RecordSync {
        match this.and_then(RecordSync::inflight) {
            Some(action) => RecordSync::WritingStale {
                action,
                next: change,
            },
            None => RecordSync::Stale(change),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) enum OpKind {
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
pub(super) struct Op {
    pub kind: OpKind,
    pub error: Option<Status>,
}

/// What advancing an op gives: its answer, or `None` while it waits.
pub(super) type Advance = Option<Result<Response, Status>>;

/// How a call starts: an op to run, or an answer now.
pub(super) type Begin = Result<OpKind, Box<Result<Response, Status>>>;

pub(super) fn refuse(st: Status) -> Begin {
    Err(Box::new(Err(st)))
}

pub(super) fn answer(r: Response) -> Begin {
    Err(Box::new(Ok(r)))
}

pub(super) enum Find {
    Found(String),
    NotFound,
    Bad(Status),
}

pub(super) fn failure(st: Status) -> Status {
    if st.code == Code::Ok {
        Status::unknown(st.message)
    } else {
        st
    }
}
