//! From a routed call to its answer: the access check, request decoding,
//! and one handler per CRI method. Handlers that would block hand their
//! work to the worker pool and answer when it is done.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crisp_core::grpc::reflection::Session;
use crisp_core::grpc::server::{CallId, CallInfo, Server};
use crisp_core::grpc::{Code, Status};
use crisp_image::registry::Credentials;
use crisp_image::{ImageService, Stop};
use crisp_proto::cri;
use crisp_proto::methods::{Method, MethodDesc};
use prost::Message;

use crate::config::Config;
use crate::cri_host::{self, CriHost};
use crate::discovery::Discovery;
use crate::error::StartError;
use crate::host::{self, CgroupMode};
use crate::metrics;
use crate::persist;
use crate::pods::{container, sandbox, Host};
use crate::policy::{Peer, Policy};
use crate::streaming::{self, Target, Ticket};
use crate::workers::Workers;
use crisp_core::streaming::{stream_options, Kind};

/// What became of a call handed to [`Dispatcher::dispatch`].
pub enum Outcome {
    /// Answered now with this status.
    Done(Code),
    /// Handed to a worker; the answer comes later. The stop, if any, is
    /// for the host to pull when the call goes away (cancelled, deadline,
    /// connection closed) so that its work stops too.
    Deferred(Option<Stop>),
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
    /// Where Exec, Attach and PortForward send their clients.
    pub streaming: Option<streaming::Handle>,
    /// gRPC health and server reflection.
    pub discovery: Discovery,
}

/// A client-streaming or bidirectional call being served: what answers its
/// messages.
pub enum Stream {
    /// `ServerReflectionInfo` (v1 or v1alpha).
    Reflection(Session),
}

/// Unsent answer bytes on one stream above which a reflection stream is
/// ended (RESOURCE_EXHAUSTED): a client that asks without reading cannot
/// make crispd buffer without bound. Several times the largest answer
/// (the CRI's file, ~100 KiB with its comments).
const STREAM_BACKLOG: usize = 1 << 20;

const RUNTIME_NAME: &str = "crisp";
const CRI_VERSION: &str = "v1";

impl Dispatcher {
    pub fn new(config: Arc<Config>, policy: Policy) -> Result<Self, StartError> {
        let pod_cidr = std::fs::read(runtime_config_path(&config))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v.get("pod_cidr")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let mut images = ImageService::new(&config.image_settings()).map_err(StartError::Images)?;
        let in_use: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
        let users = Arc::clone(&in_use);
        images.set_in_use(Box::new(move |r| {
            let users = users.lock().ok()?;
            users.contains(&r.id).then(|| "a container".to_owned())
        }));
        images.set_observer(Arc::new(crate::pull_bars::PullFiles::new(
            &config.runtime_dir,
        )));
        let images = Arc::new(images);
        let host = Arc::new(Host::new(Arc::clone(&config), Arc::clone(&images))?);
        let discovery = Discovery::new().map_err(StartError::Reflection)?;
        Ok(Self {
            config,
            policy,
            cgroups: CgroupMode::detect(),
            pod_cidr: Arc::new(Mutex::new(pod_cidr)),
            images,
            host,
            in_use,
            streaming: None,
            discovery,
        })
    }

