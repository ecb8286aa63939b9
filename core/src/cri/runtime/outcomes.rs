//! Applying what the host reports: action outcomes and exits.

use crisp_proto::cri;
use crisp_proto::cri::ContainerEventType as Event;

use super::types::{failure, CtrState, PodState, RecordSync, Target};
use super::{Runtime, START_ERROR_EXIT_CODE, START_ERROR_REASON};
use crate::cri::record::RecordKey;
use crate::cri::types::{ActionId, Exit, InputError, Outcome};
use crate::grpc::Status;

impl Runtime {
    /// Applies an outcome to the objects. Returns the status the calls
    /// waiting on the action fail with, if it failed.
    pub(super) fn apply(
        &mut self,
        action: ActionId,
        target: &Target,
        outcome: Outcome,
        now: i64,
    ) -> Option<Status> {
        match target {
            Target::CreateSandbox(pod_id) => self.on_create_sandbox(pod_id, outcome, now),
            Target::StopSandbox(pod_id) => self.on_stop_sandbox(pod_id, outcome, now),
            Target::RemoveSandbox(pod_id) => self.on_remove_sandbox(pod_id, outcome, now),
            Target::CreateContainer(ctr_id) => self.on_create_container(ctr_id, outcome, now),
            Target::StartContainer(ctr_id) => self.on_start_container(ctr_id, outcome, now),
            Target::StopContainer(ctr_id) => self.on_stop_container(action, ctr_id, outcome, now),
            Target::RemoveContainer(ctr_id) => self.on_remove_container(ctr_id, outcome, now),
            Target::UpdateContainer(ctr_id) => self.on_update_container(ctr_id, outcome),
            Target::Record(key) => self.on_record(action, key, outcome),
        }
    }

    /// The sandbox exists (READY), or its creation failed and its name is free again.
    fn on_create_sandbox(&mut self, pod_id: &str, outcome: Outcome, now: i64) -> Option<Status> {
        let p = self.pods.get_mut(pod_id)?;
        p.create_action = None;
        match outcome {
            Outcome::SandboxCreated(info) if p.state == PodState::Creating => {
                p.state = PodState::Ready;
                p.pid = info.pid;
                p.netns_path = info.netns_path;
                p.ip = info.ip;
                p.additional_ips = info.additional_ips;
                self.mark_dirty(RecordKey::Pod(pod_id.to_owned()));
                // As containerd: CREATED then STARTED, with the
                // sandbox ID as the container ID.
                self.emit(pod_id, pod_id, Event::ContainerCreatedEvent, now);
                self.emit(pod_id, pod_id, Event::ContainerStartedEvent, now);
                None
            }
            Outcome::Failed(st) => {
                if p.state == PodState::Creating {
                    self.drop_pod(pod_id);
                }
                Some(failure(st))
            }
            _ => None,
        }
    }

    /// The sandbox is stopped: NOTREADY, its resources released.
    fn on_stop_sandbox(&mut self, pod_id: &str, outcome: Outcome, now: i64) -> Option<Status> {
        let p = self.pods.get_mut(pod_id)?;
        p.stop_action = None;
        match outcome {
            Outcome::Failed(st) => Some(failure(st)),
            _ => {
                if matches!(p.state, PodState::Ready | PodState::Exited) {
                    let was_ready = p.state == PodState::Ready;
                    p.state = PodState::Stopped;
                    p.pid = 0;
                    self.mark_dirty(RecordKey::Pod(pod_id.to_owned()));
                    if was_ready {
                        self.emit(pod_id, pod_id, Event::ContainerStoppedEvent, now);
                    }
                }
                None
            }
        }
    }

    /// The sandbox is gone, its name free, its record to delete.
    fn on_remove_sandbox(&mut self, pod_id: &str, outcome: Outcome, now: i64) -> Option<Status> {
        let p = self.pods.get_mut(pod_id)?;
        p.remove_action = None;
        match outcome {
            Outcome::Failed(st) => Some(failure(st)),
            _ => {
                if self.ctrs.values().any(|c| c.pod_id == pod_id) {
                    return Some(Status::internal(format!(
                        "pod sandbox {pod_id} still has containers"
                    )));
                }
                // The event carries the sandbox's last status.
                self.emit(pod_id, pod_id, Event::ContainerDeletedEvent, now);
                self.drop_pod(pod_id);
                self.mark_deleted(RecordKey::Pod(pod_id.to_owned()));
                None
            }
        }
    }

