//! The CRI method table: one entry per rpc of `runtime.v1.RuntimeService`
//! and `runtime.v1.ImageService`, with its gRPC path, call kind, message
//! types and whether it only reads state.
//!
//! The table is written by hand (through the `methods!` macro below) and
//! checked against the compiled descriptor set by `tests/methods.rs`.

/// The CRI service an rpc belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `runtime.v1.RuntimeService`.
    Runtime,
    /// `runtime.v1.ImageService`.
    Image,
}

impl Service {
    /// Fully qualified proto name, e.g. `runtime.v1.RuntimeService`.
    pub const fn full_name(self) -> &'static str {
        match self {
            Service::Runtime => "runtime.v1.RuntimeService",
            Service::Image => "runtime.v1.ImageService",
        }
    }
}

/// The gRPC call shape of an rpc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response (unused by CRI v1).
    ClientStreaming,
    /// Streams both ways (unused by CRI v1).
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
            $svc:ident $svc_name:literal {
                $( $method:ident ( $req:ident ) -> $kind:ident $resp:ident, $ro:ident; )*
            }
        )*
    ) => {
        /// One variant per CRI rpc; `METHODS[m as usize]` describes `m`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Method {
            $($(
                #[doc = concat!("`", $svc_name, "/", stringify!($method), "`.")]
                $method,
            )*)*
        }

        /// Every CRI rpc, in `Method` order.
        pub static METHODS: [MethodDesc; 41] = [
            $($(
                MethodDesc {
                    method: Method::$method,
                    service: Service::$svc,
                    name: stringify!($method),
                    path: concat!("/runtime.v1.", $svc_name, "/", stringify!($method)),
                    kind: CallKind::$kind,
                    request_type: concat!("runtime.v1.", stringify!($req)),
                    response_type: concat!("runtime.v1.", stringify!($resp)),
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
                    concat!("/runtime.v1.", $svc_name, "/", stringify!($method)) => Method::$method,
                )*)*
                _ => return None,
            };
            Some(method.desc())
        }
    };
    (@ro read) => { true };
    (@ro write) => { false };
}

methods! {
    Runtime "RuntimeService" {
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
    Image "ImageService" {
        ListImages(ListImagesRequest) -> Unary ListImagesResponse, read;
        StreamImages(StreamImagesRequest) -> ServerStreaming StreamImagesResponse, read;
        ImageStatus(ImageStatusRequest) -> Unary ImageStatusResponse, read;
        PullImage(PullImageRequest) -> Unary PullImageResponse, write;
        RemoveImage(RemoveImageRequest) -> Unary RemoveImageResponse, write;
        ImageFsInfo(ImageFsInfoRequest) -> Unary ImageFsInfoResponse, read;
    }
}

impl Method {
    /// This rpc's table entry.
    pub fn desc(self) -> &'static MethodDesc {
        &METHODS[self as usize]
    }
}

// `Method::desc` relies on the table being in variant order.
const _: () = {
    let mut i = 0;
    while i < METHODS.len() {
        assert!(METHODS[i].method as usize == i);
        i += 1;
    }
};
