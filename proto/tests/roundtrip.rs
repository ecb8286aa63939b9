//! Encodes a fully populated instance of every message of the schema with
//! prost-reflect, decodes it into the generated prost type, re-encodes it
//! with prost and checks nothing was lost on the way.

use std::collections::{BTreeSet, HashMap};

use crisp_proto::{cri, FILE_DESCRIPTOR_SET};
use prost::bytes::Bytes;
use prost::{Message, Name};
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};

/// Nesting limit for populated messages (the CRI schema is not recursive,
/// so this is never reached; it only guards against a future cycle).
const MAX_DEPTH: usize = 12;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

/// A generated type: decode `bytes`, check it is not the default, re-encode.
struct Concrete {
    proto_name: &'static str,
    roundtrip: fn(&[u8]) -> Vec<u8>,
    full_name: fn() -> String,
}

fn roundtrip<T: Message + Default + PartialEq>(bytes: &[u8]) -> Vec<u8> {
    let msg = T::decode(bytes).expect("prost decodes what prost-reflect encoded");
    if !bytes.is_empty() {
        assert!(msg != T::default(), "populated message decoded as default");
    }
    msg.encode_to_vec()
}

macro_rules! proto_name {
    ($ty:ident) => {
        stringify!($ty)
    };
    ($ty:ident $name:literal) => {
        $name
    };
}

/// Every generated message type, with its proto name where prost renamed it.
macro_rules! concrete_types {
    ($($ty:ident $(=> $name:literal)?,)*) => {
        const CONCRETE: &[Concrete] = &[
            $(Concrete {
                proto_name: proto_name!($ty $($name)?),
                roundtrip: roundtrip::<cri::$ty>,
                full_name: <cri::$ty as Name>::full_name,
            },)*
        ];
    };
}

