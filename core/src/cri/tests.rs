//! Unit tests of every rule of the state machine.

use std::collections::HashMap;

use crisp_proto::cri;
use crisp_proto::methods::Method;
use prost::Message;

use super::*;
use crate::grpc::{Code, Status};

const T0: i64 = 1_700_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

/// A runtime plus a scripted host.
struct H {
    rt: Runtime,
    now: i64,
    /// Outstanding actions, in issue order.
    actions: Vec<(ActionId, Action)>,
    replies: Vec<(CallId, Result<Response, Status>)>,
    events: Vec<cri::ContainerEventResponse>,
    /// The record store the host keeps.
    store: HashMap<RecordKey, Record>,
    next_pid: u32,
}

fn pod_config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "ns".into(),
            attempt: 0,
        }),
        log_directory: format!("/var/log/pods/{name}/"),
        labels: [("app".to_owned(), name.to_owned())].into(),
        annotations: [("a".to_owned(), "b".to_owned())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ctr_config(name: &str, attempt: u32) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        log_path: format!("{name}/{attempt}.log"),
        labels: [("c".to_owned(), name.to_owned())].into(),
        stop_signal: cri::Signal::Sigquit as i32,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 1 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run_req(name: &str) -> Request {
    Request::RunPodSandbox(cri::RunPodSandboxRequest {
        config: Some(pod_config(name)),
        runtime_handler: String::new(),
    })
}

fn create_req(pod: &str, name: &str, attempt: u32) -> Request {
    Request::CreateContainer(cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(ctr_config(name, attempt)),
        sandbox_config: None,
    })
}

fn start_req(id: &str) -> Request {
    Request::StartContainer(cri::StartContainerRequest {
        container_id: id.into(),
    })
}

fn stop_req(id: &str, timeout: i64) -> Request {
    Request::StopContainer(cri::StopContainerRequest {
        container_id: id.into(),
        timeout,
    })
}

fn remove_req(id: &str) -> Request {
    Request::RemoveContainer(cri::RemoveContainerRequest {
        container_id: id.into(),
    })
}

fn stop_pod_req(id: &str) -> Request {
    Request::StopPodSandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
}

fn remove_pod_req(id: &str) -> Request {
    Request::RemovePodSandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
}

fn exit(code: i32, reason: &str) -> Exit {
    Exit {
        exit_code: code,
        finished_at: 0,
        reason: reason.into(),
        message: String::new(),
    }
}

impl H {
    fn new() -> H {
        H::with(Runtime::new(SeqIds::new(1)))
    }

    fn with(rt: Runtime) -> H {
        let mut h = H {
            rt,
            now: T0,
            actions: Vec::new(),
            replies: Vec::new(),
            events: Vec::new(),
            store: HashMap::new(),
            next_pid: 1000,
        };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(a) = self.rt.poll_action() {
            self.actions.push(a);
        }
        while let Some(r) = self.rt.poll_reply() {
            self.replies.push(r);
        }
        while let Some(e) = self.rt.poll_event() {
            self.events.push(e);
        }
        self.rt.check_invariants().unwrap();
    }

    fn call(&mut self, req: Request) -> Handled {
        self.now += SEC;
        let h = self.rt.handle(req, self.now);
        self.drain();
        h
    }

    /// A call that must be answered at once.
    fn now_ok(&mut self, req: Request) -> Response {
        match self.call(req) {
            Handled::Done(Ok(r)) => r,
            other => panic!("expected an immediate success, got {other:?}"),
        }
    }

    fn now_err(&mut self, req: Request) -> Status {
        match self.call(req) {
            Handled::Done(Err(st)) => st,
            other => panic!("expected an immediate error, got {other:?}"),
        }
    }

    fn pending(&mut self, req: Request) -> CallId {
        match self.call(req) {
            Handled::Pending(c) => c,
            other => panic!("expected a pending call, got {other:?}"),
        }
    }

    fn outcome(&mut self, id: ActionId, outcome: Outcome) -> Result<(), InputError> {
        self.now += SEC;
        self.actions.retain(|(a, _)| *a != id);
        let r = self.rt.handle_outcome(id, outcome, self.now);
        self.drain();
        r
    }

    fn notice(&mut self, n: Notice) -> Result<(), InputError> {
        self.now += SEC;
        let r = self.rt.handle_notice(n, self.now);
        self.drain();
        r
    }

    /// The first outstanding action matching `f`.
    fn find(&self, f: impl Fn(&Action) -> bool) -> Option<(ActionId, Action)> {
        self.actions.iter().find(|(_, a)| f(a)).cloned()
    }

    fn take(&mut self, f: impl Fn(&Action) -> bool) -> (ActionId, Action) {
        self.find(f)
            .unwrap_or_else(|| panic!("no such action among {:?}", self.actions))
    }

    /// What a healthy host answers.
    fn host(&mut self, action: &Action) -> Outcome {
        self.next_pid += 1;
        match action {
            Action::CreateSandbox { pod_id, .. } => Outcome::SandboxCreated(SandboxCreated {
                pid: self.next_pid,
                netns_path: format!("/run/netns/{pod_id}"),
                ip: "10.0.0.2".into(),
                additional_ips: vec!["fd00::2".into()],
            }),
            Action::CreateContainer { .. } => Outcome::ContainerCreated {
                image_ref: "sha256:abc".into(),
                image_id: "sha256:abc".into(),
                image_volumes: Vec::new(),
                user: Some(test_user()),
                image_stop_signal: 0,
            },
            Action::StartContainer { .. } => Outcome::ContainerStarted {
                pid: self.next_pid,
                started_at: self.now,
            },
            Action::StopContainer { .. } => Outcome::ContainerExited(Exit {
                exit_code: 137,
                finished_at: self.now,
                reason: String::new(),
                message: String::new(),
            }),
            Action::WriteRecord(r) => {
                self.store.insert(r.key().unwrap(), (**r).clone());
                Outcome::Done
            }
            Action::DeleteRecord(k) => {
                self.store.remove(k);
                Outcome::Done
            }
            _ => Outcome::Done,
        }
    }

    /// Answers every outstanding action as a healthy host would, until
    /// none is left; returns the actions answered.
    fn settle(&mut self) -> Vec<Action> {
        let mut done = Vec::new();
        while let Some((id, action)) = self.actions.first().cloned() {
            let o = self.host(&action);
            self.outcome(id, o).unwrap();
            done.push(action);
        }
        done
    }

    /// Answers only record writes and deletes.
    fn persist(&mut self) {
        while let Some((id, action)) =
            self.find(|a| matches!(a, Action::WriteRecord(_) | Action::DeleteRecord(_)))
        {
            let o = self.host(&action);
            self.outcome(id, o).unwrap();
        }
    }

    fn reply(&mut self, call: CallId) -> Result<Response, Status> {
        let pos = self
            .replies
            .iter()
            .position(|(c, _)| *c == call)
            .unwrap_or_else(|| panic!("no reply for {call:?}"));
        self.replies.remove(pos).1
    }

    fn has_reply(&self, call: CallId) -> bool {
        self.replies.iter().any(|(c, _)| *c == call)
    }

    fn run_pod(&mut self, name: &str) -> String {
        let call = self.pending(run_req(name));
        self.settle();
        match self.reply(call) {
            Ok(Response::RunPodSandbox(r)) => r.pod_sandbox_id,
            other => panic!("{other:?}"),
        }
    }

    fn create(&mut self, pod: &str, name: &str) -> String {
        let call = self.pending(create_req(pod, name, 0));
        self.settle();
        match self.reply(call) {
            Ok(Response::CreateContainer(r)) => r.container_id,
            other => panic!("{other:?}"),
        }
    }

    fn start(&mut self, id: &str) {
        let call = self.pending(start_req(id));
        self.settle();
        assert!(self.reply(call).is_ok());
    }

    fn running(&mut self, pod: &str, name: &str) -> String {
        let id = self.create(pod, name);
        self.start(&id);
        id
    }

    fn status(&self, id: &str) -> cri::ContainerStatus {
        self.rt
            .container_status(&cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .unwrap()
            .status
            .unwrap()
    }

    fn pod_status(&self, id: &str) -> cri::PodSandboxStatusResponse {
        self.rt
            .pod_sandbox_status(
                &cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.into(),
                    verbose: false,
                },
                self.now,
            )
            .unwrap()
    }

