//! Tests across frame types: round trips through [`decode`] and
//! [`FrameReader`], the §6 validation rules as seen through [`decode`], and
//! property tests.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::h2::error::{ErrorCode, StreamError};

/// A raw frame: head fields plus payload.
fn raw(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> (Head, Bytes) {
    (
        Head {
            length: payload.len() as u32,
            kind,
            flags,
            stream_id: StreamId::new(stream_id),
        },
        Bytes::copy_from_slice(payload),
    )
}

fn dec(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Result<Frame, ProtocolError> {
    let (h, p) = raw(kind, flags, stream_id, payload);
    decode(h, p)
}

fn conn_err(r: Result<Frame, ProtocolError>) -> ErrorCode {
    match r {
        Err(ProtocolError::Connection(e)) => e.code,
        other => panic!("expected a connection error, got {other:?}"),
    }
}

fn stream_err(r: Result<Frame, ProtocolError>) -> StreamError {
    match r {
        Err(ProtocolError::Stream(e)) => e,
        other => panic!("expected a stream error, got {other:?}"),
    }
}

/// Encode, then read back through a FrameReader allowing the largest frames.
fn round_trip(f: &Frame) -> Frame {
    let mut buf = BytesMut::new();
    f.encode(&mut buf);
    let mut r = FrameReader::new(MAX_MAX_FRAME_SIZE);
    let got = r.read(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty(), "frame left {} bytes", buf.len());
    got
}

fn spec(dependency: u32, exclusive: bool, weight: u8) -> PrioritySpec {
    PrioritySpec {
        dependency: StreamId::new(dependency),
        exclusive,
        weight,
    }
}

/// One of every frame type, with padding and priority variants.
fn samples() -> Vec<Frame> {
    let settings = Settings {
        header_table_size: Some(4096),
        enable_push: Some(0),
        max_concurrent_streams: Some(100),
        initial_window_size: Some(MAX_WINDOW_SIZE),
        max_frame_size: Some(MAX_MAX_FRAME_SIZE),
        max_header_list_size: Some(8192),
        enable_connect_protocol: Some(1),
        ..Settings::default()
    };
    let mut padded_headers = Headers::new(
        StreamId::new(3),
        Bytes::from_static(b"\x82\x86"),
        true,
        false,
    );
    padded_headers.pad_len = Some(4);
    padded_headers.priority = Some(spec(1, true, 255));
    let mut prio_headers = Headers::new(StreamId::new(5), Bytes::from_static(b"\x84"), false, true);
    prio_headers.priority = Some(spec(0, false, 15));
    let mut zero_pad_headers = Headers::new(StreamId::new(7), Bytes::new(), false, true);
    zero_pad_headers.pad_len = Some(0);
    let v: Vec<Frame> = vec![
        Data::new(StreamId::new(1), Bytes::from_static(b"hello"), false).into(),
        Data::new(StreamId::new(1), Bytes::new(), true).into(),
        Data::new(StreamId::new(3), Bytes::from_static(b"padded"), true)
            .with_padding(255)
            .into(),
        Data::new(StreamId::new(3), Bytes::new(), false)
            .with_padding(0)
            .into(),
        Headers::new(
            StreamId::new(1),
            Bytes::from_static(b"\x82\x86\x84"),
            true,
            true,
        )
        .into(),
        padded_headers.into(),
        prio_headers.into(),
        zero_pad_headers.into(),
        Priority {
            stream_id: StreamId::new(9),
            spec: spec(MAX_WINDOW_SIZE, true, 0),
        }
        .into(),
        RstStream::new(StreamId::new(1), ErrorCode::CANCEL).into(),
        RstStream::new(StreamId::MAX, ErrorCode(0xdead_beef)).into(),
        settings.into(),
        Settings::default().into(),
        Settings::ack().into(),
        PushPromise {
            stream_id: StreamId::new(1),
            promised_id: StreamId::new(2),
            fragment: Bytes::from_static(b"\x82"),
            end_headers: true,
        }
        .into(),
        Ping::new(*b"\0\x01\x02\x03\x04\x05\x06\x07").into(),
        Ping::pong([0xff; 8]).into(),
        GoAway::new(StreamId::new(7), ErrorCode::NO_ERROR).into(),
        GoAway {
            last_stream_id: StreamId::MAX,
            code: ErrorCode::PROTOCOL_ERROR,
            debug_data: Bytes::from_static(b"bye"),
        }
        .into(),
        WindowUpdate::new(StreamId::new(0), 1).into(),
        WindowUpdate::new(StreamId::new(5), MAX_WINDOW_SIZE).into(),
        Continuation {
            stream_id: StreamId::new(3),
            fragment: Bytes::from_static(b"\x84"),
            end_headers: false,
        }
        .into(),
        Continuation {
            stream_id: StreamId::new(3),
            fragment: Bytes::new(),
            end_headers: true,
        }
        .into(),
        Unknown {
            kind: 0xfa,
            flags: 0xff,
            stream_id: StreamId::ZERO,
            payload: Bytes::from_static(b"whatever"),
        }
        .into(),
        Unknown {
            kind: 10,
            flags: 0,
            stream_id: StreamId::new(77),
            payload: Bytes::new(),
        }
        .into(),
    ];
    v
}

#[test]
fn round_trip_every_type() {
    let samples = samples();
    let mut kinds: Vec<u8> = samples.iter().map(Frame::kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    // All ten defined types plus unknown ones are covered.
    assert!((0..=9).all(|k| kinds.contains(&k)));
    for f in &samples {
        assert_eq!(&round_trip(f), f);
    }
}

#[test]
fn stream_id_and_kind() {
    for f in samples() {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        let head = Head::parse(b[..HEADER_LEN].try_into().unwrap());
        assert_eq!(head.stream_id, f.stream_id());
        assert_eq!(head.kind, f.kind());
        assert_eq!(head.length as usize, b.len() - HEADER_LEN);
    }
}

#[test]
fn exact_wire_bytes() {
    let mut b = BytesMut::new();
    let mut h = Headers::new(StreamId::new(1), Bytes::from_static(b"F"), true, true);
    h.pad_len = Some(1);
    h.priority = Some(spec(3, true, 7));
    h.encode(&mut b);
    assert_eq!(
        &b[..],
        b"\x00\x00\x08\x01\x2d\x00\x00\x00\x01\x01\x80\x00\x00\x03\x07F\x00"
    );
    b.clear();
    WindowUpdate::new(StreamId::new(0), 0x1234).encode(&mut b);
    assert_eq!(
        &b[..],
        b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x12\x34"
    );
    b.clear();
    let s = Settings {
        initial_window_size: Some(65_535),
        enable_push: Some(0),
        ..Settings::default()
    };
    s.encode(&mut b);
    assert_eq!(
        &b[..],
        b"\x00\x00\x0c\x04\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x04\x00\x00\xff\xff"
    );
}

#[test]
fn preface_is_not_a_frame_we_misread() {
    // The preface starts with "PRI": as a head, 0x505249 bytes long, far
    // above the default limit, so a reader fed it without the connection
    // having stripped it fails rather than waiting for 5 MB.
    let mut r = FrameReader::default();
    let mut buf = BytesMut::from(&PREFACE[..]);
    assert_eq!(
        conn_err(r.read(&mut buf).map(|f| f.unwrap())),
        ErrorCode::FRAME_SIZE_ERROR
    );
}

// ---- §6 validation through decode() ----

#[test]
fn stream_frames_on_stream_zero_are_connection_protocol_errors() {
    let cases: [(u8, u8, &[u8]); 6] = [
        (kind::DATA, 0, b"x"),
        (kind::HEADERS, flags::END_HEADERS, b"\x82"),
        (kind::PRIORITY, 0, &[0, 0, 0, 1, 0]),
        (kind::RST_STREAM, 0, &[0, 0, 0, 8]),
        (kind::PUSH_PROMISE, flags::END_HEADERS, &[0, 0, 0, 2, 0x82]),
        (kind::CONTINUATION, flags::END_HEADERS, b"\x82"),
    ];
    for (k, f, p) in cases {
        assert_eq!(
            conn_err(dec(k, f, 0, p)),
            ErrorCode::PROTOCOL_ERROR,
            "kind {k}"
        );
    }
}

#[test]
fn connection_frames_on_a_stream_are_connection_protocol_errors() {
    let cases: [(u8, &[u8]); 3] = [
        (kind::SETTINGS, b""),
        (kind::PING, b"12345678"),
        (kind::GOAWAY, &[0; 8]),
    ];
    for (k, p) in cases {
        for sid in [1, 2, MAX_WINDOW_SIZE] {
            assert_eq!(conn_err(dec(k, 0, sid, p)), ErrorCode::PROTOCOL_ERROR);
        }
    }
}

#[test]
fn window_update_on_any_stream() {
    for sid in [0, 1, MAX_WINDOW_SIZE] {
        assert_eq!(
            dec(kind::WINDOW_UPDATE, 0, sid, &[0, 0, 0, 1]).unwrap(),
            WindowUpdate::new(StreamId::new(sid), 1).into()
        );
    }
}

#[test]
fn padding_rules() {
    use flags::{PADDED, PRIORITY};
    // Padding as long as the whole payload or more: PROTOCOL_ERROR.
    assert_eq!(
        conn_err(dec(kind::DATA, PADDED, 1, &[1])),
        ErrorCode::PROTOCOL_ERROR
    );
    assert_eq!(
        conn_err(dec(kind::DATA, PADDED, 1, &[5, 0, 0, 0, 0])),
        ErrorCode::PROTOCOL_ERROR
    );
    assert_eq!(
        conn_err(dec(kind::HEADERS, PADDED, 1, &[3, 0x82, 0])),
        ErrorCode::PROTOCOL_ERROR
    );
    // Padding filling everything after the pad length byte: fine.
    assert!(dec(kind::DATA, PADDED, 1, &[0]).is_ok());
    assert!(dec(kind::DATA, PADDED, 1, &[4, 0, 0, 0, 0]).is_ok());
    assert!(dec(kind::HEADERS, PADDED, 1, &[2, 0, 0]).is_ok());
    // Too short for the pad length byte, or for the priority fields.
    assert_eq!(
        conn_err(dec(kind::DATA, PADDED, 1, &[])),
        ErrorCode::FRAME_SIZE_ERROR
    );
    assert_eq!(
        conn_err(dec(kind::HEADERS, PADDED, 1, &[])),
        ErrorCode::FRAME_SIZE_ERROR
    );
    assert_eq!(
        conn_err(dec(kind::HEADERS, PRIORITY, 1, &[0, 0, 0, 0])),
        ErrorCode::FRAME_SIZE_ERROR
    );
    assert_eq!(
        conn_err(dec(kind::HEADERS, PADDED | PRIORITY, 1, &[0, 0, 0, 0, 0])),
        ErrorCode::FRAME_SIZE_ERROR
    );
    assert!(dec(kind::HEADERS, PADDED | PRIORITY, 1, &[0, 0, 0, 0, 0, 0]).is_ok());
    assert!(dec(kind::HEADERS, PRIORITY, 1, &[0, 0, 0, 0, 0]).is_ok());
}

#[test]
fn priority_rules() {
    for len in [0usize, 1, 4, 6, 100] {
        let e = stream_err(dec(kind::PRIORITY, 0, 3, &vec![0; len]));
        assert_eq!(
            (e.stream_id, e.code),
            (StreamId::new(3), ErrorCode::FRAME_SIZE_ERROR)
        );
    }
    let e = stream_err(dec(kind::PRIORITY, 0, 3, &[0, 0, 0, 3, 0]));
    assert_eq!(
        (e.stream_id, e.code),
        (StreamId::new(3), ErrorCode::PROTOCOL_ERROR)
    );
    // HEADERS depending on itself: a connection error here (see Headers).
    assert_eq!(
        conn_err(dec(kind::HEADERS, flags::PRIORITY, 3, &[0, 0, 0, 3, 0])),
        ErrorCode::PROTOCOL_ERROR
    );
    // Without the PRIORITY flag the same bytes are just a fragment.
    assert!(dec(kind::HEADERS, 0, 3, &[0, 0, 0, 3, 0]).is_ok());
}

#[test]
fn fixed_length_frames() {
    for len in [0usize, 3, 5, 8] {
        let p = vec![0; len];
        assert_eq!(
            conn_err(dec(kind::RST_STREAM, 0, 1, &p)),
            ErrorCode::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(dec(kind::WINDOW_UPDATE, 0, 1, &p)),
            ErrorCode::FRAME_SIZE_ERROR
        );
        assert_eq!(
            conn_err(dec(kind::WINDOW_UPDATE, 0, 0, &p)),
            ErrorCode::FRAME_SIZE_ERROR
        );
    }
    for len in [0usize, 7, 9, 16] {
        assert_eq!(
            conn_err(dec(kind::PING, 0, 0, &vec![0; len])),
            ErrorCode::FRAME_SIZE_ERROR
        );
    }
    for len in 0..8 {
        assert_eq!(
            conn_err(dec(kind::GOAWAY, 0, 0, &vec![0; len])),
            ErrorCode::FRAME_SIZE_ERROR
        );
    }
    assert!(dec(kind::GOAWAY, 0, 0, &[0; 8]).is_ok());
}

#[test]
fn window_update_zero_increment() {
    assert_eq!(
        conn_err(dec(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])),
        ErrorCode::PROTOCOL_ERROR
    );
    let e = stream_err(dec(kind::WINDOW_UPDATE, 0, 5, &[0x80, 0, 0, 0]));
    assert_eq!(
        (e.stream_id, e.code),
        (StreamId::new(5), ErrorCode::PROTOCOL_ERROR)
    );
}

#[test]
fn settings_rules() {
    let entry = |id: u16, v: u32| {
        let mut b = BytesMut::new();
        b.put_u16(id);
        b.put_u32(v);
        b.to_vec()
    };
    assert_eq!(
        conn_err(dec(kind::SETTINGS, 0, 0, &[0; 5])),
        ErrorCode::FRAME_SIZE_ERROR
    );
    assert_eq!(
        conn_err(dec(kind::SETTINGS, flags::ACK, 0, &entry(1, 0))),
        ErrorCode::FRAME_SIZE_ERROR
    );
    assert_eq!(
        conn_err(dec(kind::SETTINGS, 0, 0, &entry(Settings::ENABLE_PUSH, 2))),
        ErrorCode::PROTOCOL_ERROR
    );
    assert_eq!(
        conn_err(dec(
            kind::SETTINGS,
            0,
            0,
            &entry(Settings::INITIAL_WINDOW_SIZE, 1 << 31)
        )),
        ErrorCode::FLOW_CONTROL_ERROR
    );
    for v in [16_383, 1 << 24] {
        assert_eq!(
            conn_err(dec(
                kind::SETTINGS,
                0,
                0,
                &entry(Settings::MAX_FRAME_SIZE, v)
            )),
            ErrorCode::PROTOCOL_ERROR
        );
    }
    assert_eq!(
        conn_err(dec(
            kind::SETTINGS,
            0,
            0,
            &entry(Settings::ENABLE_CONNECT_PROTOCOL, 2)
        )),
        ErrorCode::PROTOCOL_ERROR
    );
    // Unknown identifiers (including 0 and RFC 9218's 0x9) are ignored.
    let mut p = entry(0, 5);
    p.extend(entry(0x9, 1));
    p.extend(entry(0xffff, u32::MAX));
    assert_eq!(
        dec(kind::SETTINGS, 0, 0, &p).unwrap(),
        Settings::default().into()
    );
}

#[test]
fn unknown_types_flags_and_reserved_bit() {
    assert_eq!(
        dec(0x42, 0xff, 0, b"??").unwrap(),
        Unknown {
            kind: 0x42,
            flags: 0xff,
            stream_id: StreamId::ZERO,
            payload: Bytes::from_static(b"??"),
        }
        .into()
    );
    // Unknown flags on PING; reserved bit set on a DATA frame's stream id.
    assert_eq!(
        dec(kind::PING, 0xfe, 0, b"12345678").unwrap(),
        Ping::new(*b"12345678").into()
    );
    let mut wire = BytesMut::from(&b"\x00\x00\x01\x00\xf6\x80\x00\x00\x01x"[..]);
    let f = FrameReader::default().read(&mut wire).unwrap().unwrap();
    assert_eq!(
        f,
        Data::new(StreamId::new(1), Bytes::from_static(b"x"), false).into()
    );
}

// ---- FrameReader with split input ----

/// Read every frame out of `buf`, panicking on errors.
fn drain(r: &mut FrameReader, buf: &mut BytesMut, out: &mut Vec<Frame>) {
    while let Some(f) = r.read(buf).unwrap() {
        out.push(f);
    }
}

fn check_every_split(frames: &[Frame]) {
    let mut wire = BytesMut::new();
    for f in frames {
        f.encode(&mut wire);
    }
    for at in 0..=wire.len() {
        let mut r = FrameReader::new(MAX_MAX_FRAME_SIZE);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        buf.extend_from_slice(&wire[..at]);
        drain(&mut r, &mut buf, &mut got);
        buf.extend_from_slice(&wire[at..]);
        drain(&mut r, &mut buf, &mut got);
        assert!(buf.is_empty());
        assert_eq!(got, frames, "split at {at}");
    }
    // And one byte at a time.
    let mut r = FrameReader::new(MAX_MAX_FRAME_SIZE);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in wire.iter() {
        buf.put_u8(*b);
        drain(&mut r, &mut buf, &mut got);
    }
    assert_eq!(got, frames);
}

#[test]
fn every_split_of_all_samples() {
    check_every_split(&samples());
}

// ---- property tests ----

fn stream_id() -> impl Strategy<Value = StreamId> {
    prop_oneof![1u32..10, 1u32..=MAX_WINDOW_SIZE].prop_map(StreamId::new)
}

/// Any stream id, 0 included.
fn any_stream_id() -> impl Strategy<Value = StreamId> {
    (0..=MAX_WINDOW_SIZE).prop_map(StreamId::new)
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn prio_spec() -> impl Strategy<Value = PrioritySpec> {
    (0u32..=MAX_WINDOW_SIZE, any::<bool>(), any::<u8>()).prop_map(|(d, e, w)| spec(d, e, w))
}

fn opt<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

/// Any frame that decodes back to itself.
fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (stream_id(), bytes(64), any::<bool>(), opt(any::<u8>())).prop_map(|(s, d, e, p)| {
            let f = Data::new(s, d, e);
            match p {
                Some(p) => f.with_padding(p),
                None => f,
            }
            .into()
        }),
        (
            stream_id(),
            bytes(64),
            any::<bool>(),
            any::<bool>(),
            opt(prio_spec()),
            opt(any::<u8>())
        )
            .prop_map(|(s, frag, es, eh, prio, pad)| {
                let mut h = Headers::new(s, frag, es, eh);
                // A self-dependency does not decode; move it off.
                h.priority = prio.map(|p| PrioritySpec {
                    dependency: if p.dependency == s {
                        StreamId::ZERO
                    } else {
                        p.dependency
                    },
                    ..p
                });
                h.pad_len = pad;
                h.into()
            }),
        (stream_id(), prio_spec()).prop_map(|(s, p)| {
            let dependency = if p.dependency == s {
                StreamId::ZERO
            } else {
                p.dependency
            };
            Priority {
                stream_id: s,
                spec: PrioritySpec { dependency, ..p },
            }
            .into()
        }),
        (stream_id(), any::<u32>()).prop_map(|(s, c)| RstStream::new(s, ErrorCode(c)).into()),
        (
            opt(any::<u32>()),
            opt(0u32..=1),
            opt(any::<u32>()),
            opt(0..=MAX_WINDOW_SIZE),
            opt(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE),
            opt(any::<u32>()),
            opt(0u32..=1),
        )
            .prop_map(|(a, b, c, d, e, f, g)| Settings {
                ack: false,
                header_table_size: a,
                enable_push: b,
                max_concurrent_streams: c,
                initial_window_size: d,
                max_frame_size: e,
                max_header_list_size: f,
                enable_connect_protocol: g,
            }
            .into()),
        Just(Settings::ack().into()),
        (stream_id(), stream_id(), bytes(64), any::<bool>()).prop_map(|(s, p, frag, eh)| {
            PushPromise {
                stream_id: s,
                promised_id: p,
                fragment: frag,
                end_headers: eh,
            }
            .into()
        }),
        (any::<bool>(), any::<[u8; 8]>()).prop_map(|(ack, payload)| Ping { ack, payload }.into()),
        (any_stream_id(), any::<u32>(), bytes(32)).prop_map(|(l, c, d)| GoAway {
            last_stream_id: l,
            code: ErrorCode(c),
            debug_data: d,
        }
        .into()),
        (
            prop_oneof![Just(StreamId::ZERO), stream_id()],
            1..=MAX_WINDOW_SIZE
        )
            .prop_map(|(s, i)| WindowUpdate::new(s, i).into()),
        (stream_id(), bytes(64), any::<bool>()).prop_map(|(s, frag, eh)| Continuation {
            stream_id: s,
            fragment: frag,
            end_headers: eh,
        }
        .into()),
        (10u8..=255, any::<u8>(), any_stream_id(), bytes(32)).prop_map(|(k, f, s, p)| {
            Unknown {
                kind: k,
                flags: f,
                stream_id: s,
                payload: p,
            }
            .into()
        }),
    ]
}

/// A raw frame with a plausible head (small length matching the payload,
/// any type and flags) so that decoding gets past the size check.
fn raw_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..12,
        any::<u8>(),
        prop_oneof![Just(0u32), Just(1u32), any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(k, f, s, p)| {
            let mut b = BytesMut::new();
            Head {
                length: p.len() as u32,
                kind: k,
                flags: f,
                stream_id: StreamId::new(s),
            }
            .encode(&mut b);
            b.extend_from_slice(&p);
            b.to_vec()
        })
}

