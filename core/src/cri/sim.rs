//! A simulated host and kubelet for the state machine, checking its
//! invariants after every step. The property tests generate [`Step`]
//! sequences; fuzz targets call [`fuzz`] with arbitrary bytes:
//!
//! ```text
//! fuzz_target!(|data: &[u8]| {
//!     if let Err(violation) = crisp_core::cri::sim::fuzz(data) {
//!         panic!("{violation}");
//!     }
//! });
//! ```
//!
//! Invariants checked after each step: the runtime's own consistency
//! ([`Runtime::check_invariants`]); names unique among listed pod
//! sandboxes and containers; no container in a missing sandbox; only legal
//! state transitions, and no removed ID coming back; every action answered
//! at most once (a second answer is refused) and every reply for a pending
//! call of the same method, exactly once; no container removed while
//! running on the host, no sandbox removed while it has containers. At the
//! end ([`Sim::finish`]): every call answered once all actions are, the
//! persisted records equal the runtime's, a runtime restored from them
//! lists the same, and stop/remove calls are idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crisp_proto::cri;
use crisp_proto::methods::Method;

use super::{
    container_name, is_valid_id, pod_name, Action, ActionId, CallId, Exit, Handled, InputError,
    Notice, Observation, Observed, Outcome, Record, RecordKey, Request, Response, Runtime,
    SandboxCreated, SeqIds,
};
use crate::grpc::{Code, Status};

/// One thing that happens to the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// RunPodSandbox with one of a few metadata sets (so names collide).
    RunPod {
        meta: u8,
        attempt: u8,
    },
    StopPod {
        pick: u8,
    },
    RemovePod {
        pick: u8,
    },
    CreateContainer {
        pod: u8,
        name: u8,
    },
    StartContainer {
        pick: u8,
    },
    StopContainer {
        pick: u8,
        timeout: u8,
    },
    RemoveContainer {
        pick: u8,
    },
    /// UpdateContainerResources with a memory limit of `mib` + 1 MiB.
    UpdateContainer {
        pick: u8,
        mib: u8,
    },
    /// Answer one outstanding action, as the host would or with a failure.
    Answer {
        pick: u8,
        fail: bool,
    },
    /// A running container dies on its own.
    ContainerDies {
        pick: u8,
        code: u8,
    },
    /// A sandbox's holder process dies.
    SandboxDies {
        pick: u8,
    },
    /// Status and filtered listings by (prefix of) ID and labels.
    Query {
        pick: u8,
        len: u8,
    },
    /// Restart: rebuild the runtime from the records (only when quiet).
    Restart,
    /// Time passes.
    Tick {
        secs: u8,
    },
}

impl Step {
    /// A step from three bytes; every value maps to some step.
    pub fn from_bytes(op: u8, a: u8, b: u8) -> Step {
        match op % 16 {
            0 | 1 => Step::RunPod {
                meta: a,
                attempt: b,
            },
            2 => Step::StopPod { pick: a },
            3 => Step::RemovePod { pick: a },
            4 | 5 => Step::CreateContainer { pod: a, name: b },
            6 => Step::StartContainer { pick: a },
            7 => Step::StopContainer {
                pick: a,
                timeout: b,
            },
            8 => Step::RemoveContainer { pick: a },
            9..=11 => Step::Answer {
                pick: a,
                fail: b % 8 == 0,
            },
            12 => Step::ContainerDies { pick: a, code: b },
            13 => Step::SandboxDies { pick: a },
            14 => match a % 8 {
                0 => Step::Restart,
                1 => Step::Tick { secs: b },
                _ => Step::Query { pick: a, len: b },
            },
            _ if b % 4 == 0 => Step::UpdateContainer { pick: a, mib: b },
            _ => Step::Answer {
                pick: a,
                fail: false,
            },
        }
    }
}

/// Steps from a byte string, three bytes each.
pub fn steps_from_bytes(data: &[u8]) -> Vec<Step> {
    data.chunks_exact(3)
        .map(|c| match c {
            [op, a, b] => Step::from_bytes(*op, *a, *b),
            _ => Step::Tick { secs: 0 },
        })
        .collect()
}

/// Runs `data` as a sequence of steps (at most 4000) and the final checks.
pub fn fuzz(data: &[u8]) -> Result<(), String> {
    let seed = data.first().copied().map(u64::from).unwrap_or(0);
    let mut sim = Sim::new(seed);
    for step in steps_from_bytes(data).into_iter().take(4000) {
        sim.step(step)?;
    }
    sim.finish()
}

