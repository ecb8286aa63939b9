//! SETTINGS (RFC 9113 §6.5).

use bytes::{BufMut, Bytes, BytesMut};

use super::{be_u32, flags, kind, len_u32, require_connection, Head};
use super::{MAX_MAX_FRAME_SIZE, MAX_WINDOW_SIZE};
use crate::h2::error::{ConnectionError, ErrorCode};
use crate::h2::StreamId;

/// A SETTINGS frame. Known parameters are kept typed; when one appears more
/// than once the last value wins (values are processed in the order
/// received, §6.5.3). Unknown identifiers are ignored (§6.5.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub ack: bool,
    pub header_table_size: Option<u32>,
    pub enable_push: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
    /// RFC 8441.
    pub enable_connect_protocol: Option<u32>,
}

impl Settings {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

    /// A SETTINGS frame with the ACK flag (and necessarily no parameters).
    pub fn ack() -> Self {
        Settings {
            ack: true,
            ..Settings::default()
        }
    }

    /// Whether no parameter is set (the ACK flag is not considered).
    pub fn is_empty(&self) -> bool {
        self.params().all(|(_, v)| v.is_none())
    }

    /// The known parameters in identifier order, set or not.
    fn params(&self) -> impl Iterator<Item = (u16, Option<u32>)> {
        [
            (Self::HEADER_TABLE_SIZE, self.header_table_size),
            (Self::ENABLE_PUSH, self.enable_push),
            (Self::MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (Self::INITIAL_WINDOW_SIZE, self.initial_window_size),
            (Self::MAX_FRAME_SIZE, self.max_frame_size),
            (Self::MAX_HEADER_LIST_SIZE, self.max_header_list_size),
            (Self::ENABLE_CONNECT_PROTOCOL, self.enable_connect_protocol),
        ]
        .into_iter()
    }

    /// Decode a SETTINGS payload. All errors are connection errors:
    /// non-zero stream, bad values → PROTOCOL_ERROR (INITIAL_WINDOW_SIZE
    /// too large → FLOW_CONTROL_ERROR); length not a multiple of 6, or an
    /// ACK with a payload → FRAME_SIZE_ERROR.
    pub fn decode(head: &Head, payload: Bytes) -> Result<Settings, ConnectionError> {
        require_connection(head, "SETTINGS on a non-zero stream")?;
        let mut s = Settings::default();
        if head.has_flag(flags::ACK) {
            if !payload.is_empty() {
                return Err(ConnectionError::frame_size("SETTINGS ACK with a payload"));
            }
            s.ack = true;
            return Ok(s);
        }
        if payload.len() % 6 != 0 {
            return Err(ConnectionError::frame_size(
                "SETTINGS length is not a multiple of 6",
            ));
        }
        for entry in payload.chunks_exact(6) {
            let &[id_hi, id_lo, ref value @ ..] = entry else {
                continue;
            };
            let id = u16::from_be_bytes([id_hi, id_lo]);
            let value = be_u32(value);
            match id {
                Self::HEADER_TABLE_SIZE => s.header_table_size = Some(value),
                Self::ENABLE_PUSH => {
                    if value > 1 {
                        return Err(ConnectionError::protocol("SETTINGS_ENABLE_PUSH not 0 or 1"));
                    }
                    s.enable_push = Some(value);
                }
                Self::MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(value),
                Self::INITIAL_WINDOW_SIZE => {
                    if value > MAX_WINDOW_SIZE {
                        return Err(ConnectionError::new(
                            ErrorCode::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        ));
                    }
                    s.initial_window_size = Some(value);
                }
                Self::MAX_FRAME_SIZE => {
                    if !(super::DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                        return Err(ConnectionError::protocol(
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    s.max_frame_size = Some(value);
                }
                Self::MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(value),
                Self::ENABLE_CONNECT_PROTOCOL => {
                    if value > 1 {
                        return Err(ConnectionError::protocol(
                            "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1",
                        ));
                    }
                    s.enable_connect_protocol = Some(value);
                }
                _ => {} // unknown: ignore
            }
        }
        Ok(s)
    }

    /// Append the whole frame to `dst`. An ACK is always sent with an empty
    /// payload, whatever parameters are set.
    pub fn encode(&self, dst: &mut BytesMut) {
        let n = if self.ack {
            0
        } else {
            self.params().filter(|(_, v)| v.is_some()).count()
        };
        Head {
            length: len_u32(n * 6),
            kind: kind::SETTINGS,
            flags: if self.ack { flags::ACK } else { 0 },
            stream_id: StreamId::ZERO,
        }
        .encode(dst);
        if self.ack {
            return;
        }
        for (id, v) in self.params() {
            if let Some(v) = v {
                dst.put_u16(id);
                dst.put_u32(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(flags: u8, stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::SETTINGS, flags, stream_id, len)
    }

    fn entries(e: &[(u16, u32)]) -> Bytes {
        let mut b = BytesMut::new();
        for &(id, v) in e {
            b.put_u16(id);
            b.put_u32(v);
        }
        b.freeze()
    }

    fn dec(e: &[(u16, u32)]) -> Result<Settings, ConnectionError> {
        let p = entries(e);
        Settings::decode(&head(0, 0, p.len()), p)
    }

    #[test]
    fn last_value_wins_and_unknown_ignored() {
        let s = dec(&[
            (Settings::INITIAL_WINDOW_SIZE, 10),
            (0x99, 7),
            (Settings::INITIAL_WINDOW_SIZE, 20),
            (Settings::MAX_CONCURRENT_STREAMS, 100),
        ])
        .unwrap();
        assert_eq!(s.initial_window_size, Some(20));
        assert_eq!(s.max_concurrent_streams, Some(100));
        assert_eq!(s.header_table_size, None);
        assert!(!s.ack && !s.is_empty());
    }

    #[test]
    fn empty_and_ack() {
        assert!(dec(&[]).unwrap().is_empty());
        let s = Settings::decode(&head(flags::ACK, 0, 0), Bytes::new()).unwrap();
        assert_eq!(s, Settings::ack());
        assert!(s.is_empty());
    }

    #[test]
    fn frame_errors() {
        let e = Settings::decode(&head(0, 1, 0), Bytes::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        let e = Settings::decode(&head(flags::ACK, 0, 6), entries(&[(1, 1)])).unwrap_err();
        assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        for len in [1usize, 5, 7, 13] {
            let e = Settings::decode(&head(0, 0, len), Bytes::from(vec![0; len])).unwrap_err();
            assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        }
    }

    #[test]
    fn value_checks() {
        use Settings as S;
        assert_eq!(dec(&[(S::ENABLE_PUSH, 1)]).unwrap().enable_push, Some(1));
        assert_eq!(dec(&[(S::ENABLE_PUSH, 0)]).unwrap().enable_push, Some(0));
        let e = dec(&[(S::ENABLE_PUSH, 2)]).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);

        assert!(dec(&[(S::INITIAL_WINDOW_SIZE, MAX_WINDOW_SIZE)]).is_ok());
        let e = dec(&[(S::INITIAL_WINDOW_SIZE, MAX_WINDOW_SIZE + 1)]).unwrap_err();
        assert_eq!(e.code, ErrorCode::FLOW_CONTROL_ERROR);

        assert!(dec(&[(S::MAX_FRAME_SIZE, 16_384)]).is_ok());
        assert!(dec(&[(S::MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE)]).is_ok());
        for bad in [0, 16_383, MAX_MAX_FRAME_SIZE + 1, u32::MAX] {
            let e = dec(&[(S::MAX_FRAME_SIZE, bad)]).unwrap_err();
            assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        }

        assert!(dec(&[(S::ENABLE_CONNECT_PROTOCOL, 1)]).is_ok());
        let e = dec(&[(S::ENABLE_CONNECT_PROTOCOL, 2)]).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);

        // A bad value is an error even if a later one would be fine.
        assert!(dec(&[(S::ENABLE_PUSH, 5), (S::ENABLE_PUSH, 0)]).is_err());
        // Unchecked ones take any value.
        let s = dec(&[
            (S::HEADER_TABLE_SIZE, u32::MAX),
            (S::MAX_HEADER_LIST_SIZE, u32::MAX),
        ])
        .unwrap();
        assert_eq!(s.header_table_size, Some(u32::MAX));
    }

    #[test]
    fn ack_encodes_empty() {
        let mut s = Settings::ack();
        s.max_frame_size = Some(20_000);
        let mut b = BytesMut::new();
        s.encode(&mut b);
        assert_eq!(&b[..], b"\x00\x00\x00\x04\x01\x00\x00\x00\x00");
    }
}
