//! The internal consistency check the tests and fuzz drivers run.

use super::types::{CtrState, OpKind, PodState, Target};
use super::Runtime;
use crate::cri::types::ActionId;

impl Runtime {
    /// Checks the internal consistency of the state machine; `Err` names
    /// the first broken rule. Used by the tests and the fuzz driver.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (name, id) in &self.pod_names {
            match self.pods.get(id) {
                Some(p) if p.name == *name => {}
                _ => return Err(format!("pod name {name:?} reserved for missing pod {id}")),
            }
        }
        for (id, p) in &self.pods {
            if p.id != *id {
                return Err(format!("pod {id} stored under the wrong key"));
            }
            if self.pod_names.get(&p.name) != Some(id) {
                return Err(format!("pod {id} does not hold its name {:?}", p.name));
            }
            let stoppers = self
                .ops
                .values()
                .filter(|o| matches!(&o.kind, OpKind::StopPod { pod_id, .. } if pod_id == id))
                .count();
            if usize::try_from(p.stoppers).ok() != Some(stoppers) {
                return Err(format!(
                    "pod {id} counts {} stoppers, not {stoppers}",
                    p.stoppers
                ));
            }
            for a in [p.create_action, p.stop_action, p.remove_action]
                .into_iter()
                .flatten()
            {
                if !self.actions.contains_key(&a) {
                    return Err(format!("pod {id} waits on unknown action {}", a.0));
                }
            }
            if (p.state == PodState::Creating) != p.create_action.is_some() {
                return Err(format!(
                    "pod {id} is {:?} with create action {:?}",
                    p.state, p.create_action
                ));
            }
        }
        for (name, id) in &self.ctr_names {
            match self.ctrs.get(id) {
                Some(c) if c.name == *name => {}
                _ => {
                    return Err(format!(
                        "container name {name:?} reserved for missing container {id}"
                    ))
                }
            }
        }
        for (id, c) in &self.ctrs {
            if c.id != *id {
                return Err(format!("container {id} stored under the wrong key"));
            }
            if self.ctr_names.get(&c.name) != Some(id) {
                return Err(format!(
                    "container {id} does not hold its name {:?}",
                    c.name
                ));
            }
            match self.pods.get(&c.pod_id) {
                None => return Err(format!("container {id} is in missing pod {}", c.pod_id)),
                Some(p) if !p.visible() => {
                    return Err(format!(
                        "container {id} is in pod {} still being created",
                        c.pod_id
                    ))
                }
                _ => {}
            }
            if self.pods.contains_key(id) {
                return Err(format!("container {id} has the ID of a pod"));
            }
            let mut acts: Vec<ActionId> = c.stops.iter().map(|(a, _)| *a).collect();
            acts.extend(
                [
                    c.create_action,
                    c.start_action,
                    c.remove_action,
                    c.update.as_ref().map(|(a, _)| *a),
                ]
                .into_iter()
                .flatten(),
            );
            for a in acts {
                if !self.actions.contains_key(&a) {
                    return Err(format!("container {id} waits on unknown action {}", a.0));
                }
            }
            if (c.state == CtrState::Creating) != c.create_action.is_some() {
                return Err(format!(
                    "container {id} is {:?} with create action {:?}",
                    c.state, c.create_action
                ));
            }
            if c.start_action.is_some() && c.state != CtrState::Created {
                return Err(format!(
                    "container {id} is being started in state {:?}",
                    c.state
                ));
            }
            if c.remove_action.is_some() && !matches!(c.state, CtrState::Created | CtrState::Exited)
            {
                return Err(format!(
                    "container {id} is being removed in state {:?}",
                    c.state
                ));
            }
            if c.pending_exit.is_some() && c.start_action.is_none() {
                return Err(format!(
                    "container {id} holds an exit with no start in flight"
                ));
            }
        }
        for (key, s) in &self.sync {
            if let Some(a) = s.inflight() {
                match self.actions.get(&a) {
                    Some(p) if p.target == Target::Record(key.clone()) => {}
                    _ => return Err(format!("record {key} waits on a foreign action {}", a.0)),
                }
            }
        }
        Ok(())
    }
}
