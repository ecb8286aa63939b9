//! SPDY/3.1 frame layout (SPDY/3.1 draft §2.2): the 8-byte head shared by
//! control and data frames, each control frame's fixed fields, and the
//! encoders. Header blocks stay compressed here; [`super::headers`] turns
//! them into name/value pairs.

use bytes::{BufMut, Bytes, BytesMut};

/// The only protocol version spoken.
pub const VERSION: u16 = 3;
/// Length of every frame head.
pub const HEAD_LEN: usize = 8;
/// The 24-bit length field's largest value.
pub const MAX_LENGTH: u32 = 0x00ff_ffff;
/// Stream ids and window deltas are 31 bits.
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

/// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and DATA.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM: the receiver sends nothing back.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// SETTINGS ids we act on.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// A decoded frame head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    Control {
        version: u16,
        kind: u16,
        flags: u8,
        length: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        length: u32,
    },
}

impl Head {
    pub fn parse(b: [u8; HEAD_LEN]) -> Self {
        let [b0, b1, b2, b3, flags, l0, l1, l2] = b;
        let length = u32::from_be_bytes([0, l0, l1, l2]);
        if b0 & 0x80 != 0 {
            Head::Control {
                version: u16::from_be_bytes([b0 & 0x7f, b1]),
                kind: u16::from_be_bytes([b2, b3]),
                flags,
                length,
            }
        } else {
            Head::Data {
                stream_id: u32::from_be_bytes([b0, b1, b2, b3]),
                flags,
                length,
            }
        }
    }

    pub fn length(&self) -> u32 {
        match *self {
            Head::Control { length, .. } | Head::Data { length, .. } => length,
        }
    }
}

/// Reads a big-endian u32 at `at`, if the slice holds it.
pub fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([
        *s.first()?,
        *s.get(1)?,
        *s.get(2)?,
        *s.get(3)?,
    ]))
}

fn control_head(dst: &mut BytesMut, kind: u16, flags: u8, length: usize) {
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(kind);
    let length = u32::try_from(length).unwrap_or(MAX_LENGTH).min(MAX_LENGTH);
    dst.put_u32((u32::from(flags) << 24) | length);
}

/// SYN_STREAM: a new stream with its (compressed) header block.
pub fn encode_syn_stream(
    dst: &mut BytesMut,
    stream_id: u32,
    associated: u32,
    priority: u8,
    flags: u8,
    block: &[u8],
) {
    control_head(dst, SYN_STREAM, flags, 10 + block.len());
    dst.put_u32(stream_id & MAX_STREAM_ID);
    dst.put_u32(associated & MAX_STREAM_ID);
    dst.put_u8((priority & 0x7) << 5);
    dst.put_u8(0); // slot
    dst.put_slice(block);
}

/// SYN_REPLY: the answer to a SYN_STREAM.
pub fn encode_syn_reply(dst: &mut BytesMut, stream_id: u32, flags: u8, block: &[u8]) {
    control_head(dst, SYN_REPLY, flags, 4 + block.len());
    dst.put_u32(stream_id & MAX_STREAM_ID);
    dst.put_slice(block);
}

/// HEADERS: more headers on an open stream.
pub fn encode_headers(dst: &mut BytesMut, stream_id: u32, flags: u8, block: &[u8]) {
    control_head(dst, HEADERS, flags, 4 + block.len());
    dst.put_u32(stream_id & MAX_STREAM_ID);
    dst.put_slice(block);
}

pub fn encode_rst_stream(dst: &mut BytesMut, stream_id: u32, status: u32) {
    control_head(dst, RST_STREAM, 0, 8);
    dst.put_u32(stream_id & MAX_STREAM_ID);
    dst.put_u32(status);
}

/// SETTINGS with (flags, id, value) entries.
pub fn encode_settings(dst: &mut BytesMut, entries: &[(u8, u32, u32)]) {
    control_head(dst, SETTINGS, 0, 4 + 8 * entries.len());
    dst.put_u32(u32::try_from(entries.len()).unwrap_or(0));
    for &(flags, id, value) in entries {
        dst.put_u32((u32::from(flags) << 24) | (id & 0x00ff_ffff));
        dst.put_u32(value);
    }
}

pub fn encode_ping(dst: &mut BytesMut, id: u32) {
    control_head(dst, PING, 0, 4);
    dst.put_u32(id);
}

pub fn encode_goaway(dst: &mut BytesMut, last_good_stream_id: u32, status: u32) {
    control_head(dst, GOAWAY, 0, 8);
    dst.put_u32(last_good_stream_id & MAX_STREAM_ID);
    dst.put_u32(status);
}

pub fn encode_window_update(dst: &mut BytesMut, stream_id: u32, delta: u32) {
    control_head(dst, WINDOW_UPDATE, 0, 8);
    dst.put_u32(stream_id & MAX_STREAM_ID);
    dst.put_u32(delta & MAX_STREAM_ID);
}

/// A DATA frame carrying `data` (at most [`MAX_LENGTH`] bytes).
pub fn encode_data(dst: &mut BytesMut, stream_id: u32, flags: u8, data: &[u8]) {
    dst.put_u32(stream_id & MAX_STREAM_ID);
    let length = u32::try_from(data.len())
        .unwrap_or(MAX_LENGTH)
        .min(MAX_LENGTH);
    dst.put_u32((u32::from(flags) << 24) | length);
    dst.put_slice(data.get(..length as usize).unwrap_or(data));
}

/// The same, as a fresh buffer.
pub fn data_frame(stream_id: u32, flags: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEAD_LEN + data.len());
    encode_data(&mut b, stream_id, flags, data);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        let mut b = BytesMut::new();
        encode_ping(&mut b, 7);
        let head: [u8; 8] = b[..8].try_into().unwrap();
        assert_eq!(
            Head::parse(head),
            Head::Control {
                version: 3,
                kind: PING,
                flags: 0,
                length: 4
            }
        );
        assert_eq!(&b[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        let d = data_frame(5, FLAG_FIN, b"hi");
        assert_eq!(&d[..], &[0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i']);
        let head: [u8; 8] = d[..8].try_into().unwrap();
        assert_eq!(
            Head::parse(head),
            Head::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                length: 2
            }
        );
    }

    #[test]
    fn fixed_frames_layout() {
        let mut b = BytesMut::new();
        encode_rst_stream(&mut b, 3, 5);
        encode_goaway(&mut b, 9, 1);
        encode_window_update(&mut b, 1, 0x8000_0001);
        assert_eq!(
            &b[..],
            &[
                0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5, //
                0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 1, //
                0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 1,
            ][..]
        );
        assert_eq!(be_u32(&b, 12), Some(5));
        assert_eq!(be_u32(&b, b.len() - 3), None);
    }
}
