//! The CRI state machine (`crisp_core::cri::Runtime`) on the event loop
//! thread, and the plumbing around it: calls waiting for the host, actions
//! handed to the worker pool, outcomes and notices fed back, replies for
//! the connections, events for GetContainerEvents subscribers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crisp_core::cri::{
    Action, ActionId, CallId, Handled, Notice, Observation, Observed, Outcome, RecordKind, Request,
    Runtime,
};
use crisp_core::grpc::Status;
use crisp_proto::cri;
use prost::Message;

use crate::metrics;
use crate::pods::{self, container, Host};
use crate::workers::{caught, Done, Reply, Workers};

pub struct CriHost {
    rt: Runtime,
    pub host: Arc<Host>,
    /// Calls the state machine will answer later: connection, stream.
    waiting: HashMap<CallId, (usize, u32)>,
    /// Replies ready for their connections.
    pub replies: Vec<(usize, u32, Reply)>,
    /// GetContainerEvents calls: connection, stream.
    pub subscribers: Vec<(usize, u32)>,
    /// Encoded events not yet sent to the subscribers.
    pub events: Vec<Vec<u8>>,
    /// Actions the pool had no room for yet.
    backlog: VecDeque<(ActionId, Action)>,
    /// StartContainer actions in flight: whose exit to watch once started.
    starting: HashMap<ActionId, String>,
    /// Containers whose exits the event loop is to watch (see
    /// [`crate::exits`]): started, or found running at restore.
    pub to_watch: Vec<String>,
    /// RunPodSandbox actions in flight: whose holder to watch once made.
    creating_pods: HashMap<ActionId, String>,
    /// Pods whose holders the event loop is to watch (see
    /// [`crate::exits`]): made, or found alive at restore.
    pub pods_to_watch: Vec<String>,
    /// StopContainer actions in flight, by container.
    stopping: HashMap<ActionId, String>,
    /// Exits a container's watcher saw while a stop of it was in flight,
    /// applied after the stop's outcome (see [`CriHost::notice`]).
    held_exits: HashMap<String, Notice>,
    /// Image IDs containers use (RemoveImage refuses those).
    in_use: Arc<Mutex<HashSet<String>>>,
}

impl CriHost {
    /// Rebuild the state from the records and what the host shows.
    pub fn restore(host: Arc<Host>, in_use: Arc<Mutex<HashSet<String>>>) -> Self {
        let (records, warnings) = host.load_records();
        for w in warnings {
            tracing::warn!("{w}");
        }
        let observations = host.observe(&records);
        let mut to_watch = Vec::new();
        let mut pods_to_watch = Vec::new();
        for o in &observations {
            match o {
                Observation::Container {
                    id,
                    observed: Observed::Running { .. } | Observed::Unreachable,
                } => to_watch.push(id.clone()),
                Observation::SandboxAlive { id } => pods_to_watch.push(id.clone()),
                Observation::Container { .. } => {}
            }
        }
        let n = records.len();
        let (mut rt, warnings) =
            Runtime::restore(pods::entropy, records, &observations, pods::now_ns());
        let support = pods::host_support();
        tracing::debug!(
            apparmor = support.apparmor,
            selinux = support.selinux,
            "host support"
        );
        rt.set_host_support(support);
        for w in warnings {
            tracing::warn!("restore: {w}");
        }
        // What the host holds that no restored record names: left by a
        // crash between making it and recording it.
        let mut known = pods::reclaim::Known::default();
        for r in rt.records() {
            match r.kind {
                Some(RecordKind::Pod(p)) => known.pods.insert(p.id),
                Some(RecordKind::Container(c)) => known.containers.insert(c.id),
                None => false,
            };
        }
        let reclaimed = pods::reclaim::reclaim(&host, &known);
        if reclaimed != pods::reclaim::Reclaimed::default() {
            tracing::warn!(
                pods = reclaimed.pods,
                containers = reclaimed.containers,
                processes = reclaimed.processes,
                cgroups = reclaimed.cgroups,
                files = reclaimed.files,
                "reclaimed what crispd had made without a record"
            );
        }
        if n > 0 {
            tracing::info!(
                records = n,
                running = to_watch.len(),
                "restored pods and containers"
            );
        }
        let mut me = Self {
            rt,
            host,
            waiting: HashMap::new(),
            replies: Vec::new(),
            subscribers: Vec::new(),
            events: Vec::new(),
            backlog: VecDeque::new(),
            starting: HashMap::new(),
            to_watch,
            creating_pods: HashMap::new(),
            pods_to_watch,
            stopping: HashMap::new(),
            held_exits: HashMap::new(),
            in_use,
        };
        me.update_in_use();
        me
    }