/// Runs `data` as raw, unchecked inputs: requests decoded from arbitrary
/// bytes or built with arbitrary strings and numbers, outcomes of any kind
/// for any action id (fitting or not), notices about anything, time going
/// backwards, restores with made-up observations. Only the runtime's own
/// invariants are checked: this is about never panicking and never
/// corrupting the state, whatever the frontend or the peer sends.
pub fn fuzz_raw(data: &[u8]) -> Result<(), String> {
    const METHODS: [Method; 16] = [
        Method::RunPodSandbox,
        Method::StopPodSandbox,
        Method::RemovePodSandbox,
        Method::PodSandboxStatus,
        Method::ListPodSandbox,
        Method::CreateContainer,
        Method::StartContainer,
        Method::StopContainer,
        Method::RemoveContainer,
        Method::ListContainers,
        Method::ContainerStatus,
        Method::ContainerStats,
        Method::ListContainerStats,
        Method::PodSandboxStats,
        Method::ListPodSandboxStats,
        Method::UpdateContainerResources,
    ];
    let mut rt = Runtime::new(SeqIds::new(0));
    let mut now: i64 = 0;
    let mut outstanding: Vec<(ActionId, Action)> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut input = data;
    let mut restarts: u64 = 0;
    while let [op, len, rest @ ..] = input {
        let n = usize::from(*len % 48).min(rest.len());
        let Some((payload, tail)) = rest.split_at_checked(n) else {
            break;
        };
        input = tail;
        let text = String::from_utf8_lossy(payload).into_owned();
        let b = |i: usize| payload.get(i).copied().unwrap_or(0);
        let num = {
            let mut x: i64 = 0;
            for byte in payload.iter().take(8) {
                x = x.wrapping_shl(8) | i64::from(*byte);
            }
            x
        };
        // A key: a known ID, a prefix of one, or the text itself.
        let key = match b(0) % 4 {
            0 => text.clone(),
            1 => pick_owned(&ids, b(1)).unwrap_or_default(),
            _ => pick_owned(&ids, b(1))
                .and_then(|id| id.get(..usize::from(b(2) % 65)).map(str::to_owned))
                .unwrap_or_default(),
        };
        match op % 12 {
            0 => {
                let m = METHODS.get(usize::from(b(0)) % METHODS.len()).copied();
                if let Some(Ok(req)) =
                    m.and_then(|m| Request::decode(m, payload.get(1..).unwrap_or(&[])))
                {
                    let _ = rt.handle(req, now);
                }
            }
            1 => {
                let config = cri::PodSandboxConfig {
                    metadata: Some(cri::PodSandboxMetadata {
                        name: text.clone(),
                        uid: text.chars().rev().collect(),
                        namespace: if b(0) % 2 == 0 {
                            "ns".into()
                        } else {
                            text.clone()
                        },
                        attempt: u32::from(b(1)),
                    }),
                    log_directory: text.clone(),
                    labels: [(text.clone(), key.clone())].into(),
                    ..Default::default()
                };
                let _ = rt.handle(
                    Request::RunPodSandbox(cri::RunPodSandboxRequest {
                        config: Some(config),
                        runtime_handler: key.clone(),
                    }),
                    now,
                );
            }
            2 => {
                let mut config = container_config(b(1));
                if let Some(m) = config.metadata.as_mut() {
                    m.name = text.clone();
                }
                config.log_path = key.clone();
                let _ = rt.handle(
                    Request::CreateContainer(cri::CreateContainerRequest {
                        pod_sandbox_id: key.clone(),
                        config: Some(config),
                        sandbox_config: None,
                    }),
                    now,
                );
            }
            3 => {
                let req = match b(3) % 5 {
                    0 => Request::StartContainer(cri::StartContainerRequest { container_id: key }),
                    1 => Request::StopContainer(cri::StopContainerRequest {
                        container_id: key,
                        timeout: num,
                    }),
                    2 => {
                        Request::RemoveContainer(cri::RemoveContainerRequest { container_id: key })
                    }
                    3 => Request::StopPodSandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: key,
                    }),
                    _ => Request::RemovePodSandbox(cri::RemovePodSandboxRequest {
                        pod_sandbox_id: key,
                    }),
                };
                let _ = rt.handle(req, now);
            }
            4 | 5 => {
                if outstanding.is_empty() {
                    continue;
                }
                let i = usize::from(b(0)) % outstanding.len();
                let (id, action) = outstanding.remove(i);
                let outcome = if op % 12 == 5 {
                    // Whatever the action was.
                    match b(1) % 6 {
                        0 => Outcome::Done,
                        1 => Outcome::SandboxCreated(SandboxCreated {
                            pid: u32::from(b(2)),
                            netns_path: text.clone(),
                            ip: text.clone(),
                            additional_ips: vec![key.clone()],
                        }),
                        2 => Outcome::ContainerCreated {
                            image_ref: text.clone(),
                            image_id: key.clone(),
                            image_volumes: Vec::new(),
                            user: None,
                            image_stop_signal: i32::from(b(2)) % 70,
                        },
                        3 => Outcome::ContainerStarted {
                            pid: u32::from(b(2)),
                            started_at: num,
                        },
                        4 => Outcome::ContainerExited(Exit {
                            exit_code: i32::from(b(2)),
                            finished_at: num,
                            reason: text.clone(),
                            message: key.clone(),
                        }),
                        _ => Outcome::Failed(Status::new(
                            Code::from_u32(u32::from(b(2))),
                            text.clone(),
                        )),
                    }
                } else {
                    // What a host would answer.
                    match &action {
                        Action::CreateSandbox { .. } => {
                            Outcome::SandboxCreated(SandboxCreated::default())
                        }
                        Action::CreateContainer { .. } => Outcome::ContainerCreated {
                            image_ref: String::new(),
                            image_id: String::new(),
                            image_volumes: Vec::new(),
                            user: None,
                            image_stop_signal: 0,
                        },
                        Action::StartContainer { .. } => Outcome::ContainerStarted {
                            pid: 1,
                            started_at: num,
                        },
                        Action::StopContainer { .. } => Outcome::ContainerExited(Exit::default()),
                        _ => Outcome::Done,
                    }
                };
                let _ = rt.handle_outcome(id, outcome, now);
            }
            6 => {
                let id = ActionId(num as u64);
                if !matches!(
                    rt.handle_outcome(id, Outcome::Done, now),
                    Err(InputError::UnknownAction(_))
                ) {
                    outstanding.retain(|(a, _)| *a != id);
                }
            }
            7 => {
                let notice = if b(3) % 2 == 0 {
                    Notice::ContainerExited {
                        container_id: key,
                        exit: Exit {
                            exit_code: i32::from(b(2)),
                            finished_at: num,
                            reason: text.clone(),
                            message: String::new(),
                        },
                    }
                } else {
                    Notice::SandboxExited { pod_id: key }
                };
                let _ = rt.handle_notice(notice, now);
            }
            8 => now = num,
            9 => {
                let _ = rt.pod_sandbox_status(
                    &cri::PodSandboxStatusRequest {
                        pod_sandbox_id: key.clone(),
                        verbose: true,
                    },
                    now,
                );
                let _ = rt.container_status(&cri::ContainerStatusRequest {
                    container_id: key.clone(),
                    verbose: true,
                });
                let _ = rt.list_containers(&cri::ListContainersRequest {
                    filter: Some(cri::ContainerFilter {
                        id: key.clone(),
                        state: Some(cri::ContainerStateValue {
                            state: i32::from(b(3)),
                        }),
                        pod_sandbox_id: text.clone(),
                        label_selector: [(text.clone(), key.clone())].into(),
                    }),
                });
                let _ = rt.list_pod_sandbox_stats(&cri::ListPodSandboxStatsRequest {
                    filter: Some(cri::PodSandboxStatsFilter {
                        id: key.clone(),
                        label_selector: HashMap::new(),
                    }),
                });
            }
            10 => rt.retry_records(),
            _ => {
                restarts = restarts.wrapping_add(1);
                let observations: Vec<Observation> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| match (i.wrapping_add(usize::from(b(0)))) % 4 {
                        0 => Observation::SandboxAlive { id: id.clone() },
                        1 => Observation::Container {
                            id: id.clone(),
                            observed: Observed::Running {
                                pid: 1,
                                started_at: num,
                            },
                        },
                        2 => Observation::Container {
                            id: id.clone(),
                            observed: Observed::Exited(Exit::default()),
                        },
                        _ => Observation::Container {
                            id: id.clone(),
                            observed: Observed::Unreachable,
                        },
                    })
                    .collect();
                let (new, _) =
                    Runtime::restore(SeqIds::new(restarts), rt.records(), &observations, now);
                rt = new;
                outstanding.clear();
            }
        }
        while let Some((id, action)) = rt.poll_action() {
            match &action {
                Action::CreateSandbox { pod_id, .. } => ids.push(pod_id.clone()),
                Action::CreateContainer { container_id, .. } => ids.push(container_id.clone()),
                _ => {}
            }
            outstanding.push((id, action));
        }
        while rt.poll_reply().is_some() {}
        while rt.poll_event().is_some() {}
        rt.check_invariants()?;
        if outstanding.len() != rt.outstanding_actions() {
            return Err(format!(
                "{} actions handed out and unanswered, the runtime counts {}",
                outstanding.len(),
                rt.outstanding_actions()
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct HostCtr {
    pod_id: String,
    running: bool,
    pid: u32,
    started_at: i64,
    exit: Option<Exit>,
}

/// What the sim saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub calls: u64,
    pub replies: u64,
    pub errors: u64,
    pub actions: u64,
    pub failures_injected: u64,
    pub events: u64,
    pub restarts: u64,
    pub max_pods: usize,
    pub max_containers: usize,
}

/// The simulation: a runtime, a host model, a record store.
pub struct Sim {
    rt: Runtime,
    now: i64,
    host_pods: BTreeMap<String, bool>,
    /// Sandboxes the host stopped on request (not died on their own).
    host_stopped: BTreeSet<String>,
    /// Sandboxes StopPodSandbox answered OK for.
    stopped_pods: BTreeSet<String>,
    host_ctrs: BTreeMap<String, HostCtr>,
    store: BTreeMap<RecordKey, Record>,
    outstanding: BTreeMap<ActionId, Action>,
    answered: BTreeSet<ActionId>,
    /// Calls waiting for a reply, with the ID (or prefix) they named.
    pending: BTreeMap<CallId, (Method, String)>,
    known_pods: Vec<String>,
    known_ctrs: Vec<String>,
    gone: BTreeSet<String>,
    last_pods: BTreeMap<String, i32>,
    last_ctrs: BTreeMap<String, i32>,
    next_pid: u32,
    pub stats: SimStats,
}

fn kind_of(r: &Response) -> Method {
    match r {
        Response::RunPodSandbox(_) => Method::RunPodSandbox,
        Response::StopPodSandbox(_) => Method::StopPodSandbox,
        Response::RemovePodSandbox(_) => Method::RemovePodSandbox,
        Response::PodSandboxStatus(_) => Method::PodSandboxStatus,
        Response::ListPodSandbox(_) => Method::ListPodSandbox,
        Response::CreateContainer(_) => Method::CreateContainer,
        Response::StartContainer(_) => Method::StartContainer,
        Response::StopContainer(_) => Method::StopContainer,
        Response::RemoveContainer(_) => Method::RemoveContainer,
        Response::ListContainers(_) => Method::ListContainers,
        Response::ContainerStatus(_) => Method::ContainerStatus,
        Response::ContainerStats(_) => Method::ContainerStats,
        Response::ListContainerStats(_) => Method::ListContainerStats,
        Response::PodSandboxStats(_) => Method::PodSandboxStats,
        Response::ListPodSandboxStats(_) => Method::ListPodSandboxStats,
        Response::UpdateContainerResources(_) => Method::UpdateContainerResources,
    }
}

const CREATED: i32 = cri::ContainerState::ContainerCreated as i32;
const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
const EXITED: i32 = cri::ContainerState::ContainerExited as i32;
const UNKNOWN: i32 = cri::ContainerState::ContainerUnknown as i32;
const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
const NOTREADY: i32 = cri::PodSandboxState::SandboxNotready as i32;

fn legal_ctr(from: i32, to: i32) -> bool {
    from == to
        || matches!(
            (from, to),
            (CREATED, RUNNING)
                | (CREATED, EXITED)
                | (RUNNING, EXITED)
                | (RUNNING, UNKNOWN)
                | (UNKNOWN, EXITED)
                | (UNKNOWN, RUNNING)
        )
}

fn legal_pod(from: i32, to: i32) -> bool {
    from == to || (from == READY && to == NOTREADY)
}

fn pick(items: &[String], n: u8) -> Option<&String> {
    if items.is_empty() {
        return None;
    }
    items.get(usize::from(n) % items.len())
}

/// A key naming `items[n]`, a prefix of it, or nothing known.
fn key_for(items: &[String], n: u8) -> String {
    match n % 8 {
        0 => String::new(),
        1 => "f00".to_owned(),
        2 => "0".repeat(64),
        3 | 4 => pick(items, n / 8)
            .and_then(|id| id.get(..usize::from(n % 5).saturating_add(1)))
            .unwrap_or("")
            .to_owned(),
        _ => pick(items, n / 8).cloned().unwrap_or_default(),
    }
}

fn pod_config(meta: u8, attempt: u8) -> cri::PodSandboxConfig {
    let m = meta % 4;
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: format!("pod{m}"),
            uid: format!("uid-{m}"),
            namespace: "default".into(),
            attempt: u32::from(attempt % 3),
        }),
        log_directory: if m % 2 == 0 {
            format!("/var/log/pods/pod{m}")
        } else {
            String::new()
        },
        labels: [("app".to_owned(), format!("a{}", m % 2))].into(),
        annotations: [("note".to_owned(), format!("{meta}"))].into(),
        ..Default::default()
    }
}

