//! The method table: one entry per rpc crispd serves, with its gRPC path,
//! call kind, message types and whether it only reads state. First the 41
//! of the CRI (`runtime.v1.RuntimeService` and `runtime.v1.ImageService`,
//! in [`Method`] order `0..CRI_METHOD_COUNT`), then gRPC's health and
//! server reflection services.
//!
//! The table is written by hand (through the `methods!` macro below) and
//! checked against the compiled descriptor set by `tests/methods.rs`.

/// The gRPC call shape of an rpc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response (unused by CRI v1).
    ClientStreaming,
    /// Streams both ways (server reflection).
    BidiStreaming,
}

/// Description of one rpc.
#[derive(Debug, PartialEq, Eq)]
pub struct MethodDesc {
    /// Which rpc.
    pub method: Method,
    /// Service it belongs to.
    pub service: Service,
    /// Rpc name, e.g. `"Version"`.
    pub name: &'static str,
    /// HTTP/2 `:path`, e.g. `"/runtime.v1.RuntimeService/Version"`.
    pub path: &'static str,
    /// Call shape.
    pub kind: CallKind,
    /// Fully qualified request message name.
    pub request_type: &'static str,
    /// Fully qualified response message name.
    pub response_type: &'static str,
    /// The rpc only reads state (used by access policies).
    pub read_only: bool,
}

macro_rules! methods {
    (
        $(
            $(#[$svc_doc:meta])*
            $svc:ident $pkg:literal $svc_name:literal {
                $( $method:ident $(as $rpc:ident)? ( $req:ident ) -> $kind:ident $resp:ident, $ro:ident; )*
            }
        )*
    ) => {
        /// The service an rpc belongs to.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Service {
            $(
                $(#[$svc_doc])*
                $svc,
            )*
        }

        impl Service {
            /// Fully qualified proto name, e.g. `runtime.v1.RuntimeService`.
            pub const fn full_name(self) -> &'static str {
                match self {
                    $(Service::$svc => concat!($pkg, ".", $svc_name),)*
                }
            }
        }

        /// Every service of the table, in table order.
        pub const SERVICES: &[Service] = &[$(Service::$svc,)*];

        /// One variant per rpc; `METHODS[m as usize]` describes `m`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Method {
            $($(
                #[doc = concat!("`", $pkg, ".", $svc_name, "/", methods!(@rpc $method $($rpc)?), "`.")]
                $method,
            )*)*
        }

        /// Every rpc, in `Method` order.
        pub static METHODS: [MethodDesc; 46] = [
            $($(
                MethodDesc {
                    method: Method::$method,
                    service: Service::$svc,
                    name: methods!(@rpc $method $($rpc)?),
                    path: concat!("/", $pkg, ".", $svc_name, "/", methods!(@rpc $method $($rpc)?)),
                    kind: CallKind::$kind,
                    request_type: concat!($pkg, ".", stringify!($req)),
                    response_type: concat!($pkg, ".", stringify!($resp)),
                    read_only: methods!(@ro $ro),
                },
            )*)*
        ];

        /// Finds the rpc for an HTTP/2 `:path` such as
        /// `/runtime.v1.RuntimeService/Version`. Exact, case-sensitive match;
        /// no allocation.
        pub fn lookup(path: &[u8]) -> Option<&'static MethodDesc> {
            // Every valid path is ASCII, so a non-UTF-8 path matches nothing.
            let path = core::str::from_utf8(path).ok()?;
            let method = match path {
                $($(
                    concat!("/", $pkg, ".", $svc_name, "/", methods!(@rpc $method $($rpc)?)) => Method::$method,
                )*)*
                _ => return None,
            };
            Some(method.desc())
        }
    };
    (@rpc $method:ident) => { stringify!($method) };
    (@rpc $method:ident $rpc:ident) => { stringify!($rpc) };
    (@ro read) => { true };
    (@ro write) => { false };
}

