//! `frame_decoder`: [`FrameReader`] over arbitrary bytes in arbitrary chunks.
//!
//! Input: `[limit selector][chunking seed] wire bytes...`.
//!
//! Checks:
//! * the frames and errors read do not depend on how the bytes were split
//!   (the whole input at once is the reference);
//! * `Ok(None)` consumes nothing; a frame consumes exactly its head and
//!   announced length, which is within the limit; a stream error consumes
//!   the frame too, a connection error ends reading;
//! * every decoded frame re-encodes to a frame that decodes to itself, of
//!   the same length (shorter only for SETTINGS, whose duplicate entries
//!   collapse, and PUSH_PROMISE, whose padding is dropped).

use bytes::BytesMut;
use crisp_core::h2::frame::{
    Frame, FrameReader, Head, DEFAULT_MAX_FRAME_SIZE, HEADER_LEN, MAX_MAX_FRAME_SIZE,
};
use crisp_core::h2::ProtocolError;

use crate::util::{chunks, Rng};

const LIMITS: [u32; 4] = [DEFAULT_MAX_FRAME_SIZE, 16_385, 65_535, MAX_MAX_FRAME_SIZE];

pub fn frame_decoder(data: &[u8]) {
    let [ctl, seed, wire @ ..] = data else {
        return;
    };
    let limit = LIMITS[usize::from(ctl & 3)];
    let whole = read_all(limit, &[wire]);
    let mut rng = Rng::new(u64::from(*seed) | u64::from(*ctl) << 8);
    let split = read_all(limit, &chunks(wire, &mut rng));
    assert_eq!(split, whole, "chunking changed what was read");
}

fn read_all(limit: u32, chunks: &[&[u8]]) -> Vec<Result<Frame, ProtocolError>> {
    let mut reader = FrameReader::new(limit);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let head = buf.first_chunk::<HEADER_LEN>().map(Head::parse);
            let result = reader.read(&mut buf);
            let consumed = before - buf.len();
            match (&result, head) {
                (Ok(None), _) => {
                    assert_eq!(consumed, 0, "Ok(None) consumed bytes");
                    assert!(head.is_none_or(|h| before < HEADER_LEN + h.length as usize));
                    break;
                }
                (Ok(Some(f)), Some(head)) => {
                    assert!(head.length <= reader.max_frame_size());
                    assert_eq!(consumed, HEADER_LEN + head.length as usize);
                    check_frame(f, &head);
                }
                (Err(ProtocolError::Stream(e)), Some(head)) => {
                    assert!(head.length <= reader.max_frame_size());
                    assert_eq!(consumed, HEADER_LEN + head.length as usize);
                    assert_eq!(e.stream_id, head.stream_id);
                    assert_ne!(e.stream_id, 0, "stream error on stream 0");
                }
                (Err(ProtocolError::Connection(_)), Some(_)) => {}
                (_, None) => panic!("read {result:?} without a whole head"),
            }
            let stop = matches!(result, Err(ProtocolError::Connection(_)));
            out.push(result.map(|f| f.expect("frame")));
            if stop {
                // The connection is dead: nothing after it is read.
                return out;
            }
        }
    }
    out
}

fn check_frame(f: &Frame, head: &Head) {
    assert_eq!(f.kind(), head.kind);
    assert_eq!(f.stream_id(), head.stream_id);
    if let Frame::Data(d) = f {
        assert_eq!(d.flow_len, head.length, "DATA flow-control length");
    }
    let mut wire = BytesMut::new();
    f.encode(&mut wire);
    let len = wire.len();
    let h = Head::parse(wire.first_chunk::<HEADER_LEN>().expect("head"));
    assert_eq!(
        h.length as usize + HEADER_LEN,
        len,
        "re-encoded head length"
    );
    let mut reader = FrameReader::new(MAX_MAX_FRAME_SIZE);
    let again = reader
        .read(&mut wire)
        .unwrap_or_else(|e| panic!("re-encoded {f:?} fails to decode: {e:?}"))
        .unwrap_or_else(|| panic!("re-encoded {f:?} is incomplete"));
    assert_eq!(&again, f, "re-encoded frame decodes differently");
    assert!(wire.is_empty(), "re-encoding left trailing bytes");
    let original = HEADER_LEN + head.length as usize;
    match f {
        Frame::Settings(_) | Frame::PushPromise(_) => assert!(len <= original),
        _ => assert_eq!(len, original, "re-encoded length of {f:?}"),
    }
}
