//! Bytes on the wire for the end-to-end benchmarks, and two blocking
//! clients over a Unix socket:
//!
//! * [`RawH2`] replays a pre-encoded unary `Version` request (HEADERS + DATA)
//!   on fresh stream ids of one connection and reads until the trailers, or,
//!   against the floor server, exactly a given number of response bytes. Its
//!   header block uses no HPACK dynamic table, so the same bytes are valid on
//!   every stream: the client does next to no work per call.
//! * [`CoreClient`] is crisp-core's gRPC client over a blocking socket, for
//!   calls whose answers matter (the lifecycle steps), used against both
//!   crispd and containerd.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use crisp_core::grpc::client::{self, Client, ClientConfig};
use crisp_core::grpc::Status;
use crisp_core::h2::hpack::Decoder;
use crisp_core::h2::Header;
use crisp_proto::cri;

pub const VERSION_PATH: &str = "/runtime.v1.RuntimeService/Version";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 1;
const ACK: u8 = 1;
const END_HEADERS: u8 = 4;

/// The request message, as gRPC carries it: 5-byte prefix + protobuf. This
/// is also the body h2load sends.
pub fn version_request_body() -> Vec<u8> {
    let msg = prost::Message::encode_to_vec(&cri::VersionRequest {
        version: "v1".into(),
    });
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    out
}

fn frame_head(dst: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    dst.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    dst.push(kind);
    dst.push(flags);
    dst.extend_from_slice(&stream.to_be_bytes());
}

fn literal(dst: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127);
    dst.push(s.len() as u8);
    dst.extend_from_slice(s);
}

/// A gRPC request header block using only the static table and literals
/// without indexing: valid on any stream of any connection.
pub fn request_header_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
    b.push(0x04); // :path, name index 4, without indexing
    literal(&mut b, path.as_bytes());
    b.push(0x01); // :authority
    literal(&mut b, b"localhost");
    b.extend_from_slice(&[0x0f, 0x10]); // content-type (index 31)
    literal(&mut b, b"application/grpc");
    b.push(0x00); // te: new name
    literal(&mut b, b"te");
    literal(&mut b, b"trailers");
    b
}

/// HEADERS + DATA(END_STREAM) of one unary `Version` call on `stream`.
pub fn request_frames(stream: u32) -> Vec<u8> {
    let block = request_header_block(VERSION_PATH);
    let body = version_request_body();
    let mut out = Vec::with_capacity(18 + block.len() + body.len());
    frame_head(&mut out, block.len(), HEADERS, END_HEADERS, stream);
    out.extend_from_slice(&block);
    frame_head(&mut out, body.len(), DATA, END_STREAM, stream);
    out.extend_from_slice(&body);
    out
}

/// The client preface: magic, SETTINGS (no push, large windows) and a
/// connection WINDOW_UPDATE so answers never wait on flow control.
pub fn client_preface() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    let settings: [(u16, u32); 2] = [(2, 0), (4, 1 << 30)];
    frame_head(&mut out, 6 * settings.len(), SETTINGS, 0, 0);
    for (id, v) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    frame_head(&mut out, 4, 8, 0, 0);
    out.extend_from_slice(&(1u32 << 30).to_be_bytes());
    out
}

/// A blocking replay client on one connection.
pub struct RawH2 {
    sock: UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    next_stream: u32,
    req: Vec<u8>,
    /// Busy-poll: the socket is non-blocking and reads spin until data
    /// arrives, so this side never sleeps in the kernel.
    spin: bool,
    /// Bytes read for the last answer (frames up to and including its
    /// trailers, plus any connection frames in between).
    pub last_response_bytes: usize,
}

/// Connect, retrying for up to 5 s while the server is still starting (its
/// socket file appears at bind(), before listen()).
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let start = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) && start.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r,
        }
    }
}