fn container_config(name: u8) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: format!("c{}", name % 3),
            attempt: u32::from((name / 3) % 2),
        }),
        image: Some(cri::ImageSpec {
            image: "docker.io/library/busybox:latest".into(),
            ..Default::default()
        }),
        log_path: format!("c{}.log", name % 3),
        labels: [("tier".to_owned(), format!("t{}", name % 2))].into(),
        ..Default::default()
    }
}

fn lists(rt: &Runtime) -> (cri::ListPodSandboxResponse, cri::ListContainersResponse) {
    (
        rt.list_pod_sandbox(&cri::ListPodSandboxRequest::default()),
        rt.list_containers(&cri::ListContainersRequest::default()),
    )
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        Sim {
            rt: Runtime::new(SeqIds::new(seed)),
            now: 1_700_000_000_000_000_000,
            host_pods: BTreeMap::new(),
            host_stopped: BTreeSet::new(),
            stopped_pods: BTreeSet::new(),
            host_ctrs: BTreeMap::new(),
            store: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            answered: BTreeSet::new(),
            pending: BTreeMap::new(),
            known_pods: Vec::new(),
            known_ctrs: Vec::new(),
            gone: BTreeSet::new(),
            last_pods: BTreeMap::new(),
            last_ctrs: BTreeMap::new(),
            next_pid: 100,
            stats: SimStats::default(),
        }
    }

    /// The runtime under test.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    fn tick(&mut self) {
        self.now = self.now.saturating_add(1_000_000);
    }

    fn learn_pod(&mut self, id: &str) {
        if !self.known_pods.iter().any(|k| k == id) {
            self.known_pods.push(id.to_owned());
        }
    }

    fn learn_ctr(&mut self, id: &str) {
        if !self.known_ctrs.iter().any(|k| k == id) {
            self.known_ctrs.push(id.to_owned());
        }
    }

    fn call(&mut self, req: Request) -> Result<Handled, String> {
        let method = req.method();
        let key = match &req {
            Request::StopPodSandbox(r) => r.pod_sandbox_id.clone(),
            Request::RemovePodSandbox(r) => r.pod_sandbox_id.clone(),
            Request::StartContainer(r) => r.container_id.clone(),
            Request::StopContainer(r) => r.container_id.clone(),
            Request::RemoveContainer(r) => r.container_id.clone(),
            Request::UpdateContainerResources(r) => r.container_id.clone(),
            _ => String::new(),
        };
        self.stats.calls = self.stats.calls.saturating_add(1);
        let handled = self.rt.handle(req, self.now);
        match &handled {
            Handled::Pending(call) => {
                if self.pending.insert(*call, (method, key.clone())).is_some() {
                    return Err(format!("call id {} handed out twice", call.0));
                }
            }
            Handled::Done(result) => self.on_reply(method, &key, result)?,
        }
        self.drain()?;
        Ok(handled)
    }

    /// The stored record of container `id`.
    fn stored_ctr(&self, id: &str) -> Option<&super::ContainerRecord> {
        match self
            .store
            .get(&RecordKey::Container(id.to_owned()))
            .and_then(|r| r.kind.as_ref())
        {
            Some(super::RecordKind::Container(c)) => Some(c),
            _ => None,
        }
    }

    fn on_reply(
        &mut self,
        method: Method,
        key: &str,
        result: &Result<Response, Status>,
    ) -> Result<(), String> {
        self.stats.replies = self.stats.replies.saturating_add(1);
        match result {
            Ok(resp) => {
                if kind_of(resp) != method {
                    return Err(format!("{method:?} answered with {:?}", kind_of(resp)));
                }
                // Nothing is answered before its record is durable.
                let durable = match resp {
                    Response::RunPodSandbox(r) => {
                        if !is_valid_id(&r.pod_sandbox_id) {
                            return Err(format!("bad pod ID {:?}", r.pod_sandbox_id));
                        }
                        let id = r.pod_sandbox_id.clone();
                        self.learn_pod(&id);
                        self.store.contains_key(&RecordKey::Pod(id))
                    }
                    Response::CreateContainer(r) => {
                        if !is_valid_id(&r.container_id) {
                            return Err(format!("bad container ID {:?}", r.container_id));
                        }
                        let id = r.container_id.clone();
                        self.learn_ctr(&id);
                        self.store.contains_key(&RecordKey::Container(id))
                    }
                    Response::StartContainer(_) => match self.rt.resolve_ctr(key) {
                        Ok(id) => self.stored_ctr(&id).is_some_and(|c| c.state != CREATED),
                        // Another container took the prefix since.
                        Err(_) => true,
                    },
                    // (A container removed meanwhile is stopped whatever
                    // its record said.)
                    Response::StopContainer(_) => match self.rt.resolve_ctr(key) {
                        Ok(id) => self.stored_ctr(&id).is_none_or(|c| c.state != RUNNING),
                        Err(_) => true,
                    },
                    // The recorded limits are the ones ContainerStatus shows.
                    Response::UpdateContainerResources(_) => match self.rt.resolve_ctr(key) {
                        Ok(id) => {
                            let shown = self
                                .rt
                                .container_status(&cri::ContainerStatusRequest {
                                    container_id: id.clone(),
                                    verbose: false,
                                })
                                .ok()
                                .and_then(|r| r.status?.resources?.linux);
                            let stored = self
                                .stored_ctr(&id)
                                .and_then(|c| c.config.as_ref()?.linux.as_ref()?.resources.clone());
                            shown == stored
                        }
                        Err(_) => true,
                    },
                    Response::RemoveContainer(_) if key.len() == 64 => !self
                        .store
                        .contains_key(&RecordKey::Container(key.to_owned())),
                    Response::StopPodSandbox(_) => {
                        if let Ok(id) = self.rt.resolve_pod(key) {
                            self.stopped_pods.insert(id);
                        }
                        true
                    }
                    Response::RemovePodSandbox(_) if key.len() == 64 => {
                        !self.store.contains_key(&RecordKey::Pod(key.to_owned()))
                    }
                    _ => true,
                };
                if !durable {
                    return Err(format!(
                        "{method:?} of {key:?} answered before its record was durable"
                    ));
                }
            }
            Err(st) => {
                self.stats.errors = self.stats.errors.saturating_add(1);
                if st.code == Code::Ok || st.message.is_empty() {
                    return Err(format!(
                        "{method:?} failed without a code or message: {st:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Takes every output of the runtime and checks the invariants.
    fn drain(&mut self) -> Result<(), String> {
        while let Some((id, action)) = self.rt.poll_action() {
            self.stats.actions = self.stats.actions.saturating_add(1);
            if self.answered.contains(&id) || self.outstanding.contains_key(&id) {
                return Err(format!("action id {} issued twice", id.0));
            }
            self.check_new_action(&action)?;
            match &action {
                Action::CreateSandbox { pod_id, .. } => self.learn_pod(&pod_id.clone()),
                Action::CreateContainer { container_id, .. } => {
                    self.learn_ctr(&container_id.clone())
                }
                _ => {}
            }
            self.outstanding.insert(id, action);
        }
        while let Some((call, result)) = self.rt.poll_reply() {
            let Some((method, key)) = self.pending.remove(&call) else {
                return Err(format!("reply for call {} that is not pending", call.0));
            };
            self.on_reply(method, &key, &result)?;
        }
        while let Some(ev) = self.rt.poll_event() {
            self.stats.events = self.stats.events.saturating_add(1);
            if !self.known_pods.contains(&ev.container_id)
                && !self.known_ctrs.contains(&ev.container_id)
            {
                return Err(format!("event for unknown ID {}", ev.container_id));
            }
        }
        self.check()
    }

    /// The host is never asked for conflicting work.
    fn check_new_action(&self, action: &Action) -> Result<(), String> {
        let ctr_pod = |id: &str| {
            self.rt
                .list_containers(&cri::ListContainersRequest::default())
                .containers
                .into_iter()
                .find(|c| c.id == id)
                .map(|c| c.pod_sandbox_id)
        };
        let object = |a: &Action| -> Option<(String, Option<String>)> {
            match a {
                Action::CreateSandbox { pod_id, .. }
                | Action::StopSandbox { pod_id }
                | Action::RemoveSandbox { pod_id } => Some((pod_id.clone(), None)),
                Action::CreateContainer {
                    container_id,
                    pod_id,
                    ..
                }
                | Action::StartContainer {
                    container_id,
                    pod_id,
                    ..
                }
                | Action::StopContainer {
                    container_id,
                    pod_id,
                    ..
                }
                | Action::RemoveContainer {
                    container_id,
                    pod_id,
                }
                | Action::UpdateContainerResources {
                    container_id,
                    pod_id,
                    ..
                } => Some((container_id.clone(), Some(pod_id.clone()))),
                Action::WriteRecord(_) | Action::DeleteRecord(_) => None,
            }
        };
        let Some((id, pod)) = object(action) else {
            return Ok(());
        };
        let is_stop = matches!(action, Action::StopContainer { .. });
        for other in self.outstanding.values() {
            let Some((oid, opod)) = object(other) else {
                continue;
            };
            // One action per object at a time, but for repeated stops.
            if oid == id && !(is_stop && matches!(other, Action::StopContainer { .. })) {
                return Err(format!("{action:?} issued while {other:?} is outstanding"));
            }
            match action {
                // A sandbox is stopped only once no container in it is
                // being created or started, removed once none is left.
                Action::StopSandbox { .. } if opod.as_deref() == Some(id.as_str()) => {
                    if matches!(
                        other,
                        Action::CreateContainer { .. } | Action::StartContainer { .. }
                    ) {
                        return Err(format!("{action:?} issued while {other:?} is outstanding"));
                    }
                }
                Action::RemoveSandbox { .. } if opod.as_deref() == Some(id.as_str()) => {
                    return Err(format!("{action:?} issued while {other:?} is outstanding"));
                }
                _ => {}
            }
        }
        if let (Action::CreateContainer { .. } | Action::StartContainer { .. }, Some(pod)) =
            (action, &pod)
        {
            if self.host_stopped.contains(pod) {
                return Err(format!("{action:?} issued in a stopped sandbox"));
            }
        }
        if let Action::StartContainer {
            container_id,
            pod_id,
            ..
        } = action
        {
            if ctr_pod(container_id).as_deref() != Some(pod_id.as_str()) {
                return Err(format!("{action:?} names the wrong sandbox"));
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        self.rt.check_invariants()?;
        let (pods, ctrs) = lists(&self.rt);
        self.stats.max_pods = self.stats.max_pods.max(pods.items.len());
        self.stats.max_containers = self.stats.max_containers.max(ctrs.containers.len());
        let mut pod_meta = HashMap::new();
        let mut names = BTreeSet::new();
        let mut now_pods = BTreeMap::new();
        for p in &pods.items {
            if !is_valid_id(&p.id) {
                return Err(format!("listed pod with bad ID {:?}", p.id));
            }
            let meta = p.metadata.clone().unwrap_or_default();
            if !names.insert(pod_name(&meta)) {
                return Err(format!("pod name {} listed twice", pod_name(&meta)));
            }
            pod_meta.insert(p.id.clone(), meta);
            if now_pods.insert(p.id.clone(), p.state).is_some() {
                return Err(format!("pod {} listed twice", p.id));
            }
        }
        let mut names = BTreeSet::new();
        let mut now_ctrs = BTreeMap::new();
        for c in &ctrs.containers {
            let Some(pm) = pod_meta.get(&c.pod_sandbox_id) else {
                return Err(format!(
                    "container {} listed in missing pod {}",
                    c.id, c.pod_sandbox_id
                ));
            };
            if c.state == RUNNING && self.stopped_pods.contains(&c.pod_sandbox_id) {
                return Err(format!(
                    "container {} runs in stopped sandbox {}",
                    c.id, c.pod_sandbox_id
                ));
            }
            let name = container_name(&c.metadata.clone().unwrap_or_default(), pm);
            if !names.insert(name.clone()) {
                return Err(format!("container name {name} listed twice"));
            }
            if now_ctrs.insert(c.id.clone(), c.state).is_some() || pod_meta.contains_key(&c.id) {
                return Err(format!("container {} listed twice", c.id));
            }
        }
        for (id, st) in &now_pods {
            if self.gone.contains(id) {
                return Err(format!("removed pod {id} is back"));
            }
            if let Some(old) = self.last_pods.get(id) {
                if !legal_pod(*old, *st) {
                    return Err(format!("pod {id} went from {old} to {st}"));
                }
            }
        }
        for (id, st) in &now_ctrs {
            if self.gone.contains(id) {
                return Err(format!("removed container {id} is back"));
            }
            if let Some(old) = self.last_ctrs.get(id) {
                if !legal_ctr(*old, *st) {
                    return Err(format!("container {id} went from {old} to {st}"));
                }
            }
        }
        for id in self.last_pods.keys().chain(self.last_ctrs.keys()) {
            if !now_pods.contains_key(id) && !now_ctrs.contains_key(id) {
                self.gone.insert(id.clone());
            }
        }
        self.last_pods = now_pods;
        self.last_ctrs = now_ctrs;
        Ok(())
    }

    /// What the host does with an action.
    fn host_outcome(&mut self, action: &Action, fail: bool) -> Result<Outcome, String> {
        if fail {
            self.stats.failures_injected = self.stats.failures_injected.saturating_add(1);
            return Ok(Outcome::Failed(Status::unavailable(
                "injected host failure",
            )));
        }
        if let Action::CreateContainer { pod_id, .. } | Action::StartContainer { pod_id, .. } =
            action
        {
            if !self.host_pods.get(pod_id).copied().unwrap_or(false) {
                return Ok(Outcome::Failed(Status::failed_precondition(
                    "the sandbox is dead",
                )));
            }
        }
        Ok(match action {
            Action::CreateSandbox { pod_id, .. } => {
                self.host_pods.insert(pod_id.clone(), true);
                self.next_pid = self.next_pid.saturating_add(1);
                Outcome::SandboxCreated(SandboxCreated {
                    pid: self.next_pid,
                    netns_path: format!("/run/netns/{pod_id}"),
                    ip: format!("10.88.0.{}", self.next_pid % 250),
                    additional_ips: vec![],
                })
            }
            Action::StopSandbox { pod_id } => {
                if let Some(alive) = self.host_pods.get_mut(pod_id) {
                    *alive = false;
                }
                self.host_stopped.insert(pod_id.clone());
                Outcome::Done
            }
            Action::RemoveSandbox { pod_id } => {
                if self.host_ctrs.values().any(|c| c.pod_id == *pod_id) {
                    return Err(format!("sandbox {pod_id} removed while it has containers"));
                }
                if self.host_pods.get(pod_id) == Some(&true) {
                    return Err(format!("sandbox {pod_id} removed while running"));
                }
                self.host_pods.remove(pod_id);
                Outcome::Done
            }
            Action::CreateContainer {
                container_id,
                pod_id,
                ..
            } => {
                self.host_ctrs.insert(
                    container_id.clone(),
                    HostCtr {
                        pod_id: pod_id.clone(),
                        running: false,
                        pid: 0,
                        started_at: 0,
                        exit: None,
                    },
                );
                Outcome::ContainerCreated {
                    image_ref: "sha256:1111".into(),
                    image_id: "sha256:1111".into(),
                    image_volumes: Vec::new(),
                    user: Some(cri::ContainerUser {
                        linux: Some(cri::LinuxContainerUser {
                            uid: 1000,
                            gid: 1000,
                            supplemental_groups: vec![1000, 50000],
                        }),
                    }),
                    image_stop_signal: cri::Signal::Sigquit as i32,
                }
            }
            Action::StartContainer { container_id, .. } => {
                self.next_pid = self.next_pid.saturating_add(1);
                let (pid, now) = (self.next_pid, self.now);
                let Some(c) = self.host_ctrs.get_mut(container_id) else {
                    return Err(format!("start of container {container_id} not on the host"));
                };
                if c.running || c.exit.is_some() {
                    return Err(format!("container {container_id} started twice"));
                }
                c.running = true;
                c.pid = pid;
                c.started_at = now;
                Outcome::ContainerStarted {
                    pid,
                    started_at: now,
                }
            }
            Action::StopContainer { container_id, .. } => {
                let now = self.now;
                let Some(c) = self.host_ctrs.get_mut(container_id) else {
                    return Err(format!("stop of container {container_id} not on the host"));
                };
                if c.running {
                    c.running = false;
                    c.exit = Some(Exit {
                        exit_code: 137,
                        finished_at: now,
                        reason: String::new(),
                        message: String::new(),
                    });
                }
                match &c.exit {
                    Some(e) => Outcome::ContainerExited(e.clone()),
                    None => return Err(format!("stop of never started container {container_id}")),
                }
            }
            Action::RemoveContainer { container_id, .. } => {
                if let Some(c) = self.host_ctrs.get(container_id) {
                    if c.running {
                        return Err(format!("container {container_id} removed while running"));
                    }
                }
                self.host_ctrs.remove(container_id);
                Outcome::Done
            }
            Action::UpdateContainerResources { container_id, .. } => {
                if !self.host_ctrs.contains_key(container_id) {
                    return Err(format!(
                        "update of container {container_id} not on the host"
                    ));
                }
                Outcome::Done
            }
            Action::WriteRecord(r) => {
                let Some(key) = r.key() else {
                    return Err("record without a kind".into());
                };
                self.store.insert(key, (**r).clone());
                Outcome::Done
            }
            Action::DeleteRecord(key) => {
                self.store.remove(key);
                Outcome::Done
            }
        })
    }

    fn answer(&mut self, id: ActionId, fail: bool) -> Result<(), String> {
        let Some(action) = self.outstanding.remove(&id) else {
            return Ok(());
        };
        let outcome = self.host_outcome(&action, fail)?;
        self.answered.insert(id);
        self.rt
            .handle_outcome(id, outcome.clone(), self.now)
            .map_err(|e| format!("outcome of {action:?} refused: {e}"))?;
        // Answering twice is refused.
        match self.rt.handle_outcome(id, outcome, self.now) {
            Err(InputError::UnknownAction(_)) => {}
            other => return Err(format!("second answer to action {} gave {other:?}", id.0)),
        }
        self.drain()
    }

    /// Answers outstanding actions as the host would until none are left.
    pub fn settle(&mut self) -> Result<(), String> {
        for _ in 0..100_000 {
            self.drain()?;
            let Some(id) = self.outstanding.keys().next().copied() else {
                return Ok(());
            };
            self.tick();
            self.answer(id, false)?;
        }
        Err("the runtime keeps asking for actions".into())
    }

    fn observations(&self) -> Vec<Observation> {
        let mut obs: Vec<Observation> = self
            .host_pods
            .iter()
            .filter(|(_, alive)| **alive)
            .map(|(id, _)| Observation::SandboxAlive { id: id.clone() })
            .collect();
        for (id, c) in &self.host_ctrs {
            let observed = if c.running {
                Observed::Running {
                    pid: c.pid,
                    started_at: c.started_at,
                }
            } else if let Some(e) = &c.exit {
                Observed::Exited(e.clone())
            } else {
                continue;
            };
            obs.push(Observation::Container {
                id: id.clone(),
                observed,
            });
        }
        obs
    }

    /// With nothing in flight: the store must equal the runtime's records,
    /// and a runtime restored from it must list the same. Returns it.
    fn restored(&mut self) -> Result<Runtime, String> {
        self.rt.retry_records();
        self.settle()?;
        if !self.pending.is_empty() {
            return Err(format!(
                "{} calls unanswered with no action outstanding",
                self.pending.len()
            ));
        }
        let mine: BTreeMap<RecordKey, Record> = self
            .rt
            .records()
            .into_iter()
            .filter_map(|r| r.key().map(|k| (k, r)))
            .collect();
        if mine != self.store {
            return Err(format!(
                "stored records differ from the runtime's: {} stored, {} in memory",
                self.store.len(),
                mine.len()
            ));
        }
        self.stats.restarts = self.stats.restarts.saturating_add(1);
        let (mut rt, warnings) = Runtime::restore(
            SeqIds::new(self.stats.restarts.wrapping_mul(0x5eed)),
            self.store.values().cloned(),
            &self.observations(),
            self.now,
        );
        if !warnings.is_empty() {
            return Err(format!("restore warned: {warnings:?}"));
        }
        if let Some(a) = rt.poll_action() {
            return Err(format!("restore of a consistent state asks for {a:?}"));
        }
        if lists(&rt) != lists(&self.rt) {
            return Err("the restored runtime lists differently".into());
        }
        rt.check_invariants()?;
        Ok(rt)
    }

    /// The call a step makes, if it is one, on a known (or made-up) key.
    fn request_for(&self, step: Step) -> Option<Request> {
        let pod = |pick| key_for(&self.known_pods, pick);
        let ctr = |pick| key_for(&self.known_ctrs, pick);
        Some(match step {
            Step::RunPod { meta, attempt } => Request::RunPodSandbox(cri::RunPodSandboxRequest {
                config: Some(pod_config(meta, attempt)),
                runtime_handler: String::new(),
            }),
            Step::StopPod { pick } => Request::StopPodSandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod(pick),
            }),
            Step::RemovePod { pick } => Request::RemovePodSandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod(pick),
            }),
            Step::CreateContainer { pod: p, name } => {
                Request::CreateContainer(cri::CreateContainerRequest {
                    pod_sandbox_id: pod(p),
                    config: Some(container_config(name)),
                    sandbox_config: None,
                })
            }
            Step::StartContainer { pick } => Request::StartContainer(cri::StartContainerRequest {
                container_id: ctr(pick),
            }),
            Step::StopContainer { pick, timeout } => {
                Request::StopContainer(cri::StopContainerRequest {
                    container_id: ctr(pick),
                    timeout: i64::from(timeout % 40) - 5,
                })
            }
            Step::RemoveContainer { pick } => {
                Request::RemoveContainer(cri::RemoveContainerRequest {
                    container_id: ctr(pick),
                })
            }
            Step::UpdateContainer { pick, mib } => {
                Request::UpdateContainerResources(cri::UpdateContainerResourcesRequest {
                    container_id: ctr(pick),
                    linux: Some(cri::LinuxContainerResources {
                        memory_limit_in_bytes: (i64::from(mib) + 1) << 20,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }
            Step::Answer { .. }
            | Step::ContainerDies { .. }
            | Step::SandboxDies { .. }
            | Step::Query { .. }
            | Step::Restart
            | Step::Tick { .. } => return None,
        })
    }

    /// Runs one step, then checks the invariants.
    pub fn step(&mut self, step: Step) -> Result<(), String> {
        self.tick();
        if let Some(req) = self.request_for(step) {
            self.call(req)?;
            return Ok(());
        }
        match step {
            // Calls: made above.
            Step::RunPod { .. }
            | Step::StopPod { .. }
            | Step::RemovePod { .. }
            | Step::CreateContainer { .. }
            | Step::StartContainer { .. }
            | Step::StopContainer { .. }
            | Step::RemoveContainer { .. }
            | Step::UpdateContainer { .. } => {}
            Step::Answer { pick, fail } => {
                let ids: Vec<ActionId> = self.outstanding.keys().copied().collect();
                if ids.is_empty() {
                    return Ok(());
                }
                if let Some(id) = ids.get(usize::from(pick) % ids.len()) {
                    self.answer(*id, fail)?;
                }
            }
            Step::ContainerDies { pick, code } => {
                let running = ids_where(&self.host_ctrs, |c| c.running);
                let Some(id) = pick_owned(&running, pick) else {
                    // A notice about nobody is refused and changes nothing.
                    let r = self.rt.handle_notice(
                        Notice::ContainerExited {
                            container_id: "f".repeat(64),
                            exit: Exit::default(),
                        },
                        self.now,
                    );
                    if !matches!(r, Err(InputError::UnknownObject(_))) {
                        return Err(format!("notice about nobody gave {r:?}"));
                    }
                    return self.drain();
                };
                let exit = Exit {
                    exit_code: i32::from(code),
                    finished_at: self.now,
                    reason: if code == 137 {
                        "OOMKilled".into()
                    } else {
                        String::new()
                    },
                    message: String::new(),
                };
                if let Some(c) = self.host_ctrs.get_mut(&id) {
                    c.running = false;
                    c.exit = Some(exit.clone());
                }
                self.rt
                    .handle_notice(
                        Notice::ContainerExited {
                            container_id: id.clone(),
                            exit,
                        },
                        self.now,
                    )
                    .map_err(|e| format!("exit of running container {id} refused: {e}"))?;
                self.drain()?;
            }
            Step::SandboxDies { pick } => {
                let alive = ids_where(&self.host_pods, |a| *a);
                let Some(id) = pick_owned(&alive, pick) else {
                    return Ok(());
                };
                self.host_pods.insert(id.clone(), false);
                let r = self
                    .rt
                    .handle_notice(Notice::SandboxExited { pod_id: id.clone() }, self.now);
                // Refused only while its creation is unanswered.
                if let Err(e) = r {
                    if !matches!(e, InputError::Ignored(_)) {
                        return Err(format!("death of sandbox {id} refused: {e}"));
                    }
                    // The host answers the creation as failed later.
                }
                self.drain()?;
            }
            Step::Query { pick, len } => self.query(pick, len)?,
            Step::Restart => {
                if self.outstanding.is_empty() && self.pending.is_empty() {
                    self.rt = self.restored()?;
                    self.answered.clear();
                    self.drain()?;
                }
            }
            Step::Tick { secs } => {
                self.now = self
                    .now
                    .saturating_add(i64::from(secs).saturating_mul(1_000_000_000));
            }
        }
        Ok(())
    }

    fn query(&mut self, pick: u8, len: u8) -> Result<(), String> {
        let (pods, ctrs) = lists(&self.rt);
        let pod_ids: Vec<String> = pods.items.iter().map(|p| p.id.clone()).collect();
        let ctr_ids: Vec<String> = ctrs.containers.iter().map(|c| c.id.clone()).collect();
        let source = if pick % 2 == 0 {
            &self.known_pods
        } else {
            &self.known_ctrs
        };
        let full = pick_owned(source, pick / 2).unwrap_or_default();
        let key = full
            .get(..usize::from(len % 66).min(full.len()))
            .unwrap_or("")
            .to_owned();
        // Status by key agrees with the number of visible IDs it prefixes.
        let check = |ids: &[String], got: Result<String, Status>| -> Result<(), String> {
            let matching: Vec<&String> = ids.iter().filter(|i| i.starts_with(&key)).collect();
            match (got, key.is_empty(), matching.as_slice()) {
                (Err(st), true, _) if st.code == Code::InvalidArgument => Ok(()),
                (Ok(id), false, [only]) if id == **only => Ok(()),
                (Err(st), false, []) if st.code == Code::NotFound => Ok(()),
                (Err(st), false, [_, _, ..]) if st.code == Code::InvalidArgument => Ok(()),
                (got, _, m) => Err(format!(
                    "status of {key:?} gave {got:?} with {} matches",
                    m.len()
                )),
            }
        };
        let pod = self
            .rt
            .pod_sandbox_status(
                &cri::PodSandboxStatusRequest {
                    pod_sandbox_id: key.clone(),
                    verbose: pick % 3 == 0,
                },
                self.now,
            )
            .map(|r| r.status.map(|s| s.id).unwrap_or_default());
        check(&pod_ids, pod)?;
        let ctr = self
            .rt
            .container_status(&cri::ContainerStatusRequest {
                container_id: key.clone(),
                verbose: pick % 3 == 1,
            })
            .map(|r| r.status.map(|s| s.id).unwrap_or_default());
        check(&ctr_ids, ctr)?;
        // Filtered listings are sub-lists agreeing with the filter.
        let app = format!("a{}", pick % 2);
        let filtered = self.rt.list_pod_sandbox(&cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: key.clone(),
                state: None,
                label_selector: [("app".to_owned(), app.clone())].into(),
            }),
        });
        let expect: Vec<&cri::PodSandbox> = pods
            .items
            .iter()
            .filter(|p| p.labels.get("app") == Some(&app))
            .filter(|p| {
                let m: Vec<&String> = pod_ids.iter().filter(|i| i.starts_with(&key)).collect();
                key.is_empty() || m == [&p.id] || p.id == key
            })
            .collect();
        if filtered.items.iter().collect::<Vec<_>>() != expect {
            return Err(format!(
                "ListPodSandbox filtered by {key:?} and app={app} is wrong"
            ));
        }
        let state = i32::from(len % 4);
        let filtered = self.rt.list_containers(&cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                id: String::new(),
                state: Some(cri::ContainerStateValue { state }),
                pod_sandbox_id: String::new(),
                label_selector: HashMap::new(),
            }),
        });
        let expect: Vec<&cri::Container> = ctrs
            .containers
            .iter()
            .filter(|c| c.state == state)
            .collect();
        if filtered.containers.iter().collect::<Vec<_>>() != expect {
            return Err(format!("ListContainers filtered by state {state} is wrong"));
        }
        let stats = self
            .rt
            .list_container_stats(&cri::ListContainerStatsRequest::default());
        if stats.stats.len() != ctrs.containers.len() {
            return Err("ListContainerStats does not cover every container".into());
        }
        Ok(())
    }

    /// Settles everything, then checks records, restore and idempotency.
    pub fn finish(&mut self) -> Result<(), String> {
        let restored = self.restored()?;
        drop(restored);
        let (pods, ctrs) = lists(&self.rt);
        // Stopping twice: the second call is answered at once, with no
        // host work and no change.
        let ctr_ids: Vec<String> = ctrs.containers.into_iter().map(|c| c.id).collect();
        let pod_ids: Vec<String> = pods.items.into_iter().map(|p| p.id).collect();
        let requests: [(&[String], RequestById); 4] = [
            (&ctr_ids, |container_id| {
                Request::StopContainer(cri::StopContainerRequest {
                    container_id,
                    timeout: 0,
                })
            }),
            (&pod_ids, |pod_sandbox_id| {
                Request::StopPodSandbox(cri::StopPodSandboxRequest { pod_sandbox_id })
            }),
            (&ctr_ids, |container_id| {
                Request::RemoveContainer(cri::RemoveContainerRequest { container_id })
            }),
            (&pod_ids, |pod_sandbox_id| {
                Request::RemovePodSandbox(cri::RemovePodSandboxRequest { pod_sandbox_id })
            }),
        ];
        for (ids, request) in requests {
            for id in ids {
                self.idempotent(request(id.clone()))?;
            }
        }
        let (pods, ctrs) = lists(&self.rt);
        if !pods.items.is_empty() || !ctrs.containers.is_empty() || !self.store.is_empty() {
            return Err("objects or records left after removing everything".into());
        }
        // Every name was released.
        for meta in 0..4 {
            for attempt in 0..3 {
                match self.call(Request::RunPodSandbox(cri::RunPodSandboxRequest {
                    config: Some(pod_config(meta, attempt)),
                    runtime_handler: String::new(),
                }))? {
                    Handled::Pending(_) => {}
                    other => return Err(format!("name still reserved: {other:?}")),
                }
            }
        }
        self.settle()?;
        if !self.pending.is_empty() {
            return Err("calls unanswered at the end".into());
        }
        Ok(())
    }

    /// Runs `req` to completion (it must succeed), then again: the second
    /// time it must be answered at once with the same success, no action
    /// and no change to the listings.
    fn idempotent(&mut self, req: Request) -> Result<(), String> {
        let method = req.method();
        self.tick();
        match self.call(req.clone())? {
            Handled::Done(Ok(_)) | Handled::Pending(_) => {}
            Handled::Done(Err(st)) => return Err(format!("{method:?} failed: {st:?}")),
        }
        let errors = self.stats.errors;
        self.settle()?;
        if self.stats.errors != errors || !self.pending.is_empty() {
            return Err(format!(
                "{method:?} failed or stayed pending after settling"
            ));
        }
        let before = lists(&self.rt);
        let actions = self.stats.actions;
        self.tick();
        match self.call(req)? {
            Handled::Done(Ok(_)) => {}
            other => return Err(format!("repeated {method:?} gave {other:?}")),
        }
        if self.stats.actions != actions {
            return Err(format!("repeated {method:?} asked the host for work"));
        }
        if lists(&self.rt) != before {
            return Err(format!("repeated {method:?} changed the state"));
        }
        Ok(())
    }
}

/// Makes a call on one object, given its ID.
type RequestById = fn(String) -> Request;

/// The IDs of the host's objects for which `keep` holds.
fn ids_where<T>(objects: &BTreeMap<String, T>, keep: impl Fn(&T) -> bool) -> Vec<String> {
    objects
        .iter()
        .filter(|(_, o)| keep(o))
        .map(|(id, _)| id.clone())
        .collect()
}

fn pick_owned(items: &[String], n: u8) -> Option<String> {
    pick(items, n).cloned()
}