    /// A CRI request from `conn`'s call `call`: answered now (`Some`) or
    /// later through [`CriHost::replies`].
    pub fn handle(&mut self, conn: usize, call: u32, req: Request) -> Option<Reply> {
        match self.rt.handle(req, pods::now_ns()) {
            Handled::Done(r) => Some(r.map(|mut r| {
                self.name_images(&mut r);
                r.encode_to_vec()
            })),
            Handled::Pending(id) => {
                self.waiting.insert(id, (conn, call));
                None
            }
        }
    }

    /// Answer a read-only request now (stats skeletons, statuses).
    pub fn query(&mut self, req: Request) -> Result<crisp_core::cri::Response, Status> {
        match self.rt.handle(req, pods::now_ns()) {
            Handled::Done(r) => r,
            Handled::Pending(_) => Err(Status::internal("a query waited for the host")),
        }
    }

    pub fn outcome(&mut self, id: ActionId, outcome: Outcome) {
        if let Some(ctr) = self.starting.remove(&id) {
            if matches!(outcome, Outcome::ContainerStarted { .. }) {
                self.to_watch.push(ctr);
            }
        }
        if let Some(pod) = self.creating_pods.remove(&id) {
            if matches!(outcome, Outcome::SandboxCreated(_)) {
                self.pods_to_watch.push(pod);
            }
        }
        let stopped = self.stopping.remove(&id);
        if let Err(e) = self.rt.handle_outcome(id, outcome, pods::now_ns()) {
            tracing::warn!(error = %e, "action outcome");
        }
        if let Some(ctr) = stopped {
            if !self.stopping.values().any(|c| *c == ctr) {
                if let Some(held) = self.held_exits.remove(&ctr) {
                    self.notice(held);
                }
            }
        }
    }

    /// Whether some record's last write failed (a full disk): the event
    /// loop then calls [`CriHost::retry_records`] every few seconds.
    pub fn has_failed_records(&self) -> bool {
        self.rt.has_failed_records()
    }

    /// Writes again the records whose last write failed, so that an object
    /// a failed write left in memory (a container whose CreateContainer
    /// failed with a full disk) is durable once the disk has room, with no
    /// call needing it.
    pub fn retry_records(&mut self) {
        self.rt.retry_records();
    }

    /// An exit a watcher ([`crate::exits`]) saw. While a stop of the
    /// container is in flight it waits for the stop's outcome (which
    /// carries the same exit): StopContainer answers once its stop is
    /// done, having ended what the init left behind, and not at the exit,
    /// with the stop still counting as in flight for the calls that
    /// follow. A stop that failed leaves the exit to this notice.
    pub fn notice(&mut self, notice: Notice) {
        if let Notice::ContainerExited { container_id, .. } = &notice {
            if self.stopping.values().any(|c| c == container_id) {
                self.held_exits.insert(container_id.clone(), notice);
                return;
            }
        }
        if let Err(e) = self.rt.handle_notice(notice, pods::now_ns()) {
            tracing::debug!(error = %e, "notice");
        }
    }

    /// Drain the state machine: actions to the workers, replies and events
    /// to their queues. Call after every input.
    ///
    /// Every action gets an outcome: from its job, from [`caught`] when
    /// the job panics, or at once here (a failure the waiting call
    /// answers) when no thread can be started for it. A pool with no room
    /// keeps the action for the next pump: the jobs filling it will
    /// complete, and wake the loop.
    pub fn pump(&mut self, workers: &Workers) {
        let mut changed = false;
        loop {
            while let Some(a) = self.rt.poll_action() {
                changed = true;
                self.backlog.push_back(a);
            }
            let failed = self.dispatch(workers);
            if failed.is_empty() {
                break;
            }
            // Their outcomes may release more actions (and replies).
            for (id, outcome) in failed {
                self.outcome(id, outcome);
            }
        }
        while let Some((id, reply)) = self.rt.poll_reply() {
            if let Some((conn, call)) = self.waiting.remove(&id) {
                let reply = reply.map(|mut r| {
                    self.name_images(&mut r);
                    r.encode_to_vec()
                });
                self.replies.push((conn, call, reply));
            }
        }
        while let Some(mut ev) = self.rt.poll_event() {
            for st in &mut ev.containers_statuses {
                self.name_image(st);
            }
            self.events.push(ev.encode_to_vec());
        }
        if changed {
            self.update_in_use();
        }
    }