    /// Who may call what; `conn.rs` checks TCP callers' credentials
    /// against it before a request is decoded.
    pub fn policy(&self) -> &Policy {
        &self.policy
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
            return finish(server, call.id, &permission_denied(peer, method));
        }
        let stop = Stop::caller(call.deadline);
        match self.handle(method, message, conn, call.id.get(), workers, cri, &stop) {
            Handled::Reply(Ok(bytes)) => {
                let sent = server.send_encoded(call.id, &bytes);
                let _ = server.finish(call.id, &Status::ok());
                match sent {
                    Ok(()) => Outcome::Done(Code::Ok),
                    Err(_) => Outcome::Done(Code::Internal),
                }
            }
            Handled::Reply(Err(status)) => finish(server, call.id, &status),
            Handled::Stream(messages) => {
                for m in &messages {
                    if server.send_encoded(call.id, m).is_err() {
                        return Outcome::Done(Code::Internal);
                    }
                }
                finish(server, call.id, &Status::ok())
            }
            Handled::Open(first) => {
                if server.send_encoded(call.id, &first).is_err() {
                    self.discovery.call_ended((conn, call.id.get()));
                    return Outcome::Done(Code::Internal);
                }
                Outcome::Deferred(None)
            }
            Handled::Deferred => Outcome::Deferred(None),
            Handled::DeferredStoppable => Outcome::Deferred(Some(stop)),
        }
    }

    /// A client-streaming or bidirectional call started: check the caller
    /// and set up what answers its messages. `None` when it was answered
    /// (refused) already.
    pub fn open_stream(&self, server: &mut Server, peer: Peer, call: &CallInfo) -> Option<Stream> {
        let method = call.method;
        let status = if !self.policy.allows(peer, method) {
            tracing::warn!(method = method.path, %peer, "permission denied");
            permission_denied(peer, method)
        } else {
            match method.method {
                Method::ServerReflectionInfo | Method::ServerReflectionInfoV1Alpha => {
                    return Some(Stream::Reflection(self.discovery.reflection_session()))
                }
                _ => Status::unimplemented(format!("{} is not served", method.path)),
            }
        };
        let _ = server.finish(call.id, &status);
        None
    }

    /// One message of a streaming call: answered, or the call ended with
    /// `Err(code)`.
    pub fn stream_message(
        &self,
        server: &mut Server,
        id: CallId,
        stream: &mut Stream,
        message: &[u8],
    ) -> Result<(), Code> {
        let Stream::Reflection(session) = stream;
        if server.connection().send_buffered(id) > STREAM_BACKLOG {
            let status = Status::resource_exhausted(
                "the client does not read its reflection answers; stream ended",
            );
            let _ = server.finish(id, &status);
            return Err(status.code);
        }
        let answer = self.discovery.reflect(session, message);
        match answer.map(|bytes| server.send_encoded(id, &bytes)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Code::Internal),
            Err(status) => {
                let _ = server.finish(id, &status);
                Err(status.code)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle(
        &self,
        method: &MethodDesc,
        message: Bytes,
        conn: usize,
        call: u32,
        workers: &Workers,
        cri: &mut CriHost,
        stop: &Stop,
    ) -> Handled {
        if let Some(req) = crisp_core::cri::Request::decode(method.method, &message) {
            let req = match req {
                Ok(r) => r,
                Err(s) => return Handled::Reply(Err(s)),
            };
            return self.cri_call(req, Shape::List, conn, call, workers, cri);
        }
        if let Some(req) = crisp_core::cri::Request::decode_stream(method.method, &message) {
            let req = match req {
                Ok(r) => r,
                Err(s) => return Handled::Reply(Err(s)),
            };
            return self.cri_call(req, Shape::Stream, conn, call, workers, cri);
        }
        match method.method {
            Method::GetContainerEvents => {
                if let Err(s) = decode::<cri::GetEventsRequest>(method, message) {
                    return Handled::Reply(Err(s));
                }
                cri.subscribers.push((conn, call));
                Handled::Deferred
            }
            Method::ExecSync => self.on_checked(
                decode::<cri::ExecSyncRequest>(method, message),
                (conn, call),
                workers,
                cri,
                |cri, req| running(cri, &req.container_id),
                |host, id, req| {
                    container::exec_sync(host, &id, req.cmd, req.timeout).map(|r| r.encode_to_vec())
                },
            ),
            Method::Exec => reply(decode::<cri::ExecRequest>(method, message).and_then(|req| {
                let id = running(cri, &req.container_id)?;
                if req.cmd.is_empty() {
                    return Err(Status::invalid_argument("Exec needs a command"));
                }
                let o = stream_options(req.stdin, req.stdout, req.stderr, req.tty)?;
                let target = Target::Exec {
                    container: id,
                    cmd: req.cmd,
                };
                let url = self.stream_url(Kind::Exec(o), target)?;
                Ok(cri::ExecResponse { url })
            })),
            Method::Attach => reply(decode::<cri::AttachRequest>(method, message).and_then(
                |req| {
                    let id = running(cri, &req.container_id)?;
                    let o = stream_options(req.stdin, req.stdout, req.stderr, req.tty)?;
                    let url = self.stream_url(Kind::Attach(o), Target::Attach { container: id })?;
                    Ok(cri::AttachResponse { url })
                },
            )),
            Method::PortForward => reply(
                decode::<cri::PortForwardRequest>(method, message).and_then(|req| {
                    let id = ready_pod(cri, &req.pod_sandbox_id)?;
                    if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
                        return Err(Status::invalid_argument(format!(
                            "port {p} is not a TCP port"
                        )));
                    }
                    let netns = self.host.pod_dir(&id).join("ns").join("net");
                    let target = Target::PortForward {
                        netns: netns.exists().then_some(netns),
                        pod: id,
                    };
                    let url = self.stream_url(Kind::PortForward, target)?;
                    Ok(cri::PortForwardResponse { url })
                }),
            ),
            Method::ReopenContainerLog => self.on_checked(
                decode::<cri::ReopenContainerLogRequest>(method, message),
                (conn, call),
                workers,
                cri,
                |cri, req| running(cri, &req.container_id),
                |host, id, _| {
                    container::reopen_log(host, &id)
                        .map(|()| cri::ReopenContainerLogResponse {}.encode_to_vec())
                },
            ),
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
                        crate::pods::write_failed(
                            format_args!("cannot store runtime config in {}", path.display()),
                            &e,
                        )
                    })?;
                    if let Ok(mut c) = shared.lock() {
                        *c = cidr;
                    }
                    Ok(cri::UpdateRuntimeConfigResponse {}.encode_to_vec())
                };
                queued(workers.submit(conn, call, job))
            }
            Method::ListMetricDescriptors => reply(
                decode::<cri::ListMetricDescriptorsRequest>(method, message)
                    .map(|_| metrics::descriptors()),
            ),
            Method::ListPodSandboxMetrics | Method::StreamPodSandboxMetrics => {
                self.pod_metrics(method, message, conn, call, workers, cri)
            }
            Method::UpdatePodSandboxResources => self.on_checked(
                decode::<cri::UpdatePodSandboxResourcesRequest>(method, message),
                (conn, call),
                workers,
                cri,
                |cri, req| ready_pod(cri, &req.pod_sandbox_id),
                |host, id, req| {
                    let (o, r) = (req.overhead.as_ref(), req.resources.as_ref());
                    sandbox::update_resources(host, &id, o, r)
                        .map(|()| cri::UpdatePodSandboxResourcesResponse {}.encode_to_vec())
                },
            ),
            Method::HealthCheck => Handled::Reply(self.discovery.check(&message)),
            Method::HealthList => Handled::Reply(self.discovery.list(&message)),
            Method::HealthWatch => match self.discovery.watch((conn, call), &message) {
                Ok(first) => Handled::Open(first),
                Err(s) => Handled::Reply(Err(s)),
            },
            Method::ListImages | Method::StreamImages => {
                self.list_images(method, message, conn, call, workers)
            }
            Method::PullImage => self.pull_image(method, message, conn, call, workers, stop),
            Method::ImageStatus | Method::RemoveImage | Method::ImageFsInfo => {
                self.image_call(method, message, conn, call, workers)
            }
            _ => Handled::Reply(Err(Status::unimplemented(format!(
                "crisp does not implement {} yet",
                method.path
            )))),
        }
    }

    /// A single-use URL on the streaming server for `kind` on `target`.
    fn stream_url(&self, kind: Kind, target: Target) -> Result<String, Status> {
        let server = self
            .streaming
            .as_ref()
            .ok_or_else(|| Status::unavailable("the streaming server is not running"))?;
        server.url(Ticket { kind, target }, std::time::Instant::now())
    }

    /// A call on one container or pod: `check` asks the state machine
    /// for the object's full ID (a running container, a ready pod), then
    /// `job` does the work on a worker with it.
    fn on_checked<M: Send + 'static>(
        &self,
        request: Result<M, Status>,
        (conn, call): (usize, u32),
        workers: &Workers,
        cri: &mut CriHost,
        check: impl FnOnce(&mut CriHost, &M) -> Result<String, Status>,
        job: impl FnOnce(&Host, String, M) -> crate::workers::Reply + Send + 'static,
    ) -> Handled {
        let checked = request.and_then(|req| Ok((check(cri, &req)?, req)));
        let (id, req) = match checked {
            Ok(c) => c,
            Err(s) => return Handled::Reply(Err(s)),
        };
        let host = Arc::clone(&self.host);
        submit(workers, conn, call, move || job(&host, id, req))
    }

    /// The pod and container lifecycle: the state machine decides; stats
    /// skeletons get their usage numbers on a worker. A `Stream*` listing
    /// comes here as its `List*` twin (`shape`), and is answered with the
    /// same items in batches.
    fn cri_call(
        &self,
        req: crisp_core::cri::Request,
        shape: Shape,
        conn: usize,
        call: u32,
        workers: &Workers,
        cri: &mut CriHost,
    ) -> Handled {
        use crisp_core::cri::Request;
        let host = Arc::clone(&self.host);
        match req {
            Request::ContainerStats(_)
            | Request::ListContainerStats(_)
            | Request::PodSandboxStats(_)
            | Request::ListPodSandboxStats(_) => {
                let mut resp = match cri.query(req) {
                    Ok(r) => r,
                    Err(s) => return Handled::Reply(Err(s)),
                };
                submit_shaped(workers, conn, call, shape, move || {
                    cri_host::fill_stats(&host, &mut resp);
                    Ok(resp)
                })
            }
            req if shape == Shape::Stream => {
                match cri.query(req).and_then(|resp| shape.messages(resp)) {
                    Ok(messages) => Handled::Stream(messages),
                    Err(s) => Handled::Reply(Err(s)),
                }
            }
            req => match cri.handle(conn, call, req) {
                Some(reply) => Handled::Reply(reply),
                None => Handled::Deferred,
            },
        }
    }

    /// ListPodSandboxMetrics and StreamPodSandboxMetrics: the READY pods
    /// and their containers from the state machine, their figures read on
    /// a worker.
    fn pod_metrics(
        &self,
        method: &MethodDesc,
        message: Bytes,
        conn: usize,
        call: u32,
        workers: &Workers,
        cri: &mut CriHost,
    ) -> Handled {
        use crisp_core::cri::{Request, Response};
        let shape = if method.method == Method::StreamPodSandboxMetrics {
            decode::<cri::StreamPodSandboxMetricsRequest>(method, message).map(|_| Shape::Stream)
        } else {
            decode::<cri::ListPodSandboxMetricsRequest>(method, message).map(|_| Shape::List)
        };
        let shape = match shape {
            Ok(s) => s,
            Err(s) => return Handled::Reply(Err(s)),
        };
        let pods = match cri.query(Request::ListPodSandboxStats(Default::default())) {
            Ok(Response::ListPodSandboxStats(r)) => r.stats,
            Ok(_) => {
                return Handled::Reply(Err(Status::internal(
                    "pod stats came back as another answer",
                )))
            }
            Err(s) => return Handled::Reply(Err(s)),
        };
        let images: HashMap<String, String> =
            match cri.query(Request::ListContainers(Default::default())) {
                Ok(Response::ListContainers(r)) => r
                    .containers
                    .into_iter()
                    .map(|c| (c.id, c.image.map(|i| i.image).unwrap_or_default()))
                    .collect(),
                _ => HashMap::new(),
            };
        let host = Arc::clone(&self.host);
        submit_items(
            workers,
            (conn, call),
            shape,
            move || Ok(metrics::pod_metrics(&host, pods, &images)),
            |pod_metrics| cri::ListPodSandboxMetricsResponse { pod_metrics },
            |pod_sandbox_metrics| cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )
    }

    /// ListImages and StreamImages: one listing, answered whole or in
    /// batches.
    fn list_images(
        &self,
        method: &MethodDesc,
        message: Bytes,
        conn: usize,
        call: u32,
        workers: &Workers,
    ) -> Handled {
        let decoded = if method.method == Method::StreamImages {
            decode::<cri::StreamImagesRequest>(method, message).map(|r| (r.filter, Shape::Stream))
        } else {
            decode::<cri::ListImagesRequest>(method, message).map(|r| (r.filter, Shape::List))
        };
        let (filter, shape) = match decoded {
            Ok(d) => d,
            Err(s) => return Handled::Reply(Err(s)),
        };
        let filter = filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .unwrap_or_default();
        let images = Arc::clone(&self.images);
        submit_items(
            workers,
            (conn, call),
            shape,
            move || images.list(&filter).map_err(|e| e.to_status()),
            |images| cri::ListImagesResponse { images },
            |images| cri::StreamImagesResponse { images },
        )
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
        queued(workers.submit(conn, call, job))
    }

    /// PullImage, on the pull pool: a slow registry holds those threads,
    /// never the general pool's. The pull stops when `stop` does (the
    /// call's deadline, or the host cancels it when the caller goes),
    /// unless another caller waits for the same image.
    fn pull_image(
        &self,
        method: &MethodDesc,
        message: Bytes,
        conn: usize,
        call: u32,
        workers: &Workers,
        stop: &Stop,
    ) -> Handled {
        let req = match decode::<cri::PullImageRequest>(method, message) {
            Ok(r) => r,
            Err(s) => return Handled::Reply(Err(s)),
        };
        let image = req.image.map(|s| s.image).unwrap_or_default();
        let auth = req.auth.unwrap_or_default();
        let creds = match Credentials::from_auth(
            &auth.username,
            &auth.password,
            &auth.auth,
            &auth.identity_token,
            &auth.registry_token,
        ) {
            Ok(c) => c,
            Err(e) => return Handled::Reply(Err(Status::invalid_argument(e.to_string()))),
        };
        let images = Arc::clone(&self.images);
        let stop = stop.clone();
        let job = move || {
            let id = images
                .pull(&image, &creds, &stop)
                .map_err(|e| e.to_status())?;
            Ok(cri::PullImageResponse { image_ref: id }.encode_to_vec())
        };
        match workers.submit_pull(conn, call, job) {
            Ok(()) => Handled::DeferredStoppable,
            Err(_) => Handled::Reply(Err(Status::resource_exhausted(
                "crispd's pull queue is full (images.pull_queue)",
            ))),
        }
    }

    /// Decode an ImageService request into the job that answers it.
    fn image_job(&self, method: &MethodDesc, message: Bytes) -> Result<ImageJob, Status> {
        let images = Arc::clone(&self.images);
        let spec_image = |s: Option<cri::ImageSpec>| s.map(|s| s.image).unwrap_or_default();
        let job: ImageJob = match method.method {
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
                "streamServer": self.streaming.as_ref().map(|h| h.addr.to_string()),
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
            // SupplementalGroupsPolicy Merge and Strict, and
            // ContainerStatus.user (see oci_spec::resolve_user).
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                ..Default::default()
            }),
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
    /// A `Stream*` listing answered now: its messages, then OK.
    Stream(Vec<Vec<u8>>),
    /// A server stream's first message; the call stays open (Watch).
    Open(Vec<u8>),
    Deferred,
    /// Deferred, with work that stops when the call's stop does.
    DeferredStoppable,
}

