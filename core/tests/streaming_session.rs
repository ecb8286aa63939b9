//! The streaming session (`crisp_core::streaming`) against the client
//! role of our SPDY machine and hand-made WebSocket frames: streams until
//! `Start`, stdin, resizes, the exit status, port-forward pairs and
//! channels, tokens and refusals.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crisp_core::remotecommand::{StreamOptions, TerminalSize};
use crisp_core::spdy;
use crisp_core::streaming::{stream_options, Config, Event, Kind, Output, Session, Tokens};
use crisp_core::upgrade::{parse_request, Limits, Parsed, UpgradeRequest};
use crisp_core::websocket::{self, channel};

fn request(text: &str) -> UpgradeRequest {
    match parse_request(text.as_bytes(), &Limits::default()) {
        Ok(Parsed::Complete(r, _)) => r,
        other => panic!("{other:?}"),
    }
}

fn spdy_request(path: &str, protocol: &str) -> UpgradeRequest {
    request(&format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\n\r\n"
    ))
}

fn ws_request(path: &str, protocol: &str) -> UpgradeRequest {
    request(&format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    ))
}

const OPTS: StreamOptions = StreamOptions {
    stdin: true,
    stdout: true,
    stderr: true,
    tty: false,
};

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Everything the session sends after its `101` answer.
fn transmitted(s: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = s.poll_transmit() {
        out.extend_from_slice(&b);
    }
    out
}

fn pump_to_client(
    s: &mut Session,
    client: &mut spdy::Connection,
    now: Instant,
) -> Vec<spdy::Event> {
    let bytes = transmitted(s);
    client.recv(&bytes, now).unwrap();
    std::iter::from_fn(|| client.poll_event()).collect()
}

fn pump_to_server(client: &mut spdy::Connection, s: &mut Session, now: Instant) {
    while let Some(b) = client.poll_transmit() {
        s.recv(&b, now);
    }
}

