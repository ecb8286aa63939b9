//! What the frontend persists: one [`Record`] per pod sandbox and per
//! container, encoded with prost (`Record::encode_to_vec`, `Record::decode`).
//! The messages are declared here with prost's derive rather than in a
//! `.proto`, so the core needs no build step; their schema is:
//!
//! ```proto
//! message Record { oneof kind { PodRecord pod = 1; ContainerRecord container = 2; } }
//! message PodRecord {
//!   string id = 1; runtime.v1.PodSandboxConfig config = 2; string runtime_handler = 3;
//!   PodPhase phase = 4; int64 created_at = 5; uint32 pid = 6; string netns_path = 7;
//!   string ip = 8; repeated string additional_ips = 9;
//! }
//! message ContainerRecord {
//!   string id = 1; string pod_id = 2; runtime.v1.ContainerConfig config = 3;
//!   string image_ref = 4; string image_id = 5; string log_path = 6;
//!   runtime.v1.ContainerState state = 7; int64 created_at = 8; int64 started_at = 9;
//!   int64 finished_at = 10; int32 exit_code = 11; string reason = 12; string message = 13;
//!   uint32 pid = 14; repeated string volume_image_ids = 15;
//!   runtime.v1.ContainerUser user = 16; int32 image_stop_signal = 17;
//! }
//! ```
//!
//! Field numbers are stable: new fields get new numbers, old ones are
//! never reused, so records written by an older crisp still decode.

use std::fmt;

use crisp_proto::cri;

/// One persisted object.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Record {
    #[prost(oneof = "RecordKind", tags = "1, 2")]
    pub kind: Option<RecordKind>,
}

/// Which object a [`Record`] describes.
// Records are written and read once per change; their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, ::prost::Oneof)]
pub enum RecordKind {
    #[prost(message, tag = "1")]
    Pod(PodRecord),
    #[prost(message, tag = "2")]
    Container(ContainerRecord),
}

/// A pod sandbox as persisted.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct PodRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub config: Option<cri::PodSandboxConfig>,
    #[prost(string, tag = "3")]
    pub runtime_handler: String,
    /// A [`PodPhase`] value.
    #[prost(enumeration = "PodPhase", tag = "4")]
    pub phase: i32,
    #[prost(int64, tag = "5")]
    pub created_at: i64,
    #[prost(uint32, tag = "6")]
    pub pid: u32,
    #[prost(string, tag = "7")]
    pub netns_path: String,
    #[prost(string, tag = "8")]
    pub ip: String,
    #[prost(string, repeated, tag = "9")]
    pub additional_ips: Vec<String>,
}

/// A container as persisted.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ContainerRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub pod_id: String,
    #[prost(message, optional, tag = "3")]
    pub config: Option<cri::ContainerConfig>,
    #[prost(string, tag = "4")]
    pub image_ref: String,
    #[prost(string, tag = "5")]
    pub image_id: String,
    #[prost(string, tag = "6")]
    pub log_path: String,
    /// A `cri::ContainerState` value.
    #[prost(enumeration = "cri::ContainerState", tag = "7")]
    pub state: i32,
    #[prost(int64, tag = "8")]
    pub created_at: i64,
    #[prost(int64, tag = "9")]
    pub started_at: i64,
    #[prost(int64, tag = "10")]
    pub finished_at: i64,
    #[prost(int32, tag = "11")]
    pub exit_code: i32,
    #[prost(string, tag = "12")]
    pub reason: String,
    #[prost(string, tag = "13")]
    pub message: String,
    #[prost(uint32, tag = "14")]
    pub pid: u32,
    /// The images mounted as volumes.
    #[prost(string, repeated, tag = "15")]
    pub volume_image_ids: Vec<String>,
    /// The identity the container's process runs as, as the host resolved
    /// it at creation; absent in records of an older crisp.
    #[prost(message, optional, tag = "16")]
    pub user: Option<cri::ContainerUser>,
    /// The image's StopSignal as a `cri::Signal` value; 0 when it names none.
    #[prost(int32, tag = "17")]
    pub image_stop_signal: i32,
}

/// The lifecycle of a pod sandbox as persisted. `Ready` is CRI's
/// SANDBOX_READY; the other two are SANDBOX_NOTREADY and differ in whether
/// the host still holds the sandbox's resources (namespaces, network).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum PodPhase {
    /// Never written; decodes old or corrupt records as "not ready".
    Unspecified = 0,
    /// Its process runs and its network is set up.
    Ready = 1,
    /// Its process died on its own: NOTREADY, resources not yet reclaimed
    /// (StopPodSandbox will tear them down).
    Exited = 2,
    /// Stopped by StopPodSandbox: NOTREADY, resources released.
    Stopped = 3,
}

/// Which record: the frontend's key for storing it (e.g. a file name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    Pod(String),
    Container(String),
}

impl RecordKey {
    /// The object's ID.
    pub fn id(&self) -> &str {
        match self {
            RecordKey::Pod(id) | RecordKey::Container(id) => id,
        }
    }

    /// `"pod"` or `"container"`.
    pub fn kind(&self) -> &'static str {
        match self {
            RecordKey::Pod(_) => "pod",
            RecordKey::Container(_) => "container",
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

impl Record {
    /// The key this record is stored under, if it has a kind.
    pub fn key(&self) -> Option<RecordKey> {
        match &self.kind {
            Some(RecordKind::Pod(p)) => Some(RecordKey::Pod(p.id.clone())),
            Some(RecordKind::Container(c)) => Some(RecordKey::Container(c.id.clone())),
            None => None,
        }
    }
}

/// What the host reports about a container on restart (from its monitor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The monitor reports the process alive.
    Running { pid: u32, started_at: i64 },
    /// The monitor recorded the exit.
    Exited(super::Exit),
    /// The monitor could not be reached: the state is not known (CRI's
    /// CONTAINER_UNKNOWN; StopContainer or RemoveContainer clean it up).
    Unreachable,
}

/// One host fact handed to [`Runtime::restore`](super::Runtime::restore).
/// Containers and sandboxes not mentioned have no process on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    Container {
        id: String,
        observed: Observed,
    },
    /// A pod sandbox's holder process is alive.
    SandboxAlive {
        id: String,
    },
}