/// How a listing is answered: one `List*` message, or the batches of its
/// `Stream*` twin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    List,
    Stream,
}

impl Shape {
    /// The messages that answer a listing in this shape: the one `List*`
    /// message, or the `Stream*` batches (on the wire, a unary answer is
    /// a stream of one message).
    fn messages(self, resp: crisp_core::cri::Response) -> Result<Vec<Vec<u8>>, Status> {
        match self {
            Shape::List => Ok(vec![resp.encode_to_vec()]),
            Shape::Stream => resp.encode_stream().ok_or_else(|| {
                Status::internal("crispd answered a stream with a response that is no listing")
            }),
        }
    }
}

/// Run `job` on a worker; answer the call (`conn`, `call`) with its items
/// as one `List*` message (`list`) or in `Stream*` batches (`stream`).
fn submit_items<T, L, S>(
    workers: &Workers,
    (conn, call): (usize, u32),
    shape: Shape,
    job: impl FnOnce() -> Result<Vec<T>, Status> + Send + 'static,
    list: impl FnOnce(Vec<T>) -> L + Send + 'static,
    stream: impl Fn(Vec<T>) -> S + Send + 'static,
) -> Handled
where
    T: Message + Send + 'static,
    L: Message,
    S: Message,
{
    let messages = move || {
        let items = job()?;
        Ok(match shape {
            Shape::List => vec![list(items).encode_to_vec()],
            Shape::Stream => crisp_core::cri::stream_batches(items)
                .into_iter()
                .map(|batch| stream(batch).encode_to_vec())
                .collect(),
        })
    };
    queued(workers.submit_stream(conn, call, messages))
}