concrete_types! {
    VersionRequest,
    VersionResponse,
    DnsConfig => "DNSConfig",
    PortMapping,
    Mount,
    IdMapping => "IDMapping",
    UserNamespace,
    NamespaceOption,
    Int64Value,
    LinuxSandboxSecurityContext,
    SecurityProfile,
    LinuxPodSandboxConfig,
    PodSandboxMetadata,
    PodSandboxConfig,
    RunPodSandboxRequest,
    RunPodSandboxResponse,
    StopPodSandboxRequest,
    StopPodSandboxResponse,
    RemovePodSandboxRequest,
    RemovePodSandboxResponse,
    PodSandboxStatusRequest,
    PodIp => "PodIP",
    PodSandboxNetworkStatus,
    Namespace,
    LinuxPodSandboxStatus,
    PodSandboxStatus,
    PodSandboxStatusResponse,
    PodSandboxStateValue,
    PodSandboxFilter,
    ListPodSandboxRequest,
    PodSandbox,
    ListPodSandboxResponse,
    StreamPodSandboxesRequest,
    StreamPodSandboxesResponse,
    PodSandboxStatsRequest,
    PodSandboxStatsResponse,
    PodSandboxStatsFilter,
    ListPodSandboxStatsRequest,
    ListPodSandboxStatsResponse,
    StreamPodSandboxStatsRequest,
    StreamPodSandboxStatsResponse,
    PodSandboxAttributes,
    PodSandboxStats,
    LinuxPodSandboxStats,
    WindowsPodSandboxStats,
    NetworkUsage,
    WindowsNetworkUsage,
    NetworkInterfaceUsage,
    WindowsNetworkInterfaceUsage,
    ProcessUsage,
    WindowsProcessUsage,
    ImageSpec,
    KeyValue,
    LinuxContainerResources,
    HugepageLimit,
    SeLinuxOption => "SELinuxOption",
    Capability,
    LinuxContainerSecurityContext,
    LinuxContainerConfig,
    LinuxContainerUser,
    WindowsNamespaceOption,
    WindowsSandboxSecurityContext,
    WindowsPodSandboxConfig,
    WindowsContainerSecurityContext,
    WindowsContainerConfig,
    WindowsContainerResources,
    WindowsCpuGroupAffinity,
    ContainerMetadata,
    Device,
    CdiDevice => "CDIDevice",
    ContainerConfig,
    CreateContainerRequest,
    CreateContainerResponse,
    StartContainerRequest,
    StartContainerResponse,
    StopContainerRequest,
    StopContainerResponse,
    RemoveContainerRequest,
    RemoveContainerResponse,
    ContainerStateValue,
    ContainerFilter,
    ListContainersRequest,
    Container,
    ListContainersResponse,
    StreamContainersRequest,
    StreamContainersResponse,
    ContainerStatusRequest,
    ContainerStatus,
    ContainerStatusResponse,
    ContainerResources,
    ContainerUser,
    UpdateContainerResourcesRequest,
    UpdateContainerResourcesResponse,
    ExecSyncRequest,
    ExecSyncResponse,
    ExecRequest,
    ExecResponse,
    AttachRequest,
    AttachResponse,
    PortForwardRequest,
    PortForwardResponse,
    ImageFilter,
    ListImagesRequest,
    Image,
    ListImagesResponse,
    StreamImagesRequest,
    StreamImagesResponse,
    ImageStatusRequest,
    ImageStatusResponse,
    AuthConfig,
    PullImageRequest,
    PullImageResponse,
    RemoveImageRequest,
    RemoveImageResponse,
    NetworkConfig,
    RuntimeConfig,
    UpdateRuntimeConfigRequest,
    UpdateRuntimeConfigResponse,
    RuntimeCondition,
    RuntimeStatus,
    StatusRequest,
    RuntimeHandlerFeatures,
    RuntimeHandler,
    RuntimeFeatures,
    StatusResponse,
    ImageFsInfoRequest,
    UInt64Value,
    FilesystemIdentifier,
    FilesystemUsage,
    WindowsFilesystemUsage,
    ImageFsInfoResponse,
    ContainerStatsRequest,
    ContainerStatsResponse,
    ListContainerStatsRequest,
    ContainerStatsFilter,
    ListContainerStatsResponse,
    StreamContainerStatsRequest,
    StreamContainerStatsResponse,
    ContainerAttributes,
    ContainerStats,
    WindowsContainerStats,
    PsiStats,
    PsiData,
    CpuUsage,
    WindowsCpuUsage,
    MemoryUsage,
    IoUsage,
    SwapUsage,
    WindowsMemoryUsage,
    ReopenContainerLogRequest,
    ReopenContainerLogResponse,
    CheckpointContainerRequest,
    CheckpointContainerResponse,
    GetEventsRequest,
    ContainerEventResponse,
    ListMetricDescriptorsRequest,
    ListMetricDescriptorsResponse,
    MetricDescriptor,
    ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse,
    StreamPodSandboxMetricsRequest,
    StreamPodSandboxMetricsResponse,
    PodSandboxMetrics,
    ContainerMetrics,
    Metric,
    RuntimeConfigRequest,
    RuntimeConfigResponse,
    LinuxRuntimeConfiguration,
    UpdatePodSandboxResourcesRequest,
    UpdatePodSandboxResourcesResponse,
}

/// A non-default value for a singular field of `kind`; `n` varies values.
fn scalar(kind: &Kind, n: u64, depth: usize) -> Value {
    match kind {
        Kind::Double => Value::F64(1.5 + n as f64),
        Kind::Float => Value::F32(2.25 + n as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(-(n as i32) - 1),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(-(n as i64) - 1_000_000_000_000),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(n as u32 + 7),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(n + 10_000_000_000),
        Kind::Bool => Value::Bool(true),
        Kind::String => Value::String(format!("s{n}")),
        Kind::Bytes => Value::Bytes(Bytes::from(vec![0, 0xff, n as u8])),
        Kind::Enum(e) => {
            // The highest-numbered value, which is never the zero default.
            let number = e.values().map(|v| v.number()).max().unwrap();
            assert_ne!(number, 0, "enum {} has only a zero value", e.full_name());
            Value::EnumNumber(number)
        }
        Kind::Message(m) => Value::Message(populate(m, depth + 1)),
    }
}

fn map_key(value: Value) -> MapKey {
    match value {
        Value::Bool(v) => MapKey::Bool(v),
        Value::I32(v) => MapKey::I32(v),
        Value::I64(v) => MapKey::I64(v),
        Value::U32(v) => MapKey::U32(v),
        Value::U64(v) => MapKey::U64(v),
        Value::String(v) => MapKey::String(v),
        other => panic!("invalid map key {other:?}"),
    }
}

fn field_value(field: &FieldDescriptor, depth: usize) -> Value {
    let n = u64::from(field.number());
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!("map field without entry message")
        };
        let key = scalar(&entry.map_entry_key_field().kind(), n, depth);
        let value = scalar(&entry.map_entry_value_field().kind(), n + 1, depth);
        Value::Map(HashMap::from([(map_key(key), value)]))
    } else if field.is_list() {
        let kind = field.kind();
        Value::List(vec![scalar(&kind, n, depth), scalar(&kind, n + 100, depth)])
    } else {
        scalar(&field.kind(), n, depth)
    }
}

