//! Starting calls, and advancing the ops they become until they answer.

use std::collections::BTreeSet;

use crisp_proto::cri;

use super::types::{
    answer, refuse, Advance, Begin, Ctr, CtrState, Find, Op, OpKind, PendingAction, Pod, PodState,
    RecordSync, Target,
};
use super::{Runtime, MAX_PASSES, NANOS_PER_SEC};
use crate::cri::record::RecordKey;
use crate::cri::types::{Action, ActionId, CallId, Response};
use crate::cri::validate;
use crate::cri::{container_name, join_log_path, pod_name};
use crate::grpc::Status;

impl Runtime {
    pub(super) fn begin_run_pod(
        &mut self,
        call: CallId,
        req: cri::RunPodSandboxRequest,
        now: i64,
    ) -> Begin {
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

    pub(super) fn begin_stop_pod(&mut self, key: &str, remove: bool, now: i64) -> Begin {
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

    pub(super) fn begin_create_ctr(
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

    pub(super) fn begin_start(&mut self, call: CallId, key: &str) -> Begin {
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

    pub(super) fn begin_stop_ctr(&mut self, key: &str, timeout: i64, now: i64) -> Begin {
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

    pub(super) fn begin_remove_ctr(&mut self, key: &str, now: i64) -> Begin {
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

    pub(super) fn begin_update(
        &mut self,
        call: CallId,
        req: cri::UpdateContainerResourcesRequest,
    ) -> Begin {
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

    pub(super) fn issue(
        &mut self,
        target: Target,
        action: Action,
        waiter: Option<CallId>,
    ) -> ActionId {
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

    pub(super) fn run_ops(&mut self, now: i64) {
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
        match self.sync.get(key).copied() {
            None => return true,
            Some(RecordSync::Failed(change)) => {
                self.sync.insert(key.clone(), RecordSync::Stale(change));
                self.flush(key);
            }
            Some(RecordSync::Stale(_)) => self.flush(key),
            Some(RecordSync::Writing { .. } | RecordSync::WritingStale { .. }) => {}
        }
        if let Some(a) = self.sync.get(key).and_then(|s| s.inflight()) {
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

    /// Moves `op` on as far as the state allows: `Some` is its answer.
    fn advance(&mut self, call: CallId, op: &mut Op, now: i64) -> Advance {
        if let Some(e) = op.error.take() {
            return Some(Err(e));
        }
        match &mut op.kind {
            OpKind::RunPod { pod_id } => self.advance_run_pod(call, pod_id),
            OpKind::CreateCtr { ctr_id } => self.advance_create_ctr(call, ctr_id),
            OpKind::StartCtr { ctr_id } => self.advance_start_ctr(call, ctr_id),
            OpKind::StopCtr { ctr_id, deadline } => {
                self.advance_stop_ctr(call, ctr_id, *deadline, now)
            }
            OpKind::RemoveCtr { ctr_id, deadline } => {
                self.advance_remove_ctr(call, ctr_id, *deadline, now)
            }
            OpKind::UpdateCtr { ctr_id } => self.advance_update_ctr(call, ctr_id),
            OpKind::StopPod {
                pod_id,
                remove,
                deadline,
                removed,
            } => self.advance_stop_pod(call, pod_id, *remove, *deadline, removed, now),
        }
    }

    /// RunPodSandbox: once the sandbox exists and its record is durable.
    fn advance_run_pod(&mut self, call: CallId, pod_id: &str) -> Advance {
        let creating = self.pods.get(pod_id).map(|p| p.state == PodState::Creating);
        let reply = Response::RunPodSandbox(cri::RunPodSandboxResponse {
            pod_sandbox_id: pod_id.to_owned(),
        });
        let key = RecordKey::Pod(pod_id.to_owned());
        self.answer_when_recorded(call, key, creating, "being created", reply)
    }

    /// CreateContainer: once the container exists and its record is
    /// durable.
    fn advance_create_ctr(&mut self, call: CallId, ctr_id: &str) -> Advance {
        let creating = self.ctrs.get(ctr_id).map(|c| c.state == CtrState::Creating);
        let reply = Response::CreateContainer(cri::CreateContainerResponse {
            container_id: ctr_id.to_owned(),
        });
        let key = RecordKey::Container(ctr_id.to_owned());
        self.answer_when_recorded(call, key, creating, "being created", reply)
    }

    /// StartContainer: once the start is done and recorded.
    fn advance_start_ctr(&mut self, call: CallId, ctr_id: &str) -> Advance {
        let starting = self.ctrs.get(ctr_id).map(|c| c.start_action.is_some());
        let reply = Response::StartContainer(cri::StartContainerResponse {});
        let key = RecordKey::Container(ctr_id.to_owned());
        self.answer_when_recorded(call, key, starting, "being started", reply)
    }

    /// UpdateContainerResources: once the host applied the limits and the
    /// record holding them is durable.
    fn advance_update_ctr(&mut self, call: CallId, ctr_id: &str) -> Advance {
        let updating = self.ctrs.get(ctr_id).map(|c| c.update.is_some());
        let reply = Response::UpdateContainerResources(cri::UpdateContainerResourcesResponse {});
        let key = RecordKey::Container(ctr_id.to_owned());
        self.answer_when_recorded(call, key, updating, "its resources were updated", reply)
    }

    /// An op that waits for its object's action (`busy`: `Some(true)` while
    /// it is in flight, `None` if the object is gone), then answers `reply`
    /// once the object's record is durable.
    fn answer_when_recorded(
        &mut self,
        call: CallId,
        key: RecordKey,
        busy: Option<bool>,
        doing: &str,
        reply: Response,
    ) -> Advance {
        let noun = match key {
            RecordKey::Pod(_) => "pod sandbox",
            RecordKey::Container(_) => "container",
        };
        match busy {
            None => Some(Err(Status::internal(format!(
                "{noun} {} vanished while {doing}",
                key.id()
            )))),
            Some(true) => None,
            Some(false) => self.durable(&key, call).then_some(Ok(reply)),
        }
    }

    /// StopContainer: stops a running container, then answers once its
    /// exit is recorded.
    fn advance_stop_ctr(&mut self, call: CallId, ctr_id: &str, deadline: i64, now: i64) -> Advance {
        let Some(c) = self.ctrs.get(ctr_id) else {
            return Some(Ok(Response::StopContainer(cri::StopContainerResponse {})));
        };
        if c.changing() {
            return None;
        }
        match c.state {
            CtrState::Creating => None,
            CtrState::Running | CtrState::Unknown => {
                self.ensure_stopping(ctr_id, deadline, call, now);
                None
            }
            CtrState::Created | CtrState::Exited => self
                .durable(&RecordKey::Container(ctr_id.to_owned()), call)
                .then_some(Ok(Response::StopContainer(cri::StopContainerResponse {}))),
        }
    }

    /// RemoveContainer: stops it if it runs, removes it, then answers once
    /// the record's deletion is durable.
    fn advance_remove_ctr(
        &mut self,
        call: CallId,
        ctr_id: &str,
        deadline: i64,
        now: i64,
    ) -> Advance {
        let Some(c) = self.ctrs.get(ctr_id) else {
            return self
                .durable(&RecordKey::Container(ctr_id.to_owned()), call)
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
                self.ensure_stopping(ctr_id, deadline, call, now)
            }
            CtrState::Created | CtrState::Exited => self.ensure_removing(ctr_id, call),
        }
        None
    }

    /// StopPodSandbox and RemovePodSandbox: lets work in flight on its
    /// containers finish, stops the running ones, stops the sandbox; to
    /// remove, then removes every container and the sandbox, and answers
    /// once the records of all it removed are deleted.
    fn advance_stop_pod(
        &mut self,
        call: CallId,
        pod_id: &str,
        remove: bool,
        deadline: i64,
        removed: &mut BTreeSet<String>,
        now: i64,
    ) -> Advance {
        let Some(pod) = self.pods.get(pod_id) else {
            if !remove {
                return Some(Ok(Response::StopPodSandbox(cri::StopPodSandboxResponse {})));
            }
            let mut ok = self.durable(&RecordKey::Pod(pod_id.to_owned()), call);
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
                match self.pods.get(pod_id).and_then(|p| p.stop_action) {
                    Some(a) => self.wait_on(a, call),
                    None => {
                        let a = self.issue(
                            Target::StopSandbox(pod_id.to_owned()),
                            Action::StopSandbox {
                                pod_id: pod_id.to_owned(),
                            },
                            Some(call),
                        );
                        if let Some(p) = self.pods.get_mut(pod_id) {
                            p.stop_action = Some(a);
                        }
                    }
                }
                return None;
            }
            PodState::Stopped => {}
        }
        if !remove {
            let mut ok = self.durable(&RecordKey::Pod(pod_id.to_owned()), call);
            for (id, _, _) in &members {
                ok &= self.durable(&RecordKey::Container(id.clone()), call);
            }
            return ok.then_some(Ok(Response::StopPodSandbox(cri::StopPodSandboxResponse {})));
        }
        if !members.is_empty() {
            for (id, _, _) in &members {
                removed.insert(id.clone());
                self.ensure_removing(id, call);
            }
            return None;
        }
        match self.pods.get(pod_id).and_then(|p| p.remove_action) {
            Some(a) => self.wait_on(a, call),
            None => {
                let a = self.issue(
                    Target::RemoveSandbox(pod_id.to_owned()),
                    Action::RemoveSandbox {
                        pod_id: pod_id.to_owned(),
                    },
                    Some(call),
                );
                if let Some(p) = self.pods.get_mut(pod_id) {
                    p.remove_action = Some(a);
                }
            }
        }
        None
    }
}
