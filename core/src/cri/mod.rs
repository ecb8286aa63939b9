//! The CRI semantics as a pure state machine: pod sandboxes and containers,
//! their IDs, names, states and legal transitions, the spec's idempotency
//! rules, list filters, container events, persistence records and restore.
//!
//! Like the rest of the core it does no I/O: requests, action outcomes,
//! host notices and the time go in; replies, actions for the host, records
//! to persist and container events come out.
//!
//! # Driving it
//!
//! Methods come in three groups, in the style of `quinn-proto`:
//!
//! * inputs: [`Runtime::handle`] (a decoded request), [`Runtime::handle_outcome`]
//!   (the result of an action), [`Runtime::handle_notice`] (a container or
//!   sandbox died on its own), each with the current time;
//! * outputs, to drain after every input: [`Runtime::poll_action`],
//!   [`Runtime::poll_reply`], [`Runtime::poll_event`];
//! * read-only queries: [`Runtime::list_containers`] and friends, also
//!   reachable through `handle`.
//!
//! ```
//! use crisp_core::cri::{Action, Handled, Outcome, Request, Response, Runtime, SeqIds, SandboxCreated};
//! use crisp_proto::cri;
//!
//! let mut rt = Runtime::new(SeqIds::new(1)); // crispd: an IdSource over getrandom
//! let config = cri::PodSandboxConfig {
//!     metadata: Some(cri::PodSandboxMetadata {
//!         name: "web".into(), uid: "u1".into(), namespace: "default".into(), attempt: 0,
//!     }),
//!     ..Default::default()
//! };
//! let req = Request::RunPodSandbox(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() });
//! let Handled::Pending(call) = rt.handle(req, 1_000) else { unreachable!() };
//! // The event loop carries out every action (on its worker pool) ...
//! while let Some((id, action)) = rt.poll_action() {
//!     let outcome = match action {
//!         Action::CreateSandbox { .. } => Outcome::SandboxCreated(SandboxCreated {
//!             pid: 42, netns_path: "/run/netns/x".into(), ip: "10.0.0.2".into(), additional_ips: vec![],
//!         }),
//!         Action::WriteRecord(_) | Action::DeleteRecord(_) => Outcome::Done,
//!         other => unreachable!("{other:?}"),
//!     };
//!     // ... and reports each outcome back, which may yield more actions.
//!     rt.handle_outcome(id, outcome, 2_000).unwrap();
//! }
//! // The reply comes once the sandbox exists and its record is durable.
//! let (done, reply) = rt.poll_reply().unwrap();
//! assert_eq!(done, call);
//! let Ok(Response::RunPodSandbox(resp)) = reply else { unreachable!() };
//! assert_eq!(resp.pod_sandbox_id.len(), 64);
//! while let Some(event) = rt.poll_event() { /* GetContainerEvents subscribers */ let _ = event; }
//! ```
//!
//! # Rules, and the choices where CRI leaves room
//!
//! containerd's CRI plugin (v2, `internal/cri/server`) is the reference.
//!
//! * IDs are 64 lowercase hex digits from 32 bytes of [`IdSource`] entropy.
//!   Every by-ID call accepts a unique prefix (as containerd's truncindex);
//!   an empty ID or an ambiguous prefix is `INVALID_ARGUMENT`. A pod
//!   sandbox or container whose creation is in flight is invisible (its ID
//!   has not been returned to anyone yet) but its name is reserved.
//! * Names: `<name>_<namespace>_<uid>_<attempt>` for a pod sandbox,
//!   `<name>_<podname>_<podnamespace>_<poduid>_<attempt>` for a container
//!   (from the stored sandbox's metadata, not the request's copy). A second
//!   one is `ALREADY_EXISTS`, naming the holder's ID; the name is released
//!   when the object is removed or its creation fails.
//! * Idempotency: StopPodSandbox and RemovePodSandbox of an unknown sandbox,
//!   StopContainer and RemoveContainer of an unknown container answer OK.
//!   containerd 2 does the same for all four (containerd 1.x answered
//!   NOT_FOUND for StopPodSandbox and StopContainer; the CRI spec asks for
//!   idempotency, and kubelet retries stops after restarts). Stopping a
//!   stopped object or a CREATED container does nothing and answers OK.
//! * StartContainer needs a CREATED container not already being started or
//!   removed, in a READY sandbox not being stopped; otherwise
//!   `FAILED_PRECONDITION`. A failed start leaves the container EXITED with
//!   exit code 128 and reason `StartError` (containerd).
//! * CreateContainer in a sandbox that is not READY, or is being stopped,
//!   is `FAILED_PRECONDITION`; in an unknown sandbox `NOT_FOUND`. Its
//!   mounts follow the rules in [`mounts`] (`INVALID_ARGUMENT` naming the
//!   field otherwise); the host reports the image volumes it mounted
//!   ([`ImageVolume`]): their host paths become the mounts' `host_path`,
//!   and their images count as in use ([`Runtime::images_in_use`]) while
//!   the container exists.
//! * RemoveContainer of a RUNNING (or UNKNOWN) container stops it forcibly
//!   (timeout 0) and then removes it, as containerd does.
//! * StopPodSandbox first lets container creations and starts in flight
//!   finish, then stops every running container forcibly, then the
//!   sandbox. RemovePodSandbox does the same and then removes every
//!   container and the sandbox.
//! * Concurrent calls on one object share the host work: a second
//!   StopContainer (or StopPodSandbox, RemoveContainer, RemovePodSandbox)
//!   waits for the one in flight and gets the same answer; a second
//!   StopContainer with a shorter timeout issues another `StopContainer`
//!   action with that timeout (the frontend escalates). A second
//!   StartContainer while one is in flight is `FAILED_PRECONDITION`
//!   (containerd: "already in starting state"). StopContainer and
//!   RemoveContainer wait for a start in flight to finish.
//! * UpdateContainerResources takes a container in any state, as
//!   containerd, with no other action in flight (else
//!   `FAILED_PRECONDITION`), issues [`Action::UpdateContainerResources`], then sets
//!   the fields it set (cpu shares/period/quota, cpuset, memory and swap
//!   limits) over the recorded ones, which ContainerStatus reports, and
//!   answers once that record is durable. StartContainer during it is
//!   `FAILED_PRECONDITION`; stops and removals wait for it.
//! * Exited containers report reason `Completed` (code 0) or `Error` when
//!   the exit carried none; OOM kills carry `OOMKilled` from the host.
//! * Persistence is an action: every change to a visible object issues a
//!   [`Action::WriteRecord`] (or [`Action::DeleteRecord`]), at most one in
//!   flight per object, and a call is answered only once the records it
//!   depends on are durable. A failed write fails the waiting calls; the
//!   next call that needs the record (or [`Runtime::retry_records`])
//!   writes it again.
//! * Events: container CREATED, STARTED, STOPPED and DELETED; sandboxes
//!   emit the same with the sandbox ID as container ID (CREATED and STARTED
//!   when ready, STOPPED when stopped or dead, DELETED when removed), each
//!   carrying the sandbox's status and its containers' statuses.
//! * Calls are never cancelled: when kubelet gives up on a call, the work
//!   goes on and the frontend drops the late reply (a retried RunPodSandbox
//!   meanwhile gets ALREADY_EXISTS, as with containerd).
//! * RunPodSandbox and CreateContainer first check the request
//!   ([`validate`]): what crisp cannot honour is `INVALID_ARGUMENT` naming
//!   the field, before any name is reserved. PID namespace mode TARGET
//!   needs a running container of the same pod; its ID may be a prefix
//!   and reaches the host in full.
//! * ContainerStatus reports the user the host resolved at creation and
//!   the stop signal StopContainer sends: the config's, else the image's,
//!   else SIGTERM (containerd); both are in the container's record.
//! * CreateContainerRequest's `sandbox_config` copy is ignored: names, log
//!   paths and the `CreateContainer` action use the sandbox's own config.
//! * Stats: the state machine selects and labels (filters, attributes);
//!   the frontend fills in the usage numbers it reads from cgroups.
//!   ListPodSandboxStats lists READY sandboxes only (containerd).
//! * Time is an argument: `now` stamps `created_at` (the request's time)
//!   and events; `started_at` and `finished_at` come from the host's
//!   outcomes (or `now` when they carry 0).
//!
//! For fuzzing (crisp-core's `sim` feature), `sim::fuzz` runs an arbitrary byte string as a sequence
//! of calls, outcomes and notices against a simulated host and checks the
//! CRI invariants after each; `sim::fuzz_raw` feeds arbitrary, unchecked
//! inputs (garbage requests, wrong outcomes, time going backwards) and
//! checks that nothing panics and the state stays consistent.

