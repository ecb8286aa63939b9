//! The SPDY/3.1 session (`crisp_core::spdy`) driven by its own client
//! role, and by raw hostile bytes. (Here rather than in `src/`: an
//! `Instant` needs a clock, which the core itself never reads.)

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crisp_core::spdy::frame::{self, Head, FLAG_FIN, HEAD_LEN};
use crisp_core::spdy::headers::{encode_block, header, Deflater};
use crisp_core::spdy::*;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// A frame as seen on the wire, header blocks left compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Raw {
    Control {
        kind: u16,
        flags: u8,
        payload: Bytes,
    },
    Data {
        id: u32,
        flags: u8,
        payload: Bytes,
    },
}

fn parse_frames(mut b: &[u8]) -> Vec<Raw> {
    let mut out = Vec::new();
    while b.len() >= HEAD_LEN {
        let head = Head::parse(b[..HEAD_LEN].try_into().unwrap());
        let len = head.length() as usize;
        let payload = Bytes::copy_from_slice(&b[HEAD_LEN..HEAD_LEN + len]);
        out.push(match head {
            Head::Control { kind, flags, .. } => Raw::Control {
                kind,
                flags,
                payload,
            },
            Head::Data {
                stream_id, flags, ..
            } => Raw::Data {
                id: stream_id,
                flags,
                payload,
            },
        });
        b = &b[HEAD_LEN + len..];
    }
    assert!(b.is_empty(), "trailing partial frame");
    out
}

fn rsts(frames: &[Raw]) -> Vec<(u32, RstStatus)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Raw::Control {
                kind: frame::RST_STREAM,
                payload,
                ..
            } => Some((
                frame::be_u32(payload, 0).unwrap(),
                RstStatus(frame::be_u32(payload, 4).unwrap()),
            )),
            _ => None,
        })
        .collect()
}

fn goaway(frames: &[Raw]) -> Option<(u32, GoAwayStatus)> {
    frames.iter().find_map(|f| match f {
        Raw::Control {
            kind: frame::GOAWAY,
            payload,
            ..
        } => Some((
            frame::be_u32(payload, 0).unwrap(),
            GoAwayStatus(frame::be_u32(payload, 4).unwrap()),
        )),
        _ => None,
    })
}