    fn pods(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<String> {
        self.rt
            .list_pod_sandbox(&cri::ListPodSandboxRequest { filter })
            .items
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    fn ctrs(&self, filter: Option<cri::ContainerFilter>) -> Vec<String> {
        self.rt
            .list_containers(&cri::ListContainersRequest { filter })
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect()
    }

    fn event_kinds(&mut self) -> Vec<(String, cri::ContainerEventType)> {
        self.events
            .drain(..)
            .map(|e| {
                (
                    e.container_id,
                    cri::ContainerEventType::try_from(e.container_event_type).unwrap(),
                )
            })
            .collect()
    }
}

/// The identity the scripted host reports for every container it creates.
fn test_user() -> cri::ContainerUser {
    cri::ContainerUser {
        linux: Some(cri::LinuxContainerUser {
            uid: 1000,
            gid: 1000,
            supplemental_groups: vec![1000, 1234, 50000],
        }),
    }
}

fn state(s: &cri::ContainerStatus) -> cri::ContainerState {
    cri::ContainerState::try_from(s.state).unwrap()
}

// ---- pods ----------------------------------------------------------------

#[test]
fn run_pod_sandbox_answers_after_the_sandbox_and_its_record() {
    let mut h = H::new();
    let call = h.pending(run_req("web"));
    // Invisible while being created.
    assert!(h.pods(None).is_empty());
    let (id, action) = h.take(|a| matches!(a, Action::CreateSandbox { .. }));
    let Action::CreateSandbox {
        pod_id,
        name,
        config,
        ..
    } = action.clone()
    else {
        unreachable!()
    };
    assert!(is_valid_id(&pod_id));
    assert_eq!(name, "web_ns_uid-web_0");
    assert_eq!(*config, pod_config("web"));
    let o = h.host(&action);
    h.outcome(id, o).unwrap();
    // Ready, but not answered before the record is durable.
    assert!(!h.has_reply(call));
    assert_eq!(h.pods(None), vec![pod_id.clone()]);
    let (wid, w) = h.take(|a| matches!(a, Action::WriteRecord(_)));
    assert_eq!(
        h.rt.pod_sandbox_status(
            &cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.clone(),
                verbose: false
            },
            0
        )
        .unwrap()
        .status
        .unwrap()
        .state,
        cri::PodSandboxState::SandboxReady as i32
    );
    let o = h.host(&w);
    h.outcome(wid, o).unwrap();
    let Ok(Response::RunPodSandbox(resp)) = h.reply(call) else {
        panic!()
    };
    assert_eq!(resp.pod_sandbox_id, pod_id);
    assert!(h.actions.is_empty());
    // Events as containerd: CREATED and STARTED under the sandbox's ID.
    assert_eq!(
        h.event_kinds(),
        vec![
            (
                pod_id.clone(),
                cri::ContainerEventType::ContainerCreatedEvent
            ),
            (
                pod_id.clone(),
                cri::ContainerEventType::ContainerStartedEvent
            ),
        ]
    );
    // The record holds what restore needs.
    let Some(RecordKind::Pod(rec)) = h.store[&RecordKey::Pod(pod_id.clone())].kind.clone() else {
        panic!()
    };
    assert_eq!(rec.phase, PodPhase::Ready as i32);
    assert_eq!(rec.ip, "10.0.0.2");
    assert_eq!(rec.created_at, T0 + SEC);
}

#[test]
fn run_pod_sandbox_validates_its_config() {
    let mut h = H::new();
    let st = h.now_err(Request::RunPodSandbox(cri::RunPodSandboxRequest::default()));
    assert_eq!(st.code, Code::InvalidArgument);
    let mut c = pod_config("x");
    c.metadata = None;
    let st = h.now_err(Request::RunPodSandbox(cri::RunPodSandboxRequest {
        config: Some(c),
        runtime_handler: String::new(),
    }));
    assert_eq!(st.code, Code::InvalidArgument);
    for field in 0..3 {
        let mut c = pod_config("x");
        let m = c.metadata.as_mut().unwrap();
        match field {
            0 => m.name.clear(),
            1 => m.namespace.clear(),
            _ => m.uid.clear(),
        }
        let st = h.now_err(Request::RunPodSandbox(cri::RunPodSandboxRequest {
            config: Some(c),
            runtime_handler: String::new(),
        }));
        assert_eq!(st.code, Code::InvalidArgument, "{st:?}");
    }
    assert!(h.actions.is_empty());
}

#[test]
fn pod_names_are_reserved_until_removal() {
    let mut h = H::new();
    // Reserved while in flight already.
    let call = h.pending(run_req("web"));
    let (_, a) = h.take(|a| matches!(a, Action::CreateSandbox { .. }));
    let Action::CreateSandbox { pod_id, .. } = a else {
        unreachable!()
    };
    let st = h.now_err(run_req("web"));
    assert_eq!(st.code, Code::AlreadyExists);
    assert!(st.message.contains("web_ns_uid-web_0"), "{}", st.message);
    assert!(st.message.contains(&pod_id), "{}", st.message);
    h.settle();
    assert!(h.reply(call).is_ok());
    assert_eq!(h.now_err(run_req("web")).code, Code::AlreadyExists);
    // Another attempt is another name.
    let mut c = pod_config("web");
    c.metadata.as_mut().unwrap().attempt = 1;
    let other = h.pending(Request::RunPodSandbox(cri::RunPodSandboxRequest {
        config: Some(c),
        runtime_handler: String::new(),
    }));
    h.settle();
    assert!(h.reply(other).is_ok());
    // Stopped: still reserved. Removed: free again.
    h.pending(stop_pod_req(&pod_id));
    h.settle();
    assert_eq!(h.now_err(run_req("web")).code, Code::AlreadyExists);
    h.pending(remove_pod_req(&pod_id));
    h.settle();
    let again = h.run_pod("web");
    assert_ne!(again, pod_id);
}

#[test]
fn a_failed_sandbox_creation_releases_the_name_and_answers_the_error() {
    let mut h = H::new();
    let call = h.pending(run_req("web"));
    let (id, _) = h.take(|a| matches!(a, Action::CreateSandbox { .. }));
    h.outcome(
        id,
        Outcome::Failed(Status::unavailable("CNI plugin bridge failed")),
    )
    .unwrap();
    let st = h.reply(call).unwrap_err();
    assert_eq!(st.code, Code::Unavailable);
    assert!(st.message.contains("CNI"));
    assert!(h.pods(None).is_empty());
    assert!(h.actions.is_empty(), "nothing to persist: {:?}", h.actions);
    assert!(h.events.is_empty());
    h.run_pod("web");
}

#[test]
fn stop_and_remove_of_unknown_pods_succeed_at_once() {
    let mut h = H::new();
    let unknown = "a".repeat(64);
    h.now_ok(stop_pod_req(&unknown));
    h.now_ok(remove_pod_req(&unknown));
    h.now_ok(stop_pod_req("abc"));
    assert!(h.actions.is_empty());
    // An empty ID is a caller error, not "not found".
    assert_eq!(h.now_err(stop_pod_req("")).code, Code::InvalidArgument);
    assert_eq!(h.now_err(remove_pod_req("")).code, Code::InvalidArgument);
}

#[test]
fn stop_pod_sandbox_kills_running_containers_then_the_sandbox() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let a = h.running(&pod, "a");
    let b = h.create(&pod, "b");
    h.events.clear();
    let call = h.pending(stop_pod_req(&pod[..8]));
    // The running container is stopped at once (timeout 0); the created
    // one is left alone; the sandbox waits.
    let (sid, stop) = h.take(|x| matches!(x, Action::StopContainer { .. }));
    assert_eq!(
        stop,
        Action::StopContainer {
            container_id: a.clone(),
            pod_id: pod.clone(),
            timeout: 0,
            stop_signal: cri::Signal::Sigquit as i32,
        }
    );
    assert!(h
        .find(|x| matches!(x, Action::StopSandbox { .. }))
        .is_none());
    // New containers are refused while the sandbox is being stopped.
    let st = h.now_err(create_req(&pod, "c", 0));
    assert_eq!(st.code, Code::FailedPrecondition);
    assert_eq!(h.now_err(start_req(&b)).code, Code::FailedPrecondition);
    let o = h.host(&stop);
    h.outcome(sid, o).unwrap();
    h.take(|x| matches!(x, Action::StopSandbox { pod_id } if *pod_id == pod));
    // A second StopPodSandbox joins the first.
    let second = h.pending(stop_pod_req(&pod));
    let done = h.settle();
    assert_eq!(
        done.iter()
            .filter(|x| matches!(x, Action::StopSandbox { .. }))
            .count(),
        1
    );
    assert!(h.reply(call).is_ok());
    assert!(h.reply(second).is_ok());
    assert_eq!(state(&h.status(&a)), cri::ContainerState::ContainerExited);
    assert_eq!(state(&h.status(&b)), cri::ContainerState::ContainerCreated);
    let ps = h.pod_status(&pod);
    let status = ps.status.unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxNotready as i32);
    // The network is gone with the sandbox.
    assert_eq!(status.network.unwrap().ip, "");
    assert_eq!(
        h.event_kinds(),
        vec![
            (a.clone(), cri::ContainerEventType::ContainerStoppedEvent),
            (pod.clone(), cri::ContainerEventType::ContainerStoppedEvent),
        ]
    );
    // Idempotent: at once, no work.
    h.now_ok(stop_pod_req(&pod));
    assert!(h.actions.is_empty());
    // No container can be created in a NOTREADY sandbox.
    let st = h.now_err(create_req(&pod, "c", 0));
    assert_eq!(st.code, Code::FailedPrecondition);
    assert!(st.message.contains("not ready"), "{}", st.message);
}

#[test]
fn remove_pod_sandbox_stops_and_removes_everything() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let other = h.run_pod("other");
    let a = h.running(&pod, "a");
    let b = h.create(&pod, "b");
    let keep = h.running(&other, "a");
    h.events.clear();
    let call = h.pending(remove_pod_req(&pod));
    let done = h.settle();
    assert!(h.reply(call).is_ok());
    let kinds: Vec<&str> = done
        .iter()
        .map(|x| match x {
            Action::StopContainer { .. } => "stop-ctr",
            Action::StopSandbox { .. } => "stop-pod",
            Action::RemoveContainer { .. } => "rm-ctr",
            Action::RemoveSandbox { .. } => "rm-pod",
            Action::WriteRecord(_) => "write",
            Action::DeleteRecord(_) => "delete",
            _ => "other",
        })
        .collect();
    let pos = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(pos("stop-ctr") < pos("stop-pod"));
    assert!(pos("stop-pod") < pos("rm-ctr"));
    assert!(kinds.iter().rposition(|x| *x == "rm-ctr").unwrap() < pos("rm-pod"));
    assert_eq!(kinds.iter().filter(|k| **k == "rm-ctr").count(), 2);
    assert_eq!(h.pods(None), vec![other.clone()]);
    assert_eq!(h.ctrs(None), vec![keep.clone()]);
    for id in [&pod, &a, &b] {
        assert!(!h.store.keys().any(|k| k.id() == id.as_str()));
    }
    let events = h.event_kinds();
    assert_eq!(
        events.last().unwrap(),
        &(pod.clone(), cri::ContainerEventType::ContainerDeletedEvent)
    );
    assert!(events.contains(&(a.clone(), cri::ContainerEventType::ContainerDeletedEvent)));
    assert!(events.contains(&(b.clone(), cri::ContainerEventType::ContainerDeletedEvent)));
    // Everything is gone and idempotent.
    h.now_ok(remove_pod_req(&pod));
    h.now_ok(stop_pod_req(&pod));
    h.now_ok(remove_req(&a));
    h.now_ok(stop_req(&b, 10));
    assert!(h.actions.is_empty());
    assert_eq!(h.now_err(create_req(&pod, "x", 0)).code, Code::NotFound);
}

