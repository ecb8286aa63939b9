//! The streaming server's protocols: `spdy_frames` (the SPDY/3.1 session),
//! `websocket_frames` (RFC 6455 framing and the channel protocols on top)
//! and `upgrade_request` (the HTTP/1.1 upgrade that precedes them).
//!
//! Input of the two session targets: `[chunking seed] wire bytes...`.
//! Checks, beyond not panicking:
//! * the events and the bytes sent back do not depend on how the input
//!   was split (the whole input at once is the reference);
//! * buffered input never exceeds one frame of the configured limits;
//! * what the session sends parses as well-formed frames.
//!
//! (Commands are issued only in a run that is not compared: an answer's
//! effect depends on which events had arrived when it was given.)

use std::time::Instant;

use bytes::Bytes;
use crisp_core::remotecommand::{ResizeDecoder, StreamType};
use crisp_core::spdy::{self, frame::Head};
use crisp_core::upgrade::{self, Parsed};
use crisp_core::websocket::{self, channel};

use crate::util::{chunks, Rng};

fn spdy_config() -> spdy::Config {
    spdy::Config {
        max_concurrent_streams: 8,
        max_header_block: 4096,
        max_control_frame: 4096,
        max_data_frame: 8192,
        max_control_frames: 64,
        max_local_resets: 64,
        max_remote_resets: 64,
        max_pending_control: 16 * 1024,
        ..spdy::Config::default()
    }
}

pub fn spdy_frames(data: &[u8]) {
    let [seed, wire @ ..] = data else {
        return;
    };
    let whole = run_spdy(&[wire], false);
    let mut rng = Rng::new(u64::from(*seed));
    let pieces = chunks(wire, &mut rng);
    let split = run_spdy(&pieces, false);
    assert_eq!(split, whole, "chunking changed the session");
    // Once more answering the streams: what the answers look like depends
    // on when they are given, so this run is only checked for soundness.
    run_spdy(&pieces, true);
}

fn run_spdy(input: &[&[u8]], respond: bool) -> (Vec<spdy::Event>, Vec<u8>) {
    let config = spdy_config();
    let limit = spdy::frame::HEAD_LEN + config.max_control_frame.max(config.max_data_frame);
    let mut server = spdy::Connection::server(config.clone());
    // One instant for the whole run: the flood limits then count the same
    // way however the input is split.
    let now = Instant::now();
    let mut events = Vec::new();
    let mut out = Vec::new();
    for chunk in input {
        let _ = server.recv(chunk, now);
        assert!(server.recv_buffered() <= limit.max(chunk.len()) + limit);
        while let Some(ev) = server.poll_event() {
            // Answer like a streaming server: reply, a little data, close.
            if let (
                true,
                spdy::Event::StreamOpened {
                    stream_id,
                    headers,
                    unidirectional: false,
                    ..
                },
            ) = (respond, &ev)
            {
                let kind = spdy::header(headers, "streamtype").and_then(StreamType::parse);
                if server.reply(*stream_id, &[], false).is_ok() {
                    if kind == Some(StreamType::Stdout) {
                        let _ = server.send_data(*stream_id, Bytes::from_static(b"out"), false);
                    }
                    let _ = server.close(*stream_id);
                }
            }
            events.push(ev);
        }
        while let Some(b) = server.poll_transmit() {
            out.extend_from_slice(&b);
        }
    }
    check_spdy_output(&out);
    (events, out)
}

/// Our output is a sequence of whole, well-formed frames.
fn check_spdy_output(mut b: &[u8]) {
    while !b.is_empty() {
        let Some(head) = b.first_chunk::<8>() else {
            panic!("partial frame head in our output");
        };
        let head = Head::parse(*head);
        if let Head::Control { version, .. } = head {
            assert_eq!(version, spdy::frame::VERSION);
        }
        let len = 8 + head.length() as usize;
        assert!(b.len() >= len, "partial frame in our output");
        b = &b[len..];
    }
}

pub fn websocket_frames(data: &[u8]) {
    let [seed, wire @ ..] = data else {
        return;
    };
    let whole = run_websocket(&[wire]);
    let mut rng = Rng::new(u64::from(*seed));
    let split = run_websocket(&chunks(wire, &mut rng));
    assert_eq!(split, whole, "chunking changed the connection");
}

const WS_MAX_MESSAGE: usize = 4096;

fn run_websocket(input: &[&[u8]]) -> (Vec<websocket::Event>, Vec<u8>) {
    let mut conn = websocket::Connection::new(websocket::Config {
        max_message: WS_MAX_MESSAGE,
        max_control_frames: 64,
        max_pending_control: 16 * 1024,
        ..websocket::Config::default()
    });
    let now = Instant::now();
    let protocols = [
        channel::Protocol::from_subprotocol(Some("v5.channel.k8s.io")),
        channel::Protocol::from_subprotocol(Some("v4.base64.channel.k8s.io")),
    ];
    let mut resize = ResizeDecoder::new();
    let mut events = Vec::new();
    let mut out = Vec::new();
    for chunk in input {
        let _ = conn.recv(chunk, now);
        assert!(conn.recv_buffered() <= chunk.len() + 2 * (WS_MAX_MESSAGE + 14));
        while let Some(ev) = conn.poll_event() {
            if let websocket::Event::Message { binary, ref data } = ev {
                assert!(data.len() <= WS_MAX_MESSAGE);
                for p in protocols.iter().flatten() {
                    if let Ok(channel::Message::Data {
                        channel: c,
                        data: d,
                    }) = channel::decode(*p, binary, data)
                    {
                        // Binary channel data re-encodes to the message.
                        if !p.base64 {
                            let (bin, again) = channel::encode(*p, c, &d);
                            assert!(bin);
                            assert_eq!(&again[..], &data[..]);
                        }
                        if c == channel::RESIZE {
                            let _ = resize.push(&d);
                        }
                    }
                }
            }
            events.push(ev);
        }
        while let Some(b) = conn.poll_transmit() {
            out.extend_from_slice(&b);
        }
    }
    // Our frames: unmasked, whole.
    let mut rest = &out[..];
    while !rest.is_empty() {
        let head = websocket::parse_head(rest)
            .expect("our frame head is valid")
            .expect("our frame head is whole");
        assert!(!head.masked && head.rsv == 0);
        let len = head.header_len + head.len as usize;
        assert!(rest.len() >= len);
        rest = &rest[len..];
    }
    (events, out)
}

