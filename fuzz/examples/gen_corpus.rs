//! Writes the seed corpora under `fuzz/corpus/<target>/` from real encoded
//! data: frames and byte streams of a real gRPC exchange between the
//! core's client and server, RFC 7541 Appendix C header blocks, gRPC
//! messages, CRI messages. `server_frames` takes structured input, so its
//! seeds are chosen among pseudo-random inputs by what they make the
//! server do.
//!
//! Run from `fuzz/`: `cargo run --example gen_corpus`.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crisp_core::grpc::client::{Client, ClientConfig};
use crisp_core::grpc::codec;
use crisp_core::grpc::server::{Event, Server, ServerConfig};
use crisp_core::grpc::Status;
use crisp_core::h2::frame::{self, Frame, FrameReader};
use crisp_core::h2::hpack::rfc7541::{C2, C3, C4, C5, C6};
use crisp_core::h2::hpack::{Encoder, Header};
use crisp_core::h2::{ErrorCode, StreamId};
use crisp_fuzz::util::Rng;
use crisp_proto::cri;
use crisp_proto::methods::METHODS;
use prost::Message;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Index of 256 in the hpack targets' TABLE_SIZES.
const TABLE_256: u8 = 8;

/// An hpack-target input: initial table size selector, then blocks
/// (`ctl` 0: no settings change, no list limit).
fn hpack_input(initial: u8, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![initial];
    for b in blocks {
        v.push(0);
        v.extend_from_slice(&(b.len() as u16).to_be_bytes());
        v.extend_from_slice(b);
    }
    v
}

struct Exchange {
    /// Client to server, after the preface magic.
    c2s: Vec<u8>,
    s2c: Vec<u8>,
}

/// Real exchanges between the core's client and server, in memory.
fn exchange(calls: &[(&str, Vec<u8>)], cancel: bool) -> Exchange {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default());
    let mut s = Server::new(ServerConfig::default());
    let mut c2s = Vec::new();
    let mut s2c = Vec::new();
    let mut ids = Vec::new();
    for (path, msg) in calls {
        let id = c
            .start_call(
                path.to_string(),
                Vec::new(),
                Some(Duration::from_secs(5)),
                now,
            )
            .unwrap();
        c.send_encoded(id, msg, true).unwrap();
        ids.push(id);
    }
    if cancel {
        if let Some(&id) = ids.last() {
            c.cancel(id);
        }
    }
    for _ in 0..100 {
        let mut moved = false;
        while let Some(b) = c.poll_transmit() {
            c2s.extend_from_slice(&b);
            let _ = s.recv(&b, now);
            moved = true;
        }
        while let Some(ev) = s.poll_event() {
            if let Event::Request { call, .. } = ev {
                let resp = cri::VersionResponse {
                    version: "0.1.0".into(),
                    runtime_name: "crisp".into(),
                    runtime_version: "0.1.0".into(),
                    runtime_api_version: "v1".into(),
                };
                if call.id.get() % 4 == 3 {
                    let _ = s.finish(call.id, &Status::not_found("no such thing"));
                } else {
                    let _ = s.respond(call.id, &resp);
                }
            }
        }
        while let Some(b) = s.poll_transmit() {
            s2c.extend_from_slice(&b);
            let _ = c.recv(&b, now);
            moved = true;
        }
        while c.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
    assert_eq!(&c2s[..24], frame::PREFACE);
    Exchange {
        c2s: c2s[24..].to_vec(),
        s2c,
    }
}