#[test]
fn pod_operations_wait_for_container_creation_in_flight() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let create = h.pending(create_req(&pod, "a", 0));
    let (cid, ca) = h.take(|x| matches!(x, Action::CreateContainer { .. }));
    let remove = h.pending(remove_pod_req(&pod));
    // Nothing happens to the sandbox while the container is being made.
    assert!(h
        .find(|x| matches!(x, Action::StopSandbox { .. }))
        .is_none());
    let o = h.host(&ca);
    h.outcome(cid, o).unwrap();
    h.settle();
    assert!(h.reply(create).is_ok());
    assert!(h.reply(remove).is_ok());
    assert!(h.ctrs(None).is_empty());
    assert!(h.pods(None).is_empty());
    assert!(h.store.is_empty());
}

#[test]
fn a_dead_sandbox_is_notready_and_stop_reclaims_it() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    h.events.clear();
    h.notice(Notice::SandboxExited {
        pod_id: pod.clone(),
    })
    .unwrap();
    assert_eq!(
        h.event_kinds(),
        vec![(pod.clone(), cri::ContainerEventType::ContainerStoppedEvent)]
    );
    let st = h.pod_status(&pod).status.unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    // Still holds its network until StopPodSandbox tears it down.
    assert_eq!(st.network.unwrap().ip, "10.0.0.2");
    h.persist();
    let call = h.pending(stop_pod_req(&pod));
    h.take(|x| matches!(x, Action::StopSandbox { .. }));
    h.settle();
    assert!(h.reply(call).is_ok());
    // No second STOPPED event.
    assert!(h.event_kinds().is_empty());
    // Repeated notices are harmless; unknown ones are reported.
    assert_eq!(
        h.notice(Notice::SandboxExited {
            pod_id: pod.clone()
        }),
        Ok(())
    );
    assert!(matches!(
        h.notice(Notice::SandboxExited {
            pod_id: "nope".into()
        }),
        Err(InputError::UnknownObject(_))
    ));
}

// ---- containers ----------------------------------------------------------

#[test]
fn create_container_reserves_the_containerd_name_and_joins_the_log_path() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let call = h.pending(create_req(&pod[..6], "app", 2));
    let (_, a) = h.take(|x| matches!(x, Action::CreateContainer { .. }));
    let Action::CreateContainer {
        container_id,
        pod_id,
        name,
        log_path,
        sandbox_config,
        image,
        netns_path,
        sandbox_pid,
        ..
    } = a
    else {
        unreachable!()
    };
    assert_eq!(pod_id, pod);
    assert_eq!(name, "app_web_ns_uid-web_2");
    assert_eq!(log_path, "/var/log/pods/web/app/2.log");
    assert_eq!(*sandbox_config, pod_config("web"));
    assert_eq!(image.image, "busybox");
    assert_eq!(netns_path, format!("/run/netns/{pod}"));
    assert!(sandbox_pid > 0);
    // Invisible while being created; its name is taken.
    assert!(h.ctrs(None).is_empty());
    let st = h.now_err(create_req(&pod, "app", 2));
    assert_eq!(st.code, Code::AlreadyExists);
    assert!(st.message.contains("app_web_ns_uid-web_2"));
    assert!(st.message.contains(&container_id));
    h.settle();
    let Ok(Response::CreateContainer(r)) = h.reply(call) else {
        panic!()
    };
    assert_eq!(r.container_id, container_id);
    let s = h.status(&container_id);
    assert_eq!(state(&s), cri::ContainerState::ContainerCreated);
    assert_eq!(s.created_at, T0 + 4 * SEC);
    assert_eq!(s.image_ref, "sha256:abc");
    assert_eq!(s.log_path, "/var/log/pods/web/app/2.log");
    assert_eq!(
        s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        1 << 20
    );
    assert_eq!(s.stop_signal, cri::Signal::Sigquit as i32);
    assert_eq!(
        h.event_kinds().last().unwrap(),
        &(
            container_id.clone(),
            cri::ContainerEventType::ContainerCreatedEvent
        )
    );
    // Same name in another attempt, or in another pod: fine.
    h.create(&pod, "app");
    let other = h.run_pod("other");
    h.create(&other, "app");
    // Released on removal.
    h.pending(remove_req(&container_id));
    h.settle();
    let call = h.pending(create_req(&pod, "app", 2));
    h.settle();
    assert!(h.reply(call).is_ok());
}

#[test]
fn create_container_checks_its_request_and_sandbox() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let st = h.now_err(create_req(&"f".repeat(64), "a", 0));
    assert_eq!(st.code, Code::NotFound);
    assert!(st.message.contains("not found"));
    assert_eq!(
        h.now_err(create_req("", "a", 0)).code,
        Code::InvalidArgument
    );
    let mut bad = vec![];
    bad.push(cri::ContainerConfig::default());
    let mut c = ctr_config("a", 0);
    c.metadata.as_mut().unwrap().name.clear();
    bad.push(c);
    let mut c = ctr_config("a", 0);
    c.image = None;
    bad.push(c);
    for config in bad {
        let st = h.now_err(Request::CreateContainer(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: None,
        }));
        assert_eq!(st.code, Code::InvalidArgument, "{st:?}");
    }
    let st = h.now_err(Request::CreateContainer(cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: None,
        sandbox_config: None,
    }));
    assert_eq!(st.code, Code::InvalidArgument);
    assert!(h.actions.is_empty());
}

#[test]
fn a_failed_container_creation_releases_the_name() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let call = h.pending(create_req(&pod, "a", 0));
    let (id, _) = h.take(|x| matches!(x, Action::CreateContainer { .. }));
    h.outcome(
        id,
        Outcome::Failed(Status::not_found("image \"busybox\" not present")),
    )
    .unwrap();
    let st = h.reply(call).unwrap_err();
    assert_eq!(st.code, Code::NotFound);
    assert!(h.ctrs(None).is_empty());
    h.create(&pod, "a");
}

#[test]
fn start_container_runs_a_created_container() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.create(&pod, "a");
    h.events.clear();
    let call = h.pending(start_req(&id[..10]));
    // A second start while one is in flight is refused.
    let st = h.now_err(start_req(&id));
    assert_eq!(st.code, Code::FailedPrecondition);
    assert!(st.message.contains("already being started"));
    let (sid, a) = h.take(|x| matches!(x, Action::StartContainer { .. }));
    assert_eq!(
        a,
        Action::StartContainer {
            container_id: id.clone(),
            pod_id: pod.clone(),
            sandbox_pid: 1001,
        }
    );
    h.outcome(
        sid,
        Outcome::ContainerStarted {
            pid: 77,
            started_at: T0 + 99,
        },
    )
    .unwrap();
    assert!(!h.has_reply(call), "answered before the record");
    h.persist();
    assert!(h.reply(call).is_ok());
    let s = h.status(&id);
    assert_eq!(state(&s), cri::ContainerState::ContainerRunning);
    assert_eq!(s.started_at, T0 + 99);
    assert_eq!(
        h.event_kinds(),
        vec![(id.clone(), cri::ContainerEventType::ContainerStartedEvent)]
    );
    // Not CREATED any more.
    let st = h.now_err(start_req(&id));
    assert_eq!(st.code, Code::FailedPrecondition);
    assert!(st.message.contains("CONTAINER_RUNNING"), "{}", st.message);
    let st = h.now_err(start_req(&"e".repeat(64)));
    assert_eq!(st.code, Code::NotFound);
}

#[test]
fn a_failed_start_leaves_the_container_exited_with_start_error() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.create(&pod, "a");
    let call = h.pending(start_req(&id));
    let (sid, _) = h.take(|x| matches!(x, Action::StartContainer { .. }));
    h.outcome(
        sid,
        Outcome::Failed(Status::unknown("exec: \"/app\": no such file")),
    )
    .unwrap();
    let st = h.reply(call).unwrap_err();
    assert!(st.message.contains("no such file"));
    let s = h.status(&id);
    assert_eq!(state(&s), cri::ContainerState::ContainerExited);
    assert_eq!(s.exit_code, START_ERROR_EXIT_CODE);
    assert_eq!(s.reason, START_ERROR_REASON);
    assert!(s.message.contains("no such file"));
    assert_eq!(s.started_at, 0);
    assert!(s.finished_at > 0);
    assert_eq!(h.now_err(start_req(&id)).code, Code::FailedPrecondition);
}

#[test]
fn start_container_needs_a_ready_sandbox() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.create(&pod, "a");
    h.notice(Notice::SandboxExited {
        pod_id: pod.clone(),
    })
    .unwrap();
    let st = h.now_err(start_req(&id));
    assert_eq!(st.code, Code::FailedPrecondition);
    assert!(st.message.contains("not ready"));
}

#[test]
fn stop_container_is_idempotent_and_joins_stops_in_flight() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    // Unknown and created containers: OK at once, nothing to do.
    h.now_ok(stop_req(&"d".repeat(64), 10));
    let created = h.create(&pod, "c");
    h.now_ok(stop_req(&created, 10));
    assert!(h.actions.is_empty());
    assert_eq!(
        state(&h.status(&created)),
        cri::ContainerState::ContainerCreated
    );
    let id = h.running(&pod, "a");
    let first = h.pending(stop_req(&id, 30));
    let (a1, s1) = h.take(|x| matches!(x, Action::StopContainer { .. }));
    assert!(matches!(s1, Action::StopContainer { timeout: 30, .. }));
    // A second stop with a longer grace period waits for the first.
    let second = h.pending(stop_req(&id, 60));
    assert_eq!(h.actions.len(), 1);
    // One asking for less grace escalates: another stop, timeout 5.
    let third = h.pending(stop_req(&id, 5));
    let (a3, s3) = h.take(|x| matches!(x, Action::StopContainer { timeout: 5, .. }));
    // A negative timeout counts as 0.
    let fourth = h.pending(stop_req(&id, -3));
    let (a4, _) = h.take(|x| matches!(x, Action::StopContainer { timeout: 0, .. }));
    // The kill lands: every stop is answered once its record is durable.
    h.outcome(a4, Outcome::ContainerExited(exit(137, "")))
        .unwrap();
    assert!(h.replies.is_empty());
    h.persist();
    for c in [first, second, third, fourth] {
        assert!(h.reply(c).is_ok());
    }
    // The other stop actions still get answered, harmlessly.
    let o1 = h.host(&s1);
    h.outcome(a1, o1).unwrap();
    let o3 = h.host(&s3);
    h.outcome(a3, o3).unwrap();
    assert!(h.actions.is_empty());
    let s = h.status(&id);
    assert_eq!(state(&s), cri::ContainerState::ContainerExited);
    assert_eq!(s.exit_code, 137);
    assert_eq!(s.reason, ERROR_REASON);
    // Stopping an exited container: OK at once.
    h.now_ok(stop_req(&id, 0));
    assert!(h.actions.is_empty());
}