    /// The container exists (CREATED), or its creation failed and its name is free again.
    fn on_create_container(&mut self, ctr_id: &str, outcome: Outcome, now: i64) -> Option<Status> {
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
                self.mark_dirty(RecordKey::Container(ctr_id.to_owned()));
                self.emit(ctr_id, &pod_id, Event::ContainerCreatedEvent, now);
                None
            }
            Outcome::Failed(st) => {
                if c.state == CtrState::Creating {
                    self.drop_ctr(ctr_id);
                }
                Some(failure(st))
            }
            _ => None,
        }
    }

    /// The container runs, or its start failed and it is EXITED with StartError.
    fn on_start_container(&mut self, ctr_id: &str, outcome: Outcome, now: i64) -> Option<Status> {
        let c = self.ctrs.get_mut(ctr_id)?;
        c.start_action = None;
        let pod_id = c.pod_id.clone();
        match outcome {
            Outcome::ContainerStarted { pid, started_at } if c.state == CtrState::Created => {
                c.state = CtrState::Running;
                c.pid = pid;
                c.started_at = if started_at > 0 { started_at } else { now };
                let pending = c.pending_exit.take();
                self.mark_dirty(RecordKey::Container(ctr_id.to_owned()));
                self.emit(ctr_id, &pod_id, Event::ContainerStartedEvent, now);
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
                    self.mark_dirty(RecordKey::Container(ctr_id.to_owned()));
                    self.emit(ctr_id, &pod_id, Event::ContainerStoppedEvent, now);
                }
                Some(failure(st))
            }
            _ => None,
        }
    }

    /// A stop answered with the container's exit.
    fn on_stop_container(
        &mut self,
        action: ActionId,
        ctr_id: &str,
        outcome: Outcome,
        now: i64,
    ) -> Option<Status> {
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

    /// The container is gone, its name free, its record to delete.
    fn on_remove_container(&mut self, ctr_id: &str, outcome: Outcome, now: i64) -> Option<Status> {
        let c = self.ctrs.get_mut(ctr_id)?;
        c.remove_action = None;
        match outcome {
            Outcome::Failed(st) => Some(failure(st)),
            _ => {
                let pod_id = c.pod_id.clone();
                self.drop_ctr(ctr_id);
                self.mark_deleted(RecordKey::Container(ctr_id.to_owned()));
                self.emit(ctr_id, &pod_id, Event::ContainerDeletedEvent, now);
                None
            }
        }
    }

    /// The new limits are applied: they are recorded over the old.
    fn on_update_container(&mut self, ctr_id: &str, outcome: Outcome) -> Option<Status> {
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
                self.mark_dirty(RecordKey::Container(ctr_id.to_owned()));
                None
            }
        }
    }

    /// A record write (or deletion) answered.
    fn on_record(&mut self, action: ActionId, key: &RecordKey, outcome: Outcome) -> Option<Status> {
        // What the record wanted from this write, and a change made while
        // it was in flight, to write next.
        let (written, next) = match *self.sync.get(key)? {
            RecordSync::Writing { action: a, change } if a == action => (change, None),
            RecordSync::WritingStale { action: a, next } if a == action => (next, Some(next)),
            // Not the write in flight: nothing changes.
            _ => return persist_failure(key, outcome),
        };
        match (outcome, next) {
            (Outcome::Failed(st), _) => {
                self.sync.insert(key.clone(), RecordSync::Failed(written));
                persist_failure(key, Outcome::Failed(st))
            }
            (_, Some(change)) => {
                self.sync.insert(key.clone(), RecordSync::Stale(change));
                self.flush(key);
                None
            }
            (_, None) => {
                self.sync.remove(key);
                None
            }
        }
    }

    pub(super) fn apply_exit(
        &mut self,
        ctr_id: &str,
        exit: Exit,
        now: i64,
    ) -> Result<(), InputError> {
        let Some(c) = self.ctrs.get_mut(ctr_id) else {
            return Err(InputError::UnknownObject(ctr_id.to_owned()));
        };
        match c.state {
            CtrState::Running | CtrState::Unknown => {
                c.exited(exit, now);
                let pod_id = c.pod_id.clone();
                self.mark_dirty(RecordKey::Container(ctr_id.to_owned()));
                self.emit(ctr_id, &pod_id, Event::ContainerStoppedEvent, now);
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

/// The status the calls waiting on a record write fail with, if it failed.
fn persist_failure(key: &RecordKey, outcome: Outcome) -> Option<Status> {
    let Outcome::Failed(st) = outcome else {
        return None;
    };
    let st = failure(st);
    Some(Status::new(
        st.code,
        format!("cannot persist the record of {key}: {}", st.message),
    ))
}
