//! Persistence (record writes, at most one in flight per object) and
//! container events.

use crisp_proto::cri;

use super::types::{Change, Ctr, Pod, PodState, RecordSync, Target};
use super::Runtime;
use crate::cri::record::{ContainerRecord, PodPhase, PodRecord, Record, RecordKey, RecordKind};
use crate::cri::types::Action;

impl Runtime {
    /// The object behind `key` changed: its record is written again.
    pub(super) fn mark_dirty(&mut self, key: RecordKey) {
        self.mark(key, Change::Write);
    }

    /// The object behind `key` is gone: its record is deleted.
    pub(super) fn mark_deleted(&mut self, key: RecordKey) {
        self.mark(key, Change::Delete);
    }

    fn mark(&mut self, key: RecordKey, change: Change) {
        let s = RecordSync::changed(self.sync.get(&key).copied(), change);
        self.sync.insert(key.clone(), s);
        self.flush(&key);
    }

    /// Issues the write (or delete) `key` needs, unless one is in flight or
    /// the last one failed.
    pub(super) fn flush(&mut self, key: &RecordKey) {
        let Some(RecordSync::Stale(change)) = self.sync.get(key).copied() else {
            return;
        };
        let action = match (change, self.record_of(key)) {
            (Change::Write, Some(r)) => Action::WriteRecord(Box::new(r)),
            _ => Action::DeleteRecord(key.clone()),
        };
        let action = self.issue(Target::Record(key.clone()), action, None);
        self.sync
            .insert(key.clone(), RecordSync::Writing { action, change });
    }

    pub(super) fn record_of(&self, key: &RecordKey) -> Option<Record> {
        match key {
            RecordKey::Pod(id) => self.pods.get(id).filter(|p| p.visible()).map(pod_record),
            RecordKey::Container(id) => self.ctrs.get(id).filter(|c| c.visible()).map(ctr_record),
        }
    }

    /// A record of every visible pod sandbox and container, as they are in
    /// memory now (whether or not durable yet).
    pub fn records(&self) -> Vec<Record> {
        self.pods
            .values()
            .filter(|p| p.visible())
            .map(pod_record)
            .chain(self.ctrs.values().filter(|c| c.visible()).map(ctr_record))
            .collect()
    }

    pub(super) fn emit(
        &mut self,
        container_id: &str,
        pod_id: &str,
        kind: cri::ContainerEventType,
        now: i64,
    ) {
        let pod_sandbox_status = self
            .pods
            .get(pod_id)
            .filter(|p| p.visible())
            .map(|p| self.pod_status_of(p));
        let containers_statuses = self.container_statuses_of_pod(pod_id);
        self.out_events.push_back(cri::ContainerEventResponse {
            container_id: container_id.to_owned(),
            container_event_type: kind as i32,
            created_at: now,
            pod_sandbox_status,
            containers_statuses,
        });
    }
}

fn pod_phase(state: PodState) -> PodPhase {
    match state {
        PodState::Creating => PodPhase::Unspecified,
        PodState::Ready => PodPhase::Ready,
        PodState::Exited => PodPhase::Exited,
        PodState::Stopped => PodPhase::Stopped,
    }
}

pub(crate) fn pod_record(p: &Pod) -> Record {
    Record {
        kind: Some(RecordKind::Pod(PodRecord {
            id: p.id.clone(),
            config: Some(p.config.clone()),
            runtime_handler: p.runtime_handler.clone(),
            phase: pod_phase(p.state) as i32,
            created_at: p.created_at,
            pid: p.pid,
            netns_path: p.netns_path.clone(),
            ip: p.ip.clone(),
            additional_ips: p.additional_ips.clone(),
        })),
    }
}

pub(crate) fn ctr_record(c: &Ctr) -> Record {
    Record {
        kind: Some(RecordKind::Container(ContainerRecord {
            id: c.id.clone(),
            pod_id: c.pod_id.clone(),
            config: Some(c.config.clone()),
            image_ref: c.image_ref.clone(),
            image_id: c.image_id.clone(),
            log_path: c.log_path.clone(),
            state: c.state.cri() as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            message: c.message.clone(),
            pid: c.pid,
            volume_image_ids: c.volume_image_ids.clone(),
            user: c.user.clone(),
            image_stop_signal: c.image_stop_signal,
        })),
    }
}