#[test]
fn a_failed_stop_fails_every_waiting_call() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.running(&pod, "a");
    let first = h.pending(stop_req(&id, 10));
    let second = h.pending(stop_req(&id, 10));
    let (a, _) = h.take(|x| matches!(x, Action::StopContainer { .. }));
    h.outcome(a, Outcome::Failed(Status::internal("kill: EPERM")))
        .unwrap();
    for c in [first, second] {
        let st = h.reply(c).unwrap_err();
        assert_eq!(st.code, Code::Internal);
        assert!(st.message.contains("EPERM"));
    }
    assert_eq!(state(&h.status(&id)), cri::ContainerState::ContainerRunning);
    // A later stop tries again.
    let again = h.pending(stop_req(&id, 10));
    h.settle();
    assert!(h.reply(again).is_ok());
}

#[test]
fn remove_container_stops_a_running_one_first() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    h.now_ok(remove_req(&"c".repeat(64)));
    let id = h.running(&pod, "a");
    h.events.clear();
    let call = h.pending(remove_req(&id));
    let (sid, stop) = h.take(|x| matches!(x, Action::StopContainer { .. }));
    assert!(matches!(stop, Action::StopContainer { timeout: 0, .. }));
    assert!(h
        .find(|x| matches!(x, Action::RemoveContainer { .. }))
        .is_none());
    // A second remove joins.
    let second = h.pending(remove_req(&id));
    let o = h.host(&stop);
    h.outcome(sid, o).unwrap();
    // Visible (EXITED) until the host has removed it.
    assert_eq!(state(&h.status(&id)), cri::ContainerState::ContainerExited);
    let done = h.settle();
    assert_eq!(
        done.iter()
            .filter(|x| matches!(x, Action::RemoveContainer { .. }))
            .count(),
        1
    );
    assert!(h.reply(call).is_ok());
    assert!(h.reply(second).is_ok());
    assert!(h.ctrs(None).is_empty());
    assert!(!h.store.contains_key(&RecordKey::Container(id.clone())));
    assert_eq!(
        h.event_kinds(),
        vec![
            (id.clone(), cri::ContainerEventType::ContainerStoppedEvent),
            (id.clone(), cri::ContainerEventType::ContainerDeletedEvent),
        ]
    );
    let st =
        h.rt.container_status(&cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .unwrap_err();
    assert_eq!(st.code, Code::NotFound);
    h.now_ok(remove_req(&id));
}

#[test]
fn remove_waits_for_the_record_deletion_even_when_repeated() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.create(&pod, "a");
    let first = h.pending(remove_req(&id));
    let (rid, ra) = h.take(|x| matches!(x, Action::RemoveContainer { .. }));
    let o = h.host(&ra);
    h.outcome(rid, o).unwrap();
    // Gone from memory, its record deletion in flight: a repeated remove
    // is answered only once that deletion is durable.
    let second = h.pending(remove_req(&id));
    h.take(|x| matches!(x, Action::DeleteRecord(_)));
    assert!(h.replies.is_empty());
    h.persist();
    assert!(h.reply(first).is_ok());
    assert!(h.reply(second).is_ok());
}

#[test]
fn a_failed_removal_can_be_retried() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.create(&pod, "a");
    let call = h.pending(remove_req(&id));
    let (rid, _) = h.take(|x| matches!(x, Action::RemoveContainer { .. }));
    h.outcome(rid, Outcome::Failed(Status::internal("umount: EBUSY")))
        .unwrap();
    assert!(h.reply(call).unwrap_err().message.contains("EBUSY"));
    assert_eq!(h.ctrs(None), vec![id.clone()]);
    let call = h.pending(remove_req(&id));
    h.settle();
    assert!(h.reply(call).is_ok());
    assert!(h.ctrs(None).is_empty());
}

#[test]
fn unsolicited_exits_end_running_containers() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let a = h.running(&pod, "a");
    let b = h.running(&pod, "b");
    let c = h.running(&pod, "c");
    h.events.clear();
    let at = T0 + 12345;
    h.notice(Notice::ContainerExited {
        container_id: a.clone(),
        exit: Exit {
            exit_code: 137,
            finished_at: at,
            reason: "OOMKilled".into(),
            message: "memory limit".into(),
        },
    })
    .unwrap();
    h.notice(Notice::ContainerExited {
        container_id: b.clone(),
        exit: exit(0, ""),
    })
    .unwrap();
    h.notice(Notice::ContainerExited {
        container_id: c.clone(),
        exit: exit(3, ""),
    })
    .unwrap();
    let s = h.status(&a);
    assert_eq!(state(&s), cri::ContainerState::ContainerExited);
    assert_eq!((s.exit_code, s.finished_at), (137, at));
    assert_eq!(s.reason, "OOMKilled");
    assert_eq!(s.message, "memory limit");
    assert_eq!(h.status(&b).reason, COMPLETED_REASON);
    assert!(h.status(&b).finished_at > 0);
    assert_eq!(h.status(&c).reason, ERROR_REASON);
    // Each exit is an event and a record write.
    let events = h.event_kinds();
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|(_, k)| *k == cri::ContainerEventType::ContainerStoppedEvent));
    h.persist();
    let Some(RecordKind::Container(rec)) = h.store[&RecordKey::Container(a.clone())].kind.clone()
    else {
        panic!()
    };
    assert_eq!(rec.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(rec.reason, "OOMKilled");
    // A repeated exit is harmless; an exit of a created container or of
    // nobody is reported.
    assert_eq!(
        h.notice(Notice::ContainerExited {
            container_id: a.clone(),
            exit: exit(1, "")
        }),
        Ok(())
    );
    assert_eq!(h.status(&a).exit_code, 137);
    let created = h.create(&pod, "d");
    assert!(matches!(
        h.notice(Notice::ContainerExited {
            container_id: created,
            exit: exit(1, "")
        }),
        Err(InputError::Ignored(_))
    ));
    assert!(matches!(
        h.notice(Notice::ContainerExited {
            container_id: "zz".into(),
            exit: exit(1, "")
        }),
        Err(InputError::UnknownObject(_))
    ));
}

#[test]
fn an_exit_during_the_start_is_applied_after_it() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.create(&pod, "a");
    h.events.clear();
    let call = h.pending(start_req(&id));
    let (sid, _) = h.take(|x| matches!(x, Action::StartContainer { .. }));
    h.notice(Notice::ContainerExited {
        container_id: id.clone(),
        exit: exit(0, ""),
    })
    .unwrap();
    assert_eq!(state(&h.status(&id)), cri::ContainerState::ContainerCreated);
    h.outcome(
        sid,
        Outcome::ContainerStarted {
            pid: 5,
            started_at: 0,
        },
    )
    .unwrap();
    h.settle();
    assert!(h.reply(call).is_ok());
    let s = h.status(&id);
    assert_eq!(state(&s), cri::ContainerState::ContainerExited);
    assert_eq!(s.reason, COMPLETED_REASON);
    assert!(s.started_at > 0 && s.finished_at >= s.started_at);
    assert_eq!(
        h.event_kinds(),
        vec![
            (id.clone(), cri::ContainerEventType::ContainerStartedEvent),
            (id.clone(), cri::ContainerEventType::ContainerStoppedEvent),
        ]
    );
}

#[test]
fn stop_and_remove_wait_for_a_start_in_flight() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.create(&pod, "a");
    let start = h.pending(start_req(&id));
    let stop = h.pending(stop_req(&id, 0));
    let remove = h.pending(remove_req(&id));
    assert_eq!(h.actions.len(), 1, "{:?}", h.actions);
    h.settle();
    assert!(h.reply(start).is_ok());
    assert!(h.reply(stop).is_ok());
    assert!(h.reply(remove).is_ok());
    assert!(h.ctrs(None).is_empty());
}

fn update_req(id: &str, r: cri::LinuxContainerResources) -> Request {
    Request::UpdateContainerResources(cri::UpdateContainerResourcesRequest {
        container_id: id.into(),
        linux: Some(r),
        ..Default::default()
    })
}