/// Run `job` on a worker and answer with its response in `shape`.
fn submit_shaped(
    workers: &Workers,
    conn: usize,
    call: u32,
    shape: Shape,
    job: impl FnOnce() -> Result<crisp_core::cri::Response, Status> + Send + 'static,
) -> Handled {
    queued(workers.submit_stream(conn, call, move || shape.messages(job()?)))
}

fn submit(
    workers: &Workers,
    conn: usize,
    call: u32,
    job: impl FnOnce() -> crate::workers::Reply + Send + 'static,
) -> Handled {
    queued(workers.submit(conn, call, job))
}

/// The answer to a call handed to the worker pool: later, or now when
/// its queue is full.
fn queued(submitted: Result<(), crate::workers::Busy>) -> Handled {
    match submitted {
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

/// The full ID of a READY pod sandbox, or why not.
fn ready_pod(cri: &mut CriHost, id: &str) -> Result<String, Status> {
    use crisp_core::cri::{Request, Response};
    let req = Request::PodSandboxStatus(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    });
    let Response::PodSandboxStatus(r) = cri.query(req)? else {
        return Err(Status::internal("pod status came back as another answer"));
    };
    let status = r.status.unwrap_or_default();
    if status.state != cri::PodSandboxState::SandboxReady as i32 {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready",
            status.id
        )));
    }
    Ok(status.id)
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

