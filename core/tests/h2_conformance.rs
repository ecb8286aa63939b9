//! RFC 9113 conformance of `h2::Connection`, driven frame by frame.
//!
//! Each test feeds hand-built frames to a connection (usually a server past
//! the SETTINGS exchange, see `peer::Peer`) and checks exactly which
//! frames and events come out. The sections follow the h2spec case list
//! (RFC 9113 §3–§8); cases ported from python-hyper/h2's test suite say so
//! in a comment; the last sections cover crisp's own DoS limits and
//! graceful shutdown.
//!
//! Where the RFC lets an endpoint answer either with a stream error or with
//! a connection error, the test accepts both
//! (`expect_stream_or_connection_error`) and says so.

mod peer;

use std::time::Duration;

use bytes::Bytes;
use crisp_core::h2::frame::{self, kind, Frame, PrioritySpec};
use crisp_core::h2::{Config, ErrorCode, Event, Header, StreamId, UsageError};
use peer::*;

fn headers_event(events: &[Event]) -> Vec<(u32, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Headers {
                stream_id,
                end_stream,
                ..
            } => Some((stream_id.get(), *end_stream)),
            _ => None,
        })
        .collect()
}

fn priority(stream_id: u32, dependency: u32) -> frame::Priority {
    frame::Priority {
        stream_id: StreamId::new(stream_id),
        spec: PrioritySpec {
            dependency: StreamId::new(dependency),
            exclusive: false,
            weight: 16,
        },
    }
}

fn settings(f: impl FnOnce(&mut frame::Settings)) -> frame::Settings {
    let mut s = frame::Settings::default();
    f(&mut s);
    s
}

fn continuation(stream_id: u32, fragment: Bytes, end_headers: bool) -> frame::Continuation {
    frame::Continuation {
        stream_id: StreamId::new(stream_id),
        fragment,
        end_headers,
    }
}

/// Respond on `id` with headers, `body` and trailers.
fn respond(p: &mut Peer, id: impl Into<StreamId>, body: &[u8]) {
    let id = id.into();
    p.conn.send_headers(id, response(), false).unwrap();
    p.conn
        .send_data(id, Bytes::copy_from_slice(body), false)
        .unwrap();
    p.conn.send_trailers(id, trailers()).unwrap();
}

// ===========================================================================
// §3.4 Connection preface
// ===========================================================================

mod preface {
    use super::*;

    #[test]
    fn server_settings_go_out_before_the_client_preface() {
        // python-hyper/h2 test_basic_logic: test_initiate_connection_sends_server_preamble
        let mut p = Peer::raw_server(Config::default());
        let out = p.output();
        assert_eq!(out.len(), 1, "{out:?}");
        let Frame::Settings(s) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(!s.ack);
        assert_eq!(s.enable_push, None, "a server never sends ENABLE_PUSH");
        assert_eq!(s.max_concurrent_streams, Some(1024));
        assert_eq!(s.max_header_list_size, Some(16 * 1024));
    }

    #[test]
    fn client_starts_with_the_preface_and_disables_push() {
        // python-hyper/h2 test_basic_logic: test_begin_connection
        let mut p = Peer::raw_client(Config::default());
        let out = p.output(); // checks and strips the 24-byte preface
        let Some(Frame::Settings(s)) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(s.enable_push, Some(0));
    }