#[test]
fn update_container_resources_records_the_new_limits() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.running(&pod, "a");
    let call = h.pending(update_req(
        &id,
        cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            ..Default::default()
        },
    ));
    let (a, action) = h.take(|a| matches!(a, Action::UpdateContainerResources { .. }));
    let Action::UpdateContainerResources {
        container_id,
        pod_id,
        resources,
    } = action
    else {
        unreachable!()
    };
    assert_eq!(
        (container_id.as_str(), pod_id.as_str()),
        (id.as_str(), pod.as_str())
    );
    assert_eq!(resources.cpu_quota, 20_000);
    // A second update, a start or a removal does not run beside it; a stop
    // waits for it.
    let st = h.now_err(update_req(&id, cri::LinuxContainerResources::default()));
    assert_eq!(st.code, Code::FailedPrecondition);
    let stop = h.pending(stop_req(&id, 0));
    assert_eq!(h.actions.len(), 1, "{:?}", h.actions);
    h.outcome(a, Outcome::Done).unwrap();
    // Answered once the record holds the new limits.
    assert!(!h.has_reply(call));
    h.persist();
    assert_eq!(
        h.reply(call),
        Ok(Response::UpdateContainerResources(
            cri::UpdateContainerResourcesResponse {}
        ))
    );
    let r = h.status(&id).resources.unwrap().linux.unwrap();
    // Set fields replace, the others stay.
    assert_eq!(
        (r.memory_limit_in_bytes, r.cpu_period, r.cpu_quota),
        (1 << 20, 100_000, 20_000)
    );
    let Some(RecordKind::Container(rec)) = h
        .store
        .get(&RecordKey::Container(id.clone()))
        .and_then(|r| r.kind.clone())
    else {
        panic!("no record")
    };
    let stored = rec.config.unwrap().linux.unwrap().resources.unwrap();
    assert_eq!(stored.cpu_quota, 20_000);
    h.settle();
    assert!(h.reply(stop).is_ok());
    // An exited container's too, as containerd.
    let call = h.pending(update_req(
        &id,
        cri::LinuxContainerResources {
            cpu_shares: 256,
            ..Default::default()
        },
    ));
    h.settle();
    assert!(h.reply(call).is_ok());
    assert_eq!(
        h.status(&id).resources.unwrap().linux.unwrap().cpu_shares,
        256
    );
    let st = h.now_err(update_req("nope", cri::LinuxContainerResources::default()));
    assert_eq!(st.code, Code::NotFound);
}

#[test]
fn a_failed_update_keeps_the_old_limits() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.create(&pod, "a");
    let call = h.pending(update_req(
        &id,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: 2 << 20,
            ..Default::default()
        },
    ));
    let (a, _) = h.take(|a| matches!(a, Action::UpdateContainerResources { .. }));
    let st = h.now_err(start_req(&id));
    assert_eq!(st.code, Code::FailedPrecondition);
    h.outcome(a, Outcome::Failed(Status::internal("EINVAL")))
        .unwrap();
    let st = h.reply(call).unwrap_err();
    assert_eq!(st.message, "EINVAL");
    assert!(h.actions.is_empty(), "{:?}", h.actions);
    let r = h.status(&id).resources.unwrap().linux.unwrap();
    assert_eq!(r.memory_limit_in_bytes, 1 << 20);
    // And the container can still be started.
    h.start(&id);
}

// ---- lookups and lists ---------------------------------------------------

/// IDs with chosen prefixes.
fn fixed_ids(prefixes: &'static [u8]) -> impl FnMut() -> [u8; 32] {
    let mut n = 0usize;
    move || {
        let mut b = [0u8; 32];
        b[0] = prefixes.get(n).copied().unwrap_or(0xff);
        b[31] = n as u8;
        n += 1;
        b
    }
}

#[test]
fn lookups_take_unique_prefixes() {
    // Pods 11…, 12…; containers 21…, 22….
    let mut h = H::with(Runtime::new(fixed_ids(&[0x11, 0x12, 0x21, 0x22])));
    let p1 = h.run_pod("a");
    let p2 = h.run_pod("b");
    assert!(p1.starts_with("11") && p2.starts_with("12"));
    let c1 = h.create(&p1, "x");
    let c2 = h.create(&p2, "y");
    let pod_status = |h: &H, key: &str| {
        h.rt.pod_sandbox_status(
            &cri::PodSandboxStatusRequest {
                pod_sandbox_id: key.into(),
                verbose: false,
            },
            0,
        )
    };
    assert_eq!(pod_status(&h, "11").unwrap().status.unwrap().id, p1);
    assert_eq!(pod_status(&h, &p2).unwrap().status.unwrap().id, p2);
    let st = pod_status(&h, "1").unwrap_err();
    assert_eq!(st.code, Code::InvalidArgument);
    assert!(st.message.contains("ambiguous"));
    let st = pod_status(&h, "13").unwrap_err();
    assert_eq!(st.code, Code::NotFound);
    assert!(st.message.contains("\"13\""));
    assert_eq!(pod_status(&h, "").unwrap_err().code, Code::InvalidArgument);
    // Container IDs are a separate space.
    assert_eq!(pod_status(&h, "21").unwrap_err().code, Code::NotFound);
    let cs = |h: &H, key: &str| {
        h.rt.container_status(&cri::ContainerStatusRequest {
            container_id: key.into(),
            verbose: false,
        })
    };
    assert_eq!(cs(&h, "22").unwrap().status.unwrap().id, c2);
    assert_eq!(cs(&h, "2").unwrap_err().code, Code::InvalidArgument);
    assert_eq!(cs(&h, "11").unwrap_err().code, Code::NotFound);
    // By-ID calls take prefixes too; an ambiguous one is refused.
    assert_eq!(h.now_err(stop_req("2", 0)).code, Code::InvalidArgument);
    assert_eq!(h.now_err(remove_pod_req("1")).code, Code::InvalidArgument);
    let call = h.pending(start_req("21"));
    h.settle();
    assert!(h.reply(call).is_ok());
    assert_eq!(state(&h.status(&c1)), cri::ContainerState::ContainerRunning);
}

#[test]
fn stream_twins_answer_what_their_lists_do() {
    let mut h = H::with(Runtime::new(fixed_ids(&[0x11, 0x12, 0x21, 0x22])));
    let p1 = h.run_pod("a");
    let p2 = h.run_pod("b");
    let c1 = h.running(&p1, "x");
    let c2 = h.create(&p2, "y");
    let sel = |k: &str, v: &str| [(k.to_owned(), v.to_owned())].into();
    let pods = Some(cri::PodSandboxFilter {
        label_selector: sel("app", "b"),
        ..Default::default()
    });
    let ctrs = Some(cri::ContainerFilter {
        pod_sandbox_id: p1.clone(),
        ..Default::default()
    });
    let cases = [
        (
            Method::StreamPodSandboxes,
            cri::StreamPodSandboxesRequest {
                filter: pods.clone(),
            }
            .encode_to_vec(),
            Request::ListPodSandbox(cri::ListPodSandboxRequest { filter: pods }),
        ),
        (
            Method::StreamContainers,
            cri::StreamContainersRequest {
                filter: ctrs.clone(),
            }
            .encode_to_vec(),
            Request::ListContainers(cri::ListContainersRequest { filter: ctrs }),
        ),
        (
            Method::StreamContainerStats,
            Vec::new(),
            Request::ListContainerStats(Default::default()),
        ),
        (
            Method::StreamPodSandboxStats,
            Vec::new(),
            Request::ListPodSandboxStats(Default::default()),
        ),
    ];
    let mut ids = Vec::new();
    for (method, buf, list) in cases {
        let twin = Request::decode_stream(method, &buf).unwrap().unwrap();
        assert_eq!(twin, list, "{method:?}");
        let Handled::Done(Ok(listed)) = h.rt.handle(list, h.now) else {
            panic!("{method:?} is answered at once")
        };
        let batches = listed.clone().encode_stream().unwrap();
        assert_eq!(
            batches.len(),
            1,
            "{method:?}: a short listing is one message"
        );
        let got: Vec<String> = match listed {
            Response::ListPodSandbox(r) => {
                let s = cri::StreamPodSandboxesResponse::decode(&batches[0][..]).unwrap();
                assert_eq!(s.pod_sandboxes, r.items);
                r.items.into_iter().map(|p| p.id).collect()
            }
            Response::ListContainers(r) => {
                let s = cri::StreamContainersResponse::decode(&batches[0][..]).unwrap();
                assert_eq!(s.containers, r.containers);
                r.containers.into_iter().map(|c| c.id).collect()
            }
            Response::ListContainerStats(r) => {
                let s = cri::StreamContainerStatsResponse::decode(&batches[0][..]).unwrap();
                assert_eq!(s.container_stats, r.stats);
                r.stats
                    .into_iter()
                    .map(|c| c.attributes.unwrap().id)
                    .collect()
            }
            Response::ListPodSandboxStats(r) => {
                let s = cri::StreamPodSandboxStatsResponse::decode(&batches[0][..]).unwrap();
                assert_eq!(s.pod_sandbox_stats, r.stats);
                r.stats
                    .into_iter()
                    .map(|p| p.attributes.unwrap().id)
                    .collect()
            }
            other => panic!("{other:?}"),
        };
        ids.push(got);
    }
    assert_eq!(
        ids,
        [
            vec![p2.clone()],
            vec![c1.clone()],
            vec![c1.clone(), c2.clone()],
            vec![p1.clone(), p2.clone()]
        ]
    );
    // Nothing matches: no message at all.
    let none = Request::ListContainers(cri::ListContainersRequest {
        filter: Some(cri::ContainerFilter {
            id: "99".into(),
            ..Default::default()
        }),
    });
    let Handled::Done(Ok(listed)) = h.rt.handle(none, h.now) else {
        panic!()
    };
    assert!(listed.encode_stream().unwrap().is_empty());
    // Other methods and responses have no stream twin; garbage is refused.
    assert!(Request::decode_stream(Method::ListContainers, &[]).is_none());
    let bad = Request::decode_stream(Method::StreamContainers, &[0xff]).unwrap();
    assert_eq!(bad.unwrap_err().code, Code::InvalidArgument);
    let status = Request::PodSandboxStatus(cri::PodSandboxStatusRequest {
        pod_sandbox_id: p1,
        verbose: false,
    });
    let Handled::Done(Ok(resp)) = h.rt.handle(status, h.now) else {
        panic!()
    };
    assert!(resp.encode_stream().is_none());
}

