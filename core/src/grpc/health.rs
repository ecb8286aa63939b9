//! gRPC's health service (`grpc.health.v1.Health`) without I/O: which
//! services are known, whether the server is serving, and who watches.
//!
//! The host decodes nothing itself: it hands each call's request bytes to
//! [`Health::check`], [`Health::list`] or [`Health::watch`] and sends the
//! bytes that come back. Answers follow grpc-go's health server, which
//! clients are written against: `Check` of an unknown service fails with
//! NOT_FOUND, `Watch` of one reports `SERVICE_UNKNOWN` and stays open, and a
//! watcher hears again only when its service's status changes. Watches are
//! keyed by whatever names a call for the host (`K`), e.g. its connection
//! and stream.

use std::collections::HashMap;
use std::hash::Hash;

use crisp_proto::grpc::health::v1::health_check_response::ServingStatus;
use crisp_proto::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use prost::Message;

use super::status::Status;

/// The health of one server: the services it knows, serving or not.
#[derive(Debug)]
pub struct Health<K> {
    /// Known service names; `""` (the whole server) always among them.
    services: Vec<String>,
    serving: bool,
    watchers: HashMap<K, Watcher>,
}

#[derive(Debug)]
struct Watcher {
    service: String,
    /// What this watcher was told last.
    last: ServingStatus,
}

impl<K: Eq + Hash + Clone> Health<K> {
    /// A serving server that knows `services` (full proto names) and `""`.
    pub fn new<S: Into<String>>(services: impl IntoIterator<Item = S>) -> Self {
        let mut names = vec![String::new()];
        for s in services {
            let s = s.into();
            if !names.contains(&s) {
                names.push(s);
            }
        }
        Self {
            services: names,
            serving: true,
            watchers: HashMap::new(),
        }
    }

    pub fn is_serving(&self) -> bool {
        self.serving
    }

    /// How many Watch calls are open.
    pub fn watchers(&self) -> usize {
        self.watchers.len()
    }

    /// The status of `service`, or `None` when it is not known.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.services
            .iter()
            .any(|s| s == service)
            .then_some(if self.serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            })
    }

    /// `Check`: the encoded `HealthCheckResponse`, or NOT_FOUND naming an
    /// unknown service.
    pub fn check(&self, request: &[u8]) -> Result<Vec<u8>, Status> {
        let req = decode::<HealthCheckRequest>(request)?;
        match self.status(&req.service) {
            Some(status) => Ok(response(status)),
            None => Err(Status::not_found(format!(
                "unknown service {:?}",
                req.service
            ))),
        }
    }

    /// `List`: every known service's status.
    pub fn list(&self, request: &[u8]) -> Result<Vec<u8>, Status> {
        decode::<HealthListRequest>(request)?;
        let statuses = self
            .services
            .iter()
            .filter_map(|s| {
                let status = self.status(s)?;
                Some((
                    s.clone(),
                    HealthCheckResponse {
                        status: status as i32,
                    },
                ))
            })
            .collect();
        Ok(HealthListResponse { statuses }.encode_to_vec())
    }

    /// `Watch`: the first message to send on the call `key`, which stays
    /// open; later changes come from [`Health::set_serving`]. A second watch
    /// under the same key replaces the first.
    pub fn watch(&mut self, key: K, request: &[u8]) -> Result<Vec<u8>, Status> {
        let req = decode::<HealthCheckRequest>(request)?;
        let status = self
            .status(&req.service)
            .unwrap_or(ServingStatus::ServiceUnknown);
        self.watchers.insert(
            key,
            Watcher {
                service: req.service,
                last: status,
            },
        );
        Ok(response(status))
    }

    /// The Watch call `key` ended (cancelled, its connection gone).
    pub fn unwatch(&mut self, key: &K) {
        self.watchers.remove(key);
    }

    /// Forget every watch whose key `gone` matches (e.g. all of a closed
    /// connection's).
    pub fn unwatch_where(&mut self, mut gone: impl FnMut(&K) -> bool) {
        self.watchers.retain(|k, _| !gone(k));
    }

    /// Forget every watch, returning their keys (the server ends them).
    pub fn take_watchers(&mut self) -> Vec<K> {
        self.watchers.drain().map(|(k, _)| k).collect()
    }

    /// The server starts or stops serving (NOT_SERVING while it shuts
    /// down): the message for each watcher whose status changed.
    pub fn set_serving(&mut self, serving: bool) -> Vec<(K, Vec<u8>)> {
        self.serving = serving;
        let mut updates = Vec::new();
        let known = &self.services;
        for (key, w) in &mut self.watchers {
            let now = if known.contains(&w.service) {
                if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                }
            } else {
                ServingStatus::ServiceUnknown
            };
            if now != w.last {
                w.last = now;
                updates.push((key.clone(), response(now)));
            }
        }
        updates
    }
}

