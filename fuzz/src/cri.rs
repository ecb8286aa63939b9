//! `cri_decode`: the first byte picks one of the 41 rpcs and its request or
//! response type; the rest is decoded with prost into that concrete type.
//! What decodes must re-encode to bytes that decode to the same value.

use crisp_proto::cri;
use crisp_proto::methods::{cri_methods, Method};
use prost::{Message, Name};

pub fn cri_decode(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let methods = cri_methods();
    let desc = &methods[usize::from(sel >> 1) % methods.len()];
    let response = sel & 1 == 1;
    let expected_type = if response {
        desc.response_type
    } else {
        desc.request_type
    };
    macro_rules! dispatch {
        ($($method:ident($req:ident, $resp:ident),)*) => {
            match desc.method {
                $(Method::$method => {
                    if response {
                        round_trip::<cri::$resp>(bytes, expected_type)
                    } else {
                        round_trip::<cri::$req>(bytes, expected_type)
                    }
                })*
                // Not CRI: `cri_methods` never yields these.
                Method::HealthCheck
                | Method::HealthList
                | Method::HealthWatch
                | Method::ServerReflectionInfo
                | Method::ServerReflectionInfoV1Alpha => {}
            }
        };
    }
    dispatch! {
        Version(VersionRequest, VersionResponse),
        RunPodSandbox(RunPodSandboxRequest, RunPodSandboxResponse),
        StopPodSandbox(StopPodSandboxRequest, StopPodSandboxResponse),
        RemovePodSandbox(RemovePodSandboxRequest, RemovePodSandboxResponse),
        PodSandboxStatus(PodSandboxStatusRequest, PodSandboxStatusResponse),
        ListPodSandbox(ListPodSandboxRequest, ListPodSandboxResponse),
        StreamPodSandboxes(StreamPodSandboxesRequest, StreamPodSandboxesResponse),
        CreateContainer(CreateContainerRequest, CreateContainerResponse),
        StartContainer(StartContainerRequest, StartContainerResponse),
        StopContainer(StopContainerRequest, StopContainerResponse),
        RemoveContainer(RemoveContainerRequest, RemoveContainerResponse),
        ListContainers(ListContainersRequest, ListContainersResponse),
        StreamContainers(StreamContainersRequest, StreamContainersResponse),
        ContainerStatus(ContainerStatusRequest, ContainerStatusResponse),
        UpdateContainerResources(UpdateContainerResourcesRequest, UpdateContainerResourcesResponse),
        ReopenContainerLog(ReopenContainerLogRequest, ReopenContainerLogResponse),
        ExecSync(ExecSyncRequest, ExecSyncResponse),
        Exec(ExecRequest, ExecResponse),
        Attach(AttachRequest, AttachResponse),
        PortForward(PortForwardRequest, PortForwardResponse),
        ContainerStats(ContainerStatsRequest, ContainerStatsResponse),
        ListContainerStats(ListContainerStatsRequest, ListContainerStatsResponse),
        StreamContainerStats(StreamContainerStatsRequest, StreamContainerStatsResponse),
        PodSandboxStats(PodSandboxStatsRequest, PodSandboxStatsResponse),
        ListPodSandboxStats(ListPodSandboxStatsRequest, ListPodSandboxStatsResponse),
        StreamPodSandboxStats(StreamPodSandboxStatsRequest, StreamPodSandboxStatsResponse),
        UpdateRuntimeConfig(UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse),
        Status(StatusRequest, StatusResponse),
        CheckpointContainer(CheckpointContainerRequest, CheckpointContainerResponse),
        GetContainerEvents(GetEventsRequest, ContainerEventResponse),
        ListMetricDescriptors(ListMetricDescriptorsRequest, ListMetricDescriptorsResponse),
        ListPodSandboxMetrics(ListPodSandboxMetricsRequest, ListPodSandboxMetricsResponse),
        StreamPodSandboxMetrics(StreamPodSandboxMetricsRequest, StreamPodSandboxMetricsResponse),
        RuntimeConfig(RuntimeConfigRequest, RuntimeConfigResponse),
        UpdatePodSandboxResources(UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse),
        ListImages(ListImagesRequest, ListImagesResponse),
        StreamImages(StreamImagesRequest, StreamImagesResponse),
        ImageStatus(ImageStatusRequest, ImageStatusResponse),
        PullImage(PullImageRequest, PullImageResponse),
        RemoveImage(RemoveImageRequest, RemoveImageResponse),
        ImageFsInfo(ImageFsInfoRequest, ImageFsInfoResponse),
    }
}

fn round_trip<T: Message + Name + Default + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    expected_type: &str,
) {
    // The dispatch table above matches the method table's type names.
    assert_eq!(T::full_name(), expected_type);
    let Ok(first) = T::decode(bytes) else {
        return;
    };
    let wire = first.encode_to_vec();
    assert_eq!(wire.len(), first.encoded_len());
    let second = T::decode(&wire[..]).expect("re-encoded message fails to decode");
    if first != second {
        // The only legitimate way to differ: a NaN in one of the schema's
        // `double` fields (PSI averages) is never equal to itself. Then
        // the re-encoding must still be stable in size and decode again.
        assert!(
            format!("{first:?}").contains("NaN"),
            "round trip changed the message:\n{first:?}\n{second:?}"
        );
        assert_eq!(second.encoded_len(), wire.len());
    }
}
