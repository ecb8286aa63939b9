//! The CRI state machine (`crisp_core::cri::Runtime`) on the event loop
//! thread, and the plumbing around it: calls waiting for the host, actions
//! handed to the worker pool, outcomes and notices fed back, replies for
//! the connections, events for GetContainerEvents subscribers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crisp_core::cri::{
    Action, ActionId, CallId, Handled, Notice, Observation, Observed, Outcome, Request, Runtime,
};
use crisp_core::grpc::Status;
use crisp_proto::cri;
use prost::Message;

use crate::pods::{self, container, Host};
use crate::workers::{Done, Reply, Workers};

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
    to_watch: Vec<String>,
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
        for o in &observations {
            if let Observation::Container {
                id,
                observed: Observed::Running { .. } | Observed::Unreachable,
            } = o
            {
                to_watch.push(id.clone());
            }
        }
        let n = records.len();
        let (rt, warnings) =
            Runtime::restore(pods::entropy, records, &observations, pods::now_ns());
        for w in warnings {
            tracing::warn!("restore: {w}");
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
            in_use,
        };
        me.update_in_use();
        me
    }

    /// A CRI request from `conn`'s call `call`: answered now (`Some`) or
    /// later through [`CriHost::replies`].
    pub fn handle(&mut self, conn: usize, call: u32, req: Request) -> Option<Reply> {
        match self.rt.handle(req, pods::now_ns()) {
            Handled::Done(r) => Some(r.map(|r| r.encode_to_vec())),
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
        if let Err(e) = self.rt.handle_outcome(id, outcome, pods::now_ns()) {
            tracing::warn!(error = %e, "action outcome");
        }
    }

    pub fn notice(&mut self, notice: Notice) {
        if let Err(e) = self.rt.handle_notice(notice, pods::now_ns()) {
            tracing::debug!(error = %e, "notice");
        }
    }

    /// Drain the state machine: actions to the workers, replies and events
    /// to their queues. Call after every input.
    pub fn pump(&mut self, workers: &Workers) {
        let mut changed = false;
        while let Some(a) = self.rt.poll_action() {
            changed = true;
            self.backlog.push_back(a);
        }
        while let Some((id, action)) = self.backlog.pop_front() {
            if let Action::StartContainer { container_id, .. } = &action {
                self.starting.insert(id, container_id.clone());
            }
            let host = Arc::clone(&self.host);
            if matches!(action, Action::StopContainer { .. }) {
                // Waits out the grace period: not on the pool.
                workers.spawn("crispd-stop", move || {
                    Some(Done::Action {
                        id,
                        outcome: host.run(action),
                    })
                });
                continue;
            }
            let job_action = action.clone();
            let submitted = workers.submit_done(move || Done::Action {
                id,
                outcome: host.run(job_action),
            });
            if submitted.is_err() {
                self.backlog.push_front((id, action));
                break;
            }
        }
        while let Some((id, reply)) = self.rt.poll_reply() {
            if let Some((conn, call)) = self.waiting.remove(&id) {
                self.replies
                    .push((conn, call, reply.map(|r| r.encode_to_vec())));
            }
        }
        while let Some(ev) = self.rt.poll_event() {
            self.events.push(ev.encode_to_vec());
        }
        for id in self.to_watch.drain(..) {
            let host = Arc::clone(&self.host);
            workers.spawn("crispd-watch", move || {
                let exit = container::watch(&host, &id)?;
                Some(Done::Notice(Notice::ContainerExited {
                    container_id: id,
                    exit,
                }))
            });
        }
        if changed {
            self.update_in_use();
        }
    }

    fn update_in_use(&mut self) {
        let list = self
            .rt
            .list_containers(&cri::ListContainersRequest::default());
        let set: HashSet<String> = list
            .containers
            .into_iter()
            .flat_map(|c| [c.image_ref, c.image_id])
            .filter(|s| !s.is_empty())
            .collect();
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

/// Fill the usage numbers of stats skeletons from the host (on a worker).
pub fn fill_container_stats(host: &Host, s: &mut cri::ContainerStats) {
    let Some(id) = s.attributes.as_ref().map(|a| a.id.clone()) else {
        return;
    };
    let now = pods::now_ns();
    if let Some(meta) = container::read_meta(host, &id) {
        let (cpu, mem) = pods::cgroup_usage(host, &meta.cgroup);
        s.cpu = cpu.map(|v| cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: Some(cri::UInt64Value { value: v }),
            ..Default::default()
        });
        s.memory = mem.map(|v| cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: Some(cri::UInt64Value { value: v }),
            ..Default::default()
        });
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

pub fn fill_pod_stats(host: &Host, s: &mut cri::PodSandboxStats) {
    let Some(id) = s.attributes.as_ref().map(|a| a.id.clone()) else {
        return;
    };
    let now = pods::now_ns();
    let linux = s.linux.get_or_insert_with(Default::default);
    if let Some(meta) = pods::sandbox::read_meta(host, &id) {
        let (cpu, mem) = pods::cgroup_usage(host, &meta.pod_cgroup);
        linux.cpu = cpu.map(|v| cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: Some(cri::UInt64Value { value: v }),
            ..Default::default()
        });
        linux.memory = mem.map(|v| cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: Some(cri::UInt64Value { value: v }),
            ..Default::default()
        });
    }
    for c in &mut linux.containers {
        fill_container_stats(host, c);
    }
}
