//! The one client of scripts/bench's end-to-end measurements, the same for
//! every server it drives.
//!
//!   bench-client latency SOCKET N WARMUP [RAW_RESP_BYTES]
//!       N sequential unary Version calls on one connection after WARMUP
//!       more; prints one JSON line (p50/p99/mean in ns, bytes per call).
//!       With RAW_RESP_BYTES: floor mode, no HTTP/2 (see uds-floor).
//!       CRISP_BENCH_SPIN=1: the client busy-polls its reads.
//!   bench-client req-body PATH
//!       writes the gRPC request body (5-byte prefix + protobuf) for h2load.
//!   bench-client hold SOCKET N
//!       opens N connections, makes one checked Version call on each, prints
//!       "ready", and keeps them open (idle) until stdin closes.
//!   bench-client lifecycle SOCKET ITERS IMAGE
//!       ITERS × (RunPodSandbox, CreateContainer, StartContainer,
//!       StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox);
//!       prints one JSON line of per-step medians in ms, or
//!       {"unimplemented": "RunPodSandbox"}.
//!   bench-client lifecycle-hold SOCKET ITERS IMAGE
//!       the same, then one more pod and container (not timed) left running
//!       after printing "ready" until stdin closes (to measure the runtime's
//!       memory with a container running), then removed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crisp_benches::wire::{self, CoreClient, RawH2};
use crisp_core::grpc::Code;
use crisp_proto::cri;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn latency(socket: &Path, n: usize, warmup: usize, raw: Option<usize>) -> std::io::Result<()> {
    let mut c = RawH2::connect(socket)?;
    c.set_spin(std::env::var_os("CRISP_BENCH_SPIN").is_some_and(|v| v == "1"))?;
    let mut samples = Vec::with_capacity(n);
    match raw {
        None => {
            c.handshake()?;
            wire::checked_first_call(&mut c)?;
            for _ in 0..warmup {
                c.call(None)?;
            }
            for _ in 0..n {
                let t = Instant::now();
                c.call(None)?;
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        Some(resp) => {
            for _ in 0..warmup {
                c.ping_pong(resp)?;
            }
            for _ in 0..n {
                let t = Instant::now();
                c.ping_pong(resp)?;
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
    }
    let mean = samples.iter().sum::<u64>() / n as u64;
    samples.sort_unstable();
    println!(
        "{{\"n\": {n}, \"p50_ns\": {}, \"p99_ns\": {}, \"mean_ns\": {mean}, \"req_bytes\": {}, \"resp_bytes\": {}}}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        c.request_bytes(),
        raw.unwrap_or(c.last_response_bytes),
    );
    Ok(())
}

fn hold(socket: &Path, n: usize) -> std::io::Result<()> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = RawH2::connect(socket)?;
        c.handshake()?;
        wire::checked_first_call(&mut c)?;
        conns.push(c);
    }
    println!("ready {}", conns.len());
    std::io::Write::flush(&mut std::io::stdout())?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

const RS: &str = "/runtime.v1.RuntimeService/";

fn lifecycle(socket: &Path, iters: usize, image: &str, keep: bool) -> std::io::Result<bool> {
    let mut c = CoreClient::connect(socket)?;
    let steps = [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ];
    let mut times: HashMap<&str, Vec<f64>> = HashMap::new();
    let fail = |step: &str, s: crisp_core::grpc::Status| {
        std::io::Error::other(format!("{step}: {:?} {}", s.code, s.message))
    };
    let log_dir = std::env::temp_dir().join("crisp-bench-logs");
    std::fs::create_dir_all(&log_dir)?;
    for i in 0..iters + usize::from(keep) {
        let measured = i < iters;
        let pod = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("bench-pod-{i}"),
                uid: format!("bench-uid-{i}-{}", std::process::id()),
                namespace: "bench".into(),
                attempt: 0,
            }),
            // No hostname: with the node network namespace the pod shares
            // the node UTS namespace, where runc may not set one.
            log_directory: log_dir.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut timed = |step: &'static str, t: Instant| {
            if measured {
                times
                    .entry(step)
                    .or_default()
                    .push(t.elapsed().as_secs_f64() * 1e3)
            }
        };
        let t = Instant::now();
        let r: Result<cri::RunPodSandboxResponse, _> = c.unary(
            &format!("{RS}RunPodSandbox"),
            &cri::RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: String::new(),
            },
        )?;
        let pod_id = match r {
            Ok(r) => r.pod_sandbox_id,
            Err(s) if s.code == Code::Unimplemented => {
                println!("{{\"unimplemented\": \"RunPodSandbox\"}}");
                return Ok(false);
            }
            Err(s) => return Err(fail("RunPodSandbox", s)),
        };
        timed("RunPodSandbox", t);
        let t = Instant::now();
        let r: cri::CreateContainerResponse = c
            .unary(
                &format!("{RS}CreateContainer"),
                &cri::CreateContainerRequest {
                    pod_sandbox_id: pod_id.clone(),
                    config: Some(cri::ContainerConfig {
                        metadata: Some(cri::ContainerMetadata {
                            name: "sleeper".into(),
                            attempt: 0,
                        }),
                        image: Some(cri::ImageSpec {
                            image: image.into(),
                            ..Default::default()
                        }),
                        command: vec!["/bin/sleep".into(), "3600".into()],
                        log_path: format!("sleeper-{i}.log"),
                        ..Default::default()
                    }),
                    sandbox_config: Some(pod),
                },
            )?
            .map_err(|s| fail("CreateContainer", s))?;
        timed("CreateContainer", t);
        let ctr = r.container_id;
        let t = Instant::now();
        let _: cri::StartContainerResponse = c
            .unary(
                &format!("{RS}StartContainer"),
                &cri::StartContainerRequest {
                    container_id: ctr.clone(),
                },
            )?
            .map_err(|s| fail("StartContainer", s))?;
        timed("StartContainer", t);
        if !measured {
            println!("ready");
            std::io::Write::flush(&mut std::io::stdout())?;
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        let t = Instant::now();
        let _: cri::StopContainerResponse = c
            .unary(
                &format!("{RS}StopContainer"),
                &cri::StopContainerRequest {
                    container_id: ctr.clone(),
                    timeout: 0,
                },
            )?
            .map_err(|s| fail("StopContainer", s))?;
        timed("StopContainer", t);
        let t = Instant::now();
        let _: cri::RemoveContainerResponse = c
            .unary(
                &format!("{RS}RemoveContainer"),
                &cri::RemoveContainerRequest { container_id: ctr },
            )?
            .map_err(|s| fail("RemoveContainer", s))?;
        timed("RemoveContainer", t);
        let t = Instant::now();
        let _: cri::StopPodSandboxResponse = c
            .unary(
                &format!("{RS}StopPodSandbox"),
                &cri::StopPodSandboxRequest {
                    pod_sandbox_id: pod_id.clone(),
                },
            )?
            .map_err(|s| fail("StopPodSandbox", s))?;
        timed("StopPodSandbox", t);
        let t = Instant::now();
        let _: cri::RemovePodSandboxResponse = c
            .unary(
                &format!("{RS}RemovePodSandbox"),
                &cri::RemovePodSandboxRequest {
                    pod_sandbox_id: pod_id,
                },
            )?
            .map_err(|s| fail("RemovePodSandbox", s))?;
        timed("RemovePodSandbox", t);
    }
    let fields: Vec<String> = steps
        .iter()
        .map(|s| {
            let v = times.get_mut(s).expect("timed");
            v.sort_by(|a, b| a.total_cmp(b));
            format!("\"{s}\": {:.2}", v[v.len() / 2])
        })
        .collect();
    println!("{{\"iters\": {iters}, {}}}", fields.join(", "));
    Ok(true)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let num = |s: &str| s.parse::<usize>().expect("a number");
    let r = match a[..] {
        ["latency", sock, n, w] => latency(Path::new(sock), num(n), num(w), None),
        ["latency", sock, n, w, raw] => latency(Path::new(sock), num(n), num(w), Some(num(raw))),
        ["req-body", path] => std::fs::write(path, wire::version_request_body()),
        ["hold", sock, n] => hold(Path::new(sock), num(n)),
        ["lifecycle", sock, iters, image] => {
            lifecycle(Path::new(sock), num(iters), image, false).map(|_| ())
        }
        ["lifecycle-hold", sock, iters, image] => {
            lifecycle(Path::new(sock), num(iters), image, true).map(|_| ())
        }
        _ => {
            eprintln!("usage: see the comment at the top of benches/src/bin/bench-client.rs");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-client: {e}");
            ExitCode::FAILURE
        }
    }
}