#[test]
fn list_filters() {
    let mut h = H::with(Runtime::new(fixed_ids(&[0x11, 0x12, 0x21, 0x22, 0x23])));
    let p1 = h.run_pod("a");
    let p2 = h.run_pod("b");
    let c1 = h.running(&p1, "x");
    let c2 = h.create(&p1, "y");
    let c3 = h.create(&p2, "x");
    h.pending(stop_pod_req(&p2));
    h.settle();
    // Pods.
    let pf = |id: &str, state: Option<cri::PodSandboxState>, labels: &[(&str, &str)]| {
        Some(cri::PodSandboxFilter {
            id: id.into(),
            state: state.map(|s| cri::PodSandboxStateValue { state: s as i32 }),
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    };
    assert_eq!(h.pods(None), vec![p1.clone(), p2.clone()]);
    assert_eq!(h.pods(pf("", None, &[])), vec![p1.clone(), p2.clone()]);
    assert_eq!(h.pods(pf("12", None, &[])), vec![p2.clone()]);
    assert_eq!(h.pods(pf(&p1, None, &[])), vec![p1.clone()]);
    // An ambiguous or unknown prefix matches nothing.
    assert!(h.pods(pf("1", None, &[])).is_empty());
    assert!(h.pods(pf("99", None, &[])).is_empty());
    assert_eq!(
        h.pods(pf("", Some(cri::PodSandboxState::SandboxReady), &[])),
        vec![p1.clone()]
    );
    assert_eq!(
        h.pods(pf("", Some(cri::PodSandboxState::SandboxNotready), &[])),
        vec![p2.clone()]
    );
    assert_eq!(h.pods(pf("", None, &[("app", "b")])), vec![p2.clone()]);
    assert!(h.pods(pf("", None, &[("app", "b"), ("x", "y")])).is_empty());
    assert!(h
        .pods(pf("11", Some(cri::PodSandboxState::SandboxNotready), &[]))
        .is_empty());
    // Containers.
    let cf = |id: &str, pod: &str, state: Option<cri::ContainerState>, labels: &[(&str, &str)]| {
        Some(cri::ContainerFilter {
            id: id.into(),
            state: state.map(|s| cri::ContainerStateValue { state: s as i32 }),
            pod_sandbox_id: pod.into(),
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    };
    assert_eq!(h.ctrs(None), vec![c1.clone(), c2.clone(), c3.clone()]);
    assert_eq!(h.ctrs(cf("22", "", None, &[])), vec![c2.clone()]);
    assert!(h.ctrs(cf("2", "", None, &[])).is_empty());
    assert_eq!(
        h.ctrs(cf("", "11", None, &[])),
        vec![c1.clone(), c2.clone()]
    );
    assert_eq!(h.ctrs(cf("", &p2, None, &[])), vec![c3.clone()]);
    assert!(h.ctrs(cf("", "1", None, &[])).is_empty());
    assert_eq!(
        h.ctrs(cf("", "", Some(cri::ContainerState::ContainerRunning), &[])),
        vec![c1.clone()]
    );
    assert!(h
        .ctrs(cf("", "", Some(cri::ContainerState::ContainerExited), &[]))
        .is_empty());
    assert_eq!(
        h.ctrs(cf("", "", Some(cri::ContainerState::ContainerCreated), &[])),
        vec![c2.clone(), c3.clone()]
    );
    assert_eq!(
        h.ctrs(cf("", "", None, &[("c", "x")])),
        vec![c1.clone(), c3.clone()]
    );
    assert_eq!(h.ctrs(cf("", "12", None, &[("c", "x")])), vec![c3.clone()]);
    assert!(h.ctrs(cf("21", "12", None, &[])).is_empty());
    // Container stats: same filters, attributes for the frontend to fill.
    let stats = |f: Option<cri::ContainerStatsFilter>| {
        h.rt.list_container_stats(&cri::ListContainerStatsRequest { filter: f })
            .stats
            .into_iter()
            .map(|s| s.attributes.unwrap().id)
            .collect::<Vec<_>>()
    };
    assert_eq!(stats(None).len(), 3);
    let sf = |id: &str, pod: &str, labels: &[(&str, &str)]| {
        Some(cri::ContainerStatsFilter {
            id: id.into(),
            pod_sandbox_id: pod.into(),
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    };
    assert_eq!(stats(sf("23", "", &[])), vec![c3.clone()]);
    assert_eq!(stats(sf("", "11", &[])), vec![c1.clone(), c2.clone()]);
    assert_eq!(stats(sf("", "", &[("c", "y")])), vec![c2.clone()]);
    let one =
        h.rt.container_stats(&cri::ContainerStatsRequest {
            container_id: "21".into(),
        })
        .unwrap()
        .stats
        .unwrap();
    let attrs = one.attributes.unwrap();
    assert_eq!(attrs.id, c1);
    assert_eq!(attrs.labels["c"], "x");
    assert!(one.cpu.is_none());
    // Pod stats: only READY sandboxes are listed.
    let pstats = |f: Option<cri::PodSandboxStatsFilter>| {
        h.rt.list_pod_sandbox_stats(&cri::ListPodSandboxStatsRequest { filter: f })
            .stats
    };
    let all = pstats(None);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].attributes.as_ref().unwrap().id, p1);
    assert_eq!(all[0].linux.as_ref().unwrap().containers.len(), 2);
    assert!(pstats(Some(cri::PodSandboxStatsFilter {
        id: "12".into(),
        label_selector: HashMap::new()
    }))
    .is_empty());
    assert_eq!(
        pstats(Some(cri::PodSandboxStatsFilter {
            id: String::new(),
            label_selector: [("app".to_owned(), "a".to_owned())].into()
        }))
        .len(),
        1
    );
    let ps =
        h.rt.pod_sandbox_stats(&cri::PodSandboxStatsRequest {
            pod_sandbox_id: "12".into(),
        })
        .unwrap()
        .stats
        .unwrap();
    assert_eq!(ps.attributes.unwrap().id, p2);
    assert_eq!(
        h.rt.pod_sandbox_stats(&cri::PodSandboxStatsRequest {
            pod_sandbox_id: "13".into()
        })
        .unwrap_err()
        .code,
        Code::NotFound
    );
}

#[test]
fn statuses_carry_what_kubelet_reads() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let a = h.running(&pod, "a");
    let resp =
        h.rt.pod_sandbox_status(
            &cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            },
            T0 + 42,
        )
        .unwrap();
    let st = resp.status.unwrap();
    assert_eq!(st.metadata, pod_config("web").metadata);
    assert_eq!(st.labels["app"], "web");
    assert_eq!(st.annotations["a"], "b");
    let net = st.network.unwrap();
    assert_eq!(net.ip, "10.0.0.2");
    assert_eq!(net.additional_ips[0].ip, "fd00::2");
    let ns = st.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    assert_eq!(resp.timestamp, T0 + 42);
    assert_eq!(resp.containers_statuses.len(), 1);
    assert_eq!(resp.containers_statuses[0].id, a);
    let info = &resp.info["info"];
    assert!(
        info.starts_with('{') && info.contains(&format!("\"id\":\"{pod}\"")),
        "{info}"
    );
    let cs =
        h.rt.container_status(&cri::ContainerStatusRequest {
            container_id: a.clone(),
            verbose: true,
        })
        .unwrap();
    assert!(cs.info["info"].contains(&format!("\"sandboxID\":\"{pod}\"")));
    let plain = h.status(&a);
    assert_eq!(plain.metadata.unwrap().name, "a");
    assert_eq!(plain.image.unwrap().image, "busybox");
    assert_eq!(plain.labels["c"], "a");
    // Lists show the same objects.
    let list = h.rt.list_containers(&cri::ListContainersRequest::default());
    let c = &list.containers[0];
    assert_eq!(
        (c.id.as_str(), c.pod_sandbox_id.as_str()),
        (a.as_str(), pod.as_str())
    );
    assert_eq!(c.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(c.image_ref, "sha256:abc");
    // Every event carries the sandbox status and its containers' statuses.
    h.events.clear();
    h.notice(Notice::ContainerExited {
        container_id: a.clone(),
        exit: exit(1, ""),
    })
    .unwrap();
    let ev = h.events.pop().unwrap();
    assert_eq!(ev.pod_sandbox_status.unwrap().id, pod);
    assert_eq!(ev.containers_statuses.len(), 1);
    assert_eq!(
        ev.containers_statuses[0].state,
        cri::ContainerState::ContainerExited as i32
    );
    assert_eq!(ev.created_at, h.now);
}

// ---- persistence ---------------------------------------------------------

#[test]
fn a_failed_record_write_fails_the_call_and_is_retried() {
    let mut h = H::new();
    let call = h.pending(run_req("web"));
    let (cid, ca) = h.take(|x| matches!(x, Action::CreateSandbox { .. }));
    let o = h.host(&ca);
    h.outcome(cid, o).unwrap();
    let (wid, _) = h.take(|x| matches!(x, Action::WriteRecord(_)));
    h.outcome(wid, Outcome::Failed(Status::internal("ENOSPC")))
        .unwrap();
    let st = h.reply(call).unwrap_err();
    assert!(
        st.message.contains("ENOSPC") && st.message.contains("record"),
        "{st:?}"
    );
    // The sandbox exists; its record is written again on demand.
    assert!(h.actions.is_empty());
    let pod = h.pods(None).remove(0);
    assert!(h.rt.has_failed_records());
    h.rt.retry_records();
    h.drain();
    h.take(|x| matches!(x, Action::WriteRecord(_)));
    h.persist();
    assert!(h.store.contains_key(&RecordKey::Pod(pod.clone())));
    assert!(!h.rt.has_failed_records());
    // A call needing the record writes it too.
    let id = h.create(&pod, "a");
    let (sid, _) = {
        h.pending(start_req(&id));
        h.take(|x| matches!(x, Action::StartContainer { .. }))
    };
    h.outcome(
        sid,
        Outcome::ContainerStarted {
            pid: 1,
            started_at: 0,
        },
    )
    .unwrap();
    let (wid, _) = h.take(|x| matches!(x, Action::WriteRecord(_)));
    h.outcome(wid, Outcome::Failed(Status::internal("EIO")))
        .unwrap();
    assert!(h.replies.pop().unwrap().1.is_err());
    let stop = h.pending(stop_req(&id, 0));
    h.settle();
    assert!(h.reply(stop).is_ok());
    let Some(RecordKind::Container(c)) = h.store[&RecordKey::Container(id)].kind.clone() else {
        panic!()
    };
    assert_eq!(c.state, cri::ContainerState::ContainerExited as i32);
}

#[test]
fn one_record_write_per_object_in_flight() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    let id = h.running(&pod, "a");
    h.notice(Notice::ContainerExited {
        container_id: id.clone(),
        exit: exit(1, ""),
    })
    .unwrap();
    let (w1, _) = h.take(|x| matches!(x, Action::WriteRecord(_)));
    // A change while the write is in flight waits for it.
    let call = h.pending(remove_req(&id));
    let (rid, ra) = h.take(|x| matches!(x, Action::RemoveContainer { .. }));
    let o = h.host(&ra);
    h.outcome(rid, o).unwrap();
    assert!(h.find(|x| matches!(x, Action::DeleteRecord(_))).is_none());
    h.outcome(w1, Outcome::Done).unwrap();
    h.take(|x| matches!(x, Action::DeleteRecord(_)));
    h.persist();
    assert!(h.reply(call).is_ok());
}

#[test]
fn records_round_trip_through_prost() {
    let mut h = H::new();
    let pod = h.run_pod("web");
    h.running(&pod, "a");
    for r in h.rt.records() {
        let bytes = r.encode_to_vec();
        assert_eq!(Record::decode(bytes.as_slice()).unwrap(), r);
    }
    assert!(Record::decode(&b"\xff\xff"[..]).is_err());
}

#[test]
fn restore_rebuilds_the_same_state() {
    let mut h = H::new();
    let p1 = h.run_pod("a");
    let p2 = h.run_pod("b");
    let run = h.running(&p1, "run");
    let created = h.create(&p1, "created");
    let exited = h.running(&p2, "exited");
    h.pending(stop_req(&exited, 0));
    h.settle();
    h.pending(stop_pod_req(&p2));
    h.settle();
    let records: Vec<Record> = h.store.values().cloned().collect();
    assert_eq!(records.len(), 5);
    let Some(RecordKind::Container(rec)) = h.store[&RecordKey::Container(run.clone())].kind.clone()
    else {
        panic!()
    };
    let obs = vec![
        Observation::SandboxAlive { id: p1.clone() },
        Observation::Container {
            id: run.clone(),
            observed: Observed::Running {
                pid: rec.pid,
                started_at: 0,
            },
        },
    ];
    let (rt, warnings) = Runtime::restore(SeqIds::new(9), records, &obs, h.now);
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut r = H::with(rt);
    assert!(r.actions.is_empty(), "nothing changed: {:?}", r.actions);
    assert_eq!(
        r.rt.list_pod_sandbox(&Default::default()),
        h.rt.list_pod_sandbox(&Default::default())
    );
    assert_eq!(
        r.rt.list_containers(&Default::default()),
        h.rt.list_containers(&Default::default())
    );
    for id in [&run, &created, &exited] {
        assert_eq!(r.status(id), h.status(id));
        assert_eq!(r.status(id).user, Some(test_user()));
    }
    // Names are reserved again.
    assert_eq!(r.now_err(run_req("a")).code, Code::AlreadyExists);
    assert_eq!(
        r.now_err(create_req(&p1, "run", 0)).code,
        Code::AlreadyExists
    );
    // And the restored runtime works.
    let call = r.pending(remove_pod_req(&p1));
    r.settle();
    assert!(r.reply(call).is_ok());
}

#[test]
fn restore_applies_what_the_host_reports() {
    let mut h = H::new();
    let p1 = h.run_pod("a");
    let p2 = h.run_pod("b");
    let gone = h.running(&p1, "gone");
    let died = h.running(&p1, "died");
    let lost = h.running(&p1, "lost");
    let created = h.create(&p1, "created");
    let started = h.create(&p1, "started");
    let later = h.create(&p2, "later");
    let mut records: Vec<Record> = h.store.values().cloned().collect();
    // An orphan: a container whose sandbox has no record.
    records.retain(|r| r.key() != Some(RecordKey::Pod(p2.clone())));
    let obs = vec![
        Observation::SandboxAlive { id: p1.clone() },
        Observation::Container {
            id: died.clone(),
            observed: Observed::Exited(Exit {
                exit_code: 2,
                finished_at: T0 + 7,
                reason: String::new(),
                message: String::new(),
            }),
        },
        Observation::Container {
            id: lost.clone(),
            observed: Observed::Unreachable,
        },
        Observation::Container {
            id: started.clone(),
            observed: Observed::Running {
                pid: 9,
                started_at: T0 + 8,
            },
        },
    ];
    let now = h.now + SEC;
    let (rt, warnings) = Runtime::restore(SeqIds::new(9), records, &obs, now);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&later));
    let mut r = H::with(rt);
    let s = r.status(&gone);
    assert_eq!(state(&s), cri::ContainerState::ContainerExited);
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (UNKNOWN_EXIT_CODE, UNKNOWN_EXIT_REASON)
    );
    assert_eq!(s.finished_at, now);
    let s = r.status(&died);
    assert_eq!(
        (state(&s), s.exit_code, s.finished_at),
        (cri::ContainerState::ContainerExited, 2, T0 + 7)
    );
    assert_eq!(s.reason, ERROR_REASON);
    assert_eq!(
        state(&r.status(&lost)),
        cri::ContainerState::ContainerUnknown
    );
    assert_eq!(
        state(&r.status(&created)),
        cri::ContainerState::ContainerCreated
    );
    let s = r.status(&started);
    assert_eq!(
        (state(&s), s.started_at),
        (cri::ContainerState::ContainerRunning, T0 + 8)
    );
    assert!(r.pods(None) == vec![p1.clone()]);
    // Changed objects are written again; the orphan's record deleted.
    let written: Vec<String> = r
        .actions
        .iter()
        .filter_map(|(_, a)| match a {
            Action::WriteRecord(rec) => rec.key().map(|k| k.id().to_owned()),
            _ => None,
        })
        .collect();
    for id in [&gone, &died, &lost, &started] {
        assert!(written.contains(id), "{id} not rewritten: {written:?}");
    }
    assert!(!written.contains(&created));
    assert!(r
        .find(|a| matches!(a, Action::DeleteRecord(RecordKey::Container(id)) if *id == later))
        .is_some());
    r.persist();
    // An UNKNOWN container is cleaned up by a stop.
    let call = r.pending(stop_req(&lost, 0));
    r.take(|a| matches!(a, Action::StopContainer { .. }));
    r.settle();
    assert!(r.reply(call).is_ok());
    assert_eq!(
        state(&r.status(&lost)),
        cri::ContainerState::ContainerExited
    );
}