methods! {
    /// `runtime.v1.RuntimeService`.
    Runtime "runtime.v1" "RuntimeService" {
        Version(VersionRequest) -> Unary VersionResponse, read;
        RunPodSandbox(RunPodSandboxRequest) -> Unary RunPodSandboxResponse, write;
        StopPodSandbox(StopPodSandboxRequest) -> Unary StopPodSandboxResponse, write;
        RemovePodSandbox(RemovePodSandboxRequest) -> Unary RemovePodSandboxResponse, write;
        PodSandboxStatus(PodSandboxStatusRequest) -> Unary PodSandboxStatusResponse, read;
        ListPodSandbox(ListPodSandboxRequest) -> Unary ListPodSandboxResponse, read;
        StreamPodSandboxes(StreamPodSandboxesRequest) -> ServerStreaming StreamPodSandboxesResponse, read;
        CreateContainer(CreateContainerRequest) -> Unary CreateContainerResponse, write;
        StartContainer(StartContainerRequest) -> Unary StartContainerResponse, write;
        StopContainer(StopContainerRequest) -> Unary StopContainerResponse, write;
        RemoveContainer(RemoveContainerRequest) -> Unary RemoveContainerResponse, write;
        ListContainers(ListContainersRequest) -> Unary ListContainersResponse, read;
        StreamContainers(StreamContainersRequest) -> ServerStreaming StreamContainersResponse, read;
        ContainerStatus(ContainerStatusRequest) -> Unary ContainerStatusResponse, read;
        UpdateContainerResources(UpdateContainerResourcesRequest) -> Unary UpdateContainerResourcesResponse, write;
        ReopenContainerLog(ReopenContainerLogRequest) -> Unary ReopenContainerLogResponse, write;
        ExecSync(ExecSyncRequest) -> Unary ExecSyncResponse, write;
        Exec(ExecRequest) -> Unary ExecResponse, write;
        Attach(AttachRequest) -> Unary AttachResponse, write;
        PortForward(PortForwardRequest) -> Unary PortForwardResponse, write;
        ContainerStats(ContainerStatsRequest) -> Unary ContainerStatsResponse, read;
        ListContainerStats(ListContainerStatsRequest) -> Unary ListContainerStatsResponse, read;
        StreamContainerStats(StreamContainerStatsRequest) -> ServerStreaming StreamContainerStatsResponse, read;
        PodSandboxStats(PodSandboxStatsRequest) -> Unary PodSandboxStatsResponse, read;
        ListPodSandboxStats(ListPodSandboxStatsRequest) -> Unary ListPodSandboxStatsResponse, read;
        StreamPodSandboxStats(StreamPodSandboxStatsRequest) -> ServerStreaming StreamPodSandboxStatsResponse, read;
        UpdateRuntimeConfig(UpdateRuntimeConfigRequest) -> Unary UpdateRuntimeConfigResponse, write;
        Status(StatusRequest) -> Unary StatusResponse, read;
        CheckpointContainer(CheckpointContainerRequest) -> Unary CheckpointContainerResponse, write;
        GetContainerEvents(GetEventsRequest) -> ServerStreaming ContainerEventResponse, read;
        ListMetricDescriptors(ListMetricDescriptorsRequest) -> Unary ListMetricDescriptorsResponse, read;
        ListPodSandboxMetrics(ListPodSandboxMetricsRequest) -> Unary ListPodSandboxMetricsResponse, read;
        StreamPodSandboxMetrics(StreamPodSandboxMetricsRequest) -> ServerStreaming StreamPodSandboxMetricsResponse, read;
        RuntimeConfig(RuntimeConfigRequest) -> Unary RuntimeConfigResponse, read;
        UpdatePodSandboxResources(UpdatePodSandboxResourcesRequest) -> Unary UpdatePodSandboxResourcesResponse, write;
    }
    /// `runtime.v1.ImageService`.
    Image "runtime.v1" "ImageService" {
        ListImages(ListImagesRequest) -> Unary ListImagesResponse, read;
        StreamImages(StreamImagesRequest) -> ServerStreaming StreamImagesResponse, read;
        ImageStatus(ImageStatusRequest) -> Unary ImageStatusResponse, read;
        PullImage(PullImageRequest) -> Unary PullImageResponse, write;
        RemoveImage(RemoveImageRequest) -> Unary RemoveImageResponse, write;
        ImageFsInfo(ImageFsInfoRequest) -> Unary ImageFsInfoResponse, read;
    }
    /// `grpc.health.v1.Health`: whether crispd serves.
    Health "grpc.health.v1" "Health" {
        HealthCheck as Check(HealthCheckRequest) -> Unary HealthCheckResponse, read;
        HealthList as List(HealthListRequest) -> Unary HealthListResponse, read;
        HealthWatch as Watch(HealthCheckRequest) -> ServerStreaming HealthCheckResponse, read;
    }
    /// `grpc.reflection.v1.ServerReflection`: what crispd serves.
    Reflection "grpc.reflection.v1" "ServerReflection" {
        ServerReflectionInfo(ServerReflectionRequest) -> BidiStreaming ServerReflectionResponse, read;
    }
    /// `grpc.reflection.v1alpha.ServerReflection`, the same for older clients.
    ReflectionV1Alpha "grpc.reflection.v1alpha" "ServerReflection" {
        ServerReflectionInfoV1Alpha as ServerReflectionInfo(ServerReflectionRequest) -> BidiStreaming ServerReflectionResponse, read;
    }
}

/// How many rpcs the CRI has: they come first in [`METHODS`].
pub const CRI_METHOD_COUNT: usize = 41;

/// The CRI's rpcs alone.
pub fn cri_methods() -> &'static [MethodDesc] {
    &METHODS[..CRI_METHOD_COUNT]
}

impl Service {
    /// One of the two CRI services.
    pub const fn is_cri(self) -> bool {
        matches!(self, Service::Runtime | Service::Image)
    }
}

impl Method {
    /// This rpc's table entry.
    pub fn desc(self) -> &'static MethodDesc {
        &METHODS[self as usize]
    }
}

// `Method::desc` relies on the table being in variant order, and
// `cri_methods` on the CRI coming first.
const _: () = {
    let mut i = 0;
    while i < METHODS.len() {
        assert!(METHODS[i].method as usize == i);
        assert!(METHODS[i].service.is_cri() == (i < CRI_METHOD_COUNT));
        i += 1;
    }
};
