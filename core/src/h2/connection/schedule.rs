//! Stream bookkeeping and scheduling: which streams may send, in what
//! order (round-robin), and when a finished stream leaves the table.

use super::transmit::{write_stream, Progress};
use super::{Connection, Phase, UsageError, SPARE_QUEUES};
use crate::h2::frame;
use crate::h2::stream::{Closed, SendState, Stream};
use crate::h2::StreamId;

impl Connection {
    pub(super) fn sendable(&mut self, stream_id: StreamId) -> Result<&mut Stream, UsageError> {
        if self.phase == Phase::Failed {
            return Err(UsageError::Closed);
        }
        let stream = self
            .streams
            .get_mut(&stream_id)
            .ok_or(UsageError::UnknownStream)?;
        if stream.send.is_ended() {
            return Err(UsageError::SendEnded);
        }
        Ok(stream)
    }

    pub(super) fn schedule(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.get_mut(&id) {
            if !stream.scheduled && !stream.queue.is_empty() {
                stream.scheduled = true;
                self.ready.push_back(id);
            }
        }
    }

    pub(super) fn remove_stream(&mut self, id: StreamId, how: Closed) {
        let remote = self.is_remote_id(id);
        if let Some(stream) = self.streams.remove(&id) {
            if remote {
                self.remote_open -= 1;
            } else {
                self.local_open -= 1;
            }
            self.closed.insert(id, how);
            let mut q = stream.queue;
            if q.capacity() > 0 && q.capacity() <= 16 && self.spare_queues.len() < SPARE_QUEUES {
                q.clear();
                self.spare_queues.push(q);
            }
        }
    }

    pub(super) fn finish_if_done(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(Stream::is_done) {
            self.remove_stream(id, Closed::Ended);
        }
    }

    /// Our side of the stream is fully sent: close it if the peer's is too,
    /// or reset it when the rest of the request is not wanted (RFC 9113
    /// §8.1: a complete early response, then RST_STREAM NO_ERROR).
    pub(super) fn after_send(&mut self, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if !(s.send == SendState::Closed && s.queue.is_empty()) {
            return;
        }
        if let Some(code) = s.reset_when_sent {
            self.remove_stream(id, Closed::LocalReset);
            self.write_frame(frame::RstStream {
                stream_id: id,
                code,
            });
        } else {
            self.finish_if_done(id);
        }
    }

    /// Move queued stream frames to the output, round-robin, as windows allow.
    pub(super) fn fill_output(&mut self) {
        if self.settings_deadline.is_none() && !self.local_pending.is_empty() {
            // The clock was unknown when the SETTINGS went out; start now.
            if let Some(now) = self.now {
                self.settings_deadline = Some(now + self.config.settings_timeout);
            }
        }
        while self.out.len() < self.config.transmit_chunk {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            stream.scheduled = false;
            match write_stream(
                stream,
                &mut self.out,
                &mut self.encoder,
                &mut self.send_window,
                self.remote.max_frame_size,
                &mut self.spare_lists,
            ) {
                Progress::More => {
                    stream.scheduled = true;
                    self.ready.push_back(id);
                }
                Progress::ConnBlocked => self.conn_blocked.push_back(id),
                Progress::StreamBlocked | Progress::Empty => {}
            }
            self.after_send(id);
        }
    }
}
