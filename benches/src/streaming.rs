//! A SPDY/3.1 client of a CRI streaming server (crispd's or containerd's),
//! on the core's SPDY session in the client role and a blocking socket:
//! what bench-client times exec round trips and port-forward throughput
//! with, the same for every runtime.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crisp_core::spdy::{self, Event};

/// An upgraded connection with its SPDY session.
pub struct Client {
    sock: TcpStream,
    conn: spdy::Connection,
    buf: Vec<u8>,
}

impl Client {
    /// Upgrades `url` (`http://host:port/path`) to SPDY/3.1 asking for
    /// stream protocol `protocol`.
    pub fn upgrade(url: &str, protocol: &str) -> io::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| io::Error::other(format!("not an http URL: {url}")))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let mut sock = TcpStream::connect(host)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            sock,
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
        )?;
        // The answer's head, a byte at a time: SPDY frames may follow it.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if sock.read(&mut b)? == 0 || head.len() > 16 * 1024 {
                return Err(io::Error::other("no upgrade answer"));
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return Err(io::Error::other(format!(
                "upgrade refused: {}",
                String::from_utf8_lossy(&head)
            )));
        }
        Ok(Self {
            sock,
            conn: spdy::Connection::client(spdy::Config::default()),
            buf: vec![0u8; 256 * 1024],
        })
    }

    pub fn open(&mut self, headers: &[(&str, &str)]) -> io::Result<u32> {
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.conn
            .open_stream(&h, false)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    pub fn send(&mut self, stream: u32, data: &[u8], fin: bool) -> io::Result<()> {
        self.conn
            .send_data(stream, Bytes::copy_from_slice(data), fin)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some(b) = self.conn.poll_transmit() {
            self.sock.write_all(&b)?;
        }
        Ok(())
    }

    /// The next event, reading the socket as needed.
    pub fn next_event(&mut self) -> io::Result<Event> {
        loop {
            self.flush()?;
            if let Some(e) = self.conn.poll_event() {
                return Ok(e);
            }
            let n = self.sock.read(&mut self.buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.conn
                .recv(&self.buf[..n], Instant::now())
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
}

/// One exec with only stdout: from the upgrade request to the exit
/// status, and to the first byte of output.
pub struct ExecTimes {
    pub total: Duration,
    pub first_byte: Option<Duration>,
    pub status: Vec<u8>,
}

/// Runs the exec behind `url` (created with stdout only) to its end.
pub fn exec(url: &str) -> io::Result<ExecTimes> {
    let t = Instant::now();
    let mut c = Client::upgrade(url, "v4.channel.k8s.io")?;
    let error = c.open(&[("streamtype", "error")])?;
    let stdout = c.open(&[("streamtype", "stdout")])?;
    let (mut first_byte, mut status) = (None, Vec::new());
    let (mut out_done, mut err_done) = (false, false);
    while !(out_done && err_done) {
        match c.next_event()? {
            Event::Data {
                stream_id,
                data,
                fin,
            } if stream_id == stdout => {
                if first_byte.is_none() && !data.is_empty() {
                    first_byte = Some(t.elapsed());
                }
                out_done |= fin;
            }
            Event::Data {
                stream_id,
                data,
                fin,
            } if stream_id == error => {
                status.extend_from_slice(&data);
                err_done |= fin;
            }
            Event::StreamReset { stream_id, .. } => {
                out_done |= stream_id == stdout;
                err_done |= stream_id == error;
            }
            _ => {}
        }
    }
    Ok(ExecTimes {
        total: t.elapsed(),
        first_byte,
        status,
    })
}

/// Reads everything the pod's `port` sends on one forwarded connection;
/// (bytes, time from the upgrade request to the end).
pub fn port_forward_read(url: &str, port: u16) -> io::Result<(u64, Duration)> {
    let t = Instant::now();
    let mut c = Client::upgrade(url, "portforward.k8s.io")?;
    let port = port.to_string();
    let error = c.open(&[("streamtype", "error"), ("port", &port), ("requestid", "0")])?;
    let data = c.open(&[("streamtype", "data"), ("port", &port), ("requestid", "0")])?;
    let mut bytes = 0u64;
    loop {
        match c.next_event()? {
            Event::Data {
                stream_id,
                data: d,
                fin,
            } if stream_id == data => {
                bytes += d.len() as u64;
                if fin {
                    break;
                }
            }
            Event::Data {
                stream_id, data: d, ..
            } if stream_id == error && !d.is_empty() => {
                return Err(io::Error::other(String::from_utf8_lossy(&d).into_owned()));
            }
            Event::StreamReset { stream_id, .. } if stream_id == data => break,
            _ => {}
        }
    }
    Ok((bytes, t.elapsed()))
}