#[test]
fn restore_marks_dead_sandboxes_notready_and_skips_bad_records() {
    let mut h = H::new();
    let pod = h.run_pod("a");
    let mut records: Vec<Record> = h.store.values().cloned().collect();
    // A duplicate of the sandbox under another ID (same name), a record of
    // no kind, and one without config.
    let Some(RecordKind::Pod(mut dup)) = records[0].kind.clone() else {
        panic!()
    };
    dup.id = "9".repeat(64);
    records.push(Record {
        kind: Some(RecordKind::Pod(dup.clone())),
    });
    records.push(Record { kind: None });
    dup.id = "8".repeat(64);
    dup.config = None;
    records.push(Record {
        kind: Some(RecordKind::Pod(dup)),
    });
    let (rt, warnings) = Runtime::restore(SeqIds::new(2), records, &[], h.now);
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    let mut r = H::with(rt);
    assert_eq!(r.pods(None), vec![pod.clone()]);
    let st = r.pod_status(&pod).status.unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    r.take(|a| matches!(a, Action::WriteRecord(_)));
    r.persist();
    let call = r.pending(stop_pod_req(&pod));
    r.take(|a| matches!(a, Action::StopSandbox { .. }));
    r.settle();
    assert!(r.reply(call).is_ok());
}

// ---- misuse and ids -------------------------------------------------------

#[test]
fn frontend_misuse_is_reported_not_panicked_on() {
    let mut h = H::new();
    assert_eq!(
        h.outcome(ActionId(999), Outcome::Done),
        Err(InputError::UnknownAction(ActionId(999)))
    );
    let call = h.pending(run_req("web"));
    let (id, _) = h.take(|x| matches!(x, Action::CreateSandbox { .. }));
    // The wrong kind of outcome counts as a failure.
    assert!(matches!(
        h.outcome(id, Outcome::Done),
        Err(InputError::UnexpectedOutcome { .. })
    ));
    assert_eq!(h.reply(call).unwrap_err().code, Code::Internal);
    assert_eq!(
        h.outcome(id, Outcome::Done),
        Err(InputError::UnknownAction(id))
    );
    // A failure with an OK status still fails.
    let call = h.pending(run_req("web"));
    let (id, _) = h.take(|x| matches!(x, Action::CreateSandbox { .. }));
    h.outcome(id, Outcome::Failed(Status::ok())).unwrap();
    assert_ne!(h.reply(call).unwrap_err().code, Code::Ok);
    assert!(h.pods(None).is_empty());
}

#[test]
fn id_collisions_draw_again_and_a_stuck_source_fails_cleanly() {
    // A source stuck on one value: the first ID is fine, the next fails.
    let mut h = H::with(Runtime::new(|| [7u8; 32]));
    let a = h.run_pod("a");
    assert_eq!(a, "07".repeat(32));
    let st = h.now_err(run_req("b"));
    assert_eq!(st.code, Code::Internal);
    assert!(st.message.contains("ID"));
    // Nothing was reserved by the failed attempt.
    assert_eq!(h.pods(None), vec![a]);
    // A repeat is drawn again.
    let mut draws = vec![[7u8; 32], [7u8; 32], [8u8; 32]].into_iter();
    let mut h = H::with(Runtime::new(move || draws.next().unwrap_or([9u8; 32])));
    h.run_pod("a");
    let b = h.run_pod("b");
    assert_eq!(b, "08".repeat(32));
}

