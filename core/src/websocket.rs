//! WebSocket (RFC 6455) for the server side, sans-I/O, and the Kubernetes
//! channel protocol carried in its messages.
//!
//! After the upgrade in [`crate::upgrade`], kubectl (through the API
//! server), crictl `--transport websocket` and critest's `-websocket-*`
//! speak WebSocket to the streaming server. [`Connection`] turns the
//! client's frames into whole messages (client frames must be masked;
//! fragments are joined up to [`Config::max_message`]; pings are answered;
//! the closing handshake is echoed) and frames ours. A protocol violation
//! ends the connection with a Close frame carrying the RFC's status code.
//!
//! [`channel`] reads and writes the `channel.k8s.io` family: one leading
//! byte per message names the stream (0 stdin, 1 stdout, 2 stderr,
//! 3 error, 4 resize for exec/attach; 2n/2n+1 data/error of the n-th port
//! for port forwarding), `base64.` variants send it as an ASCII digit and
//! base64 text, and `v5.channel.k8s.io` adds the CLOSE message (255 and a
//! channel id) that half-closes one channel.
//!
//! The port-forward subprotocol `SPDY/3.1+portforward.k8s.io` is no
//! channel protocol: its binary messages carry a SPDY session's bytes
//! (client-go's tunnelling connection), for [`crate::spdy`] to read.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

/// Close status codes (RFC 6455 §7.4.1) we send.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Limits against a hostile client.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest message (all its fragments together).
    pub max_message: usize,
    /// The window over which control frames are counted.
    pub flood_window: Duration,
    /// Pings and pongs (and empty data fragments) per flood window.
    pub max_control_frames: u32,
    /// Pongs and closes we owe a client that does not read.
    pub max_pending_control: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message: 1024 * 1024,
            flood_window: Duration::from_secs(10),
            max_control_frames: 1000,
            max_pending_control: 64 * 1024,
        }
    }
}

/// Why the connection was failed: the Close code we sent, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseError {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseError {
    const fn protocol(reason: &'static str) -> Self {
        Self {
            code: close_code::PROTOCOL_ERROR,
            reason,
        }
    }
}

impl std::fmt::Display for CloseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebSocket close {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for CloseError {}

/// What the client did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole message (text ones are valid UTF-8).
    Message { binary: bool, data: Bytes },
    /// An answer to our ping.
    Pong(Bytes),
    /// The client started the closing handshake (we answered it), or
    /// answered ours. `code` is absent when the Close had no body.
    Closed { code: Option<u16>, reason: String },
    /// The client broke the protocol; we sent Close with `code`.
    Failed(CloseError),
}

/// Our misuse of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// We already sent Close.
    Closing,
    /// A control frame's payload is limited to 125 bytes.
    ControlTooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// We sent Close and wait for the client's.
    CloseSent,
    /// The closing handshake is over, or we failed; input is ignored.
    Closed,
}

/// One server-side WebSocket connection.
pub struct Connection {
    config: Config,
    state: State,
    input: BytesMut,
    /// The message being reassembled: its opcode and bytes so far.
    partial: Option<(u8, BytesMut)>,
    out: BytesMut,
    /// Bytes of pongs and closes in `out` that answer the client (not the
    /// application's messages): what a client that never reads makes grow.
    owed: usize,
    events: VecDeque<Event>,
    flood_start: Option<Instant>,
    flood_count: u32,
}