    #[test]
    fn invalid_preface_is_a_protocol_error() {
        let mut p = Peer::raw_server(Config::default());
        assert!(p.recv_bytes(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n").is_err());
        let g = p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        assert_eq!(g.last_stream_id, 0);
    }

    #[test]
    fn http1_request_is_a_protocol_error() {
        let mut p = Peer::raw_server(Config::default());
        let _ = p.recv_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn missing_preface_is_a_protocol_error() {
        // python-hyper/h2 test_invalid_frame_sequences: test_missing_preamble_errors
        let mut p = Peer::raw_server(Config::default());
        let mut client = Peer::server(); // only for its encoder
        let f = client.headers_frame(1, &request(), true);
        let _ = p.send(f);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn preface_may_arrive_in_any_pieces() {
        // python-hyper/h2 test_basic_logic: test_drip_feed_preamble
        for chunk in 1..=frame::PREFACE.len() {
            let mut p = Peer::raw_server(Config::default());
            for piece in frame::PREFACE.chunks(chunk) {
                p.recv_bytes(piece).unwrap();
            }
            assert_eq!(p.events(), vec![]);
            let out = p.output();
            assert!(matches!(&out[..], [Frame::Settings(s)] if !s.ack));
            p.send(frame::Settings::default()).unwrap();
            assert_eq!(p.output(), vec![frame::Settings::ack().into()]);
        }
    }

    #[test]
    fn first_frame_must_be_settings() {
        let mut p = Peer::raw_server(Config::default());
        p.recv_bytes(frame::PREFACE).unwrap();
        let _ = p.send(frame::Ping::new(ALIVE));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn first_frame_may_not_be_a_settings_ack() {
        let mut p = Peer::raw_server(Config::default());
        p.recv_bytes(frame::PREFACE).unwrap();
        let _ = p.send(frame::Settings::ack());
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn first_frame_may_not_be_headers() {
        let mut p = Peer::raw_server(Config::default());
        let mut enc = Peer::server();
        let f = enc.headers_frame(1, &request(), true);
        p.recv_bytes(frame::PREFACE).unwrap();
        let _ = p.send(f);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn client_requires_settings_first_from_the_server() {
        let mut p = Peer::raw_client(Config::default());
        p.output();
        let _ = p.send(frame::Ping::new(ALIVE));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }
}

// ===========================================================================
// §4 Frames: size, unknown types and flags, HPACK
// ===========================================================================

mod frames {
    use super::*;

    #[test]
    fn unknown_frame_types_are_ignored() {
        // python-hyper/h2 test_basic_logic: test_unknown_frames_are_ignored
        let mut p = Peer::server();
        for k in 0x0a..=0xff_u8 {
            for stream_id in [0, 1, 2] {
                p.send(frame::Unknown {
                    kind: k,
                    flags: 0xff,
                    stream_id: StreamId::new(stream_id),
                    payload: Bytes::from_static(b"abcdefghtdst"),
                })
                .unwrap();
            }
        }
        p.expect_silence();
        assert_eq!(p.events(), vec![]);
        p.assert_alive();
        // Stream 1 was not opened by the unknown frames.
        p.open(1, true);
        assert_eq!(headers_event(&p.events()), vec![(1, true)]);
    }

    #[test]
    fn undefined_flags_are_ignored() {
        // h2spec 4.1/2: PING with every flag but ACK set.
        let mut p = Peer::server();
        p.recv_bytes(&raw(kind::PING, 0xfe, 0, &ALIVE)).unwrap();
        assert_eq!(p.output(), vec![frame::Ping::pong(ALIVE).into()]);
    }

    #[test]
    fn reserved_stream_id_bit_is_ignored() {
        // h2spec 4.1/3: the R bit of the stream identifier is set.
        let mut p = Peer::server();
        let block = p.block(&request());
        let mut bytes = raw(kind::HEADERS, 0x5, 1, &block);
        bytes[5] |= 0x80;
        p.recv_bytes(&bytes).unwrap();
        assert_eq!(headers_event(&p.events()), vec![(1, true)]);
    }

    #[test]
    fn data_larger_than_max_frame_size_is_a_frame_size_error() {
        // h2spec 4.2/2. A DATA frame cannot alter connection state, so a
        // stream error is allowed too (§4.2).
        let mut p = Peer::server();
        p.open(1, false);
        let _ = p.recv_bytes(&raw(kind::DATA, 0, 1, &[0; 16_385]));
        p.expect_stream_or_connection_error(1, ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn headers_larger_than_max_frame_size_is_a_connection_error() {
        // h2spec 4.2/3: a frame carrying a field block must be a connection
        // error (§4.2).
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::HEADERS, 0x4, 1, &[0x82; 16_385]));
        p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn oversized_frame_fails_on_its_header_alone() {
        let mut p = Peer::server();
        p.open(1, false);
        let bytes = raw(kind::DATA, 0, 1, &[0; 20_000]);
        let _ = p.recv_bytes(&bytes[..9]);
        p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn frame_of_exactly_max_frame_size_is_accepted() {
        let mut p = Peer::server();
        p.open(1, false);
        p.send_data(1, &[7; 16_384], false).unwrap();
        let events = p.events();
        assert!(matches!(&events[1], Event::Data { data, .. } if data.len() == 16_384));
        p.assert_alive();
    }

    #[test]
    fn frame_too_short_for_its_type_is_a_frame_size_error() {
        // python-hyper/h2 test_invalid_frame_sequences:
        // test_receiving_frames_with_insufficent_size
        let mut p = Peer::server();
        let _ = p.recv_bytes(b"\x00\x00\x03\x08\x00\x00\x00\x00\x00\x00\x00\x02");
        let g = p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
        assert_eq!(g.last_stream_id, 0);
    }

    #[test]
    fn larger_max_frame_size_applies_once_acknowledged() {
        // python-hyper/h2 test_basic_logic: test_changing_max_frame_size
        let config = Config {
            max_frame_size: 20_000,
            ..Config::default()
        };
        // Before our SETTINGS are acknowledged the default limit holds.
        let mut p = Peer::raw_server(config.clone());
        p.recv_bytes(frame::PREFACE).unwrap();
        p.send(frame::Settings::default()).unwrap();
        p.open(1, false);
        let _ = p.recv_bytes(&raw(kind::DATA, 0, 1, &[0; 16_385]));
        p.expect_stream_or_connection_error(1, ErrorCode::FRAME_SIZE_ERROR);

        // Once they are, the new one does.
        let mut p = Peer::server_with(config);
        p.open(1, false);
        p.send_data(1, &[0; 20_000], false).unwrap();
        assert!(matches!(&p.events()[1], Event::Data { data, .. } if data.len() == 20_000));
        let _ = p.recv_bytes(&raw(kind::DATA, 0, 1, &[0; 20_001]));
        p.expect_stream_or_connection_error(1, ErrorCode::FRAME_SIZE_ERROR);
    }
}

mod hpack_errors {
    use super::*;

    fn bad_block(fragment: &'static [u8]) {
        let mut p = Peer::server();
        let _ = p.send(frame::Headers::new(
            StreamId::new(1),
            Bytes::from_static(fragment),
            true,
            true,
        ));
        p.expect_goaway(ErrorCode::COMPRESSION_ERROR);
    }

    #[test]
    fn index_zero_is_a_compression_error() {
        bad_block(b"\x80");
    }

    #[test]
    fn index_past_the_tables_is_a_compression_error() {
        bad_block(b"\xbe"); // 62: the dynamic table is empty
    }

    #[test]
    fn table_size_update_above_our_limit_is_a_compression_error() {
        // h2spec hpack/4.2/1: 4097 > SETTINGS_HEADER_TABLE_SIZE 4096.
        bad_block(b"\x3f\xe2\x1f\x82");
    }

    #[test]
    fn table_size_update_after_a_field_is_a_compression_error() {
        bad_block(b"\x82\x20");
    }

    #[test]
    fn truncated_block_is_a_compression_error() {
        bad_block(b"\x40\x05a");
    }

    #[test]
    fn huffman_eos_is_a_compression_error() {
        bad_block(b"\x00\x84\xff\xff\xff\xff\x01a");
    }

    #[test]
    fn block_on_a_reset_stream_is_still_decoded() {
        // §4.3: every field block is decoded, even one that will be
        // discarded, so a bad one is a connection error anywhere.
        let mut p = Peer::server();
        p.open(1, false);
        p.conn
            .reset_stream(StreamId::new(1), ErrorCode::CANCEL)
            .unwrap();
        p.output();
        let _ = p.send(frame::Headers::new(
            StreamId::new(1),
            Bytes::from_static(b"\x80"),
            true,
            true,
        ));
        p.expect_goaway(ErrorCode::COMPRESSION_ERROR);
    }

    #[test]
    fn refused_stream_keeps_the_dynamic_table_in_step() {
        let mut p = Peer::server_with(Config {
            max_concurrent_streams: 1,
            ..Config::default()
        });
        p.open(1, false);
        // Refused, but its block adds "x-token" to the peer's table...
        p.send_headers(3, &request_with(&[("x-token", "abc")]), true)
            .unwrap();
        assert_eq!(rsts(&p.output()), vec![(3, ErrorCode::REFUSED_STREAM)]);
        p.send(frame::RstStream::new(StreamId::new(1), ErrorCode::CANCEL))
            .unwrap();
        // ...which the next block refers to by index.
        p.send_headers(5, &request_with(&[("x-token", "abc")]), true)
            .unwrap();
        let events = p.events();
        let Some(Event::Headers { headers, .. }) = events.last() else {
            panic!("{events:?}")
        };
        assert!(headers.contains(&h("x-token", "abc")));
    }

    #[test]
    fn peer_must_announce_our_smaller_header_table() {
        // RFC 7541 §4.2: after our SETTINGS_HEADER_TABLE_SIZE goes down, the
        // peer's next block must open with a table size update.
        let config = Config {
            header_table_size: 0,
            ..Config::default()
        };
        let mut p = Peer::server_with(config.clone());
        p.encoder.set_max_table_size(0);
        p.open(1, true);
        assert_eq!(headers_event(&p.events()), vec![(1, true)]);
        p.open(3, true);
        assert_eq!(headers_event(&p.events()), vec![(3, true)]);

        let mut p = Peer::server_with(config);
        let _ = p.send_headers(1, &request(), true);
        p.expect_goaway(ErrorCode::COMPRESSION_ERROR);
    }

    #[test]
    fn server_encoder_follows_our_header_table_size() {
        // python-hyper/h2 test_basic_logic:
        // test_settings_remote_change_header_table_size
        let mut p = Peer::server();
        p.send(settings(|s| s.header_table_size = Some(0))).unwrap();
        assert_eq!(p.output(), vec![frame::Settings::ack().into()]);
        p.open(1, true);
        respond(&mut p, 1, b"x");
        p.output();
        // The first block after the change opens with a size update to 0.
        assert_eq!(p.blocks[0].first_byte, Some(0x20));
        assert_eq!(p.decoder.table_size(), 0);
    }
}

// ===========================================================================
// §5.1 Stream states
// ===========================================================================

mod idle {
    use super::*;

    #[test]
    fn data_on_an_idle_stream_is_a_protocol_error() {
        // h2spec 5.1/1
        let mut p = Peer::server();
        let _ = p.send_data(1, b"x", false);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn rst_stream_on_an_idle_stream_is_a_protocol_error() {
        // h2spec 5.1/2, 6.4/2
        let mut p = Peer::server();
        let _ = p.send(frame::RstStream::new(StreamId::new(1), ErrorCode::CANCEL));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn window_update_on_an_idle_stream_is_a_protocol_error() {
        // h2spec 5.1/3
        let mut p = Peer::server();
        let _ = p.send(frame::WindowUpdate::new(StreamId::new(1), 100));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn zero_window_update_on_an_idle_stream_is_a_connection_error() {
        // §5.1: anything but HEADERS or PRIORITY on an idle stream is a
        // connection error, and §6.4 forbids RST_STREAM on an idle stream.
        let mut p = Peer::server();
        let _ = p.send(frame::WindowUpdate::new(StreamId::new(1), 0));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn continuation_on_an_idle_stream_is_a_protocol_error() {
        // h2spec 5.1/4
        let mut p = Peer::server();
        let block = p.block(&request());
        let _ = p.send(continuation(1, block, true));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn priority_on_an_idle_stream_is_allowed_and_opens_nothing() {
        // h2spec 5.1/5 (RFC 9113 §5.1: PRIORITY is allowed in any state).
        let mut p = Peer::server();
        p.send(priority(5, 0)).unwrap();
        p.expect_silence();
        // Stream 3 is still idle, not implicitly closed by the PRIORITY.
        p.open(3, true);
        p.open(5, true);
        assert_eq!(headers_event(&p.events()), vec![(3, true), (5, true)]);
    }
}

mod half_closed_remote {
    use super::*;

    #[test]
    fn data_is_stream_closed() {
        // h2spec 5.1/6; python-hyper/h2 test_invalid_frame_sequences:
        // test_reject_data_on_closed_streams
        let mut p = Peer::server();
        p.open(1, true);
        p.events();
        p.send_data(1, b"some data", false).unwrap();
        p.expect_stream_or_connection_error(1, ErrorCode::STREAM_CLOSED);
    }

    #[test]
    fn automatic_reset_is_reported_once() {
        // python-hyper/h2 test_invalid_frame_sequences:
        // test_get_stream_reset_event_on_auto_reset, test_one_one_stream_reset.
        // Unlike h2 we send a single RST_STREAM: after it, frames on the
        // stream are ignored (§5.1, "closed").
        let mut p = Peer::server();
        p.open(1, true);
        p.events();
        let d = frame::Data::new(StreamId::new(1), Bytes::from_static(b"some data"), false);
        p.send_all(vec![d.clone().into(); 5]).unwrap();
        let out = p.output();
        assert_eq!(rsts(&out), vec![(1, ErrorCode::STREAM_CLOSED)]);
        assert_eq!(
            p.events(),
            vec![Event::StreamReset {
                stream_id: StreamId::new(1),
                code: ErrorCode::STREAM_CLOSED,
                remote: false
            }]
        );
        p.assert_alive();
    }

    #[test]
    fn headers_is_stream_closed() {
        // h2spec 5.1/7
        let mut p = Peer::server();
        p.open(1, true);
        let _ = p.send_headers(1, &trailers(), true);
        p.expect_stream_or_connection_error(1, ErrorCode::STREAM_CLOSED);
    }

    #[test]
    fn continuation_is_a_protocol_error() {
        // h2spec 5.1/8
        let mut p = Peer::server();
        p.open(1, true);
        let block = p.block(&trailers());
        let _ = p.send(continuation(1, block, true));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn window_update_priority_and_rst_stream_are_allowed() {
        let mut p = Peer::server();
        p.open(1, true);
        p.events();
        p.send(frame::WindowUpdate::new(StreamId::new(1), 10))
            .unwrap();
        p.send(priority(1, 0)).unwrap();
        p.expect_silence();
        p.send(frame::RstStream::new(StreamId::new(1), ErrorCode::CANCEL))
            .unwrap();
        assert_eq!(
            p.events(),
            vec![Event::StreamReset {
                stream_id: StreamId::new(1),
                code: ErrorCode::CANCEL,
                remote: true
            }]
        );
        assert_eq!(p.conn.open_streams(), 0);
    }

    #[test]
    fn server_still_answers_and_then_the_stream_closes() {
        let mut p = Peer::server();
        p.open(1, true);
        respond(&mut p, 1, b"hello");
        let out = p.output();
        assert_eq!(data_frames(&out), vec![(1, 5, false)]);
        assert_eq!(p.blocks.len(), 2);
        assert!(p.blocks[1].end_stream);
        assert_eq!(p.conn.open_streams(), 0);
    }
}

mod closed {
    use super::*;

    /// Stream 1 reset by the client.
    fn remotely_reset() -> Peer {
        let mut p = Peer::server();
        p.open(1, false);
        p.send(frame::RstStream::new(StreamId::new(1), ErrorCode::CANCEL))
            .unwrap();
        p.events();
        p.expect_silence();
        p
    }

    /// Stream 1 ended both ways.
    fn ended() -> Peer {
        let mut p = Peer::server();
        p.open(1, true);
        p.conn
            .send_headers(StreamId::new(1), response(), true)
            .unwrap();
        p.output();
        p.events();
        assert_eq!(p.conn.open_streams(), 0);
        p
    }

    #[test]
    fn data_after_rst_stream_is_stream_closed() {
        // h2spec 5.1/9; python-hyper/h2 test_closed_streams:
        // test_resets_further_data_frames_after_recv_reset
        let mut p = remotely_reset();
        for _ in 0..3 {
            p.send_data(1, b"some data", false).unwrap();
            assert_eq!(rsts(&p.output()), vec![(1, ErrorCode::STREAM_CLOSED)]);
        }
        assert_eq!(p.events(), vec![]);
        p.assert_alive();
    }

    #[test]
    fn headers_after_rst_stream_is_stream_closed() {
        // h2spec 5.1/10; python-hyper/h2 test_closed_streams:
        // test_resets_further_frames_after_recv_reset
        let mut p = remotely_reset();
        let _ = p.send_headers(1, &request(), true);
        p.expect_stream_or_connection_error(1, ErrorCode::STREAM_CLOSED);
    }

    #[test]
    fn continuation_after_rst_stream_is_a_protocol_error() {
        // h2spec 5.1/11
        let mut p = remotely_reset();
        let block = p.block(&trailers());
        let _ = p.send(continuation(1, block, true));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn data_after_both_end_stream_is_stream_closed() {
        // h2spec 5.1/12: a stream error (§6.1) or a connection error (§5.1).
        let mut p = ended();
        let _ = p.send_data(1, b"x", true);
        p.expect_stream_or_connection_error(1, ErrorCode::STREAM_CLOSED);
    }

    #[test]
    fn headers_after_both_end_stream_is_stream_closed() {
        // h2spec 5.1/13; python-hyper/h2 test_closed_streams:
        // test_frames_after_recv_end_will_error
        let mut p = ended();
        let _ = p.send_headers(1, &request(), true);
        p.expect_stream_or_connection_error(1, ErrorCode::STREAM_CLOSED);
    }

    #[test]
    fn continuation_after_both_end_stream_is_a_protocol_error() {
        // h2spec 5.1/14
        let mut p = ended();
        let block = p.block(&trailers());
        let _ = p.send(continuation(1, block, true));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn window_update_rst_and_priority_after_end_stream_are_ignored() {
        // python-hyper/h2 test_closed_streams:
        // test_frames_after_send_end_will_be_ignored
        let mut p = ended();
        p.send(frame::WindowUpdate::new(StreamId::new(1), 1))
            .unwrap();
        p.send(frame::RstStream::new(StreamId::new(1), ErrorCode::CANCEL))
            .unwrap();
        p.send(priority(1, 0)).unwrap();
        p.expect_silence();
        assert_eq!(p.events(), vec![]);
    }

    #[test]
    fn frames_after_our_rst_stream_are_ignored() {
        // §5.1 "closed": after sending RST_STREAM, frames in flight are
        // ignored (python-hyper/h2 answers them with more RST_STREAMs).
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        p.conn
            .reset_stream(StreamId::new(1), ErrorCode::INTERNAL_ERROR)
            .unwrap();
        assert_eq!(rsts(&p.output()), vec![(1, ErrorCode::INTERNAL_ERROR)]);
        p.send_data(1, b"some data", false).unwrap();
        p.send_headers(1, &trailers(), true).unwrap();
        p.send(frame::WindowUpdate::new(StreamId::new(1), 5))
            .unwrap();
        p.send(frame::RstStream::new(StreamId::new(1), ErrorCode::CANCEL))
            .unwrap();
        p.send(priority(1, 0)).unwrap();
        p.expect_silence();
        assert_eq!(p.events(), vec![]);
    }

    #[test]
    fn data_on_a_reset_stream_still_counts_for_the_connection_window() {
        // python-hyper/h2 test_flow_control_window:
        // test_send_update_on_closed_streams
        let mut p = Peer::server();
        p.open(1, false);
        p.conn
            .reset_stream(StreamId::new(1), ErrorCode::CANCEL)
            .unwrap();
        p.output();
        p.send_data(1, &[0; 16_384], false).unwrap();
        p.send_data(1, &[0; 16_384], false).unwrap();
        assert_eq!(window_updates(&p.output()), vec![(0, 32_768)]);
    }
}

// ===========================================================================
// §5.1.1 Stream identifiers, §5.1.2 concurrency
// ===========================================================================

mod stream_ids {
    use super::*;

    #[test]
    fn even_stream_from_a_client_is_a_protocol_error() {
        // h2spec 5.1.1/1; python-hyper/h2 test_invalid_frame_sequences:
        // test_server_connections_reject_even_streams
        let mut p = Peer::server();
        let _ = p.send_headers(2, &request(), true);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn lower_stream_id_than_before_is_a_protocol_error() {
        // h2spec 5.1.1/2; python-hyper/h2 test_closed_streams:
        // test_receiving_low_stream_id_causes_goaway
        let mut p = Peer::server();
        p.open(3, false);
        let _ = p.send_headers(1, &request(), false);
        let g = p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        assert_eq!(g.last_stream_id, 3);
    }

    #[test]
    fn skipped_ids_are_implicitly_closed() {
        let mut p = Peer::server();
        p.open(1, true);
        p.open(101, true);
        let _ = p.send_headers(99, &request(), true);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn client_rejects_headers_on_a_stream_it_did_not_open() {
        // Push is disabled, so an even stream cannot exist; an odd one must
        // be one the client opened.
        for id in [2, 3] {
            let mut p = Peer::client();
            p.conn.open_stream(request(), true).unwrap();
            p.output();
            let _ = p.send_headers(id, &response(), true);
            p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        }
    }
}

mod concurrency {
    use super::*;

    fn limited(n: u32) -> Peer {
        Peer::server_with(Config {
            max_concurrent_streams: n,
            ..Config::default()
        })
    }

    #[test]
    fn stream_over_the_limit_is_refused() {
        // h2spec 5.1.2/1: REFUSED_STREAM or PROTOCOL_ERROR. python-hyper/h2
        // test_basic_logic: test_cannot_receive_new_streams_over_limit.
        let mut p = limited(2);
        p.open(1, false);
        p.open(3, false);
        p.events();
        let _ = p.send_headers(5, &request(), false);
        let answer = p.expect_stream_or_connection_error(5, ErrorCode::REFUSED_STREAM);
        assert_eq!(answer, Answer::Stream);
        assert_eq!(p.events(), vec![], "a refused stream is not reported");
        // Its DATA, already in flight, is ignored.
        p.send_data(5, b"late", true).unwrap();
        p.expect_silence();
        // Once a stream closes there is room again.
        p.send(frame::RstStream::new(StreamId::new(1), ErrorCode::CANCEL))
            .unwrap();
        p.open(7, true);
        assert_eq!(headers_event(&p.events()), vec![(7, true)]);
    }

    #[test]
    fn half_closed_streams_count_until_answered() {
        let mut p = limited(1);
        p.open(1, true);
        let _ = p.send_headers(3, &request(), true);
        assert_eq!(rsts(&p.output()), vec![(3, ErrorCode::REFUSED_STREAM)]);
        p.conn
            .send_headers(StreamId::new(1), response(), true)
            .unwrap();
        p.output();
        p.open(5, true);
        assert_eq!(headers_event(&p.events()), vec![(1, true), (5, true)]);
    }

    #[test]
    fn client_respects_the_servers_limit() {
        // python-hyper/h2 test_basic_logic:
        // test_cannot_create_new_outbound_stream_over_limit
        let mut p = Peer::raw_client(Config::default());
        p.output();
        p.send(settings(|s| s.max_concurrent_streams = Some(1)))
            .unwrap();
        let id = p.conn.open_stream(request(), true).unwrap();
        assert!(!p.conn.can_open_stream());
        assert_eq!(
            p.conn.open_stream(request(), true),
            Err(UsageError::StreamLimit)
        );
        p.output();
        p.send_headers(id, &response(), true).unwrap();
        assert!(p.conn.can_open_stream());
        assert_eq!(p.conn.open_stream(request(), true), Ok(StreamId::new(3)));
    }
}

// ===========================================================================
// §5.4 Error handling
// ===========================================================================

mod error_handling {
    use super::*;

    #[test]
    fn stream_error_leaves_other_streams_working() {
        // h2spec 5.4.1 and the point of §5.4.2.
        let mut p = Peer::server();
        p.open(1, false);
        p.open(3, false);
        p.events();
        p.send(frame::WindowUpdate::new(StreamId::new(1), 0))
            .unwrap();
        p.expect_rst(1, ErrorCode::PROTOCOL_ERROR);
        p.send_data(3, b"request", true).unwrap();
        let events = p.events();
        assert!(events.contains(&Event::Data {
            stream_id: StreamId::new(3),
            data: Bytes::from_static(b"request"),
            end_stream: true
        }));
        respond(&mut p, 3, b"response");
        let out = p.output();
        assert_eq!(data_frames(&out), vec![(3, 8, false)]);
        assert_eq!(
            p.conn.send_data(StreamId::new(1), Bytes::new(), true),
            Err(UsageError::UnknownStream)
        );
    }

    #[test]
    fn goaway_names_the_last_stream_processed() {
        let mut p = Peer::server();
        p.open(1, false);
        p.open(3, false);
        let _ = p.send(frame::Data::new(StreamId::new(0), Bytes::new(), false));
        let g = p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        assert_eq!(g.last_stream_id, 3);
    }

    #[test]
    fn commands_fail_after_a_connection_error() {
        let mut p = Peer::server();
        p.open(1, false);
        // PING on a stream: a connection error.
        let _ = p.recv_bytes(&raw(kind::PING, 0, 1, &ALIVE));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        assert_eq!(
            p.conn.send_headers(StreamId::new(1), response(), true),
            Err(UsageError::Closed)
        );
        assert_eq!(
            p.conn.reset_stream(StreamId::new(1), ErrorCode::CANCEL),
            Err(UsageError::Closed)
        );
        let mut c = Peer::client();
        let _ = c.send(frame::Data::new(StreamId::new(0), Bytes::new(), false));
        c.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        assert_eq!(c.conn.open_stream(request(), true), Err(UsageError::Closed));
    }
}

// ===========================================================================
// §6.1 DATA
// ===========================================================================

mod data {
    use super::*;

    #[test]
    fn data_on_stream_zero_is_a_protocol_error() {
        // h2spec 6.1/1
        let mut p = Peer::server();
        let _ = p.send(frame::Data::new(
            StreamId::new(0),
            Bytes::from_static(b"x"),
            false,
        ));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn data_on_a_stream_not_open_is_stream_closed() {
        // h2spec 6.1/2 (half-closed remote).
        let mut p = Peer::server();
        p.open(1, true);
        let _ = p.send_data(1, b"x", false);
        p.expect_stream_or_connection_error(1, ErrorCode::STREAM_CLOSED);
    }

    #[test]
    fn padding_longer_than_the_payload_is_a_protocol_error() {
        // h2spec 6.1/3; python-hyper/h2 test_invalid_frame_sequences:
        // test_can_handle_frames_with_invalid_padding
        let mut p = Peer::server();
        p.open(1, false);
        let _ = p.recv_bytes(b"\x00\x00\x05\x00\x0b\x00\x00\x00\x01\x06\x54\x65\x73\x74");
        let g = p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        assert_eq!(g.last_stream_id, 1);
    }

    #[test]
    fn padding_is_stripped_and_counted_for_flow_control() {
        // python-hyper/h2 test_basic_logic: test_data_event_with_padding;
        // test_flow_control_window: test_flow_control_decreases_with_padded_data
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        let padded = |n| {
            frame::Data::new(StreamId::new(1), Bytes::from(vec![1; n]), false).with_padding(255)
        };
        p.send(padded(16_000)).unwrap();
        p.send(padded(16_000)).unwrap();
        // 2 × (16000 + 1 + 255) = 32512: under half the window, no update.
        assert_eq!(window_updates(&p.output()), vec![]);
        p.send_data(1, &[2; 255], false).unwrap();
        // 32767 flow-controlled bytes are due back, padding included.
        assert_eq!(window_updates(&p.output()), vec![(1, 32_767), (0, 32_767)]);
        let got: usize = p
            .events()
            .iter()
            .map(|e| match e {
                Event::Data { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(got, 32_255);
    }

    #[test]
    fn zero_padding_is_allowed() {
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        p.send(
            frame::Data::new(StreamId::new(1), Bytes::from_static(b"abc"), true).with_padding(0),
        )
        .unwrap();
        assert_eq!(
            p.events(),
            vec![Event::Data {
                stream_id: StreamId::new(1),
                data: Bytes::from_static(b"abc"),
                end_stream: true
            }]
        );
    }

    #[test]
    fn data_before_response_headers_is_a_protocol_error() {
        // python-hyper/h2 test_invalid_frame_sequences: test_data_before_headers
        // (h2 fails the connection; a stream error is what §8.1 asks for).
        let mut p = Peer::client();
        let id = p.conn.open_stream(request(), false).unwrap();
        p.output();
        let _ = p.send_data(id, b"hello", false);
        p.expect_stream_or_connection_error(id, ErrorCode::PROTOCOL_ERROR);
    }
}

// ===========================================================================
// §6.2 HEADERS
// ===========================================================================

mod headers {
    use super::*;

    #[test]
    fn headers_on_stream_zero_is_a_protocol_error() {
        // python-hyper/h2 test_invalid_frame_sequences:
        // test_invalid_frame_headers_are_protocol_errors
        let mut p = Peer::server();
        let f = p.headers_frame(0, &request(), true);
        let _ = p.send(f);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn padding_longer_than_the_payload_is_a_protocol_error() {
        // h2spec 6.2/2
        let mut p = Peer::server();
        let mut payload = vec![17u8];
        payload.extend_from_slice(&[0x82; 16]);
        let _ = p.recv_bytes(&raw(kind::HEADERS, 0x8 | 0x4, 1, &payload));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn padded_headers_with_priority_are_accepted() {
        let mut p = Peer::server();
        let mut f = p.headers_frame(1, &request(), true);
        f.pad_len = Some(10);
        f.priority = Some(PrioritySpec {
            dependency: StreamId::new(0),
            exclusive: true,
            weight: 200,
        });
        p.send(f).unwrap();
        assert_eq!(headers_event(&p.events()), vec![(1, true)]);
    }

    #[test]
    fn self_dependency_is_a_protocol_error() {
        // h2spec 5.3.1/1: a stream error; a connection error is allowed too
        // since the field block must be decoded either way.
        let mut p = Peer::server();
        let mut f = p.headers_frame(1, &request(), false);
        f.priority = Some(PrioritySpec {
            dependency: StreamId::new(1),
            exclusive: false,
            weight: 16,
        });
        let _ = p.send(f);
        p.expect_stream_or_connection_error(1, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn priority_fields_too_short_is_a_frame_size_error() {
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::HEADERS, 0x20 | 0x4, 1, &[0, 0, 0]));
        p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn headers_not_followed_by_continuation_is_a_protocol_error() {
        // h2spec 6.2/1
        let mut p = Peer::server();
        let block = p.block(&request());
        let _ = p.send_all(vec![
            frame::Headers::new(StreamId::new(1), block, true, false).into(),
            frame::Ping::new(ALIVE).into(),
        ]);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn multiple_blocks_arrive_in_order() {
        // python-hyper/h2 test_basic_logic: test_headers_event, test_data_event
        let mut p = Peer::server();
        p.open(3, false);
        p.send_data(3, b"some request data", true).unwrap();
        let events = p.events();
        let Event::Headers { headers, .. } = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(headers, &request());
        assert_eq!(
            events[1],
            Event::Data {
                stream_id: StreamId::new(3),
                data: Bytes::from_static(b"some request data"),
                end_stream: true
            }
        );
    }
}

// ===========================================================================
// §6.3 PRIORITY
// ===========================================================================

mod priority_frame {
    use super::*;

    #[test]
    fn priority_on_stream_zero_is_a_protocol_error() {
        // h2spec 6.3/1
        let mut p = Peer::server();
        let _ = p.send(priority(0, 1));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn wrong_length_is_a_frame_size_error() {
        // h2spec 6.3/2: a stream error; a connection error is allowed.
        let mut p = Peer::server();
        p.open(1, false);
        let _ = p.recv_bytes(&raw(kind::PRIORITY, 0, 1, &[0, 0, 0, 0]));
        p.expect_stream_or_connection_error(1, ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn self_dependency_is_a_protocol_error() {
        // h2spec 5.3.1/2
        let mut p = Peer::server();
        p.open(1, false);
        let _ = p.send(priority(1, 1));
        p.expect_stream_or_connection_error(1, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn priority_is_allowed_in_every_state() {
        // python-hyper/h2 test_state_machines:
        // test_priority_frames_allowed_in_all_states
        let mut p = Peer::server();
        p.open(1, false); // open
        p.open(3, true); // half-closed (remote)
        p.open(5, true);
        p.conn
            .send_headers(StreamId::new(5), response(), true)
            .unwrap(); // closed
        p.output();
        for id in [1, 3, 5, 7] {
            p.send(priority(id, 0)).unwrap();
        }
        p.expect_silence();
        p.assert_alive();
    }

    #[test]
    fn priority_inside_a_header_block_is_a_protocol_error() {
        let mut p = Peer::server();
        let block = p.block(&request());
        let (a, b) = (block.slice(..2), block.slice(2..));
        let _ = p.send_all(vec![
            frame::Headers::new(StreamId::new(1), a, true, false).into(),
            priority(3, 0).into(),
            continuation(1, b, true).into(),
        ]);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }
}

// ===========================================================================
// §6.4 RST_STREAM
// ===========================================================================

mod rst_stream {
    use super::*;

    #[test]
    fn rst_stream_on_stream_zero_is_a_protocol_error() {
        // h2spec 6.4/1
        let mut p = Peer::server();
        let _ = p.send(frame::RstStream::new(StreamId::new(0), ErrorCode::CANCEL));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn wrong_length_is_a_frame_size_error() {
        // h2spec 6.4/3
        let mut p = Peer::server();
        p.open(1, false);
        let _ = p.recv_bytes(&raw(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8, 0]));
        p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn rst_stream_closes_the_stream_and_drops_its_output() {
        // python-hyper/h2 test_basic_logic: test_handle_stream_reset
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(0)))
            .unwrap();
        p.open(1, false);
        p.events();
        p.conn
            .send_headers(StreamId::new(1), response(), false)
            .unwrap();
        p.conn
            .send_data(StreamId::new(1), Bytes::from_static(b"blocked"), true)
            .unwrap();
        p.output();
        p.send(frame::RstStream::new(
            StreamId::new(1),
            ErrorCode::STREAM_CLOSED,
        ))
        .unwrap();
        assert_eq!(
            p.events(),
            vec![Event::StreamReset {
                stream_id: StreamId::new(1),
                code: ErrorCode::STREAM_CLOSED,
                remote: true
            }]
        );
        p.send(frame::WindowUpdate::new(StreamId::new(0), 100))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![]);
        assert_eq!(
            p.conn.send_data(StreamId::new(1), Bytes::new(), true),
            Err(UsageError::UnknownStream)
        );
        assert_eq!(p.conn.open_streams(), 0);
    }

    #[test]
    fn unknown_error_codes_are_kept() {
        // python-hyper/h2 test_basic_logic:
        // test_handle_stream_reset_with_unknown_erorr_code
        let mut p = Peer::client();
        let id = p.conn.open_stream(request(), true).unwrap();
        p.output();
        p.send(frame::RstStream::new(id, ErrorCode(0xfa))).unwrap();
        assert_eq!(
            p.events(),
            vec![Event::StreamReset {
                stream_id: id,
                code: ErrorCode(0xfa),
                remote: true
            }]
        );
    }

    #[test]
    fn only_the_first_rst_stream_is_reported() {
        // python-hyper/h2 test_closed_streams:
        // test_can_receive_multiple_rst_stream_frames
        let mut p = Peer::client();
        let id = p.conn.open_stream(request(), true).unwrap();
        p.output();
        let r: Frame = frame::RstStream::new(id, ErrorCode::CANCEL).into();
        p.send_all(vec![r.clone(), r.clone(), r.clone()]).unwrap();
        p.send_all(vec![r.clone(), r.clone(), r]).unwrap();
        assert_eq!(p.events().len(), 1);
        p.expect_silence();
    }
}

// ===========================================================================
// §6.5 SETTINGS
// ===========================================================================

mod settings_frame {
    use super::*;

    #[test]
    fn ack_with_a_payload_is_a_frame_size_error() {
        // h2spec 6.5/1
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::SETTINGS, 0x1, 0, &[0, 4, 0, 0, 0, 1]));
        p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn settings_on_a_stream_is_a_protocol_error() {
        // h2spec 6.5/2
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::SETTINGS, 0, 1, &[]));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn length_not_a_multiple_of_six_is_a_frame_size_error() {
        // h2spec 6.5/3
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0]));
        p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn values_out_of_range_are_rejected() {
        // h2spec 6.5.2/1-4; python-hyper/h2 test_invalid_frame_sequences:
        // test_reject_invalid_settings_values
        let cases: [(u16, u32, ErrorCode); 5] = [
            (0x2, 2, ErrorCode::PROTOCOL_ERROR),
            (0x2, 5, ErrorCode::PROTOCOL_ERROR),
            (0x4, 1 << 31, ErrorCode::FLOW_CONTROL_ERROR),
            (0x5, 16_383, ErrorCode::PROTOCOL_ERROR),
            (0x5, 1 << 24, ErrorCode::PROTOCOL_ERROR),
        ];
        for (id, value, code) in cases {
            let mut p = Peer::server();
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&value.to_be_bytes());
            let _ = p.recv_bytes(&raw(kind::SETTINGS, 0, 0, &payload));
            p.expect_goaway(code);
        }
    }

    #[test]
    fn five_is_not_a_valid_max_frame_size() {
        // python-hyper/h2 test_invalid_frame_sequences: {0x5: 5}
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::SETTINGS, 0, 0, &[0, 5, 0, 0, 0, 5]));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn unknown_settings_are_ignored_and_acknowledged() {
        // h2spec 6.5.3/1 … §6.5.2: unknown identifiers are ignored.
        let mut p = Peer::server();
        p.recv_bytes(&raw(kind::SETTINGS, 0, 0, &[0, 0x99, 0, 0, 0, 7]))
            .unwrap();
        assert_eq!(p.output(), vec![frame::Settings::ack().into()]);
    }

    #[test]
    fn every_settings_is_acknowledged_in_order() {
        // h2spec 6.5.3/2
        let mut p = Peer::server();
        p.send_all(vec![
            settings(|s| s.initial_window_size = Some(10)).into(),
            settings(|s| s.max_frame_size = Some(20_000)).into(),
            frame::Settings::default().into(),
        ])
        .unwrap();
        assert_eq!(p.output(), vec![frame::Settings::ack().into(); 3]);
    }

    #[test]
    fn server_accepts_enable_push_from_a_client() {
        // §6.5.2: only a client must reject ENABLE_PUSH=1. (python-hyper/h2
        // test_reject_client_enable_push_updates rejects it; the RFC does not.)
        let mut p = Peer::server();
        p.send(settings(|s| s.enable_push = Some(1))).unwrap();
        assert_eq!(p.output(), vec![frame::Settings::ack().into()]);
    }

    #[test]
    fn client_rejects_enable_push_from_a_server() {
        let mut p = Peer::raw_client(Config::default());
        p.output();
        let _ = p.send(settings(|s| s.enable_push = Some(1)));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn peer_max_frame_size_bounds_our_data_frames() {
        // python-hyper/h2 test_basic_logic:
        // test_restricting_outbound_frame_size_by_settings
        let mut p = Peer::server();
        p.send(settings(|s| {
            s.max_frame_size = Some(20_000);
            s.initial_window_size = Some(100_000);
        }))
        .unwrap();
        p.send(frame::WindowUpdate::new(StreamId::new(0), 100_000))
            .unwrap();
        p.set_max_frame_size(20_000);
        p.open(1, true);
        p.conn
            .send_headers(StreamId::new(1), response(), false)
            .unwrap();
        p.conn
            .send_data(StreamId::new(1), Bytes::from(vec![1; 50_000]), true)
            .unwrap();
        assert_eq!(
            data_frames(&p.output()),
            vec![(1, 20_000, false), (1, 20_000, false), (1, 10_000, true)]
        );
    }

    #[test]
    fn default_max_frame_size_bounds_our_data_frames() {
        let mut p = Peer::server();
        p.open(1, true);
        p.conn
            .send_headers(StreamId::new(1), response(), false)
            .unwrap();
        p.conn
            .send_data(StreamId::new(1), Bytes::from(vec![1; 40_000]), true)
            .unwrap();
        assert_eq!(
            data_frames(&p.output()),
            vec![(1, 16_384, false), (1, 16_384, false), (1, 7_232, true)]
        );
    }

    #[test]
    fn our_initial_window_applies_once_acknowledged() {
        // python-hyper/h2 test_settings: test_applying_value_doesnt_take_effect_immediately,
        // test_flow_control_window: test_we_enforce_our_flow_control_window
        let config = Config {
            initial_window_size: 80,
            ..Config::default()
        };
        let mut p = Peer::raw_server(config.clone());
        p.recv_bytes(frame::PREFACE).unwrap();
        p.send(frame::Settings::default()).unwrap();
        p.output();
        // Not acknowledged yet: the default 65535 holds.
        p.open(1, false);
        p.send_data(1, &[0; 100], false).unwrap();
        p.assert_alive();

        let mut p = Peer::server_with(config);
        p.open(1, false);
        let _ = p.send_data(1, &[1; 100], false);
        p.expect_stream_or_connection_error(1, ErrorCode::FLOW_CONTROL_ERROR);
    }

    #[test]
    fn lowering_our_initial_window_does_not_strand_a_stream() {
        // A stream that received data before our smaller window took effect
        // may be left with a negative window (§6.9.2); the credit we owe it
        // must still be returned, or it can never send again.
        let config = Config {
            initial_window_size: 1_000,
            ..Config::default()
        };
        let mut p = Peer::raw_server(config);
        p.recv_bytes(frame::PREFACE).unwrap();
        p.send(frame::Settings::default()).unwrap();
        p.open(1, false);
        p.send_data(1, &[0; 2_000], false).unwrap();
        p.output();
        p.send(frame::Settings::ack()).unwrap();
        // The client's view of the stream window: 1000 - 2000 + updates.
        let granted: u32 = window_updates(&p.output())
            .iter()
            .filter(|(id, _)| *id == 1)
            .map(|(_, n)| n)
            .sum();
        let window = 1_000 - 2_000 + i64::from(granted);
        assert!(window > 0, "stream 1 is stuck with window {window}");
        p.send_data(1, &vec![0; window as usize], false).unwrap();
        p.assert_alive();
    }
}

// ===========================================================================
// §6.7 PING
// ===========================================================================

mod ping {
    use super::*;

    #[test]
    fn ping_is_answered_with_the_same_payload() {
        // h2spec 6.7/1; python-hyper/h2 test_basic_logic: test_receiving_ping_frame
        let mut p = Peer::server();
        p.send(frame::Ping::new(*b"\x01\x02\x03\x04\x05\x06\x07\x08"))
            .unwrap();
        assert_eq!(
            p.output(),
            vec![frame::Ping::pong(*b"\x01\x02\x03\x04\x05\x06\x07\x08").into()]
        );
    }

    #[test]
    fn ping_ack_is_reported_and_not_answered() {
        // h2spec 6.7/2; python-hyper/h2 test_basic_logic:
        // test_receiving_ping_acknowledgement
        let mut p = Peer::server();
        p.conn.ping(*b"12345678");
        assert_eq!(p.output(), vec![frame::Ping::new(*b"12345678").into()]);
        p.send(frame::Ping::pong(*b"12345678")).unwrap();
        p.expect_silence();
        assert_eq!(
            p.events(),
            vec![Event::PingAck {
                payload: *b"12345678"
            }]
        );
    }

    #[test]
    fn ping_on_a_stream_is_a_protocol_error() {
        // h2spec 6.7/3
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::PING, 0, 1, &ALIVE));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn ping_of_the_wrong_length_is_a_frame_size_error() {
        // h2spec 6.7/4
        for len in [0, 7, 9] {
            let mut p = Peer::server();
            let _ = p.recv_bytes(&raw(kind::PING, 0, 0, &vec![0; len]));
            p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
        }
    }
}

// ===========================================================================
// §6.8 GOAWAY
// ===========================================================================

mod goaway {
    use super::*;

    #[test]
    fn goaway_on_a_stream_is_a_protocol_error() {
        // h2spec 6.8/1
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::GOAWAY, 0, 1, &[0; 8]));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn short_goaway_is_a_frame_size_error() {
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::GOAWAY, 0, 0, &[0; 7]));
        p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn goaway_is_reported_with_its_fields() {
        // python-hyper/h2 test_basic_logic: test_receiving_goaway_frame,
        // ..._with_additional_data, ..._with_unknown_error,
        // test_receiving_multiple_goaway_frames
        let mut p = Peer::server();
        let g = frame::GoAway {
            last_stream_id: StreamId::new(5),
            code: ErrorCode(0xfa),
            debug_data: Bytes::from_static(b"debug data"),
        };
        p.send_all(vec![g.clone().into(), g.clone().into(), g.into()])
            .unwrap();
        let events = p.events();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0],
            Event::GoAway {
                last_stream_id: StreamId::new(5),
                code: ErrorCode(0xfa),
                debug_data: Bytes::from_static(b"debug data")
            }
        );
        p.expect_silence();
    }

    #[test]
    fn server_finishes_its_streams_after_a_goaway() {
        let mut p = Peer::server();
        p.open(1, true);
        p.send(frame::GoAway::new(StreamId::new(1), ErrorCode::NO_ERROR))
            .unwrap();
        assert!(!p.conn.is_closed());
        respond(&mut p, 1, b"bye");
        assert_eq!(data_frames(&p.output()), vec![(1, 3, false)]);
        assert!(p.conn.is_closed());
    }

    #[test]
    fn client_learns_which_streams_were_not_processed() {
        let mut p = Peer::client();
        let a = p.conn.open_stream(request(), true).unwrap();
        let b = p.conn.open_stream(request(), true).unwrap();
        p.output();
        p.send(frame::GoAway::new(a, ErrorCode::NO_ERROR)).unwrap();
        let events = p.events();
        assert_eq!(
            events[0],
            Event::StreamReset {
                stream_id: b,
                code: ErrorCode::REFUSED_STREAM,
                remote: true
            }
        );
        assert!(matches!(events[1], Event::GoAway { last_stream_id, .. } if last_stream_id == a));
        assert_eq!(
            p.conn.open_stream(request(), true),
            Err(UsageError::GoingAway)
        );
        p.send_headers(a, &response(), true).unwrap();
        assert_eq!(headers_event(&p.events()), vec![(a.get(), true)]);
        assert!(p.conn.is_closed());
    }
}

// ===========================================================================
// §6.9 WINDOW_UPDATE and flow control
// ===========================================================================

mod window_update {
    use super::*;

    #[test]
    fn zero_increment_on_a_stream_is_a_stream_error() {
        // h2spec 6.9/2: stream error; a connection error is allowed.
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        let _ = p.send(frame::WindowUpdate::new(StreamId::new(1), 0));
        if p.expect_stream_or_connection_error(1, ErrorCode::PROTOCOL_ERROR) == Answer::Stream {
            assert_eq!(
                p.events(),
                vec![Event::StreamReset {
                    stream_id: StreamId::new(1),
                    code: ErrorCode::PROTOCOL_ERROR,
                    remote: false
                }]
            );
        }
    }

    #[test]
    fn zero_increment_on_the_connection_is_a_protocol_error() {
        // h2spec 6.9/1; python-hyper/h2 test_flow_control_window:
        // test_reject_bad_remote_increments
        let mut p = Peer::server();
        let _ = p.send(frame::WindowUpdate::new(StreamId::new(0), 0));
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn wrong_length_is_a_frame_size_error() {
        // h2spec 6.9/3
        let mut p = Peer::server();
        let _ = p.recv_bytes(&raw(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]));
        p.expect_goaway(ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn connection_window_overflow_is_a_flow_control_error() {
        // h2spec 6.9.1/2; python-hyper/h2 test_flow_control_window:
        // test_reject_increasing_connection_window_too_far
        let mut p = Peer::server();
        let _ = p.send(frame::WindowUpdate::new(
            StreamId::new(0),
            (1 << 31) - 65_535,
        ));
        let g = p.expect_goaway(ErrorCode::FLOW_CONTROL_ERROR);
        assert_eq!(g.last_stream_id, 0);
    }

    #[test]
    fn connection_window_may_reach_the_maximum() {
        let mut p = Peer::server();
        p.send(frame::WindowUpdate::new(
            StreamId::new(0),
            (1 << 31) - 1 - 65_535,
        ))
        .unwrap();
        p.assert_alive();
    }

    #[test]
    fn stream_window_overflow_is_a_flow_control_error() {
        // h2spec 6.9.1/3; python-hyper/h2 test_flow_control_window:
        // test_reject_increasing_stream_window_too_far
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        p.send(frame::WindowUpdate::new(
            StreamId::new(1),
            (1 << 31) - 65_535,
        ))
        .unwrap();
        p.expect_rst(1, ErrorCode::FLOW_CONTROL_ERROR);
        assert_eq!(
            p.events(),
            vec![Event::StreamReset {
                stream_id: StreamId::new(1),
                code: ErrorCode::FLOW_CONTROL_ERROR,
                remote: false
            }]
        );
    }

    #[test]
    fn reserved_bit_of_the_increment_is_ignored() {
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(0)))
            .unwrap();
        p.open(1, true);
        p.conn
            .send_headers(StreamId::new(1), response(), false)
            .unwrap();
        p.conn
            .send_data(StreamId::new(1), Bytes::from_static(b"abc"), true)
            .unwrap();
        p.output();
        p.recv_bytes(&raw(kind::WINDOW_UPDATE, 0, 1, &[0x80, 0, 0, 1]))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![(1, 1, false)]);
    }

    #[test]
    fn window_update_on_a_half_closed_stream_is_allowed() {
        let mut p = Peer::server();
        p.open(1, true);
        p.send(frame::WindowUpdate::new(StreamId::new(1), 1000))
            .unwrap();
        p.expect_silence();
        assert_eq!(headers_event(&p.events()), vec![(1, true)]);
    }
}

mod initial_window {
    use super::*;

    /// Server with stream 1 open, its response headers sent and `body`
    /// queued after them.
    fn queued(p: &mut Peer, body: usize) {
        p.open(1, true);
        p.conn
            .send_headers(StreamId::new(1), response(), false)
            .unwrap();
        p.conn
            .send_data(StreamId::new(1), Bytes::from(vec![9; body]), true)
            .unwrap();
    }

    #[test]
    fn changes_apply_to_open_streams() {
        // h2spec 6.9.2/1; python-hyper/h2 test_flow_control_window:
        // test_flow_control_shrinks_in_response_to_settings,
        // test_flow_control_grows_in_response_to_settings
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(1)))
            .unwrap();
        queued(&mut p, 10);
        assert_eq!(data_frames(&p.output()), vec![(1, 1, false)]);
        p.send(settings(|s| s.initial_window_size = Some(5)))
            .unwrap();
        let out = p.output();
        assert!(out.contains(&frame::Settings::ack().into()));
        assert_eq!(data_frames(&out), vec![(1, 4, false)]);
        p.send(frame::WindowUpdate::new(StreamId::new(1), 5))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![(1, 5, true)]);
    }

    #[test]
    fn window_may_go_negative_and_recover() {
        // h2spec 6.9.2/2
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(100)))
            .unwrap();
        queued(&mut p, 200);
        assert_eq!(data_frames(&p.output()), vec![(1, 100, false)]);
        // 50 - 100: the window is now -50.
        p.send(settings(|s| s.initial_window_size = Some(50)))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![]);
        p.send(frame::WindowUpdate::new(StreamId::new(1), 50))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![], "window is 0");
        p.send(frame::WindowUpdate::new(StreamId::new(1), 10))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![(1, 10, false)]);
        p.send(frame::WindowUpdate::new(StreamId::new(1), 1000))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![(1, 90, true)]);
    }

    #[test]
    fn overflowing_a_stream_window_is_a_flow_control_error() {
        // h2spec 6.9.2/3; python-hyper/h2 test_flow_control_window:
        // test_reject_overlarge_stream_window_settings
        let mut p = Peer::server();
        p.open(1, false);
        p.send(frame::WindowUpdate::new(
            StreamId::new(1),
            (1 << 31) - 1 - 65_535,
        ))
        .unwrap();
        let _ = p.send(settings(|s| s.initial_window_size = Some(65_536)));
        p.expect_goaway(ErrorCode::FLOW_CONTROL_ERROR);
    }

    #[test]
    fn connection_window_is_not_changed_by_settings() {
        // python-hyper/h2 test_flow_control_window:
        // test_reject_overlarge_conn_window_settings,
        // test_flow_control_settings_blocked_by_conn_window
        let mut p = Peer::server();
        p.send(frame::WindowUpdate::new(
            StreamId::new(0),
            (1 << 31) - 1 - 65_535,
        ))
        .unwrap();
        p.send(settings(|s| s.initial_window_size = Some(65_536)))
            .unwrap();
        assert_eq!(p.output(), vec![frame::Settings::ack().into()]);

        // And a larger stream window is still bounded by the connection's.
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(128_000)))
            .unwrap();
        queued(&mut p, 100_000);
        assert_eq!(data_len(&p.output(), 1), 65_535);
    }

    #[test]
    fn new_streams_use_the_new_initial_window() {
        // python-hyper/h2 test_flow_control_window:
        // test_new_streams_have_flow_control_per_settings
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(10)))
            .unwrap();
        queued(&mut p, 100);
        assert_eq!(data_frames(&p.output()), vec![(1, 10, false)]);
    }

    #[test]
    fn maximum_initial_window_is_accepted() {
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some((1 << 31) - 1)))
            .unwrap();
        p.send(frame::WindowUpdate::new(StreamId::new(0), 200_000))
            .unwrap();
        queued(&mut p, 200_000);
        assert_eq!(data_len(&p.output(), 1), 200_000);
    }
}

mod flow_control {
    use super::*;

    #[test]
    fn server_never_sends_past_the_stream_window() {
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(16)))
            .unwrap();
        p.open(1, true);
        p.conn
            .send_headers(StreamId::new(1), response(), false)
            .unwrap();
        p.conn
            .send_data(StreamId::new(1), Bytes::from(vec![1; 100]), true)
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![(1, 16, false)]);
        assert_eq!(p.conn.send_buffered(StreamId::new(1)), 84);
        p.send(frame::WindowUpdate::new(StreamId::new(1), 50))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![(1, 50, false)]);
        p.send(frame::WindowUpdate::new(StreamId::new(1), 100))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![(1, 34, true)]);
        assert_eq!(p.conn.open_streams(), 0);
    }

    #[test]
    fn connection_window_is_shared_by_all_streams() {
        // python-hyper/h2 test_flow_control_window:
        // test_flow_control_is_limited_by_connection
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(1_000_000)))
            .unwrap();
        for id in [1, 3].map(StreamId::new) {
            p.open(id, true);
            p.conn.send_headers(id, response(), false).unwrap();
            p.conn
                .send_data(id, Bytes::from(vec![1; 40_000]), true)
                .unwrap();
        }
        let out = p.output();
        assert_eq!(data_len(&out, 1) + data_len(&out, 3), 65_535);
        assert!(
            data_len(&out, 1) > 0 && data_len(&out, 3) > 0,
            "round-robin"
        );
        // More connection window lets both finish.
        p.send(frame::WindowUpdate::new(StreamId::new(0), 14_465))
            .unwrap();
        let more = p.output();
        assert_eq!(data_len(&out, 1) + data_len(&more, 1), 40_000);
        assert_eq!(data_len(&out, 3) + data_len(&more, 3), 40_000);
        assert_eq!(p.conn.open_streams(), 0);
    }

    #[test]
    fn credit_is_returned_once_half_the_window_is_used() {
        // python-hyper/h2 test_flow_control_window:
        // test_acknowledging_small_chunks_does_nothing
        let mut p = Peer::server();
        p.open(1, false);
        p.send_data(1, &[0; 16_384], false).unwrap();
        assert_eq!(window_updates(&p.output()), vec![]);
        p.send_data(1, &[0; 16_384], false).unwrap();
        assert_eq!(window_updates(&p.output()), vec![(1, 32_768), (0, 32_768)]);
    }

    #[test]
    fn no_stream_update_after_end_stream() {
        let mut p = Peer::server();
        p.open(1, false);
        p.send_data(1, &[0; 16_384], false).unwrap();
        p.send_data(1, &[0; 16_384], true).unwrap();
        assert_eq!(window_updates(&p.output()), vec![(0, 32_768)]);
    }

    #[test]
    fn data_beyond_the_stream_window_is_a_flow_control_error() {
        // h2spec 6.9.1/1 (receiving side); stream or connection error.
        let mut p = Peer::server_with(Config {
            initial_window_size: 100,
            ..Config::default()
        });
        p.open(1, false);
        let _ = p.send_data(1, &[0; 101], false);
        p.expect_stream_or_connection_error(1, ErrorCode::FLOW_CONTROL_ERROR);
    }

    #[test]
    fn data_beyond_the_connection_window_is_a_flow_control_error() {
        let mut p = Peer::server_with(Config {
            max_frame_size: 100_000,
            initial_window_size: 1_000_000,
            ..Config::default()
        });
        p.open(1, false);
        let _ = p.send_data(1, &[0; 70_000], false);
        p.expect_goaway(ErrorCode::FLOW_CONTROL_ERROR);
    }

    #[test]
    fn empty_data_and_trailers_need_no_window() {
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(0)))
            .unwrap();
        p.open(1, true);
        p.open(3, true);
        p.conn
            .send_headers(StreamId::new(1), response(), false)
            .unwrap();
        p.conn
            .send_data(StreamId::new(1), Bytes::new(), true)
            .unwrap();
        p.conn
            .send_headers(StreamId::new(3), response(), false)
            .unwrap();
        p.conn.send_trailers(StreamId::new(3), trailers()).unwrap();
        let out = p.output();
        assert_eq!(data_frames(&out), vec![(1, 0, true)]);
        assert_eq!(p.blocks.len(), 3);
        assert_eq!(p.conn.open_streams(), 0);
    }

    #[test]
    fn trailers_wait_for_blocked_data() {
        let mut p = Peer::server();
        p.send(settings(|s| s.initial_window_size = Some(5)))
            .unwrap();
        p.open(1, true);
        respond(&mut p, 1, b"0123456789");
        assert_eq!(data_frames(&p.output()), vec![(1, 5, false)]);
        assert_eq!(p.blocks.len(), 1, "trailers must not overtake the data");
        p.send(frame::WindowUpdate::new(StreamId::new(1), 5))
            .unwrap();
        assert_eq!(data_frames(&p.output()), vec![(1, 5, false)]);
        assert_eq!(p.blocks.len(), 2);
        assert!(p.blocks[1].end_stream);
    }

    #[test]
    fn larger_connection_window_is_announced_at_start() {
        let mut p = Peer::raw_server(Config {
            connection_window_size: 1 << 20,
            ..Config::default()
        });
        assert_eq!(window_updates(&p.output()), vec![(0, (1 << 20) - 65_535)]);
    }

    #[test]
    fn connection_window_above_the_maximum_is_clamped() {
        let mut p = Peer::raw_server(Config {
            connection_window_size: u32::MAX,
            ..Config::default()
        });
        assert_eq!(
            window_updates(&p.output()),
            vec![(0, (1 << 31) - 1 - 65_535)]
        );
    }
}

