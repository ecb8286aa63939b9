//! Rebuilding the state machine after a restart.

use std::collections::{BTreeMap, BTreeSet};

use crisp_proto::cri;

use super::records::{ctr_record, pod_record};
use super::types::{Ctr, CtrState, Pod, PodState};
use super::{Runtime, UNKNOWN_EXIT_CODE, UNKNOWN_EXIT_REASON};
use crate::cri::ids::IdSource;
use crate::cri::record::{Observation, Observed, PodPhase, Record, RecordKey, RecordKind};
use crate::cri::types::Exit;
use crate::cri::{container_name, pod_name};

impl Runtime {
    /// Rebuilds the state machine after a restart from the persisted
    /// records and what the host reports (see [`Observation`]). Returns the
    /// runtime and warnings about records it could not take. Objects whose
    /// state the observations changed are written again: their
    /// `WriteRecord` actions are waiting in [`Runtime::poll_action`].
    ///
    /// Rules, after containerd's recovery: a READY sandbox whose holder is
    /// gone becomes NOTREADY (StopPodSandbox will reclaim it); a RUNNING
    /// container whose monitor reports an exit takes that exit, one with no
    /// monitor at all becomes EXITED with code 255 and reason `Unknown`,
    /// one whose monitor cannot be reached becomes UNKNOWN; a CREATED
    /// container stays CREATED unless its monitor reports it started. A
    /// container whose sandbox has no record is dropped and its record
    /// deleted.
    pub fn restore(
        ids: impl IdSource + Send + 'static,
        records: impl IntoIterator<Item = Record>,
        observations: &[Observation],
        now: i64,
    ) -> (Runtime, Vec<String>) {
        let mut rt = Runtime::new(ids);
        let mut warnings = Vec::new();
        let mut alive = BTreeSet::new();
        let mut observed = BTreeMap::new();
        for o in observations {
            match o {
                Observation::SandboxAlive { id } => {
                    alive.insert(id.clone());
                }
                Observation::Container { id, observed: obs } => {
                    observed.insert(id.clone(), obs.clone());
                }
            }
        }
        let mut containers = Vec::new();
        let mut dirty = Vec::new();
        for r in records {
            match r.kind {
                None => warnings.push("skipped a record of no kind".to_owned()),
                Some(RecordKind::Container(c)) => containers.push(c),
                Some(RecordKind::Pod(p)) => {
                    let original = Record {
                        kind: Some(RecordKind::Pod(p.clone())),
                    };
                    let Some(config) = p.config else {
                        warnings.push(format!("skipped pod sandbox {:?}: no config", p.id));
                        continue;
                    };
                    let Some(meta) = config.metadata.as_ref() else {
                        warnings.push(format!("skipped pod sandbox {:?}: no metadata", p.id));
                        continue;
                    };
                    if p.id.is_empty() || rt.pods.contains_key(&p.id) {
                        warnings.push(format!(
                            "skipped pod sandbox {:?}: empty or duplicate ID",
                            p.id
                        ));
                        continue;
                    }
                    let name = pod_name(meta);
                    if let Some(owner) = rt.pod_names.get(&name) {
                        warnings.push(format!(
                            "skipped pod sandbox {}: its name {name:?} belongs to {owner}",
                            p.id
                        ));
                        continue;
                    }
                    let recorded = PodPhase::try_from(p.phase).unwrap_or(PodPhase::Unspecified);
                    let state = match recorded {
                        PodPhase::Ready if alive.contains(&p.id) => PodState::Ready,
                        PodPhase::Stopped => PodState::Stopped,
                        _ => PodState::Exited,
                    };
                    rt.pod_names.insert(name.clone(), p.id.clone());
                    let pod = Pod {
                        id: p.id,
                        name,
                        config,
                        runtime_handler: p.runtime_handler,
                        created_at: p.created_at,
                        state,
                        pid: if state == PodState::Ready { p.pid } else { 0 },
                        netns_path: p.netns_path,
                        ip: p.ip,
                        additional_ips: p.additional_ips,
                        stoppers: 0,
                        create_action: None,
                        stop_action: None,
                        remove_action: None,
                    };
                    if pod_record(&pod) != original {
                        dirty.push(RecordKey::Pod(pod.id.clone()));
                    }
                    rt.pods.insert(pod.id.clone(), pod);
                }
            }
        }
        for c in containers {
            let original = Record {
                kind: Some(RecordKind::Container(c.clone())),
            };
            let Some(pod) = rt.pods.get(&c.pod_id) else {
                warnings.push(format!(
                    "dropped container {:?}: its pod sandbox {:?} has no record",
                    c.id, c.pod_id
                ));
                if !c.id.is_empty() {
                    dirty.push(RecordKey::Container(c.id));
                }
                continue;
            };
            let Some(config) = c.config else {
                warnings.push(format!("skipped container {:?}: no config", c.id));
                continue;
            };
            let Some(meta) = config.metadata.as_ref() else {
                warnings.push(format!("skipped container {:?}: no metadata", c.id));
                continue;
            };
            if c.id.is_empty() || rt.ctrs.contains_key(&c.id) || rt.pods.contains_key(&c.id) {
                warnings.push(format!(
                    "skipped container {:?}: empty or duplicate ID",
                    c.id
                ));
                continue;
            }
            let name = container_name(meta, &pod.metadata());
            if let Some(owner) = rt.ctr_names.get(&name) {
                warnings.push(format!(
                    "skipped container {}: its name {name:?} belongs to {owner}",
                    c.id
                ));
                continue;
            }
            let recorded = match cri::ContainerState::try_from(c.state) {
                Ok(cri::ContainerState::ContainerCreated) => CtrState::Created,
                Ok(cri::ContainerState::ContainerRunning) => CtrState::Running,
                Ok(cri::ContainerState::ContainerExited) => CtrState::Exited,
                _ => CtrState::Unknown,
            };
            let mut ctr = Ctr {
                id: c.id.clone(),
                pod_id: c.pod_id,
                name: name.clone(),
                config,
                image_ref: c.image_ref,
                image_id: c.image_id,
                volume_image_ids: c.volume_image_ids,
                user: c.user,
                image_stop_signal: c.image_stop_signal,
                log_path: c.log_path,
                state: recorded,
                created_at: c.created_at,
                started_at: c.started_at,
                finished_at: c.finished_at,
                exit_code: c.exit_code,
                reason: c.reason,
                message: c.message,
                pid: c.pid,
                create_action: None,
                start_action: None,
                pending_exit: None,
                stops: Vec::new(),
                remove_action: None,
                update: None,
            };
            if recorded != CtrState::Exited {
                match observed.get(&c.id) {
                    Some(Observed::Running { pid, started_at }) => {
                        if recorded == CtrState::Created {
                            ctr.started_at = if *started_at > 0 { *started_at } else { now };
                        }
                        ctr.state = CtrState::Running;
                        ctr.pid = *pid;
                    }
                    Some(Observed::Exited(exit)) => {
                        ctr.exited(exit.clone(), now);
                    }
                    Some(Observed::Unreachable) => ctr.state = CtrState::Unknown,
                    None => {
                        if recorded != CtrState::Created {
                            let unknown = Exit {
                                exit_code: UNKNOWN_EXIT_CODE,
                                finished_at: now,
                                reason: UNKNOWN_EXIT_REASON.to_owned(),
                                message: String::new(),
                            };
                            ctr.exited(unknown, now);
                        }
                    }
                }
            }
            if ctr_record(&ctr) != original {
                dirty.push(RecordKey::Container(ctr.id.clone()));
            }
            rt.ctr_names.insert(name, ctr.id.clone());
            rt.ctrs.insert(ctr.id.clone(), ctr);
        }
        for key in dirty {
            if rt.record_of(&key).is_some() {
                rt.mark_dirty(key);
            } else {
                rt.mark_deleted(key);
            }
        }
        (rt, warnings)
    }
}