impl Connection {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            state: State::Open,
            input: BytesMut::new(),
            partial: None,
            out: BytesMut::new(),
            owed: 0,
            events: VecDeque::new(),
            flood_start: None,
            flood_count: 0,
        }
    }

    /// The closing handshake is over (or we failed): close the socket once
    /// `poll_transmit` is drained.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Buffered input not yet a whole frame.
    pub fn recv_buffered(&self) -> usize {
        self.input.len() + self.partial.as_ref().map_or(0, |(_, b)| b.len())
    }

    /// Feeds bytes read from the client.
    pub fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), CloseError> {
        if self.state == State::Closed {
            return Ok(());
        }
        self.input.extend_from_slice(data);
        let result = self.process(now);
        if let Err(e) = result {
            self.fail(e);
        }
        result
    }

    fn process(&mut self, now: Instant) -> Result<(), CloseError> {
        while self.state != State::Closed {
            let Some(frame) = self.next_frame()? else {
                return Ok(());
            };
            self.on_frame(frame, now)?;
            if self.owed > self.config.max_pending_control {
                return Err(CloseError {
                    code: close_code::POLICY_VIOLATION,
                    reason: "client does not read",
                });
            }
        }
        Ok(())
    }

    /// Cuts the next whole frame from the input, unmasked.
    fn next_frame(&mut self) -> Result<Option<Frame>, CloseError> {
        let Some(head) = parse_head(&self.input)? else {
            return Ok(None);
        };
        if !head.masked {
            return Err(CloseError::protocol("client frame not masked"));
        }
        if head.rsv != 0 {
            return Err(CloseError::protocol("reserved bits set"));
        }
        if head.opcode >= 0x8 {
            if !head.fin {
                return Err(CloseError::protocol("fragmented control frame"));
            }
            if head.len > 125 {
                return Err(CloseError::protocol("control frame too long"));
            }
        } else if !matches!(head.opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY) {
            return Err(CloseError::protocol("reserved opcode"));
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, b)| b.len());
        if head.opcode < 0x8
            && (so_far as u64).saturating_add(head.len) > self.config.max_message as u64
        {
            return Err(CloseError {
                code: close_code::MESSAGE_TOO_BIG,
                reason: "message too big",
            });
        }
        if head.opcode >= 0x8 && !matches!(head.opcode, OP_CLOSE | OP_PING | OP_PONG) {
            return Err(CloseError::protocol("reserved opcode"));
        }
        let len = usize::try_from(head.len).unwrap_or(usize::MAX);
        let total = head.header_len.saturating_add(len);
        if self.input.len() < total {
            return Ok(None);
        }
        self.input.advance(head.header_len);
        let mut payload = self.input.split_to(len);
        apply_mask(&mut payload, head.mask);
        Ok(Some(Frame {
            fin: head.fin,
            opcode: head.opcode,
            payload: payload.freeze(),
        }))
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) -> Result<(), CloseError> {
        match frame.opcode {
            OP_PING => {
                self.count_control(now)?;
                if self.state == State::Open {
                    let before = self.out.len();
                    encode_frame(&mut self.out, true, OP_PONG, &frame.payload, None);
                    self.owed += self.out.len() - before;
                }
            }
            OP_PONG => {
                self.count_control(now)?;
                self.events.push_back(Event::Pong(frame.payload));
            }
            OP_CLOSE => self.on_close(&frame.payload)?,
            OP_CONTINUATION => {
                if self.partial.is_none() {
                    return Err(CloseError::protocol("continuation without a message"));
                }
                if frame.payload.is_empty() && !frame.fin {
                    self.count_control(now)?;
                }
                if let Some((_, buf)) = self.partial.as_mut() {
                    buf.extend_from_slice(&frame.payload);
                }
                if frame.fin {
                    if let Some((opcode, buf)) = self.partial.take() {
                        self.message(opcode, buf.freeze())?;
                    }
                }
            }
            opcode => {
                if self.partial.is_some() {
                    return Err(CloseError::protocol("new message inside a fragmented one"));
                }
                if frame.fin {
                    self.message(opcode, frame.payload)?;
                } else {
                    if frame.payload.is_empty() {
                        self.count_control(now)?;
                    }
                    self.partial = Some((opcode, BytesMut::from(&frame.payload[..])));
                }
            }
        }
        Ok(())
    }

    fn message(&mut self, opcode: u8, data: Bytes) -> Result<(), CloseError> {
        let binary = opcode == OP_BINARY;
        if !binary && std::str::from_utf8(&data).is_err() {
            return Err(CloseError {
                code: close_code::INVALID_PAYLOAD,
                reason: "text message not UTF-8",
            });
        }
        if self.state == State::Open {
            self.events.push_back(Event::Message { binary, data });
        }
        Ok(())
    }

    fn on_close(&mut self, payload: &[u8]) -> Result<(), CloseError> {
        let (code, reason) = match payload {
            [] => (None, String::new()),
            [_] => return Err(CloseError::protocol("one-byte close payload")),
            [hi, lo, rest @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !valid_close_code(code) {
                    return Err(CloseError::protocol("invalid close code"));
                }
                let reason = std::str::from_utf8(rest).map_err(|_| CloseError {
                    code: close_code::INVALID_PAYLOAD,
                    reason: "close reason not UTF-8",
                })?;
                (Some(code), reason.to_string())
            }
        };
        if self.state == State::Open {
            // Echo the code (RFC 6455 §5.5.1).
            let mut body = Vec::new();
            if let Some(c) = code {
                body.extend_from_slice(&c.to_be_bytes());
            }
            encode_frame(&mut self.out, true, OP_CLOSE, &body, None);
        }
        self.state = State::Closed;
        self.partial = None;
        self.input.clear();
        self.events.push_back(Event::Closed { code, reason });
        Ok(())
    }

    fn count_control(&mut self, now: Instant) -> Result<(), CloseError> {
        match self.flood_start {
            Some(s) if now.saturating_duration_since(s) < self.config.flood_window => {}
            _ => {
                self.flood_start = Some(now);
                self.flood_count = 0;
            }
        }
        self.flood_count = self.flood_count.saturating_add(1);
        if self.flood_count > self.config.max_control_frames {
            return Err(CloseError {
                code: close_code::POLICY_VIOLATION,
                reason: "control frame flood",
            });
        }
        Ok(())
    }

    fn fail(&mut self, e: CloseError) {
        if self.state == State::Open {
            let mut body = e.code.to_be_bytes().to_vec();
            body.extend_from_slice(e.reason.as_bytes());
            encode_frame(&mut self.out, true, OP_CLOSE, &body, None);
        }
        self.state = State::Closed;
        self.partial = None;
        self.input = BytesMut::new();
        self.events.push_back(Event::Failed(e));
    }

    // ---- commands ----

    /// Sends one message in one frame.
    pub fn send_message(&mut self, binary: bool, data: &[u8]) -> Result<(), UsageError> {
        if self.state != State::Open {
            return Err(UsageError::Closing);
        }
        let opcode = if binary { OP_BINARY } else { OP_TEXT };
        encode_frame(&mut self.out, true, opcode, data, None);
        Ok(())
    }

    pub fn ping(&mut self, payload: &[u8]) -> Result<(), UsageError> {
        if self.state != State::Open {
            return Err(UsageError::Closing);
        }
        if payload.len() > 125 {
            return Err(UsageError::ControlTooLong);
        }
        encode_frame(&mut self.out, true, OP_PING, payload, None);
        Ok(())
    }

    /// Starts the closing handshake; the client's Close ends it.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), UsageError> {
        if self.state != State::Open {
            return Err(UsageError::Closing);
        }
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(reason.as_bytes());
        if body.len() > 125 {
            return Err(UsageError::ControlTooLong);
        }
        encode_frame(&mut self.out, true, OP_CLOSE, &body, None);
        self.state = State::CloseSent;
        Ok(())
    }

    /// Bytes queued for the client (unsent data is the driver's to bound,
    /// with this length).
    pub fn send_buffered(&self) -> usize {
        self.out.len()
    }

    // ---- output ----

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.owed = 0;
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }
}

