//! Transmitting: frames into the output buffer, header blocks HPACK-encoded
//! in wire order and split to the peer's frame size, DATA as windows allow.

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Connection, Role, Settings, SPARE_LISTS, SPARE_LIST_MAX_FIELDS};
use crate::h2::flow::Window;
use crate::h2::frame::{self, Frame};
use crate::h2::hpack::{self, Header};
use crate::h2::stream::{Outgoing, SendState, Stream};
use crate::h2::StreamId;

impl Connection {
    pub(super) fn write_frame(&mut self, f: impl Into<Frame>) {
        f.into().encode(&mut self.out);
    }

    pub(super) fn write_settings(&mut self, wanted: Settings) {
        let init = Settings::INITIAL;
        let differs = |a: u32, b: u32| (a != b).then_some(a);
        let frame = frame::Settings {
            ack: false,
            header_table_size: differs(wanted.header_table_size, init.header_table_size),
            enable_push: (self.role == Role::Client).then_some(0),
            max_concurrent_streams: Some(wanted.max_concurrent_streams),
            initial_window_size: differs(wanted.initial_window_size, init.initial_window_size),
            max_frame_size: differs(wanted.max_frame_size, init.max_frame_size),
            max_header_list_size: Some(self.config.max_header_list_size),
            enable_connect_protocol: None,
        };
        self.write_frame(frame);
        self.local_pending.push_back(wanted);
        if let Some(now) = self.now {
            self.settings_deadline = Some(now + self.config.settings_timeout);
        }
    }
}

pub(super) enum Progress {
    /// Wrote a frame and has more that could go now.
    More,
    Empty,
    StreamBlocked,
    ConnBlocked,
}

/// Write the next frame(s) of one stream: all its leading header blocks and
/// at most one DATA frame, so streams share the connection fairly.
#[inline]
pub(super) fn write_stream(
    stream: &mut Stream,
    out: &mut BytesMut,
    encoder: &mut hpack::Encoder,
    conn_window: &mut Window,
    max_frame_size: u32,
    spare_lists: &mut Vec<Vec<Header>>,
) -> Progress {
    while let Some(item) = stream.queue.front_mut() {
        match item {
            Outgoing::Headers {
                headers,
                end_stream,
            } => {
                let end_stream = *end_stream;
                write_header_block(stream.id, headers, end_stream, out, encoder, max_frame_size);
                if let Some(Outgoing::Headers {
                    headers: Cow::Owned(list),
                    ..
                }) = stream.queue.pop_front()
                {
                    recycle(spare_lists, list);
                }
                if end_stream {
                    stream.send = SendState::Closed;
                }
            }
            Outgoing::Data { data, end_stream } if data.is_empty() => {
                let end_stream = *end_stream;
                frame::Data::new(stream.id, Bytes::new(), end_stream).encode(out);
                stream.queue.pop_front();
                if end_stream {
                    stream.send = SendState::Closed;
                }
            }
            Outgoing::Data { .. } => {
                return write_data_frame(stream, out, conn_window, max_frame_size)
            }
        }
    }
    Progress::Empty
}

/// One DATA frame from the head of the stream's queue, with as much of the
/// queued data as the windows and the frame size allow, so many small
/// writes (one per gRPC message) share a frame.
#[inline]
fn write_data_frame(
    stream: &mut Stream,
    out: &mut BytesMut,
    conn_window: &mut Window,
    max_frame_size: u32,
) -> Progress {
    let stream_room = stream.send_window.available();
    let conn_room = conn_window.available();
    let room = u64::from(stream_room)
        .min(u64::from(conn_room))
        .min(u64::from(max_frame_size)) as usize;
    if room == 0 {
        // Even after writing headers: a stream waiting for connection
        // credit must be on `conn_blocked`, or the next connection
        // WINDOW_UPDATE never wakes it.
        return if stream_room == 0 {
            Progress::StreamBlocked
        } else {
            Progress::ConnBlocked
        };
    }
    let head_at = out.len();
    out.put_bytes(0, frame::HEADER_LEN);
    let mut n = 0;
    let mut end = false;
    while let Some(Outgoing::Data { data, end_stream }) = stream.queue.front_mut() {
        let take = (room - n).min(data.len());
        out.extend_from_slice(data.get(..take).unwrap_or_default());
        data.advance(take);
        n += take;
        if !data.is_empty() {
            break;
        }
        end = *end_stream;
        stream.queue.pop_front();
        if end {
            break;
        }
    }
    let flags = if end { frame::flags::END_STREAM } else { 0 };
    patch_head(out, head_at, n, frame::kind::DATA, flags, stream.id);
    stream.send_window.spend(n as u32);
    conn_window.spend(n as u32);
    stream.queued_bytes -= n;
    if end {
        stream.send = SendState::Closed;
    }
    if stream.queue.is_empty() {
        Progress::Empty
    } else {
        Progress::More
    }
}

/// HPACK-encode a header block straight into the output and split it into
/// HEADERS + CONTINUATION frames no larger than the peer allows.
fn write_header_block(
    stream_id: StreamId,
    headers: &[Header],
    end_stream: bool,
    out: &mut BytesMut,
    encoder: &mut hpack::Encoder,
    max_frame_size: u32,
) {
    let head_at = out.len();
    out.put_bytes(0, frame::HEADER_LEN);
    encoder.encode(headers.iter(), out);
    let len = out.len() - head_at - frame::HEADER_LEN;
    let end_stream_flag = if end_stream {
        frame::flags::END_STREAM
    } else {
        0
    };
    let max = max_frame_size as usize;
    if len <= max {
        let flags = end_stream_flag | frame::flags::END_HEADERS;
        patch_head(out, head_at, len, frame::kind::HEADERS, flags, stream_id);
        return;
    }
    let block = out.split_off(head_at + frame::HEADER_LEN).freeze();
    patch_head(
        out,
        head_at,
        max,
        frame::kind::HEADERS,
        end_stream_flag,
        stream_id,
    );
    let mut rest = block;
    out.extend_from_slice(&rest.split_to(max));
    while !rest.is_empty() {
        let n = rest.len().min(max);
        let chunk = rest.split_to(n);
        frame::Continuation {
            stream_id,
            fragment: chunk,
            end_headers: rest.is_empty(),
        }
        .encode(out);
    }
}

/// Keep an emptied header list for reuse, within the pool's bounds.
pub(super) fn recycle(spare: &mut Vec<Vec<Header>>, mut list: Vec<Header>) {
    if list.capacity() == 0 || list.capacity() > SPARE_LIST_MAX_FIELDS || spare.len() >= SPARE_LISTS
    {
        return;
    }
    list.clear();
    spare.push(list);
}

/// Fill in the frame header reserved at `head_at` once the payload after
/// it is written and its length known.
fn patch_head(
    out: &mut [u8],
    head_at: usize,
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: StreamId,
) {
    let Some(head) = out
        .get_mut(head_at..)
        .and_then(|rest| rest.first_chunk_mut::<{ frame::HEADER_LEN }>())
    else {
        return;
    };
    let [_, len @ ..] = (len as u32).to_be_bytes();
    let [a, b, c, d] = stream_id.get().to_be_bytes();
    *head = [len[0], len[1], len[2], kind, flags, a, b, c, d];
}
