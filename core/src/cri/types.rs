//! The values that cross the boundary between the CRI state machine and
//! its frontend: requests and responses, actions for the host and their
//! outcomes, and unsolicited host notices.

use crisp_proto::cri;
use crisp_proto::methods::Method;
use prost::Message;

use super::record::{Record, RecordKey};
use crate::grpc::Status;

/// A CRI call the state machine answers: the pod and container lifecycle,
/// their status and listings, and the stats listings (whose usage numbers
/// the frontend fills in, see [`Runtime::list_container_stats`](super::Runtime::list_container_stats)).
// Requests are decoded once and moved; boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    RunPodSandbox(cri::RunPodSandboxRequest),
    StopPodSandbox(cri::StopPodSandboxRequest),
    RemovePodSandbox(cri::RemovePodSandboxRequest),
    PodSandboxStatus(cri::PodSandboxStatusRequest),
    ListPodSandbox(cri::ListPodSandboxRequest),
    CreateContainer(cri::CreateContainerRequest),
    StartContainer(cri::StartContainerRequest),
    StopContainer(cri::StopContainerRequest),
    RemoveContainer(cri::RemoveContainerRequest),
    ListContainers(cri::ListContainersRequest),
    ContainerStatus(cri::ContainerStatusRequest),
    ContainerStats(cri::ContainerStatsRequest),
    ListContainerStats(cri::ListContainerStatsRequest),
    PodSandboxStats(cri::PodSandboxStatsRequest),
    ListPodSandboxStats(cri::ListPodSandboxStatsRequest),
    UpdateContainerResources(cri::UpdateContainerResourcesRequest),
}

/// The answer to a [`Request`], variant for variant.
#[allow(clippy::large_enum_variant)] // moved once per call
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    RunPodSandbox(cri::RunPodSandboxResponse),
    StopPodSandbox(cri::StopPodSandboxResponse),
    RemovePodSandbox(cri::RemovePodSandboxResponse),
    PodSandboxStatus(cri::PodSandboxStatusResponse),
    ListPodSandbox(cri::ListPodSandboxResponse),
    CreateContainer(cri::CreateContainerResponse),
    StartContainer(cri::StartContainerResponse),
    StopContainer(cri::StopContainerResponse),
    RemoveContainer(cri::RemoveContainerResponse),
    ListContainers(cri::ListContainersResponse),
    ContainerStatus(cri::ContainerStatusResponse),
    ContainerStats(cri::ContainerStatsResponse),
    ListContainerStats(cri::ListContainerStatsResponse),
    PodSandboxStats(cri::PodSandboxStatsResponse),
    ListPodSandboxStats(cri::ListPodSandboxStatsResponse),
    UpdateContainerResources(cri::UpdateContainerResourcesResponse),
}

impl Request {
    /// Decodes the request message of `method`. `None` when the method is
    /// not one the state machine answers (Version, images, exec, ...).
    pub fn decode(method: Method, buf: &[u8]) -> Option<Result<Request, Status>> {
        fn d<M: Message + Default>(buf: &[u8], f: fn(M) -> Request) -> Result<Request, Status> {
            M::decode(buf)
                .map(f)
                .map_err(|e| Status::invalid_argument(format!("cannot decode request: {e}")))
        }
        Some(match method {
            Method::RunPodSandbox => d(buf, Request::RunPodSandbox),
            Method::StopPodSandbox => d(buf, Request::StopPodSandbox),
            Method::RemovePodSandbox => d(buf, Request::RemovePodSandbox),
            Method::PodSandboxStatus => d(buf, Request::PodSandboxStatus),
            Method::ListPodSandbox => d(buf, Request::ListPodSandbox),
            Method::CreateContainer => d(buf, Request::CreateContainer),
            Method::StartContainer => d(buf, Request::StartContainer),
            Method::StopContainer => d(buf, Request::StopContainer),
            Method::RemoveContainer => d(buf, Request::RemoveContainer),
            Method::ListContainers => d(buf, Request::ListContainers),
            Method::ContainerStatus => d(buf, Request::ContainerStatus),
            Method::ContainerStats => d(buf, Request::ContainerStats),
            Method::ListContainerStats => d(buf, Request::ListContainerStats),
            Method::PodSandboxStats => d(buf, Request::PodSandboxStats),
            Method::ListPodSandboxStats => d(buf, Request::ListPodSandboxStats),
            Method::UpdateContainerResources => d(buf, Request::UpdateContainerResources),
            _ => return None,
        })
    }

