//! RFC 6455 framing of `crisp_core::websocket` against the RFC's examples
//! and hostile clients. (Here rather than in `src/`: an `Instant` needs a
//! clock, which the core itself never reads.)

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use crisp_core::websocket::*;

use proptest::prelude::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn feed(c: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    let _ = c.recv(bytes, Instant::now());
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn out(c: &mut Connection) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(b) = c.poll_transmit() {
        v.extend_from_slice(&b);
    }
    v
}

fn text(s: &str) -> Event {
    Event::Message {
        binary: false,
        data: Bytes::copy_from_slice(s.as_bytes()),
    }
}

// RFC 6455 §5.7, byte for byte.
const MASKED_HELLO: &[u8] = &[
    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];
const UNMASKED_HELLO: &[u8] = &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];

#[test]
fn rfc6455_examples() {
    let mut c = Connection::new(Config::default());
    assert_eq!(feed(&mut c, MASKED_HELLO), vec![text("Hello")]);
    // Our frames are the unmasked forms.
    c.send_message(false, b"Hello").unwrap();
    assert_eq!(out(&mut c), UNMASKED_HELLO);
    let mut enc = BytesMut::new();
    encode_frame(&mut enc, true, OP_TEXT, b"Hello", Some(MASK));
    assert_eq!(&enc[..], MASKED_HELLO);
    // Fragmented "Hel" + "lo" (masked here, as a client must).
    let mut frag = BytesMut::new();
    encode_frame(&mut frag, false, OP_TEXT, b"Hel", Some(MASK));
    encode_frame(&mut frag, true, OP_CONTINUATION, b"lo", Some(MASK));
    assert_eq!(feed(&mut c, &frag), vec![text("Hello")]);
    // The unmasked fragments of §5.7 as we would send them.
    let mut plain = BytesMut::new();
    encode_frame(&mut plain, false, OP_TEXT, b"Hel", None);
    encode_frame(&mut plain, true, OP_CONTINUATION, b"lo", None);
    assert_eq!(
        &plain[..],
        &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
    );
    // Masked pong "Hello".
    let pong = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        feed(&mut c, &pong),
        vec![Event::Pong(Bytes::from_static(b"Hello"))]
    );
    // Unmasked ping "Hello" as a server sends it.
    c.ping(b"Hello").unwrap();
    assert_eq!(out(&mut c), [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    // 256 bytes and 64 KiB binary: the 16- and 64-bit lengths.
    c.send_message(true, &[0u8; 256]).unwrap();
    assert_eq!(&out(&mut c)[..4], &[0x82, 0x7e, 0x01, 0x00]);
    c.send_message(true, &vec![0u8; 65536]).unwrap();
    assert_eq!(&out(&mut c)[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
}

#[test]
fn ping_is_ponged_and_close_is_echoed() {
    let mut c = Connection::new(Config::default());
    let mut f = BytesMut::new();
    encode_frame(&mut f, true, OP_PING, b"hi", Some(MASK));
    assert!(feed(&mut c, &f).is_empty());
    assert_eq!(out(&mut c), [0x8a, 0x02, b'h', b'i']);
    let mut f = BytesMut::new();
    encode_frame(
        &mut f,
        true,
        OP_CLOSE,
        &[0x03, 0xe8, b'b', b'y', b'e'],
        Some(MASK),
    );
    assert_eq!(
        feed(&mut c, &f),
        vec![Event::Closed {
            code: Some(1000),
            reason: "bye".into()
        }]
    );
    assert_eq!(out(&mut c), [0x88, 0x02, 0x03, 0xe8]);
    assert!(c.is_closed());
    assert_eq!(c.send_message(true, b"x"), Err(UsageError::Closing));
}

#[test]
fn our_close_then_theirs() {
    let mut c = Connection::new(Config::default());
    c.close(close_code::NORMAL, "done").unwrap();
    assert_eq!(
        out(&mut c),
        [0x88, 0x06, 0x03, 0xe8, b'd', b'o', b'n', b'e']
    );
    let mut f = BytesMut::new();
    encode_frame(&mut f, true, OP_CLOSE, &[0x03, 0xe8], Some(MASK));
    assert_eq!(
        feed(&mut c, &f),
        vec![Event::Closed {
            code: Some(1000),
            reason: String::new()
        }]
    );
    assert!(out(&mut c).is_empty(), "no second Close");
    assert!(c.is_closed());
}

fn failure(bytes: &[u8]) -> (u16, Vec<u8>) {
    let mut c = Connection::new(Config {
        max_message: 1000,
        ..Config::default()
    });
    let evs = feed(&mut c, bytes);
    let Some(Event::Failed(e)) = evs.last() else {
        panic!("not failed: {evs:?}");
    };
    (e.code, out(&mut c))
}

fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = BytesMut::new();
    encode_frame(&mut f, fin, opcode, payload, Some(MASK));
    f.to_vec()
}

#[test]
fn hostile_frames_get_the_right_close_codes() {
    assert_eq!(failure(UNMASKED_HELLO).0, 1002);
    let mut rsv = masked(true, OP_TEXT, b"x");
    rsv[0] |= 0x40;
    assert_eq!(failure(&rsv).0, 1002);
    assert_eq!(failure(&masked(true, 0x3, b"x")).0, 1002);
    assert_eq!(failure(&masked(true, 0xb, b"x")).0, 1002);
    assert_eq!(failure(&masked(false, OP_PING, b"x")).0, 1002);
    assert_eq!(failure(&masked(true, OP_PING, &[0u8; 126])).0, 1002);
    assert_eq!(failure(&masked(true, OP_CONTINUATION, b"x")).0, 1002);
    let mut two = masked(false, OP_TEXT, b"a");
    two.extend(masked(true, OP_TEXT, b"b"));
    assert_eq!(failure(&two).0, 1002);
    assert_eq!(failure(&masked(true, OP_TEXT, &[0xff, 0xfe])).0, 1007);
    assert_eq!(failure(&masked(true, OP_CLOSE, &[3])).0, 1002);
    assert_eq!(failure(&masked(true, OP_CLOSE, &[0x03, 0xed])).0, 1002); // 1005
    assert_eq!(
        failure(&masked(true, OP_CLOSE, &[0x03, 0xe8, 0xff])).0,
        1007
    );
    // Too big, by one frame or by fragments: refused from the head.
    let (code, bytes) = failure(&masked(true, OP_BINARY, &[0u8; 1001])[..14]);
    assert_eq!(code, 1009);
    assert_eq!(&bytes[..4], &[0x88, 0x11, 0x03, 0xf1]);
    let mut frags = masked(false, OP_BINARY, &[0u8; 600]);
    frags.extend(masked(true, OP_CONTINUATION, &[0u8; 600]));
    assert_eq!(failure(&frags).0, 1009);
    // Lengths not in their shortest form, or with the top bit set.
    assert_eq!(failure(&[0x82, 0xfe, 0x00, 0x05, 0, 0, 0, 0]).0, 1002);
    assert_eq!(
        failure(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).0,
        1002
    );
}

#[test]
fn ping_flood_and_non_reader_are_cut_off() {
    let mut c = Connection::new(Config {
        max_control_frames: 10,
        ..Config::default()
    });
    let mut f = Vec::new();
    for _ in 0..11 {
        f.extend(masked(true, OP_PING, b""));
    }
    let evs = feed(&mut c, &f);
    assert!(matches!(
        evs.last(),
        Some(Event::Failed(CloseError { code: 1008, .. }))
    ));
    let mut c = Connection::new(Config {
        max_control_frames: u32::MAX,
        ..Config::default()
    });
    let ping = masked(true, OP_PING, &[7u8; 125]);
    for _ in 0..1000 {
        let _ = c.recv(&ping, Instant::now());
        if c.is_closed() {
            break;
        }
    }
    assert!(c.is_closed());
    assert!(c.send_buffered() <= 64 * 1024 + 256);
}

fn script() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(masked(true, OP_BINARY, b"\x00hello"));
    f.extend(masked(false, OP_BINARY, b"\x04{\"Width\""));
    f.extend(masked(true, OP_PING, b"p"));
    f.extend(masked(true, OP_CONTINUATION, b":80,\"Height\":24}"));
    f.extend(masked(true, OP_BINARY, &[0x00; 300]));
    f.extend(masked(true, OP_BINARY, &vec![0x01; 70_000]));
    f.extend(masked(true, OP_CLOSE, &[0x03, 0xe8]));
    f
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_events(cuts in proptest::collection::vec(any::<usize>(), 0..30)) {
        let input = script();
        let run = |cuts: &[usize]| {
            let mut c = Connection::new(Config::default());
            let mut cuts: Vec<usize> = cuts.iter().map(|x| x % (input.len() + 1)).collect();
            cuts.sort_unstable();
            cuts.push(input.len());
            let (mut evs, mut bytes, mut last) = (Vec::new(), Vec::new(), 0);
            for cut in cuts {
                evs.extend(feed(&mut c, &input[last..cut]));
                bytes.extend(out(&mut c));
                last = cut;
            }
            (evs, bytes)
        };
        let whole = run(&[]);
        prop_assert_eq!(whole.0.len(), 5);
        prop_assert_eq!(run(&cuts), whole);
    }

    #[test]
    fn masking_round_trips(data in proptest::collection::vec(any::<u8>(), 0..300), mask in any::<[u8; 4]>()) {
        let mut f = BytesMut::new();
        encode_frame(&mut f, true, OP_BINARY, &data, Some(mask));
        let mut c = Connection::new(Config::default());
        let evs = feed(&mut c, &f);
        prop_assert_eq!(evs, vec![Event::Message { binary: true, data: Bytes::from(data) }]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1000)) {
        let mut c = Connection::new(Config::default());
        let _ = feed(&mut c, &bytes);
        let _ = out(&mut c);
    }
}