// ===========================================================================
// §6.10 CONTINUATION
// ===========================================================================

mod continuation_frames {
    use super::*;

    fn split3(block: &Bytes) -> (Bytes, Bytes, Bytes) {
        let n = block.len();
        (
            block.slice(..n / 3),
            block.slice(n / 3..2 * n / 3),
            block.slice(2 * n / 3..),
        )
    }

    #[test]
    fn header_block_may_span_continuations() {
        let mut p = Peer::server();
        let block = p.block(&request());
        let (a, b, c) = split3(&block);
        p.send_all(vec![
            frame::Headers::new(StreamId::new(1), a, true, false).into(),
            continuation(1, b, false).into(),
            continuation(1, c, true).into(),
        ])
        .unwrap();
        let events = p.events();
        assert_eq!(headers_event(&events), vec![(1, true)]);
        let Event::Headers { headers, .. } = &events[0] else {
            unreachable!()
        };
        assert_eq!(headers, &request());
    }

    #[test]
    fn continuation_on_stream_zero_is_a_protocol_error() {
        let mut p = Peer::server();
        let block = p.block(&request());
        let _ = p.send_all(vec![
            frame::Headers::new(StreamId::new(1), block.slice(..2), true, false).into(),
            continuation(0, block.slice(2..), true).into(),
        ]);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn continuation_after_end_headers_is_a_protocol_error() {
        // h2spec 6.10/2; python-hyper/h2 test_invalid_frame_sequences:
        // test_unexpected_continuation_on_closed_stream
        let mut p = Peer::server();
        p.open(1, false);
        let _ = p.send(continuation(1, Bytes::from_static(b"hello"), true));
        let g = p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        assert_eq!(g.last_stream_id, 1);
    }

    #[test]
    fn continuation_on_another_stream_is_a_protocol_error() {
        // h2spec 6.10/3
        let mut p = Peer::server();
        let block = p.block(&request());
        let _ = p.send_all(vec![
            frame::Headers::new(StreamId::new(1), block.slice(..2), true, false).into(),
            continuation(3, block.slice(2..), true).into(),
        ]);
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn any_other_frame_inside_a_block_is_a_protocol_error() {
        // h2spec 6.2/1, 6.10/4-6
        let others: Vec<Frame> = vec![
            frame::Data::new(StreamId::new(1), Bytes::from_static(b"x"), false).into(),
            frame::Ping::new(ALIVE).into(),
            frame::Settings::default().into(),
            frame::WindowUpdate::new(StreamId::new(0), 1).into(),
            frame::RstStream::new(StreamId::new(1), ErrorCode::CANCEL).into(),
            frame::Unknown {
                kind: 0x20,
                flags: 0,
                stream_id: StreamId::new(1),
                payload: Bytes::new(),
            }
            .into(),
        ];
        for other in others {
            let mut p = Peer::server();
            let block = p.block(&request());
            let _ = p.send_all(vec![
                frame::Headers::new(StreamId::new(1), block.slice(..2), true, false).into(),
                other,
                continuation(1, block.slice(2..), true).into(),
            ]);
            p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
        }
    }

    #[test]
    fn end_stream_on_continuation_means_nothing() {
        // CONTINUATION defines only END_HEADERS (§6.10).
        let mut p = Peer::server();
        let block = p.block(&request());
        let mut bytes =
            encode(&[frame::Headers::new(StreamId::new(1), block.slice(..2), false, false).into()]);
        bytes.extend(raw(kind::CONTINUATION, 0x4 | 0x1, 1, &block[2..]));
        p.recv_bytes(&bytes).unwrap();
        assert_eq!(headers_event(&p.events()), vec![(1, false)]);
        p.send_data(1, b"still open", true).unwrap();
        assert_eq!(p.events().len(), 1);
    }

    #[test]
    fn trailers_may_span_continuations() {
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        let block = p.block(&trailers());
        p.send_all(vec![
            frame::Headers::new(StreamId::new(1), block.slice(..1), true, false).into(),
            continuation(1, block.slice(1..), true).into(),
        ])
        .unwrap();
        assert_eq!(
            p.events(),
            vec![Event::Trailers {
                stream_id: StreamId::new(1),
                headers: trailers()
            }]
        );
    }

    #[test]
    fn large_header_blocks_are_split_to_the_peer_frame_size() {
        // python-hyper/h2 test_basic_logic: test_oversize_headers
        let mut p = Peer::server();
        p.open(1, true);
        let big: String = (0..40_000)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let mut headers = response();
        headers.push(h("x-big", &big));
        p.conn
            .send_headers(StreamId::new(1), headers.clone(), true)
            .unwrap();
        let out = p.output();
        assert!(out.len() >= 2, "{}", out.len());
        assert!(matches!(&out[0], Frame::Headers(h) if h.end_stream && !h.end_headers));
        assert!(out[1..].iter().all(|f| matches!(f, Frame::Continuation(_))));
        assert_eq!(p.blocks[0].headers, headers);
    }
}

// ===========================================================================
// §8 HTTP message checks
// ===========================================================================

mod http_messages {
    use super::*;

    /// A malformed request is a stream error PROTOCOL_ERROR (§8.1.1): the
    /// stream is reset, the application never sees it, the connection lives.
    fn malformed(headers: Vec<Header>, end_stream: bool) {
        let mut p = Peer::server();
        p.send_headers(1, &headers, end_stream).unwrap();
        p.expect_rst(1, ErrorCode::PROTOCOL_ERROR);
        let events = p.events();
        assert_eq!(headers_event(&events), vec![], "{headers:?}");
        // The next request is fine.
        p.open(3, true);
        assert_eq!(headers_event(&p.events()), vec![(3, true)]);
    }

    fn without(name: &str) -> Vec<Header> {
        request()
            .into_iter()
            .filter(|h| h.name != name.as_bytes())
            .collect()
    }

    #[test]
    fn invalid_header_blocks_are_rejected() {
        // python-hyper/h2 test_invalid_headers: invalid_header_blocks, and
        // h2spec 8.1.2/1, 8.1.2.1/1-4, 8.1.2.2/1-2, 8.1.2.3/1-7.
        let cases: Vec<Vec<Header>> = vec![
            request_with(&[("Uppercase", "name")]),
            request_with(&[(":late", "pseudo-header")]),
            [vec![h(":path", "/duplicate")], request()].concat(),
            request_with(&[("connection", "close")]),
            request_with(&[("proxy-connection", "close")]),
            request_with(&[("keep-alive", "close")]),
            request_with(&[("transfer-encoding", "gzip")]),
            request_with(&[("upgrade", "super-protocol/1.1")]),
            request_with(&[("te", "chunked")]),
            request_with(&[(" name", "name with leading space")]),
            request_with(&[("name ", "name with trailing space")]),
            request_with(&[("name", " value with leading space")]),
            request_with(&[("name", "value with trailing space ")]),
            request_with(&[("name", "value with trailing tab\t")]),
            request_with(&[("illegal:characters", "value")]),
            request_with(&[("illegal-\r-characters", "value")]),
            request_with(&[("illegal-\n-characters", "value")]),
            request_with(&[("illegal-\0-characters", "value")]),
            request_with(&[("illegal-\x01-characters", "value")]),
            request_with(&[("illegal-characters", "some \r value")]),
            request_with(&[("illegal-characters", "some \n value")]),
            request_with(&[("illegal-characters", "some \0 value")]),
            request_with(&[("", "empty name")]),
            [vec![h(":unknown", "x")], request()].concat(),
            [vec![h(":status", "200")], request()].concat(),
            without(":method"),
            without(":scheme"),
            without(":path"),
            [vec![h(":path", "")], without(":path")].concat(),
            [vec![h(":method", "GET")], request()].concat(),
            request_with(&[("content-length", "twelve")]),
            request_with(&[("content-length", "")]),
            request_with(&[("content-length", "-1")]),
            request_with(&[("content-length", "1"), ("content-length", "2")]),
        ];
        for headers in cases {
            malformed(headers, false);
        }
    }

    #[test]
    fn protocol_pseudo_header_needs_extended_connect() {
        // python-hyper/h2 test_invalid_headers: [(":protocol", "websocket"), …]
        // RFC 8441 §4: :protocol belongs to a CONNECT request only.
        malformed(
            [vec![h(":protocol", "websocket")], request()].concat(),
            false,
        );
    }

    #[test]
    fn connect_requests_are_checked() {
        let connect = |extra: &[(&str, &str)]| {
            let mut v = vec![h(":method", "CONNECT")];
            v.extend(extra.iter().map(|(n, v)| h(n, v)));
            v
        };
        malformed(connect(&[]), false);
        malformed(connect(&[(":authority", "a:1"), (":path", "/")]), false);
        malformed(
            connect(&[(":authority", "a:1"), (":scheme", "http")]),
            false,
        );
        let mut p = Peer::server();
        p.send_headers(1, &connect(&[(":authority", "a:1")]), false)
            .unwrap();
        assert_eq!(headers_event(&p.events()), vec![(1, false)]);
    }

    #[test]
    fn allowed_forms_are_accepted() {
        // python-hyper/h2 test_invalid_headers: test_te_trailers_is_valid.
        // A missing :authority and a Host header that agrees with it are
        // allowed; a Host that names another entity is refused, as §8.3.1
        // says a server SHOULD (see message.rs).
        for headers in [
            request(),
            without(":authority"),
            request_with(&[("host", "LOCALHOST")]),
            request_with(&[("content-length", "0"), ("content-length", "0")]),
            request_with(&[("x-empty", "")]),
            request_with(&[("x-inner", "a b\tc")]),
        ] {
            let mut p = Peer::server();
            p.send_headers(1, &headers, true).unwrap();
            let events = p.events();
            let Some(Event::Headers { headers: got, .. }) = events.first() else {
                panic!("{headers:?} rejected: {events:?}")
            };
            assert_eq!(got, &headers);
        }
    }

    #[test]
    fn trailers_with_pseudo_headers_are_malformed() {
        // h2spec 8.1.2.1/3; python-hyper/h2 test_invalid_headers:
        // test_pseudo_headers_rejected_in_trailer
        let mut p = Peer::server();
        p.open(1, false);
        p.send_headers(1, &[h(":path", "/"), h("extra", "value")], true)
            .unwrap();
        p.expect_rst(1, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn trailers_without_end_stream_are_malformed() {
        // h2spec 8.1/1; python-hyper/h2 test_basic_logic:
        // test_reject_trailers_not_ending_stream (server and client)
        let mut p = Peer::server();
        p.open(1, false);
        p.send_data(1, b"body", false).unwrap();
        let _ = p.send_headers(1, &trailers(), false);
        p.expect_stream_or_connection_error(1, ErrorCode::PROTOCOL_ERROR);

        let mut c = Peer::client();
        let id = c.conn.open_stream(request(), true).unwrap();
        c.output();
        c.send_headers(id, &response(), false).unwrap();
        let _ = c.send_headers(id, &[h("content-length", "0")], false);
        c.expect_stream_or_connection_error(id, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn trailers_end_the_stream() {
        // python-hyper/h2 test_basic_logic: test_can_receive_trailers
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        p.send_headers(1, &[h("content-length", "0")], true)
            .unwrap();
        assert_eq!(
            p.events(),
            vec![Event::Trailers {
                stream_id: StreamId::new(1),
                headers: vec![h("content-length", "0")]
            }]
        );
        // After the trailers the stream is half-closed (remote).
        let _ = p.send_headers(1, &trailers(), true);
        p.expect_stream_or_connection_error(1, ErrorCode::STREAM_CLOSED);
    }

    #[test]
    fn data_longer_than_content_length_is_malformed() {
        // h2spec 8.1.2.6/1
        let mut p = Peer::server();
        p.send_headers(1, &request_with(&[("content-length", "1")]), false)
            .unwrap();
        p.send_data(1, b"test", true).unwrap();
        p.expect_rst(1, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn data_shorter_than_content_length_is_malformed() {
        // h2spec 8.1.2.6/2
        let mut p = Peer::server();
        p.send_headers(1, &request_with(&[("content-length", "8")]), false)
            .unwrap();
        p.send_data(1, b"test", false).unwrap();
        p.send_data(1, b"ab", true).unwrap();
        p.expect_rst(1, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn content_length_without_data_is_malformed() {
        let mut p = Peer::server();
        p.send_headers(1, &request_with(&[("content-length", "5")]), true)
            .unwrap();
        p.expect_rst(1, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn trailers_ending_a_short_body_are_malformed() {
        let mut p = Peer::server();
        p.send_headers(1, &request_with(&[("content-length", "5")]), false)
            .unwrap();
        p.send_data(1, b"abc", false).unwrap();
        p.send_headers(1, &trailers(), true).unwrap();
        p.expect_rst(1, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn matching_content_length_is_accepted() {
        let mut p = Peer::server();
        p.send_headers(1, &request_with(&[("content-length", "6")]), false)
            .unwrap();
        p.send_data(1, b"abc", false).unwrap();
        p.send_data(1, b"def", false).unwrap();
        p.send_headers(1, &trailers(), true).unwrap();
        p.expect_silence();
        assert_eq!(p.events().len(), 4);
    }

    #[test]
    fn responses_are_checked_by_a_client() {
        let bad: Vec<Vec<Header>> = vec![
            vec![h("content-type", "x")],
            vec![h(":status", "20")],
            vec![h(":status", "2000")],
            vec![h(":status", "abc")],
            vec![h(":status", "200"), h(":path", "/")],
            vec![h(":status", "200"), h(":status", "200")],
            vec![h(":status", "200"), h("connection", "close")],
        ];
        for headers in bad {
            let mut c = Peer::client();
            let id = c.conn.open_stream(request(), true).unwrap();
            c.output();
            c.send_headers(id, &headers, true).unwrap();
            c.expect_rst(id, ErrorCode::PROTOCOL_ERROR);
            assert_eq!(headers_event(&c.events()), vec![], "{headers:?}");
        }
    }

    #[test]
    fn informational_responses_are_skipped() {
        // python-hyper/h2 test_informational_responses
        let mut c = Peer::client();
        let id = c.conn.open_stream(request(), true).unwrap();
        c.output();
        c.send_headers(id, &[h(":status", "100")], false).unwrap();
        c.send_headers(id, &[h(":status", "103"), h("link", "</a>")], false)
            .unwrap();
        c.send_headers(id, &response(), true).unwrap();
        assert_eq!(headers_event(&c.events()), vec![(id.get(), true)]);
    }

    #[test]
    fn informational_response_with_end_stream_is_malformed() {
        let mut c = Peer::client();
        let id = c.conn.open_stream(request(), true).unwrap();
        c.output();
        c.send_headers(id, &[h(":status", "100")], true).unwrap();
        c.expect_rst(id, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn client_receives_response_data_and_trailers() {
        // python-hyper/h2 test_basic_logic: test_receiving_a_response,
        // test_receiving_response_no_body, test_can_receive_trailers (client)
        let mut c = Peer::client();
        let id = c.conn.open_stream(request(), true).unwrap();
        c.output();
        c.send_headers(id, &response(), false).unwrap();
        c.send_data(id, b"body", false).unwrap();
        c.send_headers(id, &trailers(), true).unwrap();
        let events = c.events();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(
            events[2],
            Event::Trailers {
                stream_id: id,
                headers: trailers()
            }
        );
        assert_eq!(c.conn.open_streams(), 0);
    }
}

// ===========================================================================
// §8.1 Early responses
// ===========================================================================

mod early_response {
    use super::*;

    #[test]
    fn request_body_still_arrives_after_a_complete_response() {
        // Half-closed (local): we ended our side, the client has not.
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        respond(&mut p, 1, b"early");
        p.output();
        assert_eq!(p.conn.open_streams(), 1);
        p.send_data(1, b"more", false).unwrap();
        p.send_data(1, b"", true).unwrap();
        assert_eq!(p.events().len(), 2);
        assert_eq!(p.conn.open_streams(), 0);
        p.assert_alive();
    }

    #[test]
    fn rest_of_the_request_can_be_refused_with_no_error() {
        // §8.1: a complete response, then RST_STREAM NO_ERROR.
        let mut p = Peer::server();
        p.open(1, false);
        p.events();
        respond(&mut p, 1, b"early");
        p.conn
            .reset_after_send(StreamId::new(1), ErrorCode::NO_ERROR)
            .unwrap();
        let out = p.output();
        assert_eq!(rsts(&out), vec![(1, ErrorCode::NO_ERROR)]);
        assert!(
            matches!(out.last(), Some(Frame::RstStream(_))),
            "RST after the response"
        );
        p.send_data(1, b"late body", true).unwrap();
        p.expect_silence();
        assert_eq!(p.events(), vec![]);
    }

    #[test]
    fn no_reset_when_the_request_was_complete() {
        let mut p = Peer::server();
        p.open(1, true);
        respond(&mut p, 1, b"ok");
        p.conn
            .reset_after_send(StreamId::new(1), ErrorCode::NO_ERROR)
            .unwrap();
        assert_eq!(rsts(&p.output()), vec![]);
        assert_eq!(p.conn.open_streams(), 0);
    }
}

// ===========================================================================
// Push is disabled; client-side state rules
// ===========================================================================

mod client_side {
    use super::*;

    #[test]
    fn push_promise_is_rejected_by_a_client_with_push_disabled() {
        // python-hyper/h2 test_basic_logic:
        // test_cannot_receive_pushed_stream_when_enable_push_is_0
        let mut c = Peer::client();
        let id = c.conn.open_stream(request(), true).unwrap();
        c.output();
        c.send_headers(id, &response(), false).unwrap();
        let block = c.block(&request());
        let _ = c.send(frame::PushPromise {
            stream_id: id,
            promised_id: StreamId::new(2),
            fragment: block,
            end_headers: true,
        });
        c.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn push_promise_is_rejected_by_a_server() {
        // python-hyper/h2 test_state_machines:
        // test_stream_state_machine_forbids_pushes_on_server_streams
        let mut p = Peer::server();
        p.open(1, false);
        let block = p.block(&request());
        let _ = p.send(frame::PushPromise {
            stream_id: StreamId::new(1),
            promised_id: StreamId::new(2),
            fragment: block,
            end_headers: true,
        });
        p.expect_goaway(ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn cannot_send_on_a_closed_stream() {
        // python-hyper/h2 test_invalid_frame_sequences:
        // test_cannot_send_on_closed_stream; test_state_machines:
        // test_cannot_send_on_closed_streams
        let mut c = Peer::client();
        let id = c.conn.open_stream(request(), true).unwrap();
        assert_eq!(
            c.conn.send_data(id, Bytes::from_static(b"x"), false),
            Err(UsageError::SendEnded)
        );
        assert_eq!(
            c.conn.send_trailers(id, trailers()),
            Err(UsageError::SendEnded)
        );
        c.output();
        c.send_headers(id, &response(), true).unwrap();
        assert_eq!(
            c.conn.send_data(id, Bytes::from_static(b"x"), true),
            Err(UsageError::UnknownStream)
        );
        assert_eq!(
            c.conn.reset_stream(id, ErrorCode::CANCEL),
            Err(UsageError::UnknownStream)
        );
        let mut s = Peer::server();
        assert_eq!(
            s.conn.open_stream(request(), true),
            Err(UsageError::NotClient)
        );
    }

    #[test]
    fn rst_stream_and_window_update_on_a_closed_stream_are_ignored() {
        // python-hyper/h2 test_closed_streams:
        // test_receive_rst_stream_on_closed_stream,
        // test_receive_window_update_on_closed_stream
        let mut c = Peer::client();
        let id = c.conn.open_stream(request(), false).unwrap();
        c.conn
            .send_data(id, Bytes::from_static(b"some data"), true)
            .unwrap();
        c.output();
        c.send_headers(id, &response(), true).unwrap();
        assert_eq!(headers_event(&c.events()), vec![(id.get(), true)]);
        c.send(frame::WindowUpdate::new(id, 1)).unwrap();
        c.send(frame::RstStream::new(id, ErrorCode::NO_ERROR))
            .unwrap();
        c.send(frame::WindowUpdate::new(id, 1)).unwrap();
        assert_eq!(c.events(), vec![]);
        c.expect_silence();
    }

    #[test]
    fn frames_after_both_end_stream_are_stream_closed() {
        // python-hyper/h2 test_closed_streams: test_frames_after_send_end_will_error
        for end_stream in [true, false] {
            let mut c = Peer::client();
            let id = c.conn.open_stream(request(), true).unwrap();
            c.output();
            c.send_headers(id, &response(), true).unwrap();
            let _ = c.send_headers(id, &response(), end_stream);
            c.expect_stream_or_connection_error(id, ErrorCode::STREAM_CLOSED);
        }
    }
}

// ===========================================================================
// crisp's DoS limits
// ===========================================================================

mod dos_limits {
    use super::*;

    fn with(f: impl FnOnce(&mut Config)) -> Peer {
        let mut c = Config::default();
        f(&mut c);
        let mut p = Peer::server_with(c);
        // Start counting afresh, clear of the handshake.
        p.advance(Duration::from_secs(11));
        p
    }

    #[test]
    fn rapid_reset_is_enhance_your_calm() {
        // CVE-2023-44487.
        let mut p = with(|c| c.max_remote_resets = 10);
        for i in 0..10 {
            let id = StreamId::new(1 + 2 * i);
            p.open(id, false);
            p.send(frame::RstStream::new(id, ErrorCode::CANCEL))
                .unwrap();
        }
        p.assert_alive();
        p.open(21, false);
        let _ = p.send(frame::RstStream::new(StreamId::new(21), ErrorCode::CANCEL));
        let g = p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
        assert_eq!(g.last_stream_id, 21);
    }

    #[test]
    fn rapid_reset_with_the_default_limit() {
        let mut p = Peer::server();
        let mut bytes = Vec::new();
        for i in 0..1_001u32 {
            let id = StreamId::new(1 + 2 * i);
            let f = p.headers_frame(id, &request(), false);
            bytes.extend(encode(&[
                f.into(),
                frame::RstStream::new(id, ErrorCode::CANCEL).into(),
            ]));
        }
        let _ = p.recv_bytes(&bytes);
        p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn resets_spread_over_time_are_fine() {
        let mut p = with(|c| c.max_remote_resets = 10);
        for i in 0..50 {
            let id = StreamId::new(1 + 2 * i);
            p.open(id, false);
            p.send(frame::RstStream::new(id, ErrorCode::CANCEL))
                .unwrap();
            p.advance(Duration::from_secs(2));
        }
        p.assert_alive();
    }

    #[test]
    fn ping_flood_is_enhance_your_calm() {
        let mut p = with(|c| c.max_control_frames = 10);
        for _ in 0..10 {
            p.send(frame::Ping::new(*b"floodfld")).unwrap();
        }
        assert_eq!(p.output().len(), 10);
        let _ = p.send(frame::Ping::new(*b"floodfld"));
        p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn ping_acks_are_not_counted() {
        let mut p = with(|c| c.max_control_frames = 10);
        for _ in 0..100 {
            p.send(frame::Ping::pong(*b"unasked!")).unwrap();
        }
        p.assert_alive();
    }

    #[test]
    fn settings_flood_is_enhance_your_calm() {
        let mut p = with(|c| c.max_control_frames = 10);
        for _ in 0..10 {
            p.send(frame::Settings::default()).unwrap();
        }
        assert_eq!(p.output(), vec![frame::Settings::ack().into(); 10]);
        let _ = p.send(frame::Settings::default());
        p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn empty_data_flood_is_enhance_your_calm() {
        let mut p = with(|c| c.max_empty_frames = 10);
        p.open(1, false);
        for _ in 0..10 {
            p.send_data(1, b"", false).unwrap();
        }
        p.assert_alive();
        let _ = p.send_data(1, b"", false);
        p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn empty_data_ending_a_stream_is_not_counted() {
        let mut p = with(|c| c.max_empty_frames = 2);
        for i in 0..10 {
            let id = 1 + 2 * i;
            p.open(id, false);
            p.send_data(id, b"", true).unwrap();
        }
        p.assert_alive();
    }

    #[test]
    fn continuation_flood_is_enhance_your_calm() {
        // python-hyper/h2 test_invalid_frame_sequences: test_prevent_continuation_dos
        // (h2 answers PROTOCOL_ERROR after 64 frames; our limit is a config).
        let mut p = Peer::server();
        let block = p.block(&request());
        p.send(frame::Headers::new(StreamId::new(1), block, true, false))
            .unwrap();
        for _ in 0..128 {
            p.send(continuation(1, Bytes::new(), false)).unwrap();
        }
        p.expect_silence();
        let _ = p.send(continuation(1, Bytes::new(), false));
        p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn header_block_past_the_size_limit_is_enhance_your_calm() {
        let mut p = Peer::server();
        let junk = Bytes::from(vec![0x82; 16_384]);
        p.send(frame::Headers::new(
            StreamId::new(1),
            junk.clone(),
            true,
            false,
        ))
        .unwrap();
        for _ in 0..3 {
            p.send(continuation(1, junk.clone(), false)).unwrap();
        }
        // 64 KiB buffered: the limit is reached, not exceeded.
        p.expect_silence();
        let _ = p.send(continuation(1, Bytes::from_static(b"\x82"), false));
        p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn single_headers_frame_past_the_size_limit_is_enhance_your_calm() {
        let mut p = with(|c| c.max_header_block_size = 100);
        let _ = p.send(frame::Headers::new(
            StreamId::new(1),
            Bytes::from(vec![0x82; 101]),
            true,
            false,
        ));
        p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn header_list_too_large_is_answered_with_431() {
        // §8.1: the server answers, then resets the unfinished request with
        // NO_ERROR; the connection is unaffected.
        for end_stream in [true, false] {
            let mut p = Peer::server();
            let mut headers = request();
            for i in 0..20 {
                headers.push(h(&format!("x-pad-{i}"), &"v".repeat(1000)));
            }
            p.send_headers(1, &headers, end_stream).unwrap();
            let out = p.output();
            assert_eq!(p.blocks.len(), 1);
            assert_eq!(p.blocks[0].get(":status"), Some(&b"431"[..]));
            assert!(p.blocks[0].end_stream);
            let expected_rst = if end_stream {
                vec![]
            } else {
                vec![(1, ErrorCode::NO_ERROR)]
            };
            assert_eq!(rsts(&out), expected_rst);
            assert_eq!(headers_event(&p.events()), vec![]);
            p.assert_alive();
            p.open(3, true);
            assert_eq!(headers_event(&p.events()), vec![(3, true)]);
        }
    }

    #[test]
    fn data_after_a_431_is_discarded() {
        // The client may send its body before it sees the 431.
        let mut p = Peer::server();
        let mut headers = request();
        for i in 0..20 {
            headers.push(h(&format!("x-pad-{i}"), &"v".repeat(1000)));
        }
        p.send_headers(1, &headers, false).unwrap();
        p.send_data(1, b"body on its way", false).unwrap();
        p.send_headers(1, &trailers(), true).unwrap();
        let out = p.output();
        assert_eq!(p.blocks.len(), 1, "{out:?}");
        assert_eq!(p.blocks[0].get(":status"), Some(&b"431"[..]));
        assert_eq!(rsts(&out), vec![(1, ErrorCode::NO_ERROR)]);
        assert_eq!(p.events(), vec![]);
        p.assert_alive();
    }

    #[test]
    fn small_block_decompressing_past_the_limit_is_answered_with_431() {
        // An "HPACK bomb": one 3000-byte table entry referenced six times.
        let mut p = Peer::server();
        // :method POST, :scheme http, :path /, then a literal with
        // incremental indexing: x-bomb = 3000 × 'a'.
        let mut first = vec![0x83, 0x86, 0x84, 0x40, 0x06];
        first.extend_from_slice(b"x-bomb");
        first.extend_from_slice(&[0x7f, 0xb9, 0x16]);
        first.extend(std::iter::repeat_n(b'a', 3000));
        p.send(frame::Headers::new(
            StreamId::new(1),
            Bytes::from(first),
            true,
            true,
        ))
        .unwrap();
        assert_eq!(headers_event(&p.events()), vec![(1, true)]);
        let mut bomb = vec![0x83, 0x86, 0x84];
        bomb.extend([0xbe; 6]); // index 62: x-bomb
        p.send(frame::Headers::new(
            StreamId::new(3),
            Bytes::from(bomb),
            true,
            true,
        ))
        .unwrap();
        p.output();
        assert_eq!(p.blocks.last().unwrap().stream_id, 3);
        assert_eq!(p.blocks.last().unwrap().get(":status"), Some(&b"431"[..]));
        assert_eq!(p.events(), vec![]);
        p.send(frame::Headers::new(
            StreamId::new(5),
            Bytes::from_static(&[0x83, 0x86, 0x84, 0xbe]),
            true,
            true,
        ))
        .unwrap();
        assert_eq!(headers_event(&p.events()), vec![(5, true)]);
    }

    #[test]
    fn too_many_stream_errors_is_enhance_your_calm() {
        let mut p = with(|c| c.max_local_resets = 5);
        for i in 0..5 {
            let id = StreamId::new(1 + 2 * i);
            p.open(id, false);
            p.send(frame::WindowUpdate::new(id, 0)).unwrap();
        }
        p.assert_alive();
        p.open(11, false);
        let _ = p.send(frame::WindowUpdate::new(StreamId::new(11), 0));
        p.expect_goaway(ErrorCode::ENHANCE_YOUR_CALM);
    }

    #[test]
    fn unacknowledged_settings_time_out() {
        let mut p = Peer::raw_server(Config::default());
        let t0 = p.now;
        p.recv_bytes(frame::PREFACE).unwrap();
        p.send(frame::Settings::default()).unwrap();
        p.output();
        assert_eq!(p.conn.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        p.conn.handle_timeout(t0 + Duration::from_secs(9));
        p.expect_silence();
        p.conn.handle_timeout(t0 + Duration::from_secs(10));
        p.expect_goaway(ErrorCode::SETTINGS_TIMEOUT);
    }

    #[test]
    fn acknowledged_settings_do_not_time_out() {
        let mut p = Peer::server();
        assert_eq!(p.conn.poll_timeout(), None);
        p.conn.handle_timeout(p.now + Duration::from_secs(3600));
        p.expect_silence();
        p.assert_alive();
    }

    #[test]
    fn client_settings_time_out_too() {
        let mut p = Peer::raw_client(Config {
            settings_timeout: Duration::from_secs(1),
            ..Config::default()
        });
        let t0 = p.now;
        p.output();
        p.send(frame::Settings::default()).unwrap();
        p.output();
        assert_eq!(p.conn.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        p.conn.handle_timeout(t0 + Duration::from_secs(2));
        p.expect_goaway(ErrorCode::SETTINGS_TIMEOUT);
    }
}

// ===========================================================================
// Graceful shutdown
// ===========================================================================

mod shutdown {
    use super::*;

    #[test]
    fn goaway_lets_open_streams_finish_and_ignores_new_ones() {
        // python-hyper/h2 test_basic_logic: test_close_connection_with_last_stream_id
        let mut p = Peer::server();
        p.open(1, false);
        p.open(3, true);
        p.events();
        p.conn.go_away(ErrorCode::NO_ERROR);
        p.conn.go_away(ErrorCode::NO_ERROR); // once only
        let out = p.output();
        assert_eq!(
            out,
            vec![frame::GoAway::new(StreamId::new(3), ErrorCode::NO_ERROR).into()]
        );
        assert!(!p.conn.is_closed());

        // A stream the client opened before it saw our GOAWAY is ignored,
        // and so is its body.
        p.send_headers(5, &request(), false).unwrap();
        p.send_data(5, b"ignored", true).unwrap();
        p.expect_silence();
        assert_eq!(p.events(), vec![]);

        // The streams we promised to process finish normally.
        p.send_data(1, b"request", true).unwrap();
        respond(&mut p, 1, b"one");
        respond(&mut p, 3, b"three");
        let out = p.output();
        assert_eq!(data_frames(&out), vec![(1, 3, false), (3, 5, false)]);
        assert_eq!(p.conn.open_streams(), 0);
        assert!(p.conn.is_closed());
    }

    #[test]
    fn idle_connection_closes_at_once() {
        // python-hyper/h2 test_basic_logic: test_close_connection
        let mut p = Peer::server();
        p.conn.go_away(ErrorCode::NO_ERROR);
        assert!(!p.conn.is_closed(), "the GOAWAY is still to be written");
        assert_eq!(
            p.output(),
            vec![frame::GoAway::new(StreamId::new(0), ErrorCode::NO_ERROR).into()]
        );
        assert!(p.conn.is_closed());
    }

    #[test]
    fn client_goaway_stops_new_streams() {
        let mut c = Peer::client();
        let id = c.conn.open_stream(request(), true).unwrap();
        c.conn.go_away(ErrorCode::NO_ERROR);
        assert!(!c.conn.can_open_stream());
        assert_eq!(
            c.conn.open_stream(request(), true),
            Err(UsageError::GoingAway)
        );
        let out = c.output();
        assert!(out.contains(&frame::GoAway::new(StreamId::new(0), ErrorCode::NO_ERROR).into()));
        c.send_headers(id, &response(), true).unwrap();
        c.output();
        assert!(c.conn.is_closed());
    }
}
