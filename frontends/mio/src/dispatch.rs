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
use crate::cri_host::{self, CriHost};
use crate::host::{self, CgroupMode};
use crate::image::registry::Credentials;
use crate::image::ImageService;
use crate::persist;
use crate::pods::{container, Host};
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
    /// What the CRI actions run against.
    pub host: Arc<Host>,
    /// Image IDs containers use; RemoveImage refuses to delete them.
    pub in_use: Arc<Mutex<std::collections::HashSet<String>>>,
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
        let mut images = ImageService::new(&config)?;
        let in_use: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        let users = Arc::clone(&in_use);
        images.set_in_use(Box::new(move |r| {
            let users = users.lock().ok()?;
            users.contains(&r.id).then(|| "a container".to_owned())
        }));
        let images = Arc::new(images);
        let host = Arc::new(Host::new(Arc::clone(&config), Arc::clone(&images))?);
        Ok(Self {
            config,
            policy,
            cgroups: CgroupMode::detect(),
            pod_cidr: Arc::new(Mutex::new(pod_cidr)),
            images,
            host,
            in_use,
        })
    }

    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups
    }

    /// Handle one complete request: check the caller, decode, answer (or
    /// defer to the worker pool).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(
        &self,
        server: &mut Server,
        conn: usize,
        peer: Peer,
        call: &CallInfo,
        message: Bytes,
        workers: &Workers,
        cri: &mut CriHost,
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
        match self.handle(method, message, conn, call.id, workers, cri) {
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
        cri: &mut CriHost,
    ) -> Handled {
        if let Some(req) = crisp_core::cri::Request::decode(method.method, &message) {
            let req = match req {
                Ok(r) => r,
                Err(s) => return Handled::Reply(Err(s)),
            };
            return self.cri_call(req, conn, call, workers, cri);
        }
        match method.method {
            Method::GetContainerEvents => {
                if let Err(s) = decode::<cri::GetEventsRequest>(method, message) {
                    return Handled::Reply(Err(s));
                }
                cri.subscribers.push((conn, call));
                Handled::Deferred
            }
            Method::ExecSync => {
                let req = match decode::<cri::ExecSyncRequest>(method, message) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let id = match running(cri, &req.container_id) {
                    Ok(id) => id,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let host = Arc::clone(&self.host);
                submit(workers, conn, call, move || {
                    container::exec_sync(&host, &id, req.cmd, req.timeout)
                        .map(|r| r.encode_to_vec())
                })
            }
            Method::ReopenContainerLog => {
                let req = match decode::<cri::ReopenContainerLogRequest>(method, message) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let id = match running(cri, &req.container_id) {
                    Ok(id) => id,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                let host = Arc::clone(&self.host);
                submit(workers, conn, call, move || {
                    container::reopen_log(&host, &id)
                        .map(|()| cri::ReopenContainerLogResponse {}.encode_to_vec())
                })
            }
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

    /// The pod and container lifecycle: the state machine decides; stats
    /// skeletons get their usage numbers on a worker.
    fn cri_call(
        &self,
        req: crisp_core::cri::Request,
        conn: usize,
        call: u32,
        workers: &Workers,
        cri: &mut CriHost,
    ) -> Handled {
        use crisp_core::cri::{Request, Response};
        let host = Arc::clone(&self.host);
        match req {
            Request::ContainerStats(_)
            | Request::ListContainerStats(_)
            | Request::PodSandboxStats(_)
            | Request::ListPodSandboxStats(_) => {
                let resp = match cri.query(req) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                submit(workers, conn, call, move || {
                    Ok(match resp {
                        Response::ContainerStats(mut r) => {
                            if let Some(s) = r.stats.as_mut() {
                                cri_host::fill_container_stats(&host, s);
                            }
                            r.encode_to_vec()
                        }
                        Response::ListContainerStats(mut r) => {
                            for s in &mut r.stats {
                                cri_host::fill_container_stats(&host, s);
                            }
                            r.encode_to_vec()
                        }
                        Response::PodSandboxStats(mut r) => {
                            if let Some(s) = r.stats.as_mut() {
                                cri_host::fill_pod_stats(&host, s);
                            }
                            r.encode_to_vec()
                        }
                        Response::ListPodSandboxStats(mut r) => {
                            for s in &mut r.stats {
                                cri_host::fill_pod_stats(&host, s);
                            }
                            r.encode_to_vec()
                        }
                        other => other.encode_to_vec(),
                    })
                })
            }
            req => match cri.handle(conn, call, req) {
                Some(reply) => Handled::Reply(reply),
                None => Handled::Deferred,
            },
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
        let job = match self.image_job(method, message) {
            Ok(job) => job,
            Err(status) => return Handled::Reply(Err(status)),
        };
        match workers.submit(conn, call, job) {
            Ok(()) => Handled::Deferred,
            Err(_) => Handled::Reply(Err(Status::resource_exhausted(
                "crispd's worker queue is full",
            ))),
        }
    }

    /// Decode an ImageService request into the job that answers it.
    fn image_job(&self, method: &MethodDesc, message: Bytes) -> Result<ImageJob, Status> {
        let images = Arc::clone(&self.images);
        let spec_image = |s: Option<cri::ImageSpec>| s.map(|s| s.image).unwrap_or_default();
        let filter_image = |f: Option<cri::ImageFilter>| spec_image(f.and_then(|f| f.image));
        let job: ImageJob = match method.method {
            Method::PullImage => {
                let req = decode::<cri::PullImageRequest>(method, message)?;
                let image = spec_image(req.image);
                let auth = req.auth.unwrap_or_default();
                let creds = Credentials::from_auth(
                    &auth.username,
                    &auth.password,
                    &auth.auth,
                    &auth.identity_token,
                    &auth.registry_token,
                )
                .map_err(Status::invalid_argument)?;
                Box::new(move || {
                    let id = images.pull(&image, &creds).map_err(|e| e.to_status())?;
                    Ok(cri::PullImageResponse { image_ref: id }.encode_to_vec())
                })
            }
            Method::ListImages => {
                let req = decode::<cri::ListImagesRequest>(method, message)?;
                let filter = filter_image(req.filter);
                Box::new(move || {
                    let images = images.list(&filter).map_err(|e| e.to_status())?;
                    Ok(cri::ListImagesResponse { images }.encode_to_vec())
                })
            }
            Method::StreamImages => {
                // One message with every image: the server-streaming path
                // of a deferred call carries one reply.
                let req = decode::<cri::StreamImagesRequest>(method, message)?;
                let filter = filter_image(req.filter);
                Box::new(move || {
                    let images = images.list(&filter).map_err(|e| e.to_status())?;
                    Ok(cri::StreamImagesResponse { images }.encode_to_vec())
                })
            }
            Method::ImageStatus => {
                let req = decode::<cri::ImageStatusRequest>(method, message)?;
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
                let req = decode::<cri::RemoveImageRequest>(method, message)?;
                let image = spec_image(req.image);
                Box::new(move || {
                    images.remove(&image).map_err(|e| e.to_status())?;
                    Ok(cri::RemoveImageResponse {}.encode_to_vec())
                })
            }
            Method::ImageFsInfo => {
                decode::<cri::ImageFsInfoRequest>(method, message)?;
                Box::new(move || Ok(images.fs_info().map_err(|e| e.to_status())?.encode_to_vec()))
            }
            _ => {
                return Err(Status::internal(format!(
                    "{} is not an ImageService method",
                    method.path
                )))
            }
        };
        Ok(job)
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
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: crate::pods::mounts::recursive_read_only_supported(
                    ),
                    user_namespaces: false,
                }),
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

fn submit(
    workers: &Workers,
    conn: usize,
    call: u32,
    job: impl FnOnce() -> crate::workers::Reply + Send + 'static,
) -> Handled {
    match workers.submit(conn, call, job) {
        Ok(()) => Handled::Deferred,
        Err(_) => Handled::Reply(Err(Status::resource_exhausted(
            "crispd's worker queue is full",
        ))),
    }
}

/// The full ID of a RUNNING container, or why not.
fn running(cri: &mut CriHost, id: &str) -> Result<String, Status> {
    let (id, state) = cri.container(id)?;
    if state != cri::ContainerState::ContainerRunning as i32 {
        return Err(Status::failed_precondition(format!(
            "container {id} is not running"
        )));
    }
    Ok(id)
}

/// The work that answers one ImageService call, run on a worker.
type ImageJob = Box<dyn FnOnce() -> crate::workers::Reply + Send>;

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