fn drain(c: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = c.poll_transmit() {
        out.extend_from_slice(&b);
    }
    out
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

struct Pair {
    client: Connection,
    server: Connection,
    now: Instant,
}

impl Pair {
    fn new(config: Config) -> Self {
        Self {
            client: Connection::client(config.clone()),
            server: Connection::server(config),
            now: Instant::now(),
        }
    }

    /// Moves bytes both ways until both are quiet.
    fn pump(&mut self) {
        loop {
            let c = drain(&mut self.client);
            let s = drain(&mut self.server);
            if c.is_empty() && s.is_empty() {
                return;
            }
            let _ = self.server.recv(&c, self.now);
            let _ = self.client.recv(&s, self.now);
        }
    }
}

/// The streams client-go's exec opens (remotecommand v4), in its order.
const EXEC_STREAMS: &[&str] = &["error", "stdin", "stdout", "stderr", "resize"];

#[test]
fn exec_session_end_to_end() {
    let mut p = Pair::new(Config::default());
    let mut ids = Vec::new();
    for t in EXEC_STREAMS {
        ids.push(
            p.client
                .open_stream(&h(&[("streamtype", t)]), false)
                .unwrap(),
        );
    }
    assert_eq!(ids, vec![1, 3, 5, 7, 9]);
    p.pump();
    let opened: Vec<_> = events(&mut p.server)
        .into_iter()
        .map(|e| match e {
            Event::StreamOpened {
                stream_id, headers, ..
            } => (
                stream_id,
                header(&headers, "streamtype").unwrap().to_string(),
            ),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(opened.len(), 5);
    assert_eq!(opened[2], (5, "stdout".to_string()));
    // Data before the reply is our misuse.
    assert_eq!(
        p.server.send_data(5, Bytes::from_static(b"x"), false),
        Err(UsageError::NotReplied)
    );
    for id in &ids {
        p.server.reply(*id, &[], false).unwrap();
    }
    assert_eq!(
        p.server.reply(1, &[], false),
        Err(UsageError::AlreadyReplied)
    );
    p.pump();
    let replies = events(&mut p.client);
    assert_eq!(replies.len(), 5);
    assert!(matches!(replies[0], Event::Reply { stream_id: 1, .. }));

    // stdin → server, with the client's half-close.
    p.client
        .send_data(3, Bytes::from_static(b"echo hi\n"), true)
        .unwrap();
    // stdout ← server, then its half-close.
    p.server
        .send_data(5, Bytes::from_static(b"hi\n"), true)
        .unwrap();
    p.pump();
    assert_eq!(
        events(&mut p.server),
        vec![Event::Data {
            stream_id: 3,
            data: Bytes::from_static(b"echo hi\n"),
            fin: true
        }]
    );
    assert_eq!(
        events(&mut p.client),
        vec![Event::Data {
            stream_id: 5,
            data: Bytes::from_static(b"hi\n"),
            fin: true
        }]
    );
    // The v4 error stream: the status, then close.
    p.server
        .send_data(
            1,
            Bytes::from_static(b"{\"metadata\":{},\"status\":\"Success\"}"),
            true,
        )
        .unwrap();
    p.pump();
    assert!(matches!(
        &events(&mut p.client)[..],
        [Event::Data {
            stream_id: 1,
            fin: true,
            ..
        }]
    ));
    // A stream lives until both halves are closed.
    assert!(p.server.is_open(3));
    assert!(p.server.is_open(5));
    for id in [1, 5, 7, 9] {
        p.client.close(id).unwrap();
    }
    for id in [3, 7, 9] {
        p.server.close(id).unwrap();
    }
    p.pump();
    assert_eq!(p.server.open_streams(), 0, "{:?}", events(&mut p.server));
    assert_eq!(p.client.open_streams(), 0);
}

#[test]
fn ping_is_echoed_and_acknowledged() {
    let mut p = Pair::new(Config::default());
    let id = p.client.ping().unwrap();
    assert_eq!(id % 2, 1);
    p.pump();
    assert_eq!(events(&mut p.client), vec![Event::PingAck { id }]);
    assert!(events(&mut p.server).is_empty());
    // A server ping too.
    let id = p.server.ping().unwrap();
    assert_eq!(id % 2, 0);
    p.pump();
    assert_eq!(events(&mut p.server), vec![Event::PingAck { id }]);
}

#[test]
fn resets_both_ways() {
    let mut p = Pair::new(Config::default());
    let a = p
        .client
        .open_stream(&h(&[("streamtype", "data")]), false)
        .unwrap();
    p.pump();
    events(&mut p.server);
    p.server.reply(a, &[], false).unwrap();
    p.pump();
    events(&mut p.client);
    p.client.reset(a, RstStatus::CANCEL).unwrap();
    p.pump();
    assert_eq!(
        events(&mut p.server),
        vec![Event::StreamReset {
            stream_id: a,
            status: RstStatus::CANCEL,
            remote: true
        }]
    );
    assert_eq!(
        p.server.send_data(a, Bytes::from_static(b"x"), false),
        Err(UsageError::UnknownStream)
    );
    // Data on a stream that does not exist: INVALID_STREAM.
    let mut raw = BytesMut::new();
    frame::encode_data(&mut raw, 41, 0, b"late");
    p.server.recv(&raw, p.now).unwrap();
    assert_eq!(
        rsts(&parse_frames(&drain(&mut p.server))),
        vec![(41, RstStatus::INVALID_STREAM)]
    );
    // Server resets a stream; the client sees it.
    let b = p
        .client
        .open_stream(&h(&[("streamtype", "data")]), false)
        .unwrap();
    p.pump();
    events(&mut p.server);
    p.server.reset(b, RstStatus::REFUSED_STREAM).unwrap();
    p.pump();
    assert_eq!(
        events(&mut p.client),
        vec![Event::StreamReset {
            stream_id: b,
            status: RstStatus::REFUSED_STREAM,
            remote: true
        }]
    );
}

#[test]
fn data_after_fin_is_stream_already_closed() {
    let mut p = Pair::new(Config::default());
    let a = p
        .client
        .open_stream(&h(&[("streamtype", "stdin")]), false)
        .unwrap();
    p.pump();
    p.server.reply(a, &[], false).unwrap();
    p.pump();
    let mut raw = BytesMut::new();
    frame::encode_data(&mut raw, a, FLAG_FIN, b"a");
    frame::encode_data(&mut raw, a, 0, b"b");
    p.server.recv(&raw, p.now).unwrap();
    assert_eq!(
        rsts(&parse_frames(&drain(&mut p.server))),
        vec![(a, RstStatus::STREAM_ALREADY_CLOSED)]
    );
}

#[test]
fn goaway_both_ways() {
    let mut p = Pair::new(Config::default());
    let a = p
        .client
        .open_stream(&h(&[("streamtype", "data")]), false)
        .unwrap();
    p.pump();
    events(&mut p.server);
    p.server.go_away(GoAwayStatus::OK);
    let goaway_bytes = drain(&mut p.server);
    // Crossing in flight: the client opens another stream meanwhile. The
    // server ignores it; the open stream goes on.
    let b = p
        .client
        .open_stream(&h(&[("streamtype", "late")]), false)
        .unwrap();
    p.server.recv(&drain(&mut p.client), p.now).unwrap();
    assert!(events(&mut p.server).is_empty());
    assert!(p.server.is_open(a) && !p.server.is_open(b));
    p.client.recv(&goaway_bytes, p.now).unwrap();
    assert_eq!(
        events(&mut p.client),
        vec![
            Event::StreamReset {
                stream_id: b,
                status: RstStatus::REFUSED_STREAM,
                remote: true
            },
            Event::GoAway {
                last_good_stream_id: a,
                status: GoAwayStatus::OK
            }
        ]
    );
    assert_eq!(
        p.client.open_stream(&h(&[]), false),
        Err(UsageError::GoingAway)
    );
    p.server.reply(a, &[], true).unwrap();
    p.client.close(a).unwrap();
    p.pump();
    assert!(p.server.is_done());
    // The client's GOAWAY reaches the server as an event.
    let mut p = Pair::new(Config::default());
    p.client.go_away(GoAwayStatus::OK);
    p.pump();
    assert_eq!(
        events(&mut p.server),
        vec![Event::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::OK
        }]
    );
}

#[test]
fn flow_control_on_holds_data_to_the_window() {
    let config = Config {
        flow_control: true,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    let a = p
        .client
        .open_stream(&h(&[("streamtype", "stdout")]), true)
        .unwrap();
    p.pump();
    events(&mut p.server);
    p.server.reply(a, &[], false).unwrap();
    let payload = Bytes::from(vec![7u8; 200 * 1024]);
    p.server.send_data(a, payload.clone(), true).unwrap();
    // Without the client's window updates, at most 64 KiB goes out.
    let first = drain(&mut p.server);
    let sent: usize = parse_frames(&first)
        .iter()
        .map(|f| match f {
            Raw::Data { payload, .. } => payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent, DEFAULT_WINDOW as usize);
    assert_eq!(
        p.server.send_buffered(a),
        200 * 1024 - DEFAULT_WINDOW as usize
    );
    p.client.recv(&first, p.now).unwrap();
    p.pump();
    let got: Vec<u8> = events(&mut p.client)
        .into_iter()
        .filter_map(|e| match e {
            Event::Data { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(got.len(), payload.len());
    assert_eq!(p.server.open_streams(), 0);
}

#[test]
fn flow_control_off_sends_everything_as_spdystream_expects() {
    let mut p = Pair::new(Config::default());
    let a = p
        .client
        .open_stream(&h(&[("streamtype", "stdout")]), true)
        .unwrap();
    p.pump();
    events(&mut p.server);
    p.server.reply(a, &[], false).unwrap();
    p.server
        .send_data(a, Bytes::from(vec![1u8; 200 * 1024]), true)
        .unwrap();
    let all = drain(&mut p.server);
    let sent: usize = parse_frames(&all)
        .iter()
        .map(|f| match f {
            Raw::Data { payload, .. } => payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent, 200 * 1024);
}

#[test]
fn flow_control_on_resets_a_stream_that_overruns() {
    let config = Config {
        flow_control: true,
        max_data_frame: 1 << 20,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    let a = p
        .client
        .open_stream(&h(&[("streamtype", "stdin")]), false)
        .unwrap();
    p.pump();
    p.server.reply(a, &[], false).unwrap();
    p.pump();
    events(&mut p.server);
    let mut raw = BytesMut::new();
    frame::encode_data(&mut raw, a, 0, &vec![0u8; DEFAULT_WINDOW as usize + 1]);
    let err = p.server.recv(&raw, p.now);
    // The session window is exceeded as well: that ends the session.
    assert!(err.is_err());
    let out = parse_frames(&drain(&mut p.server));
    assert_eq!(goaway(&out), Some((a, GoAwayStatus::PROTOCOL_ERROR)));
}

#[test]
fn window_update_and_settings_grow_the_send_window() {
    let config = Config {
        flow_control: true,
        ..Config::default()
    };
    let mut server = Connection::server(config);
    let mut client = Connection::client(Config::default());
    let a = client
        .open_stream(&h(&[("streamtype", "stdout")]), true)
        .unwrap();
    let now = Instant::now();
    server.recv(&drain(&mut client), now).unwrap();
    server.reply(a, &[], false).unwrap();
    let mut raw = BytesMut::new();
    frame::encode_settings(
        &mut raw,
        &[(0, frame::SETTINGS_INITIAL_WINDOW_SIZE, 100_000)],
    );
    frame::encode_window_update(&mut raw, 0, 100_000);
    server.recv(&raw, now).unwrap();
    server
        .send_data(a, Bytes::from(vec![0u8; 150_000]), false)
        .unwrap();
    let sent: usize = parse_frames(&drain(&mut server))
        .iter()
        .map(|f| match f {
            Raw::Data { payload, .. } => payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(sent, 100_000);
    // Overflowing a stream window is that stream's error.
    let mut raw = BytesMut::new();
    frame::encode_window_update(&mut raw, a, 0x7fff_ffff);
    frame::encode_window_update(&mut raw, a, 0x7fff_ffff);
    server.recv(&raw, now).unwrap();
    assert_eq!(
        rsts(&parse_frames(&drain(&mut server))),
        vec![(a, RstStatus::FLOW_CONTROL_ERROR)]
    );
}

// ---- hostile peers ----

fn syn_stream(d: &mut Deflater, id: u32, headers: &[(String, String)], flags: u8) -> Vec<u8> {
    let mut block = Vec::new();
    d.deflate(&encode_block(headers), &mut block).unwrap();
    let mut raw = BytesMut::new();
    frame::encode_syn_stream(&mut raw, id, 0, 0, flags, &block);
    raw.to_vec()
}

#[test]
fn header_bomb_is_frame_too_large_then_goaway() {
    let mut server = Connection::server(Config::default());
    let mut d = Deflater::new();
    let bomb = h(&[("x", &"a".repeat(1 << 20))]);
    let raw = syn_stream(&mut d, 1, &bomb, 0);
    assert!(raw.len() < 16 * 1024, "compressed {}", raw.len());
    let err = server.recv(&raw, Instant::now()).unwrap_err();
    assert_eq!(err.status, GoAwayStatus::PROTOCOL_ERROR);
    let out = parse_frames(&drain(&mut server));
    assert_eq!(rsts(&out), vec![(1, RstStatus::FRAME_TOO_LARGE)]);
    assert_eq!(goaway(&out), Some((0, GoAwayStatus::PROTOCOL_ERROR)));
    // Nothing more is read.
    assert!(server.recv(&raw, Instant::now()).is_err());
    assert_eq!(server.recv_buffered(), 0);
}

#[test]
fn oversized_control_frame_is_refused_before_it_is_buffered() {
    let mut server = Connection::server(Config::default());
    let mut raw = BytesMut::new();
    // A SYN_STREAM head announcing 1 MiB, then its stream id.
    raw.extend_from_slice(&[0x80, 3, 0, 1, 0, 0x10, 0, 0, 0, 0, 0, 1]);
    assert!(server.recv(&raw, Instant::now()).is_err());
    let out = parse_frames(&drain(&mut server));
    assert_eq!(rsts(&out), vec![(1, RstStatus::FRAME_TOO_LARGE)]);
    assert!(goaway(&out).is_some());
}

#[test]
fn corrupt_header_block_is_a_session_error() {
    let mut server = Connection::server(Config::default());
    let mut raw = BytesMut::new();
    frame::encode_syn_stream(&mut raw, 1, 0, 0, 0, b"\x78\xbbnot zlib at all");
    assert!(server.recv(&raw, Instant::now()).is_err());
    assert_eq!(
        goaway(&parse_frames(&drain(&mut server))),
        Some((0, GoAwayStatus::PROTOCOL_ERROR))
    );
}

#[test]
fn malformed_frames_are_session_errors() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0x80, 3, 0, 6, 0, 0, 0, 3, 0, 0, 0], // PING of 3 bytes
        vec![0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1], // short RST_STREAM
        vec![0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0], // RST status 0
        vec![0x80, 3, 0, 7, 0, 0, 0, 4, 0, 0, 0, 0], // short GOAWAY
        vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0], // session update of 0
        vec![0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 9], // SETTINGS count lies
        vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1], // SPDY/2
        vec![0x80, 3, 0, 1, 0, 0, 0, 2, 0, 0],    // SYN_STREAM too short
        vec![0, 0, 0, 0, 0, 0, 0, 1, 0],          // DATA on stream 0
    ];
    for case in cases {
        let mut server = Connection::server(Config::default());
        assert!(
            server.recv(&case, Instant::now()).is_err(),
            "accepted {case:?}"
        );
        assert!(goaway(&parse_frames(&drain(&mut server))).is_some());
    }
}

#[test]
fn stream_ids_must_grow_and_be_odd() {
    let mut server = Connection::server(Config::default());
    let mut d = Deflater::new();
    let mut raw = syn_stream(&mut d, 5, &h(&[]), 0);
    raw.extend(syn_stream(&mut d, 3, &h(&[]), 0));
    assert!(server.recv(&raw, Instant::now()).is_err());

    let mut server = Connection::server(Config::default());
    let mut d = Deflater::new();
    assert!(server
        .recv(&syn_stream(&mut d, 2, &h(&[]), 0), Instant::now())
        .is_err());

    // A header block with an upper-case name resets only that stream.
    let mut server = Connection::server(Config::default());
    let mut d = Deflater::new();
    let mut block = Vec::new();
    let mut plain = encode_block(&h(&[("a", "1")]));
    plain[8] = b'A';
    d.deflate(&plain, &mut block).unwrap();
    let mut raw = BytesMut::new();
    frame::encode_syn_stream(&mut raw, 1, 0, 0, 0, &block);
    server.recv(&raw, Instant::now()).unwrap();
    assert_eq!(
        rsts(&parse_frames(&drain(&mut server))),
        vec![(1, RstStatus::PROTOCOL_ERROR)]
    );
    server
        .recv(&syn_stream(&mut d, 3, &h(&[("a", "1")]), 0), Instant::now())
        .unwrap();
    assert!(matches!(
        events(&mut server)[..],
        [Event::StreamOpened { stream_id: 3, .. }]
    ));
}

#[test]
fn stream_flood_is_refused_then_cut_off() {
    let config = Config {
        max_concurrent_streams: 4,
        max_local_resets: 50,
        ..Config::default()
    };
    let mut server = Connection::server(config);
    let mut d = Deflater::new();
    let now = Instant::now();
    let mut refused = 0;
    let mut result = Ok(());
    for i in 0..100u32 {
        result = server.recv(&syn_stream(&mut d, 2 * i + 1, &h(&[]), 0), now);
        refused += rsts(&parse_frames(&drain(&mut server)))
            .iter()
            .filter(|(_, s)| *s == RstStatus::REFUSED_STREAM)
            .count();
        if result.is_err() {
            break;
        }
    }
    assert_eq!(server.open_streams(), 0, "cleared after the session error");
    assert_eq!(refused, 51);
    assert!(result.is_err());
}

#[test]
fn ping_flood_is_cut_off() {
    let config = Config {
        max_control_frames: 100,
        ..Config::default()
    };
    let mut server = Connection::server(config);
    let now = Instant::now();
    let mut raw = BytesMut::new();
    for i in 0..200u32 {
        frame::encode_ping(&mut raw, 2 * i + 1);
    }
    let err = server.recv(&raw, now).unwrap_err();
    assert_eq!(err.reason, "control frame flood");
    let out = parse_frames(&drain(&mut server));
    assert_eq!(
        out.iter()
            .filter(|f| matches!(
                f,
                Raw::Control {
                    kind: frame::PING,
                    ..
                }
            ))
            .count(),
        100
    );
    // The same pings spread over time are fine.
    let config = Config {
        max_control_frames: 100,
        ..Config::default()
    };
    let mut server = Connection::server(config);
    for i in 0..300u32 {
        let mut raw = BytesMut::new();
        frame::encode_ping(&mut raw, 2 * i + 1);
        let t = now + Duration::from_secs(u64::from(i / 50) * 11);
        server.recv(&raw, t).unwrap();
        drain(&mut server);
    }
}

#[test]
fn a_peer_that_never_reads_is_cut_off() {
    let config = Config {
        max_control_frames: u32::MAX,
        ..Config::default()
    };
    let mut server = Connection::server(config);
    let now = Instant::now();
    let mut result = Ok(());
    for i in 0..20_000u32 {
        let mut raw = BytesMut::new();
        frame::encode_ping(&mut raw, 2 * i + 1);
        result = server.recv(&raw, now);
        if result.is_err() {
            break;
        }
    }
    assert!(result.is_err());
    // The backlog is bounded by the limit (plus the GOAWAY).
    assert!(drain(&mut server).len() <= 64 * 1024 + 32);
}

#[test]
fn large_data_frames_arrive_in_pieces_with_bounded_memory() {
    let config = Config {
        max_data_frame: 1024,
        ..Config::default()
    };
    let mut server = Connection::server(config);
    let mut d = Deflater::new();
    let now = Instant::now();
    server
        .recv(&syn_stream(&mut d, 1, &h(&[]), 0), now)
        .unwrap();
    events(&mut server);
    server.reply(1, &[], false).unwrap();
    let mut raw = BytesMut::new();
    let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    frame::encode_data(&mut raw, 1, FLAG_FIN, &payload);
    let mut got = Vec::new();
    // Fed in pieces: never more than one piece is buffered.
    for piece in raw.chunks(700) {
        server.recv(piece, now).unwrap();
        assert!(server.recv_buffered() <= HEAD_LEN + 1024 + 700);
        got.extend(events(&mut server));
    }
    let sizes: Vec<(usize, bool)> = got
        .iter()
        .map(|e| match e {
            Event::Data { data, fin, .. } => (data.len(), *fin),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(
        sizes,
        vec![
            (1024, false),
            (1024, false),
            (1024, false),
            (1024, false),
            (904, true)
        ]
    );
    let joined: Vec<u8> = got
        .into_iter()
        .flat_map(|e| match e {
            Event::Data { data, .. } => data.to_vec(),
            _ => vec![],
        })
        .collect();
    assert_eq!(joined, payload);
    // A large frame on an unknown stream: one reset, the rest skipped.
    let mut raw = BytesMut::new();
    frame::encode_data(&mut raw, 7, 0, &[0u8; 5000]);
    frame::encode_ping(&mut raw, 1);
    server.recv(&raw, now).unwrap();
    let out = parse_frames(&drain(&mut server));
    assert_eq!(rsts(&out), vec![(7, RstStatus::INVALID_STREAM)]);
    assert!(out.iter().any(|f| matches!(
        f,
        Raw::Control {
            kind: frame::PING,
            ..
        }
    )));
}

#[test]
fn unknown_control_frames_are_ignored() {
    let mut server = Connection::server(Config::default());
    // CREDENTIAL (type 10) and NOOP (type 5).
    let raw = [
        0x80, 3, 0, 10, 0, 0, 0, 2, 1, 2, //
        0x80, 3, 0, 5, 0, 0, 0, 0,
    ];
    server.recv(&raw, Instant::now()).unwrap();
    assert!(drain(&mut server).is_empty());
}

// ---- chunking ----

/// A client's side of a whole exec session, as bytes.
fn scripted_client_bytes(seed: u8) -> Vec<u8> {
    let mut c = Connection::client(Config::default());
    let mut out = Vec::new();
    for t in EXEC_STREAMS {
        c.open_stream(&h(&[("streamtype", t), ("seed", &seed.to_string())]), false)
            .unwrap();
    }
    c.ping().unwrap();
    out.extend(drain(&mut c));
    // Pretend replies arrived: data on stdin is allowed on our own streams.
    c.send_data(3, Bytes::from(vec![seed; 3000]), false)
        .unwrap();
    c.send_data(
        9,
        Bytes::from_static(b"{\"Width\":80,\"Height\":24}"),
        false,
    )
    .unwrap();
    c.close(3).unwrap();
    c.reset(9, RstStatus::CANCEL).unwrap();
    out.extend(drain(&mut c));
    c.go_away(GoAwayStatus::OK);
    out.extend(drain(&mut c));
    out
}

fn server_events(input: &[u8], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let mut server = Connection::server(Config::default());
    let now = Instant::now();
    let mut evs = Vec::new();
    let mut out = Vec::new();
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    for cut in cuts {
        let _ = server.recv(&input[last..cut], now);
        last = cut;
        evs.extend(events(&mut server));
        out.extend(drain(&mut server));
    }
    (evs, out)
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_events(seed in any::<u8>(), cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
        let input = scripted_client_bytes(seed);
        let whole = server_events(&input, &[]);
        prop_assert!(whole.0.len() >= 8, "{:?}", whole.0);
        let chunked = server_events(&input, &cuts);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut server = Connection::server(Config::default());
        let now = Instant::now();
        let _ = server.recv(&bytes, now);
        prop_assert!(server.recv_buffered() <= bytes.len());
        while server.poll_event().is_some() {}
        while server.poll_transmit().is_some() {}
    }
}

#[test]
fn upgrade_then_spdy_frames_in_the_same_read() {
    use crisp_core::upgrade::{parse_request, Limits, Parsed, Transport};
    // client-go sends its first SYN_STREAMs right behind the request when
    // it can; the bytes after the head belong to the session.
    let mut client = Connection::client(Config::default());
    client
        .open_stream(&h(&[("streamtype", "error")]), false)
        .unwrap();
    let mut input = b"POST /exec/tok HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
        X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        .to_vec();
    input.extend(drain(&mut client));
    let Ok(Parsed::Complete(req, used)) = parse_request(&input, &Limits::default()) else {
        panic!("not parsed");
    };
    assert_eq!(
        req.transport,
        Transport::Spdy {
            protocol: Some("v4.channel.k8s.io")
        }
    );
    let mut server = Connection::server(Config::default());
    server.recv(&input[used..], Instant::now()).unwrap();
    assert!(matches!(
        &events(&mut server)[..],
        [Event::StreamOpened { stream_id: 1, .. }]
    ));
}

#[test]
fn a_unidirectional_stream_gets_no_reply() {
    let mut server = Connection::server(Config::default());
    let mut d = Deflater::new();
    server
        .recv(
            &syn_stream(
                &mut d,
                1,
                &h(&[("streamtype", "data")]),
                frame::FLAG_UNIDIRECTIONAL,
            ),
            Instant::now(),
        )
        .unwrap();
    assert!(matches!(
        &events(&mut server)[..],
        [Event::StreamOpened {
            stream_id: 1,
            unidirectional: true,
            ..
        }]
    ));
    assert_eq!(server.reply(1, &[], false), Err(UsageError::SendClosed));
    assert!(drain(&mut server).is_empty());
}

// ---- both ends driven by random commands ----

#[derive(Debug, Clone)]
enum Op {
    Open,
    ClientSend {
        stream: usize,
        len: usize,
        fin: bool,
    },
    ServerReply {
        stream: usize,
    },
    ServerSend {
        stream: usize,
        len: usize,
        fin: bool,
    },
    /// Deliver up to this many pending bytes each way.
    Deliver(usize),
    Ping,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Open),
        (0usize..6, 0usize..100_000, any::<bool>()).prop_map(|(stream, len, fin)| Op::ClientSend {
            stream,
            len,
            fin
        }),
        (0usize..6).prop_map(|stream| Op::ServerReply { stream }),
        (0usize..6, 0usize..100_000, any::<bool>()).prop_map(|(stream, len, fin)| Op::ServerSend {
            stream,
            len,
            fin
        }),
        (1usize..200_000).prop_map(Op::Deliver),
        Just(Op::Ping),
    ]
}

#[derive(Default, Debug)]
struct Side {
    sent: Vec<u8>,
    sent_fin: bool,
    got: Vec<u8>,
    got_fin: bool,
}

fn run_ops(ops: &[Op], flow_control: bool) {
    let config = Config {
        flow_control,
        max_data_frame: 16 * 1024,
        ..Config::default()
    };
    let mut client = Connection::client(config.clone());
    let mut server = Connection::server(config);
    let now = Instant::now();
    let mut ids: Vec<u32> = Vec::new();
    // Per stream: client → server and server → client.
    let mut up: Vec<Side> = Vec::new();
    let mut down: Vec<Side> = Vec::new();
    let mut opened_on_server: Vec<u32> = Vec::new();
    let mut replied: Vec<u32> = Vec::new();
    let (mut to_server, mut to_client) = (Vec::<u8>::new(), Vec::<u8>::new());
    let mut counter = 0u8;
    let mut bytes = |len: usize| -> Bytes {
        counter = counter.wrapping_add(1);
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_add(counter))
                .collect::<Vec<_>>(),
        )
    };

    let collect = |client: &mut Connection,
                   server: &mut Connection,
                   ids: &[u32],
                   up: &mut Vec<Side>,
                   down: &mut Vec<Side>,
                   opened: &mut Vec<u32>| {
        for e in events(server) {
            match e {
                Event::StreamOpened { stream_id, .. } => opened.push(stream_id),
                Event::Data {
                    stream_id,
                    data,
                    fin,
                } => {
                    let i = ids.iter().position(|x| *x == stream_id).unwrap();
                    assert!(!up[i].got_fin, "data after FIN");
                    up[i].got.extend_from_slice(&data);
                    up[i].got_fin |= fin;
                }
                e => panic!("server: {e:?}"),
            }
        }
        for e in events(client) {
            match e {
                Event::Reply { .. } | Event::PingAck { .. } => {}
                Event::Data {
                    stream_id,
                    data,
                    fin,
                } => {
                    let i = ids.iter().position(|x| *x == stream_id).unwrap();
                    assert!(!down[i].got_fin, "data after FIN");
                    down[i].got.extend_from_slice(&data);
                    down[i].got_fin |= fin;
                }
                e => panic!("client: {e:?}"),
            }
        }
    };

    for op in ops {
        match *op {
            Op::Open => {
                if let Ok(id) = client.open_stream(&h(&[("streamtype", "data")]), false) {
                    ids.push(id);
                    up.push(Side::default());
                    down.push(Side::default());
                }
            }
            Op::ClientSend { stream, len, fin } => {
                if let Some(&id) = ids.get(stream) {
                    if !up[stream].sent_fin {
                        let data = bytes(len);
                        client.send_data(id, data.clone(), fin).unwrap();
                        up[stream].sent.extend_from_slice(&data);
                        up[stream].sent_fin = fin;
                    }
                }
            }
            Op::ServerReply { stream } => {
                if let Some(&id) = ids.get(stream) {
                    if opened_on_server.contains(&id) && !replied.contains(&id) {
                        server.reply(id, &[], false).unwrap();
                        replied.push(id);
                    }
                }
            }
            Op::ServerSend { stream, len, fin } => {
                if let Some(&id) = ids.get(stream) {
                    if replied.contains(&id) && !down[stream].sent_fin {
                        let data = bytes(len);
                        server.send_data(id, data.clone(), fin).unwrap();
                        down[stream].sent.extend_from_slice(&data);
                        down[stream].sent_fin = fin;
                    }
                }
            }
            Op::Deliver(n) => {
                to_server.extend(drain(&mut client));
                to_client.extend(drain(&mut server));
                let a: Vec<u8> = to_server.drain(..n.min(to_server.len())).collect();
                let b: Vec<u8> = to_client.drain(..n.min(to_client.len())).collect();
                server.recv(&a, now).unwrap();
                client.recv(&b, now).unwrap();
            }
            Op::Ping => {
                client.ping().unwrap();
            }
        }
        collect(
            &mut client,
            &mut server,
            &ids,
            &mut up,
            &mut down,
            &mut opened_on_server,
        );
    }
    // Everything in flight arrives.
    loop {
        to_server.extend(drain(&mut client));
        to_client.extend(drain(&mut server));
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
        server.recv(&std::mem::take(&mut to_server), now).unwrap();
        client.recv(&std::mem::take(&mut to_client), now).unwrap();
        collect(
            &mut client,
            &mut server,
            &ids,
            &mut up,
            &mut down,
            &mut opened_on_server,
        );
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(up[i].got, up[i].sent, "stream {id} client → server");
        assert_eq!(up[i].got_fin, up[i].sent_fin);
        assert_eq!(down[i].got, down[i].sent, "stream {id} server → client");
        assert_eq!(down[i].got_fin, down[i].sent_fin);
        assert_eq!(server.send_buffered(*id), 0);
        assert_eq!(client.send_buffered(*id), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_sessions_deliver_every_byte_in_order(
        ops in proptest::collection::vec(op(), 1..40),
        flow_control in any::<bool>(),
    ) {
        run_ops(&ops, flow_control);
    }
}