fn proto_err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl RawH2 {
    pub fn connect(path: &Path) -> io::Result<Self> {
        let sock = connect(path)?;
        Ok(Self {
            sock,
            buf: vec![0; 1 << 16],
            start: 0,
            end: 0,
            next_stream: 1,
            req: request_frames(1),
            spin: false,
            last_response_bytes: 0,
        })
    }

    /// Switch to busy-polling reads (see [`RawH2::spin`]).
    pub fn set_spin(&mut self, spin: bool) -> io::Result<()> {
        self.sock.set_nonblocking(spin)?;
        self.spin = spin;
        Ok(())
    }

    fn write_all(&mut self, mut b: &[u8]) -> io::Result<()> {
        while !b.is_empty() {
            match self.sock.write(b) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => b = &b[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Send the preface; the server's SETTINGS are acknowledged as they come.
    pub fn handshake(&mut self) -> io::Result<()> {
        self.write_all(&client_preface())
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = loop {
            match self.sock.read(&mut self.buf[self.end..]) {
                Err(e) if self.spin && e.kind() == io::ErrorKind::WouldBlock => {
                    std::hint::spin_loop()
                }
                r => break r?,
            }
        };
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(n)
    }

    /// Next whole frame: (kind, flags, stream, payload range in buf).
    fn next_frame(&mut self) -> io::Result<(u8, u8, u32, usize, usize)> {
        loop {
            let avail = self.end - self.start;
            if avail >= 9 {
                let h = &self.buf[self.start..self.start + 9];
                let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                if avail >= 9 + len {
                    let (kind, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let p = self.start + 9;
                    self.start = p + len;
                    return Ok((kind, flags, stream, p, p + len));
                }
                if 9 + len > self.buf.len() {
                    self.buf.resize(9 + len, 0);
                }
            }
            self.fill()?;
        }
    }

    /// One unary call; returns the trailers' header block when `decode` is
    /// given a decoder (only for the first call: later blocks may refer to
    /// the dynamic table).
    pub fn call(&mut self, mut decoder: Option<&mut Decoder>) -> io::Result<Vec<Header>> {
        let s = self.next_stream;
        self.next_stream += 2;
        self.req[5..9].copy_from_slice(&s.to_be_bytes());
        let data_at = 9 + (u32::from_be_bytes([0, self.req[0], self.req[1], self.req[2]]) as usize);
        self.req[data_at + 5..data_at + 9].copy_from_slice(&s.to_be_bytes());
        let req = std::mem::take(&mut self.req);
        let w = self.write_all(&req);
        self.req = req;
        w?;
        let mut got = 0usize;
        let mut trailers = Vec::new();
        loop {
            let (kind, flags, stream, p, e) = self.next_frame()?;
            got += 9 + e - p;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let mut ack = Vec::new();
                    frame_head(&mut ack, 0, SETTINGS, ACK, 0);
                    self.write_all(&ack)?;
                }
                PING if flags & ACK == 0 => {
                    let mut pong = Vec::new();
                    frame_head(&mut pong, 8, PING, ACK, 0);
                    pong.extend_from_slice(&self.buf[p..e]);
                    self.write_all(&pong)?;
                }
                GOAWAY => return Err(proto_err("GOAWAY from server")),
                RST_STREAM if stream == s => return Err(proto_err("RST_STREAM from server")),
                HEADERS if stream == s => {
                    if flags & END_HEADERS == 0 {
                        return Err(proto_err("CONTINUATION not supported by the bench client"));
                    }
                    if let Some(d) = decoder.as_deref_mut() {
                        let block = Bytes::copy_from_slice(&self.buf[p..e]);
                        let mut out = Vec::new();
                        d.decode(&block, 1 << 20, &mut out)
                            .map_err(|e| proto_err(format!("hpack: {e:?}")))?;
                        if flags & END_STREAM != 0 {
                            trailers = out;
                        }
                    }
                    if flags & END_STREAM != 0 {
                        self.last_response_bytes = got;
                        return Ok(trailers);
                    }
                }
                _ => {}
            }
        }
    }

    /// Floor mode: send the same request bytes, read exactly `n` bytes back.
    pub fn ping_pong(&mut self, n: usize) -> io::Result<()> {
        let req = std::mem::take(&mut self.req);
        let w = self.write_all(&req);
        self.req = req;
        w?;
        let mut need = n;
        while need > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let take = need.min(self.end - self.start);
            self.start += take;
            need -= take;
        }
        Ok(())
    }

    pub fn request_bytes(&self) -> usize {
        self.req.len()
    }
}

/// First call on a fresh connection, checked: the answer must end with
/// `grpc-status: 0`.
pub fn checked_first_call(c: &mut RawH2) -> io::Result<()> {
    let mut d = Decoder::new(4096);
    let trailers = c.call(Some(&mut d))?;
    let ok = trailers
        .iter()
        .any(|h| &h.name[..] == b"grpc-status" && &h.value[..] == b"0");
    if ok {
        Ok(())
    } else {
        Err(proto_err(format!(
            "no grpc-status 0 in trailers: {trailers:?}"
        )))
    }
}

/// crisp-core's gRPC client over a blocking Unix socket.
pub struct CoreClient {
    sock: UnixStream,
    client: Client,
    out: BytesMut,
    buf: Vec<u8>,
}

impl CoreClient {
    pub fn connect(path: &Path) -> io::Result<Self> {
        let sock = connect(path)?;
        sock.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Self {
            sock,
            client: Client::new(ClientConfig::default()),
            out: BytesMut::with_capacity(1 << 16),
            buf: vec![0; 1 << 16],
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.client.transmit_into(&mut self.out) > 0 {}
        if !self.out.is_empty() {
            self.sock.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// A client whose calls carry `content_type` (`application/grpc+json`:
    /// send JSON bodies with [`CoreClient::unary_encoded`]).
    pub fn connect_with(path: &Path, content_type: &'static str) -> io::Result<Self> {
        let mut c = Self::connect(path)?;
        c.client = Client::new(ClientConfig {
            content_type,
            ..ClientConfig::default()
        });
        Ok(c)
    }

    /// One unary call: the decoded answer, or the call's non-OK status.
    pub fn unary<Req: prost::Message, Resp: prost::Message + Default>(
        &mut self,
        path: &str,
        req: &Req,
    ) -> io::Result<Result<Resp, Status>> {
        let id = self
            .client
            .unary(
                Bytes::copy_from_slice(path.as_bytes()),
                req,
                Some(Duration::from_secs(120)),
                Instant::now(),
            )
            .map_err(|e| proto_err(format!("start call: {e:?}")))?;
        match self.finish(id)? {
            Ok(answer) => Resp::decode(answer.message)
                .map(Ok)
                .map_err(|e| proto_err(format!("decode: {e}"))),
            Err(status) => Ok(Err(status)),
        }
    }

    /// One unary call whose request message is already encoded (in the
    /// connection's content-type); the answer's message undecoded.
    pub fn unary_encoded(
        &mut self,
        path: &str,
        body: &[u8],
    ) -> io::Result<Result<RawAnswer, Status>> {
        let id = self
            .client
            .start_call(
                Bytes::copy_from_slice(path.as_bytes()),
                Vec::new(),
                Some(Duration::from_secs(120)),
                Instant::now(),
            )
            .and_then(|id| self.client.send_encoded(id, body, true).map(|()| id))
            .map_err(|e| proto_err(format!("start call: {e:?}")))?;
        self.finish(id)
    }

    /// Drive the connection until call `id` ends.
    fn finish(&mut self, id: client::CallId) -> io::Result<Result<RawAnswer, Status>> {
        let mut message = None;
        let mut wire_bytes = 0;
        loop {
            self.flush()?;
            while let Some(ev) = self.client.poll_event() {
                match ev {
                    client::Event::Message { id: i, message: m } if i == id => message = Some(m),
                    client::Event::Finished { id: i, status, .. } if i == id => {
                        if !status.is_ok() {
                            return Ok(Err(status));
                        }
                        return Ok(Ok(RawAnswer {
                            message: message.unwrap_or_default(),
                            wire_bytes,
                        }));
                    }
                    client::Event::ConnectionError(e) => {
                        return Err(proto_err(format!("connection error: {e:?}")))
                    }
                    client::Event::GoAway => return Err(proto_err("GOAWAY")),
                    _ => {}
                }
            }
            let n = self.sock.read(&mut self.buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            wire_bytes += n;
            self.client
                .recv(&self.buf[..n], Instant::now())
                .map_err(|e| proto_err(format!("recv: {e:?}")))?;
        }
    }
}

/// A unary call's answer as it came.
pub struct RawAnswer {
    /// The response message, undecoded (without its 5-byte gRPC prefix).
    pub message: Bytes,
    /// Bytes read from the socket during the call: the answer's HTTP/2
    /// frames (HEADERS, DATA, trailers) and any connection frames between.
    pub wire_bytes: usize,
}

/// Build a `BytesMut` holding `frames` (for benchmarks feeding the core).
pub fn bytes_of(frames: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(frames.len());
    b.put_slice(frames);
    b
}
