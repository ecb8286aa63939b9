//! From a routed call to its answer: the access check, request decoding,
//! and one handler per CRI method. Handlers that would block hand their
//! work to the worker pool and answer when it is done.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crisp_core::grpc::server::{CallInfo, Server};
use crisp_core::grpc::{Code, Status};
use crisp_proto::cri;
use crisp_proto::methods::{Method, MethodDesc};
use prost::Message;

use crate::config::Config;
use crate::host::{self, CgroupMode};
use crate::persist;
use crate::policy::{Peer, Policy};
use crate::workers::Workers;

/// What became of a call handed to [`Dispatcher::dispatch`].
pub enum Outcome {
    /// Answered now with this status.
    Done(Code),
    /// Handed to a worker; the answer comes later.
    Deferred,
}

/// State the handlers share. Cheap to reach from the loop and from jobs.
pub struct Dispatcher {
    config: Arc<Config>,
    policy: Policy,
    cgroups: CgroupMode,
    /// From UpdateRuntimeConfig, persisted under the state directory.
    pod_cidr: Arc<Mutex<String>>,
}

const RUNTIME_NAME: &str = "crisp";
const CRI_VERSION: &str = "v1";

impl Dispatcher {
    pub fn new(config: Arc<Config>, policy: Policy) -> Self {
        let pod_cidr = std::fs::read(runtime_config_path(&config))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v.get("pod_cidr")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Self {
            config,
            policy,
            cgroups: CgroupMode::detect(),
            pod_cidr: Arc::new(Mutex::new(pod_cidr)),
        }
    }

    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups
    }

    /// Handle one complete request: check the caller, decode, answer (or
    /// defer to the worker pool).
    pub fn dispatch(
        &self,
        server: &mut Server,
        conn: usize,
        peer: Peer,
        call: &CallInfo,
        message: Bytes,
        workers: &Workers,
    ) -> Outcome {
        let method = call.method;
        if !self.policy.allows(peer, method) {
            tracing::warn!(method = method.path, %peer, "permission denied");
            let status = Status::permission_denied(format!(
                "caller {peer} may not call {} (see [access] in crispd's config)",
                method.path
            ));
            return finish(server, call.id, &status);
        }
        match self.handle(method, message, conn, call.id, workers) {
            Handled::Reply(Ok(bytes)) => {
                let sent = server.send_encoded(call.id, &bytes);
                let _ = server.finish(call.id, &Status::ok());
                match sent {
                    Ok(()) => Outcome::Done(Code::Ok),
                    Err(_) => Outcome::Done(Code::Internal),
                }
            }
            Handled::Reply(Err(status)) => finish(server, call.id, &status),
            Handled::Deferred => Outcome::Deferred,
        }
    }

    fn handle(
        &self,
        method: &MethodDesc,
        message: Bytes,
        conn: usize,
        call: u32,
        workers: &Workers,
    ) -> Handled {
        match method.method {
            Method::Version => {
                reply(decode::<cri::VersionRequest>(method, message).map(|_| self.version()))
            }
            Method::Status => {
                reply(decode::<cri::StatusRequest>(method, message).map(|r| self.status(r.verbose)))
            }
            Method::RuntimeConfig => reply(
                decode::<cri::RuntimeConfigRequest>(method, message).map(|_| self.runtime_config()),
            ),
            Method::UpdateRuntimeConfig => {
                let req = match decode::<cri::UpdateRuntimeConfigRequest>(method, message) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let cidr = req
                    .runtime_config
                    .and_then(|c| c.network_config)
                    .map(|n| n.pod_cidr)
                    .unwrap_or_default();
                let path = runtime_config_path(&self.config);
                let shared = Arc::clone(&self.pod_cidr);
                let job = move || {
                    let record = serde_json::json!({ "pod_cidr": cidr });
                    persist::write_atomic(&path, record.to_string().as_bytes()).map_err(|e| {
                        Status::internal(format!(
                            "cannot store runtime config in {}: {e}",
                            path.display()
                        ))
                    })?;
                    if let Ok(mut c) = shared.lock() {
                        *c = cidr;
                    }
                    Ok(cri::UpdateRuntimeConfigResponse {}.encode_to_vec())
                };
                match workers.submit(conn, call, job) {
                    Ok(()) => Handled::Deferred,
                    Err(_) => Handled::Reply(Err(Status::resource_exhausted(
                        "crispd's worker queue is full",
                    ))),
                }
            }
            _ => Handled::Reply(Err(Status::unimplemented(format!(
                "crisp does not implement {} yet",
                method.path
            )))),
        }
    }

    fn version(&self) -> cri::VersionResponse {
        cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_VERSION.into(),
        }
    }

    fn status(&self, verbose: bool) -> cri::StatusResponse {
        let network = match host::cni_config(&self.config.cni_conf_dir) {
            Some(_) => condition("NetworkReady", true, "", ""),
            None => condition(
                "NetworkReady",
                false,
                "NetworkPluginNotReady",
                &format!(
                    "no CNI network configuration in {}",
                    self.config.cni_conf_dir.display()
                ),
            ),
        };
        let mut info = HashMap::new();
        if verbose {
            let pod_cidr = self.pod_cidr.lock().map(|c| c.clone()).unwrap_or_default();
            let cni = host::cni_config(&self.config.cni_conf_dir)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let details = serde_json::json!({
                "runtime": RUNTIME_NAME,
                "version": env!("CARGO_PKG_VERSION"),
                "cgroups": self.cgroups.as_str(),
                "podCIDR": pod_cidr,
                "cniConfig": cni,
            });
            info.insert("info".into(), details.to_string());
            info.insert(
                "config".into(),
                serde_json::to_string(&*self.config).unwrap_or_default(),
            );
        }
        cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![condition("RuntimeReady", true, "", ""), network],
            }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures::default()),
            }],
            features: Some(cri::RuntimeFeatures::default()),
        }
    }

    fn runtime_config(&self) -> cri::RuntimeConfigResponse {
        // crisp drives cgroups through the cgroup filesystem itself (v1 or
        // v2, detected at start), so kubelet must use the cgroupfs driver.
        cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }
    }
}

enum Handled {
    Reply(Result<Vec<u8>, Status>),
    Deferred,
}

fn reply<M: Message>(r: Result<M, Status>) -> Handled {
    Handled::Reply(r.map(|m| m.encode_to_vec()))
}

fn decode<M: Message + Default>(method: &MethodDesc, message: Bytes) -> Result<M, Status> {
    M::decode(message).map_err(|e| {
        Status::invalid_argument(format!(
            "cannot decode {} for {}: {e}",
            method.request_type, method.name
        ))
    })
}

fn finish(server: &mut Server, id: u32, status: &Status) -> Outcome {
    let _ = server.finish(id, status);
    Outcome::Done(status.code)
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
    cri::RuntimeCondition {
        r#type: kind.into(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

fn runtime_config_path(config: &Config) -> PathBuf {
    config.state_dir.join("runtime-config.json")
}
