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
use crate::image::registry::Credentials;
use crate::image::ImageService;
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
    /// The ImageService's store and registry client; every call on it
    /// runs on the worker pool.
    images: Arc<ImageService>,
}

const RUNTIME_NAME: &str = "crisp";
const CRI_VERSION: &str = "v1";

impl Dispatcher {
    pub fn new(config: Arc<Config>, policy: Policy) -> Result<Self, String> {
        let pod_cidr = std::fs::read(runtime_config_path(&config))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v.get("pod_cidr")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let images = Arc::new(ImageService::new(&config)?);
        Ok(Self {
            config,
            policy,
            cgroups: CgroupMode::detect(),
            pod_cidr: Arc::new(Mutex::new(pod_cidr)),
            images,
        })
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
            Method::PullImage
            | Method::ListImages
            | Method::StreamImages
            | Method::ImageStatus
            | Method::RemoveImage
            | Method::ImageFsInfo => self.image_call(method, message, conn, call, workers),
            _ => Handled::Reply(Err(Status::unimplemented(format!(
                "crisp does not implement {} yet",
                method.path
            )))),
        }
    }

    /// The ImageService: decode here, do the work (network, disk) on a
    /// worker.
    fn image_call(
        &self,
        method: &MethodDesc,
        message: Bytes,
        conn: usize,
        call: u32,
        workers: &Workers,
    ) -> Handled {
        let images = Arc::clone(&self.images);
        let spec_image = |s: Option<cri::ImageSpec>| s.map(|s| s.image).unwrap_or_default();
        let filter_image = |f: Option<cri::ImageFilter>| spec_image(f.and_then(|f| f.image));
        let job: Box<dyn FnOnce() -> crate::workers::Reply + Send> = match method.method {
            Method::PullImage => {
                let req = match decode::<cri::PullImageRequest>(method, message) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let image = spec_image(req.image);
                let auth = req.auth.unwrap_or_default();
                let creds = match Credentials::from_auth(
                    &auth.username,
                    &auth.password,
                    &auth.auth,
                    &auth.identity_token,
                    &auth.registry_token,
                ) {
                    Ok(c) => c,
                    Err(e) => return Handled::Reply(Err(Status::invalid_argument(e))),
                };
                Box::new(move || {
                    let id = images.pull(&image, &creds).map_err(|e| e.to_status())?;
                    Ok(cri::PullImageResponse { image_ref: id }.encode_to_vec())
                })
            }
            Method::ListImages => {
                let req = match decode::<cri::ListImagesRequest>(method, message) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let filter = filter_image(req.filter);
                Box::new(move || {
                    let images = images.list(&filter).map_err(|e| e.to_status())?;
                    Ok(cri::ListImagesResponse { images }.encode_to_vec())
                })
            }
            Method::StreamImages => {
                // One message with every image: the server-streaming path
                // of a deferred call carries one reply.
                let req = match decode::<cri::StreamImagesRequest>(method, message) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let filter = filter_image(req.filter);
                Box::new(move || {
                    let images = images.list(&filter).map_err(|e| e.to_status())?;
                    Ok(cri::StreamImagesResponse { images }.encode_to_vec())
                })
            }
            Method::ImageStatus => {
                let req = match decode::<cri::ImageStatusRequest>(method, message) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let image = spec_image(req.image);
                let verbose = req.verbose;
                Box::new(move || {
                    // Not found is an empty answer, not an error.
                    let (image, info) =
                        images.status(&image, verbose).map_err(|e| e.to_status())?;
                    Ok(cri::ImageStatusResponse { image, info }.encode_to_vec())
                })
            }
            Method::RemoveImage => {
                let req = match decode::<cri::RemoveImageRequest>(method, message) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let image = spec_image(req.image);
                Box::new(move || {
                    images.remove(&image).map_err(|e| e.to_status())?;
                    Ok(cri::RemoveImageResponse {}.encode_to_vec())
                })
            }
            Method::ImageFsInfo => {
                if let Err(s) = decode::<cri::ImageFsInfoRequest>(method, message) {
                    return Handled::Reply(Err(s));
                }
                Box::new(move || Ok(images.fs_info().map_err(|e| e.to_status())?.encode_to_vec()))
            }
            _ => unreachable!("only ImageService methods come here"),
        };
        match workers.submit(conn, call, job) {
            Ok(()) => Handled::Deferred,
            Err(_) => Handled::Reply(Err(Status::resource_exhausted(
                "crispd's worker queue is full",
            ))),
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