#[test]
fn requests_decode_by_method() {
    let req = cri::StopContainerRequest {
        container_id: "abc".into(),
        timeout: 3,
    };
    let decoded = Request::decode(Method::StopContainer, &req.encode_to_vec())
        .unwrap()
        .unwrap();
    assert_eq!(decoded, Request::StopContainer(req));
    assert_eq!(decoded.method(), Method::StopContainer);
    assert!(Request::decode(Method::Version, &[]).is_none());
    assert!(Request::decode(Method::PullImage, &[]).is_none());
    let st = Request::decode(Method::StartContainer, b"\xff")
        .unwrap()
        .unwrap_err();
    assert_eq!(st.code, Code::InvalidArgument);
    // Every method the runtime takes round-trips through handle.
    let mut h = H::new();
    for m in [
        Method::ListPodSandbox,
        Method::ListContainers,
        Method::ListContainerStats,
        Method::ListPodSandboxStats,
    ] {
        let req = Request::decode(m, &[]).unwrap().unwrap();
        let Handled::Done(Ok(resp)) = h.call(req) else {
            panic!()
        };
        assert!(resp.encode_to_vec().is_empty());
    }
}

#[test]
fn names_and_paths() {
    let pm = cri::PodSandboxMetadata {
        name: "web".into(),
        uid: "u".into(),
        namespace: "ns".into(),
        attempt: 3,
    };
    assert_eq!(pod_name(&pm), "web_ns_u_3");
    let cm = cri::ContainerMetadata {
        name: "app".into(),
        attempt: 1,
    };
    assert_eq!(container_name(&cm, &pm), "app_web_ns_u_1");
    assert_eq!(
        join_log_path("/var/log/pods/x/", "/a/0.log"),
        "/var/log/pods/x/a/0.log"
    );
    assert_eq!(join_log_path("/logs", "a.log"), "/logs/a.log");
    assert_eq!(join_log_path("", "a.log"), "");
    assert_eq!(join_log_path("/logs", ""), "");
}

#[test]
fn the_fuzz_entry_point_runs_bytes() {
    assert_eq!(sim::fuzz(&[]), Ok(()));
    assert_eq!(sim::fuzz(&[0xff; 7]), Ok(()));
    // RunPod, answer it and its record, create, answer, start, answer...
    let mut data = Vec::new();
    for _ in 0..30 {
        data.extend_from_slice(&[0, 1, 0, 9, 0, 1, 9, 0, 1, 4, 0, 1, 9, 0, 1, 6, 5, 0]);
    }
    assert_eq!(sim::fuzz(&data), Ok(()));
}

#[test]
fn mounts_are_checked_and_image_volumes_recorded() {
    let mut h = H::new();
    let pod = h.run_pod("vol");
    // A forbidden combination never reaches the host.
    let mut config = ctr_config("bad", 0);
    config.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: "/srv".into(),
        recursive_read_only: true,
        ..Default::default()
    }];
    let st = h.now_err(Request::CreateContainer(cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(config),
        sandbox_config: None,
    }));
    assert_eq!(st.code, Code::InvalidArgument);
    assert!(
        st.message.contains("mounts[0].recursive_read_only"),
        "{}",
        st.message
    );
    assert!(h
        .find(|a| matches!(a, Action::CreateContainer { .. }))
        .is_none());

    // An image volume: the host reports where it mounted it and which
    // image it is; both are in the status and the record.
    let mut config = ctr_config("vol", 0);
    let plain = cri::Mount {
        container_path: "/data".into(),
        host_path: "/srv".into(),
        ..Default::default()
    };
    config.mounts = vec![
        plain.clone(),
        cri::Mount {
            container_path: "/vol".into(),
            image: Some(cri::ImageSpec {
                image: "data:1".into(),
                ..Default::default()
            }),
            readonly: true,
            ..Default::default()
        },
    ];
    let call = h.pending(Request::CreateContainer(cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(config),
        sandbox_config: None,
    }));
    let (id, _) = h.take(|a| matches!(a, Action::CreateContainer { .. }));
    h.outcome(
        id,
        Outcome::ContainerCreated {
            image_ref: "sha256:abc".into(),
            image_id: "sha256:abc".into(),
            image_volumes: vec![crate::cri::ImageVolume {
                index: 1,
                host_path: "/run/crisp/containers/x/volumes/d47a".into(),
                image_id: "sha256:d47a".into(),
            }],
            user: None,
            image_stop_signal: 0,
        },
    )
    .unwrap();
    h.settle();
    let Ok(Response::CreateContainer(r)) = h.reply(call) else {
        panic!()
    };
    let st = h.status(&r.container_id);
    assert_eq!(st.mounts[0], plain);
    assert_eq!(
        st.mounts[1].host_path,
        "/run/crisp/containers/x/volumes/d47a"
    );
    assert_eq!(st.mounts[1].image.as_ref().unwrap().image, "data:1");
    assert_eq!(h.rt.images_in_use(), ["sha256:abc", "sha256:d47a"]);

    let records: Vec<Record> = h.store.values().cloned().collect();
    let (rt, warnings) = Runtime::restore(SeqIds::new(9), records, &[], h.now);
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut r = H::with(rt);
    assert_eq!(r.status(&st.id).mounts, st.mounts);
    assert_eq!(r.rt.images_in_use(), ["sha256:abc", "sha256:d47a"]);
    let call = r.pending(remove_req(&st.id));
    r.settle();
    assert!(r.reply(call).is_ok());
    assert!(r.rt.images_in_use().is_empty());
}

#[test]
fn requests_crisp_cannot_honour_are_refused_before_any_host_work() {
    let mut h = H::new();
    let pod = h.run_pod("p");
    h.settle();
    let mut c = ctr_config("g", 0);
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_group: Some(cri::Int64Value { value: 1002 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let st = h.now_err(Request::CreateContainer(cri::CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(c),
        sandbox_config: None,
    }));
    assert_eq!(st.code, Code::InvalidArgument);
    assert!(st.message.contains("run_as_group"), "{st:?}");
    // The name was not reserved.
    h.create(&pod, "g");

    let mut p = pod_config("userns");
    p.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap()
        .userns_options = Some(cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![],
        gids: vec![],
    });
    let st = h.now_err(Request::RunPodSandbox(cri::RunPodSandboxRequest {
        config: Some(p),
        runtime_handler: String::new(),
    }));
    assert_eq!(st.code, Code::InvalidArgument);
    assert!(st.message.contains("userns_options"), "{st:?}");
    assert!(h.actions.is_empty(), "{:?}", h.actions);
    h.run_pod("userns");
}

#[test]
fn status_reports_the_user_and_the_effective_stop_signal() {
    let mut h = H::new();
    let pod = h.run_pod("p");
    let mut create_with = |name: &str, signal: cri::Signal| {
        let mut c = ctr_config(name, 0);
        c.stop_signal = signal as i32;
        let call = h.pending(Request::CreateContainer(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: None,
        }));
        h.settle();
        let Ok(Response::CreateContainer(r)) = h.reply(call) else {
            panic!()
        };
        r.container_id
    };
    let id = create_with("default", cri::Signal::RuntimeDefault);
    let usr1 = create_with("usr1", cri::Signal::Sigusr1);
    let st = h.status(&id);
    assert_eq!(st.user, Some(test_user()));
    assert_eq!(st.stop_signal, cri::Signal::Sigterm as i32);

    // The config's signal, in the status and in the StopContainer action.
    assert_eq!(h.status(&usr1).stop_signal, cri::Signal::Sigusr1 as i32);
    h.start(&usr1);
    h.pending(stop_req(&usr1, 5));
    let (_, action) = h
        .find(|a| matches!(a, Action::StopContainer { .. }))
        .unwrap();
    let Action::StopContainer { stop_signal, .. } = action else {
        panic!()
    };
    assert_eq!(stop_signal, cri::Signal::Sigusr1 as i32);
}

#[test]
fn the_images_stop_signal_is_reported_when_the_config_has_none() {
    let mut h = H::new();
    let pod = h.run_pod("p");
    let call = h.pending(create_req(&pod, "img", 0));
    let (a, _) = h.take(|a| matches!(a, Action::CreateContainer { .. }));
    h.outcome(
        a,
        Outcome::ContainerCreated {
            image_ref: "sha256:abc".into(),
            image_id: "sha256:abc".into(),
            image_volumes: Vec::new(),
            user: None,
            image_stop_signal: cri::Signal::Sigquit as i32,
        },
    )
    .unwrap();
    h.settle();
    let Ok(Response::CreateContainer(r)) = h.reply(call) else {
        panic!()
    };
    let st = h.status(&r.container_id);
    assert_eq!(st.stop_signal, cri::Signal::Sigquit as i32);
    assert_eq!(st.user, None);
}

#[test]
fn pid_mode_target_joins_a_running_container_of_the_same_pod() {
    let mut h = H::new();
    let pod = h.run_pod("p");
    let other_pod = h.run_pod("q");
    let created = h.create(&pod, "created");
    let running = h.running(&pod, "running");
    let elsewhere = h.running(&other_pod, "elsewhere");
    let target = |h: &mut H, name: &str, id: &str| {
        let mut c = ctr_config(name, 0);
        c.linux
            .get_or_insert_with(Default::default)
            .security_context = Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Target as i32,
                target_id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        h.call(Request::CreateContainer(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: None,
        }))
    };
    for (id, code) in [
        ("", Code::InvalidArgument),
        ("f00d", Code::NotFound),
        (created.as_str(), Code::FailedPrecondition),
        (elsewhere.as_str(), Code::InvalidArgument),
    ] {
        let Handled::Done(Err(st)) = target(&mut h, "debug", id) else {
            panic!("{id:?} accepted")
        };
        assert_eq!(st.code, code, "{id:?}: {st:?}");
    }
    // A unique prefix names the target; the host gets the full ID.
    let Handled::Pending(_) = target(&mut h, "debug", &running[..12]) else {
        panic!()
    };
    let (_, Action::CreateContainer { config, .. }) =
        h.take(|a| matches!(a, Action::CreateContainer { .. }))
    else {
        panic!()
    };
    let ns = config
        .linux
        .and_then(|l| l.security_context)
        .and_then(|s| s.namespace_options)
        .unwrap();
    assert_eq!(ns.target_id, running);
}
