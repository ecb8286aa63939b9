//! The command line's CRI client: one unary call at a time to a running
//! crispd over its Unix socket, with the core's own gRPC client driven by a
//! blocking socket (`crispd pull` goes through the daemon with it).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crisp_core::grpc::client::{Client, ClientConfig, Event};
use crisp_core::grpc::Status;

/// How long a read waits before the caller's `tick` runs (and the client's
/// timers: HTTP/2 pings, deadlines).
const TICK: Duration = Duration::from_millis(250);

pub struct CliClient {
    sock: UnixStream,
    client: Client,
    out: BytesMut,
    buf: Vec<u8>,
}

impl CliClient {
    /// Connects to the socket; `NotFound` or `ConnectionRefused` mean no
    /// crispd serves there.
    pub fn connect(path: &Path) -> io::Result<Self> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(TICK))?;
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

    /// One unary call with no deadline: the decoded answer or the call's
    /// status. `tick` runs about every 250 ms while the answer is awaited,
    /// with the time since the call started.
    pub fn unary<Req: prost::Message, Resp: prost::Message + Default>(
        &mut self,
        path: &'static str,
        req: &Req,
        mut tick: impl FnMut(Duration),
    ) -> io::Result<Result<Resp, Status>> {
        let started = Instant::now();
        let id = self
            .client
            .unary(Bytes::from_static(path.as_bytes()), req, None, started)
            .map_err(|e| io::Error::other(format!("cannot start the call: {e:?}")))?;
        let mut message = None;
        loop {
            self.flush()?;
            while let Some(ev) = self.client.poll_event() {
                match ev {
                    Event::Message { id: i, message: m } if i == id => message = Some(m),
                    Event::Finished { id: i, status, .. } if i == id => {
                        if !status.is_ok() {
                            return Ok(Err(status));
                        }
                        return Resp::decode(message.unwrap_or_default())
                            .map(Ok)
                            .map_err(|e| {
                                io::Error::other(format!("cannot decode the answer: {e}"))
                            });
                    }
                    Event::ConnectionError(e) => {
                        return Err(io::Error::other(format!("connection error: {e:?}")))
                    }
                    Event::GoAway => return Err(io::Error::other("crispd closed the connection")),
                    _ => {}
                }
            }
            match self.sock.read(&mut self.buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self
                    .client
                    .recv(&self.buf[..n], Instant::now())
                    .map_err(|e| io::Error::other(format!("bad answer: {e:?}")))?,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.client.handle_timeout(Instant::now());
                    tick(started.elapsed());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