/// Whether a received close code is one an endpoint may send (§7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

struct Frame {
    fin: bool,
    opcode: u8,
    payload: Bytes,
}

/// A frame's fixed part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub mask: [u8; 4],
    pub len: u64,
    /// Bytes before the payload.
    pub header_len: usize,
}

/// Parses a frame head at the start of `b`; `None` until it is complete.
pub fn parse_head(b: &[u8]) -> Result<Option<FrameHead>, CloseError> {
    let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(&[x, y]) => {
                let len = u64::from(u16::from_be_bytes([x, y]));
                if len < 126 {
                    return Err(CloseError::protocol("non-minimal length"));
                }
                (len, 4)
            }
            _ => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(s) => {
                let mut raw = [0u8; 8];
                raw.copy_from_slice(s);
                let len = u64::from_be_bytes(raw);
                if len >> 63 != 0 {
                    return Err(CloseError::protocol("length with the top bit set"));
                }
                if len <= 0xffff {
                    return Err(CloseError::protocol("non-minimal length"));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mut mask = [0u8; 4];
    if masked {
        let Some(m) = b.get(at..at + 4) else {
            return Ok(None);
        };
        mask.copy_from_slice(m);
        at += 4;
    }
    Ok(Some(FrameHead {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0f,
        masked,
        mask,
        len,
        header_len: at,
    }))
}

/// XORs `data` with the 4-byte mask (§5.3); applying it twice undoes it.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (b, m) in data.iter_mut().zip(mask.iter().cycle()) {
        *b ^= m;
    }
}

