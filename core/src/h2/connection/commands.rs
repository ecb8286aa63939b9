//! Commands: what the application asks of the connection (open a stream,
//! queue headers, data and trailers, reset, ping, go away).

use bytes::Bytes;

use super::transmit::recycle;
use super::{Connection, HeaderList, Phase, Role, UsageError};
use crate::h2::error::ErrorCode;
use crate::h2::frame;
use crate::h2::hpack::Header;
use crate::h2::stream::{Closed, Outgoing, RecvState, SendState, Stream};
use crate::h2::StreamId;

impl Connection {
    /// Client: open a stream with a request header block.
    pub fn open_stream(
        &mut self,
        headers: impl Into<HeaderList>,
        end_stream: bool,
    ) -> Result<StreamId, UsageError> {
        if self.role != Role::Client {
            return Err(UsageError::NotClient);
        }
        if self.phase == Phase::Failed {
            return Err(UsageError::Closed);
        }
        if self.goaway_received.is_some() || self.goaway_sent.is_some() {
            return Err(UsageError::GoingAway);
        }
        if !self.can_open_stream() {
            return Err(UsageError::StreamLimit);
        }
        let Some(id) = self.next_local_id else {
            return Err(UsageError::StreamLimit);
        };
        self.next_local_id = id.next();
        let mut stream = Stream::new(
            id,
            self.remote.initial_window_size,
            self.local.initial_window_size,
        );
        if let Some(q) = self.spare_queues.pop() {
            stream.queue = q;
        }
        self.streams.insert(id, stream);
        self.local_open += 1;
        self.send_headers(id, headers, end_stream)?;
        Ok(id)
    }

    /// Queue the initial header block of a stream (a response, for a server).
    pub fn send_headers(
        &mut self,
        stream_id: StreamId,
        headers: impl Into<HeaderList>,
        end_stream: bool,
    ) -> Result<(), UsageError> {
        let stream = self.sendable(stream_id)?;
        if stream.send != SendState::Idle {
            return Err(UsageError::HeadersAlreadySent);
        }
        stream.send = SendState::after_queueing(end_stream);
        stream.queue.push_back(Outgoing::Headers {
            headers: headers.into(),
            end_stream,
        });
        self.schedule(stream_id);
        Ok(())
    }

    /// Queue DATA. It leaves as flow control allows.
    pub fn send_data(
        &mut self,
        stream_id: StreamId,
        data: Bytes,
        end_stream: bool,
    ) -> Result<(), UsageError> {
        let stream = self.sendable(stream_id)?;
        if stream.send == SendState::Idle {
            return Err(UsageError::HeadersNotSent);
        }
        stream.send = SendState::after_queueing(end_stream);
        stream.queued_bytes += data.len();
        stream.queue.push_back(Outgoing::Data { data, end_stream });
        self.schedule(stream_id);
        Ok(())
    }

    /// Queue trailers, ending our side of the stream.
    pub fn send_trailers(
        &mut self,
        stream_id: StreamId,
        headers: impl Into<HeaderList>,
    ) -> Result<(), UsageError> {
        let stream = self.sendable(stream_id)?;
        if stream.send == SendState::Idle {
            return Err(UsageError::HeadersNotSent);
        }
        stream.send = SendState::Ending;
        stream.queue.push_back(Outgoing::Headers {
            headers: headers.into(),
            end_stream: true,
        });
        self.schedule(stream_id);
        Ok(())
    }

    /// An empty header list to fill and hand to [`Connection::send_headers`]
    /// (or `open_stream`, `send_trailers`): a spare one when there is one,
    /// so building a block per call need not allocate.
    pub fn header_list(&mut self) -> Vec<Header> {
        self.spare_lists
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(12))
    }

    /// Hand back a header list taken from an [`Event`](super::Event) once done with it:
    /// the next header block is decoded into it instead of a new
    /// allocation. Optional; a list not handed back is simply dropped.
    pub fn recycle_headers(&mut self, list: Vec<Header>) {
        recycle(&mut self.spare_lists, list);
    }

    /// Reset a stream (RST_STREAM), dropping whatever it still had queued.
    pub fn reset_stream(&mut self, stream_id: StreamId, code: ErrorCode) -> Result<(), UsageError> {
        if self.phase == Phase::Failed {
            return Err(UsageError::Closed);
        }
        if !self.streams.contains_key(&stream_id) {
            return Err(UsageError::UnknownStream);
        }
        self.remove_stream(stream_id, Closed::LocalReset);
        self.write_frame(frame::RstStream { stream_id, code });
        Ok(())
    }

    /// Once everything queued on the stream has been sent, reset it with
    /// `code` unless the peer has finished its side by then. Used to answer
    /// early and refuse the rest of a request (RFC 9113 §8.1).
    pub fn reset_after_send(
        &mut self,
        stream_id: StreamId,
        code: ErrorCode,
    ) -> Result<(), UsageError> {
        let stream = self
            .streams
            .get_mut(&stream_id)
            .ok_or(UsageError::UnknownStream)?;
        if stream.recv != RecvState::Closed {
            stream.reset_when_sent = Some(code);
        }
        self.after_send(stream_id);
        Ok(())
    }

    /// Send a PING; the ack arrives as [`Event::PingAck`](super::Event::PingAck).
    pub fn ping(&mut self, payload: [u8; 8]) {
        if self.phase != Phase::Failed {
            self.write_frame(frame::Ping {
                ack: false,
                payload,
            });
        }
    }

    /// Graceful shutdown: GOAWAY naming the last stream we will process.
    /// Streams already open finish; new ones are refused.
    pub fn go_away(&mut self, code: ErrorCode) {
        if self.phase == Phase::Failed || self.goaway_sent.is_some() {
            return;
        }
        let last = self.max_remote_id;
        self.goaway_sent = Some(last);
        self.write_frame(frame::GoAway {
            last_stream_id: last,
            code,
            debug_data: Bytes::new(),
        });
    }
}
