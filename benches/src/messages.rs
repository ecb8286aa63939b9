//! The messages the serialization benchmarks encode and decode.

use std::collections::HashMap;

use crisp_proto::cri;

/// Small: the answer to `Version`.
pub fn version_response() -> cri::VersionResponse {
    cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "crisp".into(),
        runtime_version: "0.1.0".into(),
        runtime_api_version: "v1".into(),
    }
}

fn kv(prefix: &str, n: usize, salt: usize) -> HashMap<String, String> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}.kubernetes.io/key-{i}"),
                format!("value-{salt}-{i}-{}", "x".repeat(8)),
            )
        })
        .collect()
}

fn hex_id(i: usize) -> String {
    format!(
        "{:064x}",
        (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    )
}

fn image(i: usize) -> cri::ImageSpec {
    cri::ImageSpec {
        image: format!("docker.io/library/app-{i}:1.{i}"),
        annotations: kv("image", 2, i),
        user_specified_image: format!("app-{i}:1.{i}"),
        runtime_handler: "runc".into(),
        image_ref: format!("sha256:{}", hex_id(i + 7)),
    }
}

/// Medium: `ContainerStatusResponse` with every field of the status set.
pub fn container_status_response() -> cri::ContainerStatusResponse {
    let i = 42;
    cri::ContainerStatusResponse {
        status: Some(cri::ContainerStatus {
            id: hex_id(i),
            metadata: Some(cri::ContainerMetadata {
                name: "web".into(),
                attempt: 3,
            }),
            state: cri::ContainerState::ContainerRunning as i32,
            created_at: 1_700_000_000_000_000_000,
            started_at: 1_700_000_000_500_000_000,
            finished_at: 0,
            exit_code: 0,
            image: Some(image(i)),
            image_ref: format!("docker.io/library/app@sha256:{}", hex_id(i + 1)),
            reason: "Running".into(),
            message: "container is running".into(),
            labels: kv("label", 6, i),
            annotations: kv("annotation", 6, i),
            mounts: (0..4)
                .map(|m| cri::Mount {
                    container_path: format!("/var/lib/data-{m}"),
                    host_path: format!("/var/lib/kubelet/pods/{}/volumes/data-{m}", hex_id(m)),
                    readonly: m % 2 == 0,
                    selinux_relabel: true,
                    propagation: cri::MountPropagation::PropagationPrivate as i32,
                    uid_mappings: vec![cri::IdMapping {
                        host_id: 100_000,
                        container_id: 0,
                        length: 65_536,
                    }],
                    gid_mappings: vec![cri::IdMapping {
                        host_id: 100_000,
                        container_id: 0,
                        length: 65_536,
                    }],
                    recursive_read_only: false,
                    image: None,
                    image_sub_path: String::new(),
                })
                .collect(),
            log_path: "web/3.log".into(),
            resources: Some(cri::ContainerResources {
                linux: Some(cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    cpu_shares: 512,
                    memory_limit_in_bytes: 256 << 20,
                    oom_score_adj: 900,
                    cpuset_cpus: "0-1".into(),
                    cpuset_mems: "0".into(),
                    hugepage_limits: vec![cri::HugepageLimit {
                        page_size: "2MB".into(),
                        limit: 0,
                    }],
                    unified: kv("unified", 2, i),
                    memory_swap_limit_in_bytes: 256 << 20,
                }),
                windows: None,
            }),
            image_id: format!("sha256:{}", hex_id(i + 2)),
            user: Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: 1000,
                    gid: 1000,
                    supplemental_groups: vec![1000, 4, 27],
                }),
            }),
            stop_signal: cri::Signal::Sigterm as i32,
        }),
        info: HashMap::from([("info".to_string(), "{\"pid\":4242}".to_string())]),
    }
}

/// Large: `ListContainersResponse` with `n` containers, each with labels and
/// annotations.
pub fn list_containers_response(n: usize) -> cri::ListContainersResponse {
    cri::ListContainersResponse {
        containers: (0..n)
            .map(|i| cri::Container {
                id: hex_id(i),
                pod_sandbox_id: hex_id(i / 4 + 100_000),
                metadata: Some(cri::ContainerMetadata {
                    name: format!("container-{i}"),
                    attempt: (i % 3) as u32,
                }),
                image: Some(image(i)),
                image_ref: format!("sha256:{}", hex_id(i + 7)),
                state: cri::ContainerState::ContainerRunning as i32,
                created_at: 1_700_000_000_000_000_000 + i as i64,
                labels: kv("label", 4, i),
                annotations: kv("annotation", 4, i),
                image_id: format!("sha256:{}", hex_id(i + 7)),
            })
            .collect(),
    }
}
