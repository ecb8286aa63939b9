//! Checks the hand-written method table against the compiled schema.

use std::collections::HashSet;

use crisp_proto::methods::{
    cri_methods, lookup, CallKind, Method, Service, CRI_METHOD_COUNT, METHODS, SERVICES,
};
use crisp_proto::FILE_DESCRIPTOR_SET;
use prost_reflect::DescriptorPool;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

/// Rpcs that change state; every other rpc must be marked read-only.
const MUTATING: &[&str] = &[
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "UpdateRuntimeConfig",
    "CheckpointContainer",
    "UpdatePodSandboxResources",
    "PullImage",
    "RemoveImage",
];

#[test]
fn schema_has_expected_services_and_rpc_counts() {
    let pool = pool();
    let services: Vec<_> = pool.services().map(|s| s.full_name().to_owned()).collect();
    assert_eq!(
        services,
        [
            "runtime.v1.RuntimeService",
            "runtime.v1.ImageService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
    let table: Vec<_> = SERVICES.iter().map(|s| s.full_name()).collect();
    assert_eq!(table, services);
    let runtime = pool
        .get_service_by_name("runtime.v1.RuntimeService")
        .unwrap();
    let image = pool.get_service_by_name("runtime.v1.ImageService").unwrap();
    assert_eq!(runtime.methods().len(), 35);
    assert_eq!(image.methods().len(), 6);

    let all: Vec<_> = runtime.methods().chain(image.methods()).collect();
    assert_eq!(all.len(), 41);
    let server_streaming: Vec<_> = all
        .iter()
        .filter(|m| m.is_server_streaming())
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(
        server_streaming,
        [
            "StreamPodSandboxes",
            "StreamContainers",
            "StreamContainerStats",
            "StreamPodSandboxStats",
            "GetContainerEvents",
            "StreamPodSandboxMetrics",
            "StreamImages",
        ]
    );
    assert!(all.iter().all(|m| !m.is_client_streaming()));
}

#[test]
fn table_matches_descriptor() {
    let pool = pool();
    let mut seen = HashSet::new();
    for service in pool.services() {
        let expected_service = match service.full_name() {
            "runtime.v1.RuntimeService" => Service::Runtime,
            "runtime.v1.ImageService" => Service::Image,
            "grpc.health.v1.Health" => Service::Health,
            "grpc.reflection.v1.ServerReflection" => Service::Reflection,
            "grpc.reflection.v1alpha.ServerReflection" => Service::ReflectionV1Alpha,
            other => panic!("unexpected service {other}"),
        };
        assert_eq!(expected_service.full_name(), service.full_name());
        for rpc in service.methods() {
            let path = format!("/{}/{}", service.full_name(), rpc.name());
            let matches: Vec<_> = METHODS.iter().filter(|d| d.path == path).collect();
            assert_eq!(matches.len(), 1, "{path} must appear exactly once");
            let desc = matches[0];
            assert_eq!(desc.service, expected_service, "{path}");
            assert_eq!(desc.name, rpc.name(), "{path}");
            assert_eq!(desc.request_type, rpc.input().full_name(), "{path}");
            assert_eq!(desc.response_type, rpc.output().full_name(), "{path}");
            let kind = match (rpc.is_client_streaming(), rpc.is_server_streaming()) {
                (false, false) => CallKind::Unary,
                (false, true) => CallKind::ServerStreaming,
                (true, false) => CallKind::ClientStreaming,
                (true, true) => CallKind::BidiStreaming,
            };
            assert_eq!(desc.kind, kind, "{path}");
            assert!(seen.insert(desc.method), "{path} shares a Method variant");
        }
    }
    assert_eq!(seen.len(), METHODS.len(), "table has rpcs the schema lacks");
}

#[test]
fn desc_and_lookup_agree() {
    for (i, desc) in METHODS.iter().enumerate() {
        assert_eq!(desc.method as usize, i);
        assert!(std::ptr::eq(desc.method.desc(), desc));
        let found = lookup(desc.path.as_bytes()).expect("path resolves");
        assert!(std::ptr::eq(found, desc), "{}", desc.path);
    }
    assert_eq!(
        lookup(b"/runtime.v1.RuntimeService/Version").map(|d| d.method),
        Some(Method::Version)
    );
    assert_eq!(
        lookup(b"/runtime.v1.ImageService/PullImage").map(|d| d.method),
        Some(Method::PullImage)
    );
}

#[test]
fn lookup_rejects_near_misses() {
    for bad in [
        &b""[..],
        b"/",
        b"Version",
        b"/runtime.v1.RuntimeService/",
        b"/runtime.v1.RuntimeService/version",
        b"/runtime.v1.RuntimeService/Version/",
        b"/runtime.v1.RuntimeService/Version ",
        b"runtime.v1.RuntimeService/Version",
        b"/runtime.v1.ImageService/Version",
        b"/runtime.v1.RuntimeService/ListImages",
        b"/runtime.v1alpha2.RuntimeService/Version",
        b"/runtime.v1.RuntimeService/Versio\xff",
    ] {
        assert!(lookup(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn read_only_flags() {
    for name in MUTATING {
        assert!(
            METHODS.iter().any(|d| d.name == *name),
            "{name} is not an rpc"
        );
    }
    for desc in &METHODS {
        assert_eq!(
            desc.read_only,
            !MUTATING.contains(&desc.name),
            "read_only of {}",
            desc.name
        );
    }
    assert_eq!(cri_methods().iter().filter(|d| d.read_only).count(), 23);
    // Every streaming rpc only lists, watches or describes.
    assert!(METHODS
        .iter()
        .filter(|d| d.kind != CallKind::Unary)
        .all(|d| d.read_only));
    // Health and reflection only read.
    assert!(METHODS[CRI_METHOD_COUNT..].iter().all(|d| d.read_only));
}

#[test]
fn cri_comes_first() {
    assert_eq!(cri_methods().len(), 41);
    assert!(cri_methods().iter().all(|d| d.service.is_cri()));
    assert!(METHODS[CRI_METHOD_COUNT..]
        .iter()
        .all(|d| !d.service.is_cri()));
    assert_eq!(
        lookup(b"/grpc.health.v1.Health/Check").map(|d| d.method),
        Some(Method::HealthCheck)
    );
    assert_eq!(
        lookup(b"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").map(|d| d.method),
        Some(Method::ServerReflectionInfoV1Alpha)
    );
}