    /// Hand the backlog to the workers. Returns the outcomes of actions
    /// that could not be started at all.
    fn dispatch(&mut self, workers: &Workers) -> Vec<(ActionId, Outcome)> {
        let mut failed = Vec::new();
        while let Some((id, action)) = self.backlog.pop_front() {
            if let Action::StartContainer { container_id, .. } = &action {
                self.starting.insert(id, container_id.clone());
            }
            if let Action::CreateSandbox { pod_id, .. } = &action {
                self.creating_pods.insert(id, pod_id.clone());
            }
            let host = Arc::clone(&self.host);
            if let Action::StopContainer { container_id, .. } = &action {
                self.stopping.insert(id, container_id.clone());
                // Waits out the grace period: not on the pool.
                let what = format!("StopContainer {container_id}");
                let job_what = what.clone();
                let spawned = workers.spawn("crispd-stop", move || {
                    Some(Done::Action {
                        id,
                        outcome: run_caught(&host, action, &job_what),
                    })
                });
                if let Err(e) = spawned {
                    failed.push((
                        id,
                        Outcome::Failed(Status::resource_exhausted(format!(
                            "{what}: crispd cannot start a thread to stop the container: {e}"
                        ))),
                    ));
                }
                continue;
            }
            let job_action = action.clone();
            let what = action_name(&action);
            let submitted = workers.submit_done(move || Done::Action {
                id,
                outcome: run_caught(&host, job_action, what),
            });
            if submitted.is_err() {
                self.backlog.push_front((id, action));
                break;
            }
        }
        failed
    }

    /// Container statuses name their image by a tag and a repo digest, as
    /// containerd's do (`images::fill_container_status`); the state
    /// machine knows only the image's ID.
    fn name_images(&self, resp: &mut crisp_core::cri::Response) {
        if let crisp_core::cri::Response::ContainerStatus(r) = resp {
            if let Some(st) = r.status.as_mut() {
                self.name_image(st);
            }
        }
    }

    fn name_image(&self, status: &mut cri::ContainerStatus) {
        if let Some(names) = self.host.images.names_of(&status.image_id) {
            crisp_core::cri::images::fill_container_status(status, &names);
        }
    }

    fn update_in_use(&mut self) {
        let set: HashSet<String> = self.rt.images_in_use().into_iter().collect();
        if let Ok(mut u) = self.in_use.lock() {
            *u = set;
        }
    }

    /// The full ID of a container (resolving a prefix) and whether it runs.
    pub fn container(&mut self, id: &str) -> Result<(String, i32), Status> {
        let s = self
            .rt
            .container_status(&cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })?
            .status
            .unwrap_or_default();
        Ok((s.id, s.state))
    }
}

/// Carry out `action`; a panic becomes its failure.
fn run_caught(host: &Host, action: Action, what: &str) -> Outcome {
    caught(what, || host.run(action)).unwrap_or_else(Outcome::Failed)
}

/// The action's name, for messages.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::WriteRecord(_) => "writing a record",
        Action::DeleteRecord(_) => "deleting a record",
        Action::CreateSandbox { .. } => "RunPodSandbox",
        Action::StopSandbox { .. } => "StopPodSandbox",
        Action::RemoveSandbox { .. } => "RemovePodSandbox",
        Action::CreateContainer { .. } => "CreateContainer",
        Action::StartContainer { .. } => "StartContainer",
        Action::StopContainer { .. } => "StopContainer",
        Action::RemoveContainer { .. } => "RemoveContainer",
        Action::UpdateContainerResources { .. } => "UpdateContainerResources",
    }
}

/// Fill the usage numbers of a stats response's skeletons from the host
/// (on a worker); other responses are left as they are.
pub fn fill_stats(host: &Host, resp: &mut crisp_core::cri::Response) {
    use crisp_core::cri::Response;
    match resp {
        Response::ContainerStats(r) => r
            .stats
            .iter_mut()
            .for_each(|s| fill_container_stats(host, s)),
        Response::ListContainerStats(r) => r
            .stats
            .iter_mut()
            .for_each(|s| fill_container_stats(host, s)),
        Response::PodSandboxStats(r) => r.stats.iter_mut().for_each(|s| fill_pod_stats(host, s)),
        Response::ListPodSandboxStats(r) => {
            r.stats.iter_mut().for_each(|s| fill_pod_stats(host, s))
        }
        _ => {}
    }
}