mod ids;
pub mod images;
pub mod mounts;
mod query;
mod record;
pub mod reference;
mod runtime;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod types;
pub mod validate;

#[cfg(test)]
mod tests;

use crisp_proto::cri;

pub use ids::{hex_id, is_valid_id, IdSource, SeqIds, ID_LEN, MAX_DRAWS};
pub use query::{
    matches_labels, stream_batches, COMPLETED_REASON, ERROR_REASON, STREAM_BATCH_BYTES,
    STREAM_BATCH_ITEMS,
};
pub use record::{
    ContainerRecord, Observation, Observed, PodPhase, PodRecord, Record, RecordKey, RecordKind,
};
pub use runtime::{
    Runtime, START_ERROR_EXIT_CODE, START_ERROR_REASON, UNKNOWN_EXIT_CODE, UNKNOWN_EXIT_REASON,
};
pub use types::{
    Action, ActionId, CallId, Exit, Handled, ImageVolume, InputError, Notice, Outcome, Request,
    Response, SandboxCreated,
};
pub use validate::HostSupport;

/// The name reserved for a pod sandbox: `<name>_<namespace>_<uid>_<attempt>`.
pub fn pod_name(meta: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}",
        meta.name, meta.namespace, meta.uid, meta.attempt
    )
}

/// The name reserved for a container:
/// `<name>_<podname>_<podnamespace>_<poduid>_<attempt>`.
pub fn container_name(meta: &cri::ContainerMetadata, pod: &cri::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
    )
}

/// The container log path: the sandbox's log directory joined with the
/// container's relative log path; empty unless both are set (containerd).
pub fn join_log_path(log_directory: &str, log_path: &str) -> String {
    if log_directory.is_empty() || log_path.is_empty() {
        return String::new();
    }
    let dir = log_directory.trim_end_matches('/');
    let file = log_path.trim_start_matches('/');
    format!("{dir}/{file}")
}