    /// Decodes the request of a `Stream*` listing as its `List*` twin
    /// (the same filter): the state machine answers the listing, and
    /// [`Response::encode_stream`] cuts it into the stream's messages.
    /// `None` when `method` is not one of those streams.
    pub fn decode_stream(method: Method, buf: &[u8]) -> Option<Result<Request, Status>> {
        fn d<M: Message + Default>(
            buf: &[u8],
            f: impl FnOnce(M) -> Request,
        ) -> Result<Request, Status> {
            M::decode(buf)
                .map(f)
                .map_err(|e| Status::invalid_argument(format!("cannot decode request: {e}")))
        }
        Some(match method {
            Method::StreamPodSandboxes => d(buf, |r: cri::StreamPodSandboxesRequest| {
                Request::ListPodSandbox(cri::ListPodSandboxRequest { filter: r.filter })
            }),
            Method::StreamContainers => d(buf, |r: cri::StreamContainersRequest| {
                Request::ListContainers(cri::ListContainersRequest { filter: r.filter })
            }),
            Method::StreamContainerStats => d(buf, |r: cri::StreamContainerStatsRequest| {
                Request::ListContainerStats(cri::ListContainerStatsRequest { filter: r.filter })
            }),
            Method::StreamPodSandboxStats => d(buf, |r: cri::StreamPodSandboxStatsRequest| {
                Request::ListPodSandboxStats(cri::ListPodSandboxStatsRequest { filter: r.filter })
            }),
            _ => return None,
        })
    }

    /// The rpc this request belongs to.
    pub fn method(&self) -> Method {
        match self {
            Request::RunPodSandbox(_) => Method::RunPodSandbox,
            Request::StopPodSandbox(_) => Method::StopPodSandbox,
            Request::RemovePodSandbox(_) => Method::RemovePodSandbox,
            Request::PodSandboxStatus(_) => Method::PodSandboxStatus,
            Request::ListPodSandbox(_) => Method::ListPodSandbox,
            Request::CreateContainer(_) => Method::CreateContainer,
            Request::StartContainer(_) => Method::StartContainer,
            Request::StopContainer(_) => Method::StopContainer,
            Request::RemoveContainer(_) => Method::RemoveContainer,
            Request::ListContainers(_) => Method::ListContainers,
            Request::ContainerStatus(_) => Method::ContainerStatus,
            Request::ContainerStats(_) => Method::ContainerStats,
            Request::ListContainerStats(_) => Method::ListContainerStats,
            Request::PodSandboxStats(_) => Method::PodSandboxStats,
            Request::ListPodSandboxStats(_) => Method::ListPodSandboxStats,
            Request::UpdateContainerResources(_) => Method::UpdateContainerResources,
        }
    }
}

impl Response {
    /// The protobuf encoding of the response message.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Response::RunPodSandbox(m) => m.encode_to_vec(),
            Response::StopPodSandbox(m) => m.encode_to_vec(),
            Response::RemovePodSandbox(m) => m.encode_to_vec(),
            Response::PodSandboxStatus(m) => m.encode_to_vec(),
            Response::ListPodSandbox(m) => m.encode_to_vec(),
            Response::CreateContainer(m) => m.encode_to_vec(),
            Response::StartContainer(m) => m.encode_to_vec(),
            Response::StopContainer(m) => m.encode_to_vec(),
            Response::RemoveContainer(m) => m.encode_to_vec(),
            Response::ListContainers(m) => m.encode_to_vec(),
            Response::ContainerStatus(m) => m.encode_to_vec(),
            Response::ContainerStats(m) => m.encode_to_vec(),
            Response::ListContainerStats(m) => m.encode_to_vec(),
            Response::PodSandboxStats(m) => m.encode_to_vec(),
            Response::ListPodSandboxStats(m) => m.encode_to_vec(),
            Response::UpdateContainerResources(m) => m.encode_to_vec(),
        }
    }

    /// A `List*` response as the messages of its `Stream*` twin, encoded,
    /// in [`stream_batches`](super::stream_batches). `None` for responses
    /// that are not listings with a stream twin.
    pub fn encode_stream(self) -> Option<Vec<Vec<u8>>> {
        use super::stream_batches;
        fn each<T: Message, M: Message>(items: Vec<T>, wrap: impl Fn(Vec<T>) -> M) -> Vec<Vec<u8>> {
            stream_batches(items)
                .into_iter()
                .map(|b| wrap(b).encode_to_vec())
                .collect()
        }
        Some(match self {
            Response::ListPodSandbox(m) => each(m.items, |pod_sandboxes| {
                cri::StreamPodSandboxesResponse { pod_sandboxes }
            }),
            Response::ListContainers(m) => each(m.containers, |containers| {
                cri::StreamContainersResponse { containers }
            }),
            Response::ListContainerStats(m) => each(m.stats, |container_stats| {
                cri::StreamContainerStatsResponse { container_stats }
            }),
            Response::ListPodSandboxStats(m) => each(m.stats, |pod_sandbox_stats| {
                cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }
            }),
            _ => return None,
        })
    }
}