fn header(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[test]
fn spdy_exec_starts_when_every_stream_is_open_and_reports_the_exit() {
    let now = Instant::now();
    let req = spdy_request("/exec/t", "v4.channel.k8s.io");
    let mut s = Session::new(&req, Kind::Exec(OPTS), &Config::default(), now).unwrap();
    let accept = s.poll_transmit().unwrap();
    assert!(accept.starts_with(b"HTTP/1.1 101"));
    let mut client = spdy::Connection::client(spdy::Config::default());
    let mut ids = BTreeMap::new();
    for kind in ["error", "stdin", "stdout"] {
        let id = client
            .open_stream(&[header("streamtype", kind)], false)
            .unwrap();
        ids.insert(kind, id);
    }
    pump_to_server(&mut client, &mut s, now);
    assert!(events(&mut s).is_empty(), "stderr is still missing");
    ids.insert(
        "stderr",
        client
            .open_stream(&[header("streamtype", "stderr")], false)
            .unwrap(),
    );
    pump_to_server(&mut client, &mut s, now);
    assert_eq!(events(&mut s), vec![Event::Start]);

    client
        .send_data(ids["stdin"], Bytes::from_static(b"hi\n"), true)
        .unwrap();
    pump_to_server(&mut client, &mut s, now);
    assert_eq!(
        events(&mut s),
        vec![Event::Stdin(Bytes::from_static(b"hi\n")), Event::StdinEof]
    );

    s.send_output(Output::Stdout, b"out");
    s.send_output(Output::Stderr, b"err");
    s.finish(Ok(3));
    assert!(s.is_done());
    let got = pump_to_client(&mut s, &mut client, now);
    let data = |id: u32| -> Vec<u8> {
        got.iter()
            .filter_map(|e| match e {
                spdy::Event::Data {
                    stream_id, data, ..
                } if *stream_id == id => Some(data.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    assert_eq!(data(ids["stdout"]), b"out");
    assert_eq!(data(ids["stderr"]), b"err");
    let status = String::from_utf8(data(ids["error"])).unwrap();
    assert!(
        status.contains("NonZeroExitCode") && status.contains("\"3\""),
        "{status}"
    );
    let replies = got
        .iter()
        .filter(|e| matches!(e, spdy::Event::Reply { .. }))
        .count();
    assert_eq!(replies, 4);
}

#[test]
fn spdy_streams_that_never_come_end_the_session() {
    let now = Instant::now();
    let req = spdy_request("/exec/t", "v4.channel.k8s.io");
    let config = Config::default();
    let mut s = Session::new(&req, Kind::Exec(OPTS), &config, now).unwrap();
    let at = s.poll_timeout().unwrap();
    assert_eq!(at, now + config.stream_creation_timeout);
    s.handle_timeout(at);
    assert!(matches!(events(&mut s).as_slice(), [Event::Ended(_)]));
    assert!(s.is_done());
}

#[test]
fn spdy_port_forward_pairs_streams_and_reports_errors() {
    let now = Instant::now();
    let req = spdy_request("/portforward/t", "portforward.k8s.io");
    let mut s = Session::new(&req, Kind::PortForward, &Config::default(), now).unwrap();
    let _ = s.poll_transmit();
    let mut client = spdy::Connection::client(spdy::Config::default());
    let pair = |kind: &str| {
        vec![
            header("streamtype", kind),
            header("port", "8080"),
            header("requestid", "0"),
        ]
    };
    let error = client.open_stream(&pair("error"), false).unwrap();
    let data = client.open_stream(&pair("data"), false).unwrap();
    pump_to_server(&mut client, &mut s, now);
    assert_eq!(
        events(&mut s),
        vec![Event::PortOpen {
            conn: data,
            port: 8080
        }]
    );
    client
        .send_data(data, Bytes::from_static(b"GET /"), true)
        .unwrap();
    pump_to_server(&mut client, &mut s, now);
    assert_eq!(
        events(&mut s),
        vec![
            Event::PortData {
                conn: data,
                data: Bytes::from_static(b"GET /")
            },
            Event::PortEof { conn: data }
        ]
    );
    s.port_error(data, "connection refused");
    let got = pump_to_client(&mut s, &mut client, now);
    assert!(got.iter().any(|e| matches!(e,
        spdy::Event::Data { stream_id, data, fin: true } if *stream_id == error && &data[..] == b"connection refused")));
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    websocket::encode_frame(&mut out, true, opcode, payload, Some([1, 2, 3, 4]));
    out.to_vec()
}

/// The payloads of the server's frames.
fn server_messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Ok(Some(head)) = websocket::parse_head(bytes) {
        let start = head.header_len;
        let end = start + head.len as usize;
        out.push((head.opcode, bytes[start..end].to_vec()));
        bytes = &bytes[end..];
    }
    out
}

#[test]
fn websocket_exec_uses_channels() {
    let now = Instant::now();
    let req = ws_request("/exec/t", "v5.channel.k8s.io");
    let tty = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let mut s = Session::new(&req, Kind::Exec(tty), &Config::default(), now).unwrap();
    assert_eq!(events(&mut s), vec![Event::Start]);
    let accept = s.poll_transmit().unwrap();
    assert!(std::str::from_utf8(&accept)
        .unwrap()
        .contains("v5.channel.k8s.io"));
    s.recv(&client_frame(websocket::OP_BINARY, b"\x00ls\n"), now);
    s.recv(
        &client_frame(websocket::OP_BINARY, b"\x04{\"Width\":80,\"Height\":24}"),
        now,
    );
    s.recv(&client_frame(websocket::OP_BINARY, &[255, 0]), now);
    assert_eq!(
        events(&mut s),
        vec![
            Event::Stdin(Bytes::from_static(b"ls\n")),
            Event::Resize(TerminalSize {
                width: 80,
                height: 24
            }),
            Event::StdinEof
        ]
    );
    s.send_output(Output::Stdout, b"file\n");
    s.finish(Ok(0));
    let msgs = server_messages(&transmitted(&mut s));
    assert_eq!(msgs[0], (websocket::OP_BINARY, b"\x01file\n".to_vec()));
    assert_eq!(msgs[1].0, websocket::OP_BINARY);
    assert_eq!(msgs[1].1[0], channel::ERROR);
    assert!(String::from_utf8_lossy(&msgs[1].1).contains("Success"));
    assert_eq!(msgs[2].0, websocket::OP_CLOSE);
    assert!(s.is_done());
}

#[test]
fn websocket_port_forward_opens_the_url_ports() {
    let now = Instant::now();
    let req = ws_request("/portforward/t?port=80&port=8443", "v4.channel.k8s.io");
    let mut s = Session::new(&req, Kind::PortForward, &Config::default(), now).unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            Event::PortOpen { conn: 0, port: 80 },
            Event::PortOpen {
                conn: 1,
                port: 8443
            }
        ]
    );
    let _ = s.poll_transmit();
    let msgs = server_messages(&transmitted(&mut s));
    // Each channel starts with its port, little-endian.
    assert_eq!(msgs[0].1, vec![0, 80, 0]);
    assert_eq!(msgs[3].1, vec![3, 0xfb, 0x20]);
    s.recv(&client_frame(websocket::OP_BINARY, b"\x02hello"), now);
    assert_eq!(
        events(&mut s),
        vec![Event::PortData {
            conn: 1,
            data: Bytes::from_static(b"hello")
        }]
    );
    let bad = ws_request("/portforward/t?port=0", "v4.channel.k8s.io");
    assert_eq!(
        Session::new(&bad, Kind::PortForward, &Config::default(), now)
            .err()
            .map(|r| r.status),
        Some(400)
    );
}

#[test]
fn tokens_are_single_use_bounded_and_expire() {
    let now = Instant::now();
    let mut t = Tokens::new(Duration::from_secs(60), 2);
    t.insert("a".into(), 1, now).unwrap();
    t.insert("b".into(), 2, now).unwrap();
    assert!(t.insert("c".into(), 3, now).is_err());
    assert_eq!(t.take("a", now), Some(1));
    assert_eq!(t.take("a", now), None);
    assert_eq!(t.take("b", now + Duration::from_secs(61)), None);
    assert!(t.is_empty());
}

#[test]
fn stream_option_rules() {
    assert!(stream_options(false, false, false, false).is_err());
    assert!(stream_options(true, true, true, true).is_err());
    assert!(stream_options(true, true, false, true).is_ok());
}

#[test]
fn wrong_endpoint_is_refused() {
    let req = spdy_request("/attach/t", "v4.channel.k8s.io");
    let r = Session::new(&req, Kind::Exec(OPTS), &Config::default(), Instant::now());
    assert_eq!(r.err().map(|r| r.status), Some(400));
}