pub fn upgrade_request(data: &[u8]) {
    let limits = upgrade::Limits {
        max_head_bytes: 2048,
        max_token_len: 64,
    };
    match upgrade::parse_request(data, &limits) {
        Ok(Parsed::Complete(req, n)) => {
            assert!(n <= data.len() && n <= limits.max_head_bytes);
            // The head alone parses to the same request; any prefix of it
            // is incomplete.
            assert_eq!(
                upgrade::parse_request(&data[..n], &limits),
                Ok(Parsed::Complete(req.clone(), n))
            );
            if n > 0 {
                let prefix = upgrade::parse_request(&data[..n - 1], &limits);
                assert!(
                    matches!(prefix, Ok(Parsed::Partial)),
                    "a prefix parsed as {prefix:?}"
                );
            }
            let resp = req.accept_response();
            assert!(resp.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(resp.ends_with(b"\r\n\r\n"));
            assert!(!req.token.is_empty() && req.token.len() <= limits.max_token_len);
        }
        Ok(Parsed::Partial) => assert!(data.len() <= limits.max_head_bytes),
        Err(rejection) => {
            let resp = rejection.response();
            let text = String::from_utf8(resp).expect("responses are text");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            assert!(matches!(
                rejection.status,
                400 | 403 | 404 | 405 | 426 | 431
            ));
        }
    }
}

/// `streaming_session`: the whole session as crispd drives it — one of
/// five transports and kinds picked by the first byte, then the wire
/// bytes in chunks (second byte seeds the split); the host's answers are
/// given as the events ask for them (output, exit, port data and errors).
/// Checks: no panic; once the session says it is done it stays done; the
/// `101` answer comes first and once.
pub fn streaming_session(data: &[u8]) {
    use crisp_core::remotecommand::StreamOptions;
    use crisp_core::streaming::{Config, Event, Kind, Output, Session};
    let [mode, seed, wire @ ..] = data else {
        return;
    };
    let (request, kind) = match mode % 5 {
        0 => (SESSION_SPDY_EXEC, Kind::Exec(ALL_STREAMS)),
        1 => (SESSION_SPDY_PORTFORWARD, Kind::PortForward),
        2 => (
            SESSION_WS_EXEC,
            Kind::Attach(StreamOptions {
                stderr: false,
                tty: true,
                ..ALL_STREAMS
            }),
        ),
        3 => (SESSION_WS_PORTFORWARD, Kind::PortForward),
        _ => (SESSION_WS_TUNNEL, Kind::PortForward),
    };
    let Ok(Parsed::Complete(req, _)) =
        upgrade::parse_request(request.as_bytes(), &Default::default())
    else {
        panic!("canned request does not parse");
    };
    let config = Config {
        spdy: spdy_config(),
        ..Config::default()
    };
    let now = Instant::now();
    let Ok(mut session) = Session::new(&req, kind, &config, now) else {
        panic!("canned request refused");
    };
    let first = session.poll_transmit().unwrap_or_default();
    assert!(first.starts_with(b"HTTP/1.1 101 "));
    let mut rng = Rng::new(u64::from(*seed));
    let mut done = false;
    for (i, chunk) in chunks(wire, &mut rng).into_iter().enumerate() {
        session.recv(chunk, now);
        while let Some(ev) = session.poll_event() {
            match ev {
                Event::Start => session.send_output(Output::Stdout, b"out"),
                Event::Stdin(d) => session.send_output(Output::Stderr, &d),
                Event::StdinEof => session.finish(Ok(i as i32)),
                Event::PortOpen { conn, .. } if conn % 2 == 0 => {
                    session.port_error(conn, "refused")
                }
                Event::PortData { conn, data } => session.port_data(conn, &data),
                Event::PortEof { conn } => session.port_eof(conn),
                _ => {}
            }
        }
        if let Some(at) = session.poll_timeout() {
            session.handle_timeout(at);
        }
        while let Some(b) = session.poll_transmit() {
            assert!(!b.starts_with(b"HTTP/1.1 101 "), "a second 101");
        }
        assert!(!done || session.is_done(), "a done session came back");
        done = session.is_done();
    }
}

const ALL_STREAMS: crisp_core::remotecommand::StreamOptions =
    crisp_core::remotecommand::StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
const SESSION_SPDY_EXEC: &str =
    "POST /exec/t HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
    X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
const SESSION_SPDY_PORTFORWARD: &str = "POST /portforward/t HTTP/1.1\r\nConnection: Upgrade\r\n\
    Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n";
const SESSION_WS_EXEC: &str =
    "GET /attach/t HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n";
const SESSION_WS_PORTFORWARD: &str = "GET /portforward/t?port=80&port=81 HTTP/1.1\r\n\
    Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n";
const SESSION_WS_TUNNEL: &str = "GET /portforward/t HTTP/1.1\r\nConnection: Upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n";