/// Identifies a call that waits for the host; its reply comes out of
/// [`Runtime::poll_reply`](super::Runtime::poll_reply) under this id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Identifies an [`Action`]; its [`Outcome`] is reported under this id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionId(pub u64);

/// What became of a [`Request`] handed to
/// [`Runtime::handle`](super::Runtime::handle).
#[allow(clippy::large_enum_variant)] // moved once per call
#[derive(Clone, Debug, PartialEq)]
pub enum Handled {
    /// Answered now.
    Done(Result<Response, Status>),
    /// Waiting for the host: carry out the actions from
    /// [`Runtime::poll_action`](super::Runtime::poll_action), report their
    /// outcomes, and the reply will come out of
    /// [`Runtime::poll_reply`](super::Runtime::poll_reply).
    Pending(CallId),
}

/// Host work the state machine asks for. Every action must be answered
/// exactly once with [`Runtime::handle_outcome`](super::Runtime::handle_outcome);
/// the outcome each expects is listed with it. Actions on different objects
/// are independent and may run concurrently. Two host actions on the same
/// pod sandbox or container are never outstanding at once, except
/// `StopContainer`, which is issued again with a shorter timeout when a
/// later stop asks for less grace; and at most one record action per key
/// is outstanding, so records never need reordering.
#[allow(clippy::large_enum_variant)] // moved once per call
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create and start the pod sandbox: its namespaces, its holder
    /// process, its network (CNI). → [`Outcome::SandboxCreated`]; on
    /// failure clean up whatever was made and answer [`Outcome::Failed`].
    CreateSandbox {
        pod_id: String,
        /// The reserved name, `<name>_<namespace>_<uid>_<attempt>`.
        name: String,
        config: Box<cri::PodSandboxConfig>,
        runtime_handler: String,
    },
    /// Stop the sandbox: kill its holder process, tear its network down.
    /// Its containers are already stopped. Must succeed when already done.
    /// → [`Outcome::Done`].
    StopSandbox { pod_id: String },
    /// Remove what is left of a stopped sandbox on the host (its
    /// directories). Its containers are already removed. → [`Outcome::Done`].
    RemoveSandbox { pod_id: String },
    /// Create the container (resolve the image, prepare the rootfs and the
    /// runtime spec) without starting it. → [`Outcome::ContainerCreated`].
    CreateContainer {
        container_id: String,
        pod_id: String,
        /// The reserved name, `<name>_<podname>_<podnamespace>_<poduid>_<attempt>`.
        name: String,
        config: Box<cri::ContainerConfig>,
        /// The sandbox's configuration as given to RunPodSandbox.
        sandbox_config: Box<cri::PodSandboxConfig>,
        /// The holder process of the sandbox, whose namespaces to join.
        sandbox_pid: u32,
        netns_path: String,
        image: cri::ImageSpec,
        /// `<sandbox log_directory>/<config log_path>`, or empty for no log.
        log_path: String,
    },
    /// Start the created container's process (under its monitor).
    /// → [`Outcome::ContainerStarted`].
    StartContainer {
        container_id: String,
        pod_id: String,
        sandbox_pid: u32,
    },
    /// Stop the running container: send the stop signal, wait `timeout`
    /// seconds (0: at once), then SIGKILL; answer when the process is gone.
    /// → [`Outcome::ContainerExited`] with its exit; for a container whose
    /// process cannot be found (state UNKNOWN after a restart), code 255
    /// and reason `Unknown`.
    StopContainer {
        container_id: String,
        pod_id: String,
        /// Grace period in seconds, never negative.
        timeout: i64,
        /// A `cri::Signal` value from the config; RUNTIME_DEFAULT means the
        /// image's stop signal or SIGTERM.
        stop_signal: i32,
    },
    /// Apply new limits to the container's cgroup (the fields `resources`
    /// sets; the others stay). → [`Outcome::Done`].
    UpdateContainerResources {
        container_id: String,
        pod_id: String,
        resources: Box<cri::LinuxContainerResources>,
    },
    /// Remove the stopped container's host resources (rootfs, monitor
    /// state; the log file stays, kubelet owns it). → [`Outcome::Done`].
    RemoveContainer {
        container_id: String,
        pod_id: String,
    },
    /// Write the record atomically (temp file, fsync, rename, fsync dir),
    /// replacing any record under the same key. → [`Outcome::Done`].
    WriteRecord(Box<Record>),
    /// Delete the record, if present, durably. → [`Outcome::Done`].
    DeleteRecord(RecordKey),
}