/// `desc` with every field set (one member per oneof), up to MAX_DEPTH.
fn populate(desc: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    if depth >= MAX_DEPTH {
        return msg;
    }
    for field in desc.fields() {
        if let Some(oneof) = field.containing_oneof() {
            let first = oneof.fields().next().unwrap();
            if !oneof.is_synthetic() && first.number() != field.number() {
                continue;
            }
        }
        msg.set_field(&field, field_value(&field, depth));
    }
    msg
}

/// The CRI's messages (the health and reflection protos share the pool).
fn messages(pool: &DescriptorPool) -> Vec<MessageDescriptor> {
    pool.all_messages()
        .filter(|m| !m.is_map_entry() && m.package_name() == "runtime.v1")
        .collect()
}

#[test]
fn schema_counts() {
    let pool = pool();
    assert_eq!(messages(&pool).len(), 170);
    assert_eq!(
        pool.all_enums()
            .filter(|e| e.package_name() == "runtime.v1")
            .count(),
        11
    );
    let packages: Vec<_> = pool.files().map(|f| f.package_name().to_owned()).collect();
    assert_eq!(
        packages,
        [
            "runtime.v1",
            "grpc.health.v1",
            "grpc.reflection.v1",
            "grpc.reflection.v1alpha"
        ]
    );
    for file in pool.files() {
        assert_eq!(
            file.dependencies().count(),
            0,
            "schema must be self-contained"
        );
    }
}

#[test]
fn concrete_list_covers_every_message() {
    let pool = pool();
    let in_pool: BTreeSet<String> = messages(&pool)
        .iter()
        .map(|m| m.full_name().to_owned())
        .collect();
    let listed: BTreeSet<String> = CONCRETE
        .iter()
        .map(|c| format!("runtime.v1.{}", c.proto_name))
        .collect();
    assert_eq!(listed.len(), CONCRETE.len(), "duplicate entries");
    assert_eq!(in_pool, listed);
    for c in CONCRETE {
        assert_eq!((c.full_name)(), format!("runtime.v1.{}", c.proto_name));
    }
}

#[test]
fn every_message_roundtrips_through_prost() {
    let pool = pool();
    let mut checked = 0;
    for desc in messages(&pool) {
        let concrete = CONCRETE
            .iter()
            .find(|c| desc.full_name() == format!("runtime.v1.{}", c.proto_name))
            .unwrap_or_else(|| panic!("no generated type for {}", desc.full_name()));

        let dynamic = populate(&desc, 0);
        for field in desc.fields() {
            let in_oneof = field.containing_oneof().is_some_and(|o| !o.is_synthetic());
            assert!(
                in_oneof || dynamic.has_field(&field),
                "{} not populated",
                field.full_name()
            );
        }
        let encoded = dynamic.encode_to_vec();
        let reencoded = (concrete.roundtrip)(&encoded);
        let back = DynamicMessage::decode(desc.clone(), reencoded.as_slice())
            .expect("prost-reflect decodes what prost encoded");
        assert_eq!(
            back,
            dynamic,
            "{} changed in a round trip",
            desc.full_name()
        );
        // Maps hold one entry each, so the encoding is deterministic.
        assert_eq!(
            reencoded,
            encoded,
            "{} re-encoded differently",
            desc.full_name()
        );
        checked += 1;
    }
    assert_eq!(checked, 170);
}
