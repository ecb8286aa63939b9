//! Writes the seed corpora of the streaming targets (`spdy_frames`,
//! `websocket_frames`, `upgrade_request`) under `fuzz/corpus/<target>/`:
//! byte streams of real sessions from the core's own SPDY client and
//! WebSocket frame encoder, the RFC 6455 §5.7 examples, and the upgrade
//! requests client-go, crictl and kubectl send.
//!
//! Run from `fuzz/`: `cargo run --example gen_streaming_corpus`.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use crisp_core::spdy::{self, frame, GoAwayStatus, RstStatus};
use crisp_core::websocket::{encode_frame, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT};

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn drain(c: &mut spdy::Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = c.poll_transmit() {
        out.extend_from_slice(&b);
    }
    out
}

fn spdy_seeds() {
    // exec, remotecommand v4: the five typed streams, stdin, resize, close.
    let mut c = spdy::Connection::client(spdy::Config::default());
    for t in ["error", "stdin", "stdout", "stderr", "resize"] {
        c.open_stream(&h(&[("streamtype", t)]), false).unwrap();
    }
    c.send_data(3, Bytes::from_static(b"echo hi\n"), false)
        .unwrap();
    c.send_data(
        9,
        Bytes::from_static(b"{\"Width\":80,\"Height\":24}\n"),
        false,
    )
    .unwrap();
    c.close(3).unwrap();
    c.ping().unwrap();
    let mut bytes = vec![7];
    bytes.extend(drain(&mut c));
    write("spdy_frames", "exec_session", &bytes);
    // The same streams as a whole session (mode 0: SPDY exec; seed 7).
    let mut session = vec![0];
    session.extend_from_slice(&bytes);
    write("streaming_session", "spdy_exec", &session);

    // port-forward: two data/error pairs, one reset.
    let mut c = spdy::Connection::client(spdy::Config::default());
    for (id, port) in [("0", "80"), ("1", "8080")] {
        for t in ["error", "data"] {
            c.open_stream(
                &h(&[("streamtype", t), ("port", port), ("requestid", id)]),
                false,
            )
            .unwrap();
        }
    }
    c.send_data(3, Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"), true)
        .unwrap();
    c.reset(7, RstStatus::CANCEL).unwrap();
    c.go_away(GoAwayStatus::OK);
    let mut bytes = vec![42];
    bytes.extend(drain(&mut c));
    write("spdy_frames", "portforward_session", &bytes);
    let mut session = vec![1];
    session.extend_from_slice(&bytes);
    write("streaming_session", "spdy_portforward", &session);

    // Fixed-size control frames, one of each.
    let mut raw = BytesMut::new();
    frame::encode_settings(
        &mut raw,
        &[(0, frame::SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)],
    );
    frame::encode_window_update(&mut raw, 0, 1000);
    frame::encode_ping(&mut raw, 1);
    frame::encode_rst_stream(&mut raw, 1, 5);
    frame::encode_goaway(&mut raw, 0, 0);
    frame::encode_data(&mut raw, 1, frame::FLAG_FIN, b"x");
    let mut bytes = vec![3];
    bytes.extend_from_slice(&raw);
    write("spdy_frames", "control_frames", &bytes);

    // A header block that inflates past the limit.
    let mut c = spdy::Connection::client(spdy::Config::default());
    c.open_stream(&h(&[("x", &"a".repeat(8000))]), false)
        .unwrap();
    let mut bytes = vec![1];
    bytes.extend(drain(&mut c));
    write("spdy_frames", "header_bomb", &bytes);
}

fn masked(out: &mut Vec<u8>, fin: bool, op: u8, payload: &[u8]) {
    let mut b = BytesMut::new();
    encode_frame(&mut b, fin, op, payload, Some([0x37, 0xfa, 0x21, 0x3d]));
    out.extend_from_slice(&b);
}

fn websocket_seeds() {
    // RFC 6455 §5.7: masked "Hello", masked pong.
    write(
        "websocket_frames",
        "rfc6455_examples",
        &[
            0, 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58, //
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
    );
    let mut s = vec![5];
    masked(&mut s, true, OP_BINARY, b"\x00ls -l\n");
    masked(&mut s, false, OP_BINARY, b"\x04{\"Width\":");
    masked(&mut s, true, OP_PING, b"p");
    masked(&mut s, true, OP_CONTINUATION, b"120,\"Height\":40}");
    masked(&mut s, true, OP_BINARY, &[255, 0]);
    masked(&mut s, true, OP_CLOSE, &[0x03, 0xe8]);
    write("websocket_frames", "v5_exec", &s);
    // Mode 2: WebSocket v5 attach with a tty.
    let mut session = vec![2];
    session.extend_from_slice(&s);
    write("streaming_session", "websocket_attach", &session);
    // Mode 3: channel port forwarding, data for both ports.
    let mut pf = vec![3, 1];
    masked(&mut pf, true, OP_BINARY, b"\x00GET / HTTP/1.0\r\n\r\n");
    masked(&mut pf, true, OP_BINARY, b"\x02hello");
    masked(&mut pf, true, OP_CLOSE, &[0x03, 0xe8]);
    write("streaming_session", "websocket_portforward", &pf);
    let mut s = vec![9];
    masked(&mut s, true, OP_TEXT, b"0bHMgLWwK");
    masked(&mut s, true, OP_TEXT, b"4eyJXaWR0aCI6ODAsIkhlaWdodCI6MjR9");
    masked(&mut s, true, OP_BINARY, &[0u8; 300]);
    masked(&mut s, true, OP_CLOSE, b"");
    write("websocket_frames", "base64_and_lengths", &s);
}

fn upgrade_seeds() {
    let seeds: &[(&str, &str)] = &[
        (
            "spdy_exec",
            "POST /exec/abc123 HTTP/1.1\r\nHost: 127.0.0.1:10010\r\nConnection: Upgrade\r\n\
             Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v5.channel.k8s.io\r\n\
             X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
             X-Stream-Protocol-Version: v3.channel.k8s.io\r\n\
             X-Stream-Protocol-Version: v2.channel.k8s.io\r\n\
             X-Stream-Protocol-Version: channel.k8s.io\r\n\r\n",
        ),
        (
            "spdy_portforward",
            "POST /portforward/tok HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n",
        ),
        (
            "websocket_attach",
            "GET /attach/tok HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n\r\n",
        ),
        (
            "websocket_portforward_tunnel",
            "GET /portforward/tok?port=80&port=443 HTTP/1.1\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n",
        ),
        (
            "no_common_protocol",
            "GET /exec/t HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: spdy/3.1\r\n\
             X-Stream-Protocol-Version: v9.channel.k8s.io\r\n\r\n",
        ),
        ("not_found", "GET /run/t HTTP/1.1\r\n\r\n"),
    ];
    for (name, text) in seeds {
        write("upgrade_request", name, text.as_bytes());
    }
}

fn main() {
    spdy_seeds();
    websocket_seeds();
    upgrade_seeds();
    for (name, target) in crisp_fuzz::TARGETS {
        if matches!(
            *name,
            "spdy_frames" | "websocket_frames" | "upgrade_request" | "streaming_session"
        ) {
            for entry in fs::read_dir(Path::new("corpus").join(name)).unwrap() {
                target(&fs::read(entry.unwrap().path()).unwrap());
            }
        }
    }
}