fn permission_denied(peer: Peer, method: &MethodDesc) -> Status {
    Status::permission_denied(format!(
        "caller {peer} may not call {} (see [access] in crispd's config)",
        method.path
    ))
}

fn finish(server: &mut Server, id: CallId, status: &Status) -> Outcome {
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

/// The dispatcher behind a real connection (see [`crate::conn::tests`]).
#[cfg(test)]
mod tests {
    use crisp_core::grpc::Code;
    use crisp_proto::cri;
    use prost::Message;

    use crate::conn::tests::{Harness, VERSION};
    use crate::policy::Peer;

    const USER: Peer = Peer::Local {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };
    const ROOT: Peer = Peer::Local {
        uid: 0,
        gid: 0,
        pid: 1,
    };

    #[test]
    fn a_caller_the_policy_refuses_is_told_which_method() {
        let mut h = Harness::new(USER);
        let answer = h.call(VERSION, &cri::VersionRequest::default().encode_to_vec());
        assert_eq!(answer.status.code, Code::PermissionDenied);
        assert!(answer.messages.is_empty());
        assert_eq!(
            answer.status.message,
            format!("caller uid=1000 gid=1000 pid=1 may not call {VERSION} (see [access] in crispd's config)")
        );
    }

    #[test]
    fn an_unserved_method_is_unimplemented() {
        let mut h = Harness::new(ROOT);
        let path = "/runtime.v1.RuntimeService/CheckpointContainer";
        let answer = h.call(
            path,
            &cri::CheckpointContainerRequest::default().encode_to_vec(),
        );
        assert_eq!(answer.status.code, Code::Unimplemented);
        assert!(
            answer.status.message.contains(path),
            "{}",
            answer.status.message
        );
    }

    #[test]
    fn an_unknown_method_is_unimplemented() {
        let mut h = Harness::new(ROOT);
        let answer = h.call("/runtime.v1.RuntimeService/NoSuchMethod", &[]);
        assert_eq!(answer.status.code, Code::Unimplemented);
    }

    #[test]
    fn a_body_that_does_not_decode_is_an_invalid_argument() {
        let mut h = Harness::new(ROOT);
        // Field 1 as a length-delimited string running past the end.
        let answer = h.call(VERSION, &[0x0a, 0x05, b'v']);
        assert_eq!(answer.status.code, Code::InvalidArgument);
        assert!(
            answer
                .status
                .message
                .starts_with("cannot decode runtime.v1.VersionRequest for Version: "),
            "{}",
            answer.status.message
        );
    }

    #[test]
    fn health_check_answers_per_service() {
        use crisp_proto::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
        let mut h = Harness::new(ROOT);
        let ask = |service: &str| {
            HealthCheckRequest {
                service: service.into(),
            }
            .encode_to_vec()
        };
        for service in ["", "runtime.v1.RuntimeService", "runtime.v1.ImageService"] {
            let answer = h.call("/grpc.health.v1.Health/Check", &ask(service));
            assert_eq!(answer.status.code, Code::Ok, "{}", answer.status.message);
            let r = HealthCheckResponse::decode(&answer.messages[0][..]).unwrap();
            assert_eq!(r.status, 1, "{service:?} is SERVING");
        }
        let answer = h.call("/grpc.health.v1.Health/Check", &ask("runtime.v1.Nope"));
        assert_eq!(answer.status.code, Code::NotFound);
    }

    #[test]
    fn reflection_answers_each_request_of_a_stream() {
        use crisp_proto::grpc::reflection::v1::server_reflection_request::MessageRequest;
        use crisp_proto::grpc::reflection::v1::server_reflection_response::MessageResponse;
        use crisp_proto::grpc::reflection::v1::{
            ServerReflectionRequest, ServerReflectionResponse,
        };
        let mut h = Harness::new(ROOT);
        let ask = |r: MessageRequest| {
            ServerReflectionRequest {
                host: String::new(),
                message_request: Some(r),
            }
            .encode_to_vec()
        };
        for path in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            let answer = h.stream(
                path,
                &[
                    ask(MessageRequest::ListServices(String::new())),
                    ask(MessageRequest::FileContainingSymbol(
                        "runtime.v1.CreateContainerRequest".into(),
                    )),
                    ask(MessageRequest::FileByFilename("nope.proto".into())),
                ],
            );
            assert_eq!(answer.status.code, Code::Ok, "{}", answer.status.message);
            let responses: Vec<_> = answer
                .messages
                .iter()
                .map(|m| {
                    ServerReflectionResponse::decode(&m[..])
                        .unwrap()
                        .message_response
                })
                .collect();
            assert!(
                matches!(&responses[0], Some(MessageResponse::ListServicesResponse(l)) if l.service.len() == 5)
            );
            assert!(
                matches!(&responses[1], Some(MessageResponse::FileDescriptorResponse(f)) if f.file_descriptor_proto.len() == 1)
            );
            assert!(
                matches!(&responses[2], Some(MessageResponse::ErrorResponse(e)) if e.error_code == 5)
            );
            assert_eq!(responses.len(), 3);
        }
    }

    #[test]
    fn a_caller_without_a_rule_gets_no_reflection() {
        let mut h = Harness::new(USER);
        let answer = h.stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            &[vec![0x3a, 0x00]],
        );
        assert_eq!(answer.status.code, Code::PermissionDenied);
        let answer = h.call("/grpc.health.v1.Health/Check", &[]);
        assert_eq!(answer.status.code, Code::PermissionDenied);
    }

    #[test]
    fn a_bad_reflection_request_ends_its_stream() {
        let mut h = Harness::new(ROOT);
        let answer = h.stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            &[vec![0x3a, 0x00], vec![0x3a, 0x09]],
        );
        assert_eq!(answer.status.code, Code::InvalidArgument);
        assert_eq!(answer.messages.len(), 1, "the first request was answered");
    }
}