/// Writes one frame. Servers send unmasked frames; a client (tests, the
/// fuzz targets) passes its mask.
pub fn encode_frame(
    dst: &mut BytesMut,
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    dst.put_u8(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => dst.put_u8(mask_bit | n as u8),
        n @ 126..=0xffff => {
            dst.put_u8(mask_bit | 126);
            dst.put_u16(n as u16);
        }
        n => {
            dst.put_u8(mask_bit | 127);
            dst.put_u64(n as u64);
        }
    }
    match mask {
        Some(m) => {
            dst.put_slice(&m);
            let start = dst.len();
            dst.put_slice(payload);
            if let Some(body) = dst.get_mut(start..) {
                apply_mask(body, m);
            }
        }
        None => dst.put_slice(payload),
    }
}

/// The Kubernetes channel protocols over WebSocket messages.
pub mod channel {
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;
    use bytes::Bytes;

    /// The v5 message that closes one channel: this byte, then the channel.
    pub const CLOSE_CHANNEL: u8 = 255;

    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;

    /// A negotiated channel protocol.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Protocol {
        /// Channel byte as an ASCII digit and base64 text messages.
        pub base64: bool,
        /// v5: the CLOSE message exists.
        pub close_message: bool,
        /// v4 or later: the error channel carries a JSON `Status`.
        pub status_json: bool,
    }

    impl Protocol {
        /// From the negotiated subprotocol (`None`: plain `channel.k8s.io`).
        /// `None` for names that are not a channel protocol (the SPDY tunnel).
        pub fn from_subprotocol(name: Option<&str>) -> Option<Self> {
            let (base64, close_message, status_json) = match name {
                None | Some("channel.k8s.io") => (false, false, false),
                Some("base64.channel.k8s.io") => (true, false, false),
                Some("v4.channel.k8s.io") => (false, false, true),
                Some("v4.base64.channel.k8s.io") => (true, false, true),
                Some("v5.channel.k8s.io") => (false, true, true),
                Some(_) => return None,
            };
            Some(Self {
                base64,
                close_message,
                status_json,
            })
        }
    }

    /// What one message said.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Message {
        /// Bytes for a channel (may be empty).
        Data { channel: u8, data: Bytes },
        /// v5: the client closed its side of a channel (stdin EOF).
        Close { channel: u8 },
        /// An empty message: nothing (kubelet ignores them too).
        Empty,
    }

    /// Why a message makes no sense.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Error {
        /// A binary message on a base64 protocol, or text on a binary one.
        WrongMessageType,
        /// A base64 channel byte that is not an ASCII digit.
        BadChannel,
        /// The base64 text does not decode.
        BadBase64,
        /// A CLOSE message without exactly one channel byte, or on a
        /// protocol without CLOSE.
        BadClose,
    }

    /// Decodes one whole WebSocket message.
    pub fn decode(protocol: Protocol, binary: bool, data: &Bytes) -> Result<Message, Error> {
        let Some(&first) = data.first() else {
            return Ok(Message::Empty);
        };
        if binary == protocol.base64 {
            return Err(Error::WrongMessageType);
        }
        if protocol.base64 {
            if !first.is_ascii_digit() {
                return Err(Error::BadChannel);
            }
            let decoded = BASE64
                .decode(data.get(1..).unwrap_or(&[]))
                .map_err(|_| Error::BadBase64)?;
            return Ok(Message::Data {
                channel: first - b'0',
                data: Bytes::from(decoded),
            });
        }
        if first == CLOSE_CHANNEL && protocol.close_message {
            return match data.get(1..) {
                Some(&[channel]) => Ok(Message::Close { channel }),
                _ => Err(Error::BadClose),
            };
        }
        Ok(Message::Data {
            channel: first,
            data: data.slice(1..),
        })
    }

    /// Encodes bytes for a channel: (binary?, message).
    pub fn encode(protocol: Protocol, channel: u8, data: &[u8]) -> (bool, Vec<u8>) {
        if protocol.base64 {
            let mut out = vec![b'0'.wrapping_add(channel)];
            out.extend_from_slice(BASE64.encode(data).as_bytes());
            (false, out)
        } else {
            let mut out = Vec::with_capacity(1 + data.len());
            out.push(channel);
            out.extend_from_slice(data);
            (true, out)
        }
    }

    /// The v5 CLOSE message for `channel`; `None` before v5.
    pub fn encode_close(protocol: Protocol, channel: u8) -> Option<Vec<u8>> {
        protocol.close_message.then(|| vec![CLOSE_CHANNEL, channel])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_protocols() {
        use channel::*;
        let v5 = Protocol::from_subprotocol(Some("v5.channel.k8s.io")).unwrap();
        let v4 = Protocol::from_subprotocol(Some("v4.channel.k8s.io")).unwrap();
        let b64 = Protocol::from_subprotocol(Some("v4.base64.channel.k8s.io")).unwrap();
        let v1 = Protocol::from_subprotocol(None).unwrap();
        assert!(Protocol::from_subprotocol(Some("SPDY/3.1+portforward.k8s.io")).is_none());
        assert!(v4.status_json && !v1.status_json && v5.close_message && !v4.close_message);

        let msg = Bytes::from_static(b"\x00ls\n");
        assert_eq!(
            decode(v4, true, &msg),
            Ok(Message::Data {
                channel: STDIN,
                data: Bytes::from_static(b"ls\n")
            })
        );
        assert_eq!(
            decode(v5, true, &Bytes::from_static(&[255, 0])),
            Ok(Message::Close { channel: STDIN })
        );
        assert_eq!(
            decode(v5, true, &Bytes::from_static(&[255])),
            Err(Error::BadClose)
        );
        // Before v5, 255 is just a channel number.
        assert!(matches!(
            decode(v4, true, &Bytes::from_static(&[255, 0])),
            Ok(Message::Data { channel: 255, .. })
        ));
        assert_eq!(decode(v4, false, &msg), Err(Error::WrongMessageType));
        assert_eq!(decode(v4, true, &Bytes::new()), Ok(Message::Empty));
        // base64: "0" + base64("ls\n").
        let text = Bytes::from_static(b"0bHMK");
        assert_eq!(
            decode(b64, false, &text),
            Ok(Message::Data {
                channel: STDIN,
                data: Bytes::from_static(b"ls\n")
            })
        );
        assert_eq!(
            decode(b64, false, &Bytes::from_static(b"x")),
            Err(Error::BadChannel)
        );
        assert_eq!(
            decode(b64, false, &Bytes::from_static(b"1!!")),
            Err(Error::BadBase64)
        );
        assert_eq!(encode(b64, STDOUT, b"ls\n"), (false, b"1bHMK".to_vec()));
        assert_eq!(encode(v4, STDERR, b"e"), (true, vec![2, b'e']));
        assert_eq!(encode_close(v5, STDOUT), Some(vec![255, 1]));
        assert_eq!(encode_close(v4, STDOUT), None);
    }
}