fn frames_of(wire: &[u8]) -> Vec<(Frame, Vec<u8>)> {
    let mut r = FrameReader::new(frame::MAX_MAX_FRAME_SIZE);
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    loop {
        let before = buf.clone();
        match r.read(&mut buf) {
            Ok(Some(f)) => {
                let n = before.len() - buf.len();
                out.push((f, before[..n].to_vec()));
            }
            _ => return out,
        }
    }
}

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), data).unwrap();
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let version = cri::VersionRequest {
        version: "v1".into(),
    }
    .encode_to_vec();
    let version_path = "/runtime.v1.RuntimeService/Version";
    let one = exchange(&[(version_path, version.clone())], false);
    let many = exchange(
        &[
            (version_path, version.clone()),
            ("/runtime.v1.RuntimeService/Status", Vec::new()),
            ("/runtime.v1.ImageService/ListImages", Vec::new()),
            ("/runtime.v1.RuntimeService/NoSuchMethod", Vec::new()),
        ],
        true,
    );

    // ---- server_bytes: [seed: 2] + client bytes after the magic.
    for (name, seed, wire) in [
        ("version_call", [0u8, 0], &one.c2s),
        ("version_call_chunked", [7, 42], &one.c2s),
        ("four_calls_one_cancelled", [1, 2], &many.c2s),
    ] {
        let mut v = seed.to_vec();
        v.extend_from_slice(wire);
        write(&dir, "server_bytes", name, &v);
    }
    // A PING and a SETTINGS with every parameter, then the call.
    let mut extra = BytesMut::new();
    let c2s_frames = frames_of(&one.c2s);
    c2s_frames[0].0.encode(&mut extra);
    frame::Ping::new(*b"pingpong").encode(&mut extra);
    frame::Settings {
        header_table_size: Some(100),
        initial_window_size: Some(1),
        max_frame_size: Some(20_000),
        max_concurrent_streams: Some(10),
        ..Default::default()
    }
    .encode(&mut extra);
    for (_, raw) in &c2s_frames[1..] {
        extra.extend_from_slice(raw);
    }
    frame::WindowUpdate::new(StreamId::new(0), 1000).encode(&mut extra);
    frame::WindowUpdate::new(StreamId::new(1), 1000).encode(&mut extra);
    let mut v = vec![3u8, 3];
    v.extend_from_slice(&extra);
    write(&dir, "server_bytes", "settings_ping_tiny_window", &v);

    // ---- frame_decoder: [limit selector][chunk seed] + wire.
    for (name, ctl, wire) in [
        ("client_stream", [0u8, 1], &one.c2s),
        ("server_stream", [0, 9], &one.s2c),
        ("client_stream_many", [1, 3], &many.c2s),
        ("server_stream_many", [3, 5], &many.s2c),
    ] {
        let mut v = ctl.to_vec();
        v.extend_from_slice(wire);
        write(&dir, "frame_decoder", name, &v);
    }
    let mut all = BytesMut::new();
    let mut h = frame::Headers::new(
        StreamId::new(3),
        Bytes::from_static(b"\x82\x86\x84"),
        true,
        false,
    );
    h.pad_len = Some(3);
    h.priority = Some(frame::PrioritySpec {
        dependency: StreamId::new(1),
        exclusive: true,
        weight: 200,
    });
    let samples: Vec<Frame> = vec![
        frame::Data::new(StreamId::new(1), Bytes::from_static(b"hello"), true)
            .with_padding(4)
            .into(),
        h.into(),
        frame::Continuation {
            stream_id: StreamId::new(3),
            fragment: Bytes::from_static(b"\x41\x0fwww.example.com"),
            end_headers: true,
        }
        .into(),
        frame::Priority {
            stream_id: StreamId::new(5),
            spec: frame::PrioritySpec {
                dependency: StreamId::new(3),
                exclusive: false,
                weight: 15,
            },
        }
        .into(),
        frame::RstStream::new(StreamId::new(3), ErrorCode::CANCEL).into(),
        frame::Settings {
            header_table_size: Some(0),
            enable_push: Some(0),
            max_concurrent_streams: Some(100),
            initial_window_size: Some(1 << 20),
            max_frame_size: Some(1 << 14),
            max_header_list_size: Some(8192),
            enable_connect_protocol: Some(1),
            ack: false,
        }
        .into(),
        frame::Settings::ack().into(),
        frame::PushPromise {
            stream_id: StreamId::new(1),
            promised_id: StreamId::new(2),
            fragment: Bytes::from_static(b"\x82"),
            end_headers: true,
        }
        .into(),
        frame::Ping::pong(*b"12345678").into(),
        frame::GoAway {
            last_stream_id: StreamId::new(7),
            code: ErrorCode::ENHANCE_YOUR_CALM,
            debug_data: Bytes::from_static(b"calm down"),
        }
        .into(),
        frame::WindowUpdate::new(StreamId::new(0), 0x7fff_ffff).into(),
        frame::Unknown {
            kind: 0xfa,
            flags: 0xff,
            stream_id: StreamId::new(9),
            payload: Bytes::from_static(b"?"),
        }
        .into(),
    ];
    for (i, f) in samples.iter().enumerate() {
        let mut v = vec![0u8, i as u8];
        let mut b = BytesMut::new();
        f.encode(&mut b);
        all.extend_from_slice(&b);
        v.extend_from_slice(&b);
        write(&dir, "frame_decoder", &format!("frame_{i:02}"), &v);
    }
    let mut v = vec![2u8, 77];
    v.extend_from_slice(&all);
    write(&dir, "frame_decoder", "all_kinds", &v);
    // An over-long head after a good frame; a stream error, then a frame.
    let mut v = vec![0u8, 0];
    v.extend_from_slice(&all[..17]);
    v.extend_from_slice(b"\x00\x40\x01\x00\x00\x00\x00\x00\x01");
    write(&dir, "frame_decoder", "oversized", &v);
    let mut v = vec![0u8, 0];
    v.extend_from_slice(b"\x00\x00\x04\x08\x00\x00\x00\x00\x01\x00\x00\x00\x00");
    frame::Ping::new([1; 8]).encode(&mut all);
    v.extend_from_slice(&all[all.len() - 17..]);
    write(&dir, "frame_decoder", "stream_error_then_ping", &v);

    // ---- hpack_decoder / hpack_differential.
    let mut hpack = Vec::new();
    for (i, b) in C2.iter().enumerate() {
        hpack.push((format!("rfc7541_c2_{}", i + 1), hpack_input(0, &[hex(b)])));
    }
    for (name, blocks, initial) in [
        ("rfc7541_c3", C3, 0),
        ("rfc7541_c4", C4, 0),
        ("rfc7541_c5", C5, TABLE_256),
        ("rfc7541_c6", C6, TABLE_256),
    ] {
        let blocks: Vec<Vec<u8>> = blocks.iter().map(|b| hex(b)).collect();
        hpack.push((name.to_string(), hpack_input(initial, &blocks)));
    }
    // The header blocks of the real exchanges.
    for (name, wire) in [("client_blocks", &many.c2s), ("server_blocks", &many.s2c)] {
        let blocks: Vec<Vec<u8>> = frames_of(wire)
            .into_iter()
            .filter_map(|(f, _)| match f {
                Frame::Headers(h) => Some(h.fragment.to_vec()),
                _ => None,
            })
            .collect();
        hpack.push((name.to_string(), hpack_input(0, &blocks)));
    }
    // Our encoder with table size changes (0x80 | index: change; 0x90:
    // list limit 0) and a sensitive header.
    let mut enc = Encoder::new();
    let list = vec![
        Header::from_static(":method", "POST"),
        Header::from_static(":path", "/runtime.v1.RuntimeService/Version"),
        Header::from_static("content-type", "application/grpc"),
        Header::from_static("authorization", "Bearer secret").sensitive(),
        Header::from_static("x-custom", "a value worth indexing"),
    ];
    let mut v = vec![0u8];
    for (ctl, size) in [
        (0u8, None),
        (0x80 | 5, Some(64)),
        (0x90, None),
        (0x81, Some(0)),
    ] {
        if let Some(s) = size {
            enc.set_max_table_size(s);
        }
        let mut b = BytesMut::new();
        enc.encode(&list, &mut b);
        v.push(ctl);
        v.extend_from_slice(&(b.len() as u16).to_be_bytes());
        v.extend_from_slice(&b);
    }
    hpack.push(("encoder_table_changes".into(), v));
    for (name, data) in &hpack {
        write(&dir, "hpack_decoder", name, data);
        write(&dir, "hpack_differential", name, data);
    }

    // ---- grpc_deframer: [limit selector][chunk seed] + message stream.
    let data_payloads = |wire: &[u8]| {
        let mut v = Vec::new();
        for (f, _) in frames_of(wire) {
            if let Frame::Data(d) = f {
                v.extend_from_slice(&d.data);
            }
        }
        v
    };
    let requests = data_payloads(&many.c2s);
    let responses = data_payloads(&many.s2c);
    let mut two = BytesMut::new();
    codec::encode_payload(false, &version, &mut two).unwrap();
    codec::encode_payload(true, b"\x1f\x8b compressed?", &mut two).unwrap();
    codec::encode_payload(false, b"", &mut two).unwrap();
    for (name, ctl, stream) in [
        ("requests", [7u8, 0], &requests[..]),
        ("responses", [7, 1], &responses[..]),
        ("mixed_small_limit", [5, 2], &two[..]),
        ("too_large", [3, 3], &two[..]),
        ("truncated", [7, 4], &two[..two.len() - 3]),
    ] {
        let mut v = ctl.to_vec();
        v.extend_from_slice(stream);
        write(&dir, "grpc_deframer", name, &v);
    }
    write(
        &dir,
        "grpc_deframer",
        "bad_flag",
        b"\x07\x05\x00\x00\x00\x00\x01x\x02\x00\x00\x00\x00",
    );

    // ---- cri_decode: [selector] + protobuf. Requests (even selectors)
    // and responses (odd) of some rpcs.
    let by_name = |name: &str| METHODS.iter().position(|m| m.name == name).unwrap() as u8;
    let resp = cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "crisp".into(),
        runtime_version: "0.1.0".into(),
        runtime_api_version: "v1".into(),
    };
    let mut pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "nginx".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 1,
        }),
        ..Default::default()
    };
    pod.labels.insert("app".into(), "web".into());
    pod.labels.insert("tier".into(), "front".into());
    pod.annotations.insert("a".into(), "b".into());
    let run = cri::RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: "runc".into(),
    };
    let create = cri::CreateContainerRequest {
        pod_sandbox_id: "pod-1".into(),
        config: Some(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            ..Default::default()
        }),
        sandbox_config: Some(pod),
    };
    let exec = cri::ExecSyncRequest {
        container_id: "c1".into(),
        cmd: vec!["ls".into(), "/".into()],
        timeout: 10,
    };
    let exec_resp = cri::ExecSyncResponse {
        stdout: b"bin\netc\n".to_vec(),
        stderr: Vec::new(),
        exit_code: 0,
    };
    let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
        ("version_request", by_name("Version") * 2, version.clone()),
        (
            "version_response",
            by_name("Version") * 2 + 1,
            resp.encode_to_vec(),
        ),
        (
            "run_pod_sandbox",
            by_name("RunPodSandbox") * 2,
            run.encode_to_vec(),
        ),
        (
            "create_container",
            by_name("CreateContainer") * 2,
            create.encode_to_vec(),
        ),
        ("exec_sync", by_name("ExecSync") * 2, exec.encode_to_vec()),
        (
            "exec_sync_response",
            by_name("ExecSync") * 2 + 1,
            exec_resp.encode_to_vec(),
        ),
        ("status_empty", by_name("Status") * 2, Vec::new()),
    ];
    for (name, sel, bytes) in seeds {
        let mut v = vec![sel];
        v.extend_from_slice(&bytes);
        write(&dir, "cri_decode", name, &v);
    }

    // ---- server_frames: structured input. Pseudo-random inputs, kept
    // when they make the server do something new (calls answered, GOAWAY,
    // how much output), up to 24 seeds.
    let mut rng = Rng::new(2024);
    let mut seen = HashSet::new();
    let mut kept = 0;
    for _ in 0..20_000 {
        if kept == 24 {
            break;
        }
        let len = 32 + rng.below(480);
        let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let Some(stats) = crisp_fuzz::server_frames_stats(&data) else {
            continue;
        };
        let key = (
            stats.calls.min(4),
            stats.goaway,
            stats.output_frames.min(12) / 3,
        );
        if (stats.calls > 0 || stats.output_frames > 4) && seen.insert(key) {
            write(&dir, "server_frames", &format!("random_{kept:02}"), &data);
            kept += 1;
        }
    }
    println!("server_frames: {kept} seeds");

    // ---- reflection_request: [len][request] per message of one stream.
    {
        use crisp_proto::grpc::reflection::v1::server_reflection_request::MessageRequest as Q;
        use crisp_proto::grpc::reflection::v1::{ExtensionRequest, ServerReflectionRequest};
        let stream = |questions: Vec<Q>| {
            let mut v = Vec::new();
            for q in questions {
                let m = ServerReflectionRequest {
                    host: "localhost".into(),
                    message_request: Some(q),
                }
                .encode_to_vec();
                v.push(u8::try_from(m.len()).unwrap());
                v.extend(m);
            }
            v
        };
        let seeds = [
            (
                "list_services",
                stream(vec![Q::ListServices(String::new())]),
            ),
            (
                "files_by_name",
                stream(vec![
                    Q::FileByFilename("runtime/v1/api.proto".into()),
                    Q::FileByFilename("grpc/health/v1/health.proto".into()),
                    Q::FileByFilename("nope.proto".into()),
                ]),
            ),
            (
                "symbols",
                stream(vec![
                    Q::FileContainingSymbol("runtime.v1.RuntimeService".into()),
                    Q::FileContainingSymbol("runtime.v1.RuntimeService.CreateContainer".into()),
                    Q::FileContainingSymbol("runtime.v1.CreateContainerRequest.config".into()),
                    Q::FileContainingSymbol("runtime.v1.CONTAINER_RUNNING".into()),
                    Q::FileContainingSymbol(
                        "grpc.health.v1.HealthCheckResponse.ServingStatus".into(),
                    ),
                    Q::FileContainingSymbol("runtime.v1.Nope".into()),
                ]),
            ),
            (
                "extensions",
                stream(vec![
                    Q::AllExtensionNumbersOfType("runtime.v1.VersionRequest".into()),
                    Q::AllExtensionNumbersOfType("runtime.v1.Nope".into()),
                    Q::FileContainingExtension(ExtensionRequest {
                        containing_type: "runtime.v1.VersionRequest".into(),
                        extension_number: 1000,
                    }),
                ]),
            ),
            (
                "asks_nothing",
                vec![
                    11, 0x0a, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't',
                ],
            ),
            (
                "health_check",
                vec![28, 0x0a, 26]
                    .into_iter()
                    .chain(*b"runtime.v1.RuntimeService.")
                    .collect(),
            ),
        ];
        for (name, data) in seeds {
            write(&dir, "reflection_request", name, &data);
        }
    }
}