/// Feed `input` in chunks of the given sizes, reading until an error that
/// ends the connection; must not panic.
fn feed(input: &[u8], chunks: &[usize]) {
    let mut r = FrameReader::default();
    let mut buf = BytesMut::new();
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match r.read(&mut buf) {
                Ok(Some(f)) => {
                    // Whatever decoded must re-encode without panicking.
                    let mut out = BytesMut::new();
                    f.encode(&mut out);
                }
                Ok(None) => break,
                Err(ProtocolError::Stream(_)) => continue,
                Err(ProtocolError::Connection(_)) => return,
            }
        }
    }
}

proptest! {
    #[test]
    fn prop_round_trip(f in frame()) {
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn prop_every_split(frames in proptest::collection::vec(frame(), 1..6)) {
        check_every_split(&frames);
    }

    #[test]
    fn prop_random_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        chunks in proptest::collection::vec(1usize..64, 1..8),
    ) {
        feed(&input, &chunks);
    }

    #[test]
    fn prop_plausible_frames_never_panic(
        frames in proptest::collection::vec(raw_frame(), 1..8),
        chunks in proptest::collection::vec(1usize..64, 1..8),
    ) {
        feed(&frames.concat(), &chunks);
    }

    #[test]
    fn prop_decode_never_panics(
        kind in any::<u8>(),
        flags in any::<u8>(),
        stream_id in any::<u32>(),
        length in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let stream_id = StreamId::new(stream_id);
        let head = Head { length, kind, flags, stream_id };
        if let Ok(f) = decode(head, Bytes::from(payload)) {
            let mut out = BytesMut::new();
            f.encode(&mut out);
        }
    }
}