/// Fill the usage numbers of stats skeletons from the host (on a worker):
/// CPU, memory and IO pressure from the container's cgroup, and its
/// writable layer.
pub fn fill_container_stats(host: &Host, s: &mut cri::ContainerStats) {
    let Some(id) = s.attributes.as_ref().map(|a| a.id.clone()) else {
        return;
    };
    let now = pods::now_ns();
    if let Some(meta) = container::read_meta(host, &id) {
        match host.cgroups.stats(&meta.cgroup) {
            Ok(st) => (s.cpu, s.memory, s.io) = metrics::usage(&st, now),
            Err(e) => tracing::debug!(cgroup = meta.cgroup, error = %e, "cgroup stats"),
        }
    }
    let (bytes, inodes) = container::writable_usage(host, &id);
    s.writable_layer = Some(cri::FilesystemUsage {
        timestamp: now,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: host.ctr_state_dir(&id).join("upper").display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value { value: bytes }),
        inodes_used: Some(cri::UInt64Value { value: inodes }),
    });
}

/// The pod's figures: its cgroup's (as a container's), its network
/// namespace's counters, and each container's.
pub fn fill_pod_stats(host: &Host, s: &mut cri::PodSandboxStats) {
    let Some(id) = s.attributes.as_ref().map(|a| a.id.clone()) else {
        return;
    };
    let now = pods::now_ns();
    let linux = s.linux.get_or_insert_with(Default::default);
    if let Some(meta) = pods::sandbox::read_meta(host, &id) {
        match host.cgroups.stats(&meta.pod_cgroup) {
            Ok(st) => {
                (linux.cpu, linux.memory, linux.io) = metrics::usage(&st, now);
                linux.process = st.pids.map(|n| cri::ProcessUsage {
                    timestamp: now,
                    process_count: Some(cri::UInt64Value { value: n }),
                });
            }
            Err(e) => tracing::debug!(cgroup = meta.pod_cgroup, error = %e, "cgroup stats"),
        }
    }
    linux.network = metrics::pod_network(host, &id).map(|n| metrics::network_usage(n, now));
    for c in &mut linux.containers {
        fill_container_stats(host, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crisp_core::cri::{Response, SandboxCreated};
    use crisp_core::grpc::Code;

    /// A crispd host on temporary directories (nothing is started).
    fn cri_host(dir: &std::path::Path) -> CriHost {
        let config = crate::config::Config {
            state_dir: dir.join("state"),
            runtime_dir: dir.join("run"),
            ..Default::default()
        };
        let config = Arc::new(config);
        let images = Arc::new(crisp_image::ImageService::new(&config.image_settings()).unwrap());
        let host = Arc::new(Host::new(config, images).unwrap());
        CriHost::restore(host, Arc::default())
    }

    /// Play the host's part for the actions a pod and a started container
    /// need, straight into the state machine.
    fn settle(rt: &mut Runtime) -> Vec<Response> {
        while let Some((id, action)) = rt.poll_action() {
            let outcome = match action {
                Action::CreateSandbox { .. } => Outcome::SandboxCreated(SandboxCreated {
                    pid: 4242,
                    ..Default::default()
                }),
                Action::CreateContainer { .. } => Outcome::ContainerCreated {
                    image_ref: "sha256:1".into(),
                    image_id: "sha256:1".into(),
                    image_volumes: Vec::new(),
                    user: None,
                    image_stop_signal: 0,
                },
                Action::StartContainer { .. } => Outcome::ContainerStarted {
                    pid: 4243,
                    started_at: 1,
                },
                _ => Outcome::Done,
            };
            rt.handle_outcome(id, outcome, pods::now_ns()).unwrap();
        }
        let mut out = Vec::new();
        while let Some((_, reply)) = rt.poll_reply() {
            out.push(reply.unwrap());
        }
        out
    }

    fn call(rt: &mut Runtime, req: Request) -> Response {
        match rt.handle(req, pods::now_ns()) {
            Handled::Done(r) => r.unwrap(),
            Handled::Pending(_) => settle(rt).pop().unwrap(),
        }
    }

    /// A pod and a started container in `cri`'s state machine: its ID.
    fn running_container(cri: &mut CriHost) -> String {
        let pod = match call(
            &mut cri.rt,
            Request::RunPodSandbox(cri::RunPodSandboxRequest {
                config: Some(cri::PodSandboxConfig {
                    metadata: Some(cri::PodSandboxMetadata {
                        name: "p".into(),
                        uid: "u".into(),
                        namespace: "n".into(),
                        attempt: 0,
                    }),
                    ..Default::default()
                }),
                runtime_handler: String::new(),
            }),
        ) {
            Response::RunPodSandbox(r) => r.pod_sandbox_id,
            other => panic!("{other:?}"),
        };
        let ctr = match call(
            &mut cri.rt,
            Request::CreateContainer(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(cri::ContainerConfig {
                    metadata: Some(cri::ContainerMetadata {
                        name: "c".into(),
                        attempt: 0,
                    }),
                    image: Some(cri::ImageSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                sandbox_config: None,
            }),
        ) {
            Response::CreateContainer(r) => r.container_id,
            other => panic!("{other:?}"),
        };
        call(
            &mut cri.rt,
            Request::StartContainer(cri::StartContainerRequest {
                container_id: ctr.clone(),
            }),
        );
        ctr
    }

    #[test]
    fn a_stop_that_gets_no_thread_still_answers() {
        let dir = std::env::temp_dir().join(format!("crisp-crihost-{}", std::process::id()));
        let mut cri = cri_host(&dir);
        let ctr = running_container(&mut cri);

        // A pool that works, but no thread can be started beside it.
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let one = crate::workers::PoolSize {
            threads: 1,
            queue: 8,
        };
        let workers = Workers::new(one, one, waker)
            .unwrap()
            .with_spawn_stack(usize::MAX / 2);
        let stop = Request::StopContainer(cri::StopContainerRequest {
            container_id: ctr.clone(),
            timeout: 30,
        });
        assert!(cri.handle(1, 9, stop).is_none(), "StopContainer waits");
        cri.pump(&workers);
        let (conn, call_id, reply) = cri.replies.pop().expect("the stop was answered");
        assert_eq!((conn, call_id), (1, 9));
        let st = reply.unwrap_err();
        assert_eq!(st.code, Code::ResourceExhausted);
        assert!(
            st.message.contains(&format!("StopContainer {ctr}"))
                && st.message.contains("cannot start a thread"),
            "{}",
            st.message
        );
        // The state machine took the failure: the container still runs,
        // and a later stop is accepted.
        let (_, state) = cri.container(&ctr).unwrap();
        assert_eq!(state, cri::ContainerState::ContainerRunning as i32);
        drop(workers);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_exit_seen_during_a_stop_waits_for_the_stops_outcome() {
        let dir = std::env::temp_dir().join(format!("crisp-crihost-h-{}", std::process::id()));
        let mut cri = cri_host(&dir);
        let ctr = running_container(&mut cri);
        let stop = Request::StopContainer(cri::StopContainerRequest {
            container_id: ctr.clone(),
            timeout: 30,
        });
        assert!(cri.handle(1, 9, stop).is_none(), "StopContainer waits");
        // Dispatched as `dispatch` does (its thread not started here).
        let (stop_id, action) = cri.rt.poll_action().expect("the stop action");
        assert!(matches!(action, Action::StopContainer { .. }), "{action:?}");
        cri.stopping.insert(stop_id, ctr.clone());
        let exit = crisp_core::cri::Exit {
            exit_code: 137,
            ..Default::default()
        };
        // The watcher sees the exit first: held, nothing answered.
        cri.notice(Notice::ContainerExited {
            container_id: ctr.clone(),
            exit: exit.clone(),
        });
        assert!(settle(&mut cri.rt).is_empty());
        let (_, state) = cri.container(&ctr).unwrap();
        assert_eq!(state, cri::ContainerState::ContainerRunning as i32);
        // The stop's outcome answers the call; the held exit follows,
        // harmlessly.
        cri.outcome(stop_id, Outcome::ContainerExited(exit));
        let replies = settle(&mut cri.rt);
        assert!(
            matches!(replies.as_slice(), [Response::StopContainer(_)]),
            "{replies:?}"
        );
        assert!(cri.held_exits.is_empty() && cri.stopping.is_empty());
        let (_, state) = cri.container(&ctr).unwrap();
        assert_eq!(state, cri::ContainerState::ContainerExited as i32);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn actions_run_caught_and_a_panic_names_the_action() {
        let dir = std::env::temp_dir().join(format!("crisp-crihost-p-{}", std::process::id()));
        let cri = cri_host(&dir);
        let out = run_caught(
            &cri.host,
            Action::StopSandbox { pod_id: "x".into() },
            "StopPodSandbox",
        );
        // A real action that succeeds (nothing to stop) is passed through.
        assert!(matches!(out, Outcome::Done), "{out:?}");
        let st = caught("StopPodSandbox", || -> Outcome {
            panic!("index out of range")
        })
        .unwrap_err();
        assert_eq!(st.code, Code::Internal);
        assert!(
            st.message.contains("StopPodSandbox") && st.message.contains("index out of range"),
            "{}",
            st.message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
