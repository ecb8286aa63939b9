//! GOAWAY regressions found by the `server_frames` fuzz target.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use crisp_core::h2::frame::{self, Frame, FrameReader};
use crisp_core::h2::hpack::{Encoder, Header};
use crisp_core::h2::{Config, Connection, ErrorCode, StreamId};

fn request(encoder: &mut Encoder, id: u32, out: &mut BytesMut) {
    let headers = [
        Header::from_static(":method", "POST"),
        Header::from_static(":scheme", "http"),
        Header::from_static(":path", "/runtime.v1.RuntimeService/Version"),
        Header::from_static("content-type", "application/grpc"),
        Header::from_static("te", "trailers"),
    ];
    let mut block = BytesMut::new();
    encoder.encode(&headers, &mut block);
    frame::Headers::new(StreamId::new(id), block.freeze(), false, true).encode(out);
}

fn frames(conn: &mut Connection) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    while let Some(b) = conn.poll_transmit() {
        buf.extend_from_slice(&b);
    }
    let mut reader = FrameReader::new(frame::MAX_MAX_FRAME_SIZE);
    let mut out = Vec::new();
    while let Some(f) = reader.read(&mut buf).expect("valid output") {
        out.push(f);
    }
    out
}

/// A server that said GOAWAY(last) and then ignores stream `last + 2`.
fn server_past_goaway(encoder: &mut Encoder, now: Instant) -> Connection {
    let mut conn = Connection::server(Config::default());
    let mut input = BytesMut::from(&frame::PREFACE[..]);
    frame::Settings::default().encode(&mut input);
    request(encoder, 1, &mut input);
    conn.recv(&input, now).unwrap();
    conn.go_away(ErrorCode::NO_ERROR);
    let mut input = BytesMut::new();
    request(encoder, 3, &mut input);
    conn.recv(&input, now).unwrap();
    conn
}

#[test]
fn last_stream_id_never_grows() {
    let now = Instant::now();
    let mut encoder = Encoder::new();
    let mut conn = server_past_goaway(&mut encoder, now);
    // A connection error after the graceful GOAWAY (PING on a stream).
    let bad = frame::Unknown {
        kind: frame::kind::PING,
        flags: 0,
        stream_id: StreamId::new(1),
        payload: Bytes::from_static(&[0; 8]),
    };
    let mut input = BytesMut::new();
    bad.encode(&mut input);
    assert!(conn.recv(&input, now).is_err());
    let lasts: Vec<u32> = frames(&mut conn)
        .into_iter()
        .filter_map(|f| match f {
            Frame::GoAway(g) => Some(g.last_stream_id.get()),
            _ => None,
        })
        .collect();
    assert_eq!(
        lasts,
        [1, 1],
        "RFC 9113 §6.8: the last stream id may not grow"
    );
}

#[test]
fn frames_on_streams_ignored_after_goaway_are_discarded() {
    let now = Instant::now();
    let mut encoder = Encoder::new();
    let mut conn = server_past_goaway(&mut encoder, now);
    // The client sent these before it saw our GOAWAY: DATA and trailers on
    // the ignored stream 3. RFC 9113 §6.8: they may be discarded (DATA
    // still counts toward connection flow control); stream 1 goes on.
    let mut input = BytesMut::new();
    frame::Data::new(StreamId::new(3), Bytes::from_static(b"\0\0\0\0\0"), false).encode(&mut input);
    frame::RstStream::new(StreamId::new(3), ErrorCode::CANCEL).encode(&mut input);
    frame::Data::new(StreamId::new(1), Bytes::from_static(b"\0\0\0\0\0"), true).encode(&mut input);
    conn.recv(&input, now).expect("no connection error");
    let goaways = frames(&mut conn)
        .into_iter()
        .filter(|f| matches!(f, Frame::GoAway(g) if g.code != ErrorCode::NO_ERROR))
        .count();
    assert_eq!(goaways, 0);
    let mut data_on_1 = false;
    while let Some(ev) = conn.poll_event() {
        if matches!(ev, crisp_core::h2::Event::Data { stream_id, .. } if stream_id == 1) {
            data_on_1 = true;
        }
    }
    assert!(data_on_1, "stream 1 still served");
}