/// How a container ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    /// Unix nanoseconds; 0 means "when reported".
    pub finished_at: i64,
    /// CamelCase reason, e.g. `OOMKilled`; empty lets crisp report
    /// `Completed` (code 0) or `Error`, as containerd does.
    pub reason: String,
    pub message: String,
}

/// What the sandbox looks like once created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxCreated {
    /// The holder process.
    pub pid: u32,
    /// Bind-mounted network namespace; empty with host networking.
    pub netns_path: String,
    /// Primary pod IP; empty with host networking.
    pub ip: String,
    pub additional_ips: Vec<String>,
}

/// An image volume (a mount with `image` set) as the host mounted it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageVolume {
    /// The mount's index in the container config's `mounts`.
    pub index: usize,
    /// Where the image (or its `image_sub_path`) is on the host: the
    /// mount's `host_path` from now on, as containerd reports it.
    pub host_path: String,
    /// The image's ID: the image stays in use while the container exists.
    pub image_id: String,
}

/// The result of an [`Action`].
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The action succeeded and has nothing to report.
    Done,
    SandboxCreated(SandboxCreated),
    ContainerCreated {
        /// The resolved image (its ID, as ImageStatus reports it).
        image_ref: String,
        /// The image ID as PullImage returned it; may equal `image_ref`.
        image_id: String,
        /// The image volumes the host mounted for the container.
        image_volumes: Vec<ImageVolume>,
        /// The identity the process will run as (the OCI spec's
        /// `process.user`), reported in ContainerStatus.user.
        user: Option<cri::ContainerUser>,
        /// The image's StopSignal as a `cri::Signal` value; RUNTIME_DEFAULT
        /// when it names none, or one the enum lacks.
        image_stop_signal: i32,
    },
    ContainerStarted {
        pid: u32,
        /// Unix nanoseconds; 0 means "when reported".
        started_at: i64,
    },
    ContainerExited(Exit),
    /// The action failed; the status is what the waiting call answers.
    Failed(Status),
}

/// Things the host reports without being asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// A container's process ended on its own (or was killed, e.g. by the
    /// OOM killer: reason `OOMKilled`).
    ContainerExited { container_id: String, exit: Exit },
    /// A sandbox's holder process died.
    SandboxExited { pod_id: String },
}

/// Frontend misuse reported by the input methods. The state machine is
/// unchanged unless the variant says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputError {
    /// No outstanding action has this id (never issued, or already answered).
    UnknownAction(ActionId),
    /// The outcome does not fit the action; it was taken as a failure.
    UnexpectedOutcome {
        action: ActionId,
        expected: &'static str,
    },
    /// A notice about an object crisp does not know (or no longer knows).
    UnknownObject(String),
    /// A notice that does not fit the object's state; ignored.
    Ignored(String),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::UnknownAction(a) => write!(f, "no outstanding action {}", a.0),
            InputError::UnexpectedOutcome { action, expected } => write!(
                f,
                "unexpected outcome for action {} (expected {expected}); taken as a failure",
                action.0
            ),
            InputError::UnknownObject(id) => write!(f, "no pod sandbox or container {id}"),
            InputError::Ignored(why) => write!(f, "notice ignored: {why}"),
        }
    }
}

impl std::error::Error for InputError {}