fn response(status: ServingStatus) -> Vec<u8> {
    HealthCheckResponse {
        status: status as i32,
    }
    .encode_to_vec()
}

fn decode<M: Message + Default + prost::Name>(bytes: &[u8]) -> Result<M, Status> {
    M::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("cannot decode {}: {e}", M::full_name())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Code;

    fn health() -> Health<u32> {
        Health::new(["runtime.v1.RuntimeService", "runtime.v1.ImageService"])
    }

    fn ask(service: &str) -> Vec<u8> {
        HealthCheckRequest {
            service: service.into(),
        }
        .encode_to_vec()
    }

    fn status_of(bytes: &[u8]) -> ServingStatus {
        let r = HealthCheckResponse::decode(bytes).unwrap();
        ServingStatus::try_from(r.status).unwrap()
    }

    #[test]
    fn known_services_and_the_server_are_serving() {
        let h = health();
        for s in ["", "runtime.v1.RuntimeService", "runtime.v1.ImageService"] {
            assert_eq!(
                status_of(&h.check(&ask(s)).unwrap()),
                ServingStatus::Serving
            );
        }
    }

    #[test]
    fn check_of_an_unknown_service_is_not_found() {
        let err = health().check(&ask("runtime.v1.Nope")).unwrap_err();
        assert_eq!(err.code, Code::NotFound);
        assert!(err.message.contains("runtime.v1.Nope"), "{}", err.message);
    }

    #[test]
    fn a_request_that_does_not_decode_is_invalid() {
        let err = health().check(&[0x0a, 0x05, b'x']).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(err.message.contains("grpc.health.v1.HealthCheckRequest"));
    }

    #[test]
    fn list_names_every_service() {
        let h = health();
        let list = HealthListResponse::decode(&h.list(&[]).unwrap()[..]).unwrap();
        assert_eq!(list.statuses.len(), 3);
        assert!(list
            .statuses
            .values()
            .all(|r| r.status == ServingStatus::Serving as i32));
    }

    #[test]
    fn watchers_hear_of_changes_only() {
        let mut h = health();
        let first = h.watch(1, &ask("runtime.v1.RuntimeService")).unwrap();
        assert_eq!(status_of(&first), ServingStatus::Serving);
        let unknown = h.watch(2, &ask("nope")).unwrap();
        assert_eq!(status_of(&unknown), ServingStatus::ServiceUnknown);
        h.watch(3, &ask("")).unwrap();
        assert!(h.set_serving(true).is_empty(), "no change, no message");

        let mut updates = h.set_serving(false);
        updates.sort();
        let keys: Vec<u32> = updates.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [1, 3], "the unknown service does not change");
        for (_, m) in &updates {
            assert_eq!(status_of(m), ServingStatus::NotServing);
        }
        assert_eq!(
            status_of(&h.check(&ask("")).unwrap()),
            ServingStatus::NotServing
        );
        assert!(h.set_serving(false).is_empty());
    }

    #[test]
    fn ended_watches_are_forgotten() {
        let mut h = health();
        for k in 0..6 {
            h.watch(k, &ask("")).unwrap();
        }
        h.unwatch(&0);
        h.unwatch_where(|k| k % 2 == 1);
        assert_eq!(h.watchers(), 2);
        let keys: Vec<u32> = h.set_serving(false).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k % 2 == 0 && *k != 0));
        assert_eq!(h.take_watchers().len(), 2);
        assert_eq!(h.watchers(), 0);
    }
}
