//! One client connection: its socket, its caller, and the core's gRPC
//! server state machine that the socket's bytes drive.
//!
//! The path of a call: [`Conn::on_readable`] reads bytes and feeds them to
//! `grpc::server::Server::recv`; [`Conn::process`] takes the resulting
//! events and hands each complete request to the dispatcher; the answer
//! the dispatcher queues leaves through [`Conn::flush`].
//!
//! On a TCP connection under `[tls]`, a rustls session sits between the
//! socket and the core: socket bytes go through `read_tls` and
//! `process_new_packets`, the plaintext from its `reader()` to the core;
//! the core's output goes into its `writer()` and leaves by `write_tls`.
//! Each call on a TCP connection is authenticated (`auth`) before its
//! request is decoded.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use crisp_core::grpc::server::{CallId, CallInfo, Event, Server, ServerConfig};
use crisp_core::grpc::{Code, Status};
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::auth::{self, Refusal, Transport};
use crate::cri_host::CriHost;
use crate::dispatch::{Dispatcher, Outcome, Stream};
use crate::policy::{Peer, Policy};
use crate::workers::{Reply, StreamReply, Workers};
use crisp_image::Stop;

/// Unsent output above which we stop reading from the peer: a client that
/// does not read its answers cannot make us buffer without bound.
const HIGH_WATER: usize = 1 << 20;

pub enum Socket {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.read(buf),
            Socket::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.write(buf),
            Socket::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket {
    pub fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Socket::Unix(s) => r.register(s, t, i),
            Socket::Tcp(s) => r.register(s, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Socket::Unix(s) => r.reregister(s, t, i),
            Socket::Tcp(s) => r.reregister(s, t, i),
        }
    }

    pub fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Socket::Unix(s) => r.deregister(s),
            Socket::Tcp(s) => r.deregister(s),
        }
    }
}

/// What the loop lends a connection while it works.
pub struct Ctx<'a> {
    pub dispatcher: &'a Dispatcher,
    pub cri: &'a mut CriHost,
    pub workers: &'a Workers,
    /// Shared read buffer, so idle connections hold none.
    pub read_buf: &'a mut [u8],
}

/// A TLS session between a TCP socket and the core.
struct Tls {
    session: rustls::ServerConnection,
    /// Until the handshake is done: when it must be.
    handshake_deadline: Option<Instant>,
    /// The verified client certificate's subject CN, once known.
    cert_cn: Option<String>,
    /// The session failed (bad records, a failed handshake): its alert
    /// goes out, then the connection closes.
    failed: bool,
    /// close_notify is queued: the core closed the connection.
    closing: bool,
}

pub struct Conn {
    pub index: usize,
    socket: Socket,
    peer: Peer,
    /// TCP connections: the peer's address.
    remote: Option<SocketAddr>,
    tls: Option<Box<Tls>>,
    grpc: Server,
    out: BytesMut,
    eof: bool,
    broken: bool,
    interest: Option<Interest>,
    /// Calls being served (by stream id): method path and start, for the
    /// per-call log line.
    calls: HashMap<u32, (&'static str, Instant)>,
    /// Work of calls in `calls` that must stop when the call goes away
    /// (pulls).
    stops: HashMap<u32, Stop>,
    /// The streaming calls among them (server reflection), with their state.
    streams: HashMap<u32, Stream>,
}

impl Drop for Conn {
    /// The connection is gone: so are the callers of its calls.
    fn drop(&mut self) {
        for (_, stop) in self.stops.drain() {
            stop.cancel();
        }
    }
}

impl Conn {
    pub fn new(index: usize, socket: Socket, peer: Peer, config: ServerConfig) -> Self {
        Self {
            index,
            socket,
            peer,
            remote: None,
            tls: None,
            grpc: Server::new(config),
            out: BytesMut::new(),
            eof: false,
            broken: false,
            interest: None,
            calls: HashMap::new(),
            stops: HashMap::new(),
            streams: HashMap::new(),
        }
    }

    /// A TCP connection from `remote`, with a TLS session when the
    /// listener has one; its handshake must be over by `handshake_deadline`.
    pub fn with_tcp(
        mut self,
        remote: SocketAddr,
        tls: Option<(rustls::ServerConnection, Instant)>,
    ) -> Self {
        self.remote = Some(remote);
        self.tls = tls.map(|(session, deadline)| {
            Box::new(Tls {
                session,
                handshake_deadline: Some(deadline),
                cert_cn: None,
                failed: false,
                closing: false,
            })
        });
        self
    }

    /// The transport is up: start the core's timers.
    pub fn start(&mut self, now: Instant) {
        self.grpc.handle_timeout(now);
    }

    pub fn socket(&mut self) -> &mut Socket {
        &mut self.socket
    }

    /// Read until the socket would block (or output backs up), feeding the
    /// core and serving what it yields.
    ///
    /// `read_closed`: the readiness event also reported the peer's FIN (or
    /// an error). Then reading goes on to EOF even after a short read: that
    /// FIN raises no further edge-triggered event.
    pub fn on_readable(&mut self, ctx: &mut Ctx<'_>, now: Instant, read_closed: bool) {
        while !self.eof && !self.broken && self.out.len() < HIGH_WATER {
            match self.read_some(ctx, now) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    // A short read drained the socket: with epoll's edge
                    // triggering, data (or EOF) arriving later raises a new
                    // event, so the read that would only say WouldBlock is
                    // a wasted syscall on every call (tokio does the same).
                    // rustls reads in smaller pieces than the buffer: a
                    // TLS connection reads on until WouldBlock.
                    if n < ctx.read_buf.len() && !read_closed && self.tls.is_none() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.broken = true,
            }
        }
    }

    /// While the loop spins: one read attempt, without waiting for the
    /// poll to report the socket readable. True when something happened
    /// (bytes served, EOF, an error) and the connection must be settled.
    /// The edge the poll reports later for these bytes costs one read that
    /// would block; in return the poll's syscall is off the request's path.
    pub fn read_now(&mut self, ctx: &mut Ctx<'_>, now: Instant) -> bool {
        if self.eof || self.broken || self.out.len() >= HIGH_WATER {
            return false;
        }
        match self.read_some(ctx, now) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                if n == ctx.read_buf.len() || self.tls.is_some() {
                    // More may be waiting: read on as for a readiness event.
                    self.on_readable(ctx, now, false);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return false
            }
            Err(_) => self.broken = true,
        }
        true
    }

    /// One read from the socket, its bytes (through TLS, if any) fed to
    /// the core and served. The bytes the socket gave; 0 is EOF.
    fn read_some(&mut self, ctx: &mut Ctx<'_>, now: Instant) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            let n = self.socket.read(ctx.read_buf)?;
            if n > 0 {
                self.feed(ctx, n, now);
            }
            return Ok(n);
        };
        if tls.failed {
            return Ok(0);
        }
        let n = tls.session.read_tls(&mut self.socket)?;
        if let Err(e) = tls.session.process_new_packets() {
            // Garbage instead of a ClientHello, a certificate we do not
            // trust, a bad record: the alert rustls queued goes out, then
            // the connection closes.
            tracing::info!(remote = %DisplayAddr(self.remote), error = %e, "TLS failed; closing");
            tls.failed = true;
            self.out.clear();
            return Ok(0);
        }
        if tls.handshake_deadline.is_some() && !tls.session.is_handshaking() {
            tls.handshake_deadline = None;
            tls.cert_cn = tls
                .session
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| auth::subject_cn(leaf));
        }
        // The plaintext rustls holds (at most a record's worth, 16 KiB) to
        // the core; it must be drained before the next `read_tls`.
        while let Some(tls) = self.tls.as_mut() {
            match tls.session.reader().read(ctx.read_buf) {
                Ok(0) => {
                    // close_notify: the peer will send nothing more.
                    self.eof = true;
                    break;
                }
                Ok(m) => self.feed(ctx, m, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// `n` bytes were read into the shared buffer: through the core, and
    /// serve what it yields.
    fn feed(&mut self, ctx: &mut Ctx<'_>, n: usize, now: Instant) {
        if let Err(e) = self.grpc.recv(&ctx.read_buf[..n], now) {
            tracing::debug!(peer = %self.peer, error = %e, "connection error");
        }
        self.process(ctx, now);
        self.fill_output();
    }

    /// Serve the events the core produced.
    pub fn process(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        while let Some(event) = self.grpc.poll_event() {
            match event {
                Event::Request { call, message } => {
                    // The core's clock is the one `now` of this read, so a
                    // deadline like `grpc-timeout: 1n` (what grpcio sends once
                    // its deadline has passed) is still ahead of it. Against
                    // the real clock it has expired: do not start the work.
                    if call.deadline.is_some_and(|at| at <= Instant::now()) {
                        let status =
                            Status::deadline_exceeded("deadline exceeded before the call started");
                        self.refuse(&call, &status, now);
                        continue;
                    }
                    // Who calls, before anything of the request is read.
                    let Some(peer) = self.admit(ctx.dispatcher.policy(), &call, now) else {
                        continue;
                    };
                    let outcome = ctx.dispatcher.dispatch(
                        &mut self.grpc,
                        self.index,
                        peer,
                        &call,
                        message,
                        ctx.workers,
                        ctx.cri,
                    );
                    match outcome {
                        Outcome::Done(code) => log_call(peer, call.method.path, code, now),
                        Outcome::Deferred(stop) => {
                            self.calls.insert(call.id.get(), (call.method.path, now));
                            if let Some(stop) = stop {
                                self.stops.insert(call.id.get(), stop);
                            }
                        }
                    }
                }
                Event::StreamStarted { call } => {
                    let Some(peer) = self.admit(ctx.dispatcher.policy(), &call, now) else {
                        continue;
                    };
                    // Server reflection; the dispatcher refuses the rest.
                    if let Some(stream) = ctx.dispatcher.open_stream(&mut self.grpc, peer, &call) {
                        self.streams.insert(call.id.get(), stream);
                        self.calls.insert(call.id.get(), (call.method.path, now));
                    }
                }
                Event::Message { id, message } => {
                    let Some(stream) = self.streams.get_mut(&id.get()) else {
                        continue;
                    };
                    if let Err(code) =
                        ctx.dispatcher
                            .stream_message(&mut self.grpc, id, stream, &message)
                    {
                        self.streams.remove(&id.get());
                        if let Some((path, started)) = self.calls.remove(&id.get()) {
                            log_call(self.peer, path, code, started);
                        }
                    }
                }
                Event::HalfClose { id } => {
                    // Every request was answered as it came: done.
                    if self.streams.remove(&id.get()).is_some() {
                        let _ = self.grpc.finish(id, &Status::ok());
                        if let Some((path, started)) = self.calls.remove(&id.get()) {
                            log_call(self.peer, path, Code::Ok, started);
                        }
                    }
                }
                Event::Cancelled { id, code } => {
                    if let Some(stop) = self.stops.remove(&id.get()) {
                        stop.cancel();
                    }
                    self.streams.remove(&id.get());
                    ctx.dispatcher.discovery.call_ended((self.index, id.get()));
                    if let Some((path, started)) = self.calls.remove(&id.get()) {
                        log_call(self.peer, path, code, started);
                    }
                }
                Event::GoAway => {}
                Event::ConnectionError(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "connection failed");
                }
            }
        }
    }

    /// The caller of `call`: on the Unix socket the process the kernel
    /// names; on TCP the identity the call's credentials or the client
    /// certificate prove (`auth`), checked against the policy here so that
    /// an unknown caller gets UNAUTHENTICATED rather than PERMISSION_DENIED.
    /// Every refusal is logged, never with the secret.
    fn caller(&self, policy: &Policy, call: &CallInfo) -> Result<Peer, Status> {
        if self.remote.is_none() {
            return Ok(self.peer);
        }
        let method = call.method.path;
        let remote = DisplayAddr(self.remote);
        let transport = Transport {
            tls: self.tls.is_some(),
            loopback: self.remote.is_some_and(|a| a.ip().is_loopback()),
            cert_cn: self.tls.as_ref().and_then(|t| t.cert_cn.as_deref()),
        };
        let headers = self.grpc.request_headers(call.id).unwrap_or(&[]);
        let peer = auth::authenticate(policy, headers, transport).map_err(|Refusal(why)| {
            tracing::warn!(method, %remote, reason = why, "unauthenticated");
            Status::unauthenticated(format!("{why} (calling {method})"))
        })?;
        if policy.allows(peer, call.method) {
            return Ok(peer);
        }
        if peer == Peer::Tcp {
            tracing::warn!(method, %remote, reason = "no credentials", "unauthenticated");
            return Err(Status::unauthenticated(format!(
                "{method} needs credentials on this connection (see [access] in crispd's config)"
            )));
        }
        tracing::warn!(method, %remote, %peer, "permission denied");
        Err(Status::permission_denied(format!(
            "caller {peer} may not call {method} (see [access] in crispd's config)"
        )))
    }

    /// The caller of `call` if the policy lets it in; otherwise the call is
    /// refused here.
    fn admit(&mut self, policy: &Policy, call: &CallInfo, now: Instant) -> Option<Peer> {
        match self.caller(policy, call) {
            Ok(peer) => Some(peer),
            Err(status) => {
                self.refuse(call, &status, now);
                None
            }
        }
    }

    /// Answers `call` with `status` before any of its work starts, and logs
    /// it.
    fn refuse(&mut self, call: &CallInfo, status: &Status, started: Instant) {
        let _ = self.grpc.finish(call.id, status);
        log_call(self.peer, call.method.path, status.code, started);
    }

    /// A worker finished a call of this connection.
    pub fn complete(&mut self, call: u32, reply: Reply) {
        self.stops.remove(&call);
        let Some((path, started)) = self.calls.remove(&call) else {
            return; // cancelled or timed out meanwhile
        };
        let call = CallId::new(call);
        let code = match reply {
            Ok(bytes) => match self.grpc.send_encoded(call, &bytes) {
                Ok(()) => {
                    let _ = self.grpc.finish(call, &Status::ok());
                    Code::Ok
                }
                Err(_) => return,
            },
            Err(status) => {
                let _ = self.grpc.finish(call, &status);
                status.code
            }
        };
        log_call(self.peer, path, code, started);
    }

    /// A worker finished a `Stream*` listing of this connection: its
    /// messages, then OK (or the failure, after nothing).
    pub fn complete_stream(&mut self, call: u32, reply: StreamReply) {
        let Some((path, started)) = self.calls.remove(&call) else {
            return; // cancelled or timed out meanwhile
        };
        let call = CallId::new(call);
        let code = match reply {
            Ok(messages) => {
                for m in &messages {
                    if self.grpc.send_encoded(call, m).is_err() {
                        return;
                    }
                }
                let _ = self.grpc.finish(call, &Status::ok());
                Code::Ok
            }
            Err(status) => {
                let _ = self.grpc.finish(call, &status);
                status.code
            }
        };
        log_call(self.peer, path, code, started);
    }

    /// One more message on a server-streaming call; false once the call
    /// is gone (cancelled, connection closing).
    pub fn send_stream(&mut self, call: u32, message: &[u8]) -> bool {
        if !self.calls.contains_key(&call) {
            return false;
        }
        self.grpc.send_encoded(CallId::new(call), message).is_ok()
    }

    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        if let Some(tls) = &self.tls {
            if tls.handshake_deadline.is_some_and(|at| at <= now) {
                tracing::info!(remote = %DisplayAddr(self.remote), "TLS handshake timed out; closing");
                self.broken = true;
                return;
            }
        }
        self.grpc.handle_timeout(now);
        self.process(ctx, now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let core = self.grpc.poll_timeout();
        match self.tls.as_ref().and_then(|t| t.handshake_deadline) {
            Some(at) => Some(core.map_or(at, |c| c.min(at))),
            None => core,
        }
    }

    /// Graceful shutdown: GOAWAY; calls in flight may finish.
    pub fn go_away(&mut self) {
        self.grpc.go_away();
    }

    /// End a call that stays open until the server ends it (Watch), with
    /// `status`.
    pub fn end_call(&mut self, call: u32, status: &Status) {
        if let Some((path, started)) = self.calls.remove(&call) {
            let _ = self.grpc.finish(CallId::new(call), status);
            log_call(self.peer, path, status.code, started);
        }
    }

    /// Fail every call still waiting on a worker (shutdown deadline).
    pub fn abandon_calls(&mut self, status: &Status) {
        self.streams.clear();
        for (id, _) in self.calls.drain() {
            let _ = self.grpc.finish(CallId::new(id), status);
        }
        for (_, stop) in self.stops.drain() {
            stop.cancel();
        }
    }

    fn fill_output(&mut self) {
        while self.out.len() < HIGH_WATER {
            if self.grpc.transmit_into(&mut self.out) == 0 {
                break;
            }
        }
    }

    /// Write what is pending until the socket would block.
    pub fn flush(&mut self) {
        if self.tls.is_some() {
            return self.flush_tls();
        }
        loop {
            if self.out.is_empty() {
                self.fill_output();
                if self.out.is_empty() {
                    return;
                }
            }
            match self.socket.write(&self.out) {
                Ok(0) => {
                    self.broken = true;
                    return;
                }
                Ok(n) => self.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
    }

    /// [`Conn::flush`] through TLS: the records rustls has first, then
    /// more of the core's output into its writer, until the socket would
    /// block or nothing is left.
    fn flush_tls(&mut self) {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return;
            };
            if !tls.closing && !tls.failed && self.out.is_empty() && self.grpc.is_closed() {
                // The core is done (GOAWAY sent): say so in TLS too, so the
                // peer can tell the end from a truncation.
                tls.closing = true;
                tls.session.send_close_notify();
            }
            while tls.session.wants_write() {
                match tls.session.write_tls(&mut self.socket) {
                    Ok(0) => {
                        self.broken = true;
                        return;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.broken = true;
                        return;
                    }
                }
            }
            if tls.failed {
                return;
            }
            if self.out.is_empty() {
                self.fill_output();
                if self.out.is_empty() {
                    return;
                }
            }
            let Some(tls) = self.tls.as_mut() else {
                return;
            };
            match tls.session.writer().write(&self.out) {
                // rustls holds all it may (plaintext during the handshake):
                // more goes in once the handshake sends it.
                Ok(0) => return,
                Ok(n) => self.out.advance(n),
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
    }

    /// TLS records are waiting for the socket.
    fn tls_pending(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.session.wants_write())
    }

    /// Nothing more will happen on this connection: close it.
    pub fn is_done(&self) -> bool {
        self.broken
            || (self.out.is_empty()
                && !self.tls_pending()
                && (self.eof
                    || self.grpc.is_closed()
                    || self.tls.as_ref().is_some_and(|t| t.failed)))
    }

    /// Ask mio for what we need next: always readable unless backed up,
    /// writable only while output is pending.
    pub fn update_interest(&mut self, registry: &Registry) {
        let mut want = if self.out.len() < HIGH_WATER {
            Some(Interest::READABLE)
        } else {
            None
        };
        if !self.out.is_empty() || self.tls_pending() {
            want = Some(want.map_or(Interest::WRITABLE, |i| i | Interest::WRITABLE));
        }
        let want = want.unwrap_or(Interest::WRITABLE);
        if self.interest != Some(want) {
            let token = Token(self.index);
            let result = if self.interest.is_none() {
                self.socket.register(registry, token, want)
            } else {
                self.socket.reregister(registry, token, want)
            };
            if result.is_err() {
                self.broken = true;
            }
            self.interest = Some(want);
        }
    }
}

fn log_call(peer: Peer, path: &str, code: Code, started: Instant) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let uid = match peer {
        Peer::Local { uid, .. } => i64::from(uid),
        Peer::Tcp | Peer::Identity(_) => -1,
    };
    tracing::debug!(
        method = path,
        uid,
        status = code.name(),
        duration_us = started.elapsed().as_micros() as u64,
        "call"
    );
}

/// An optional peer address for the log.
struct DisplayAddr(Option<SocketAddr>);

impl std::fmt::Display for DisplayAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}

/// A [`Conn`] on one end of a Unix socket pair, crisp-core's gRPC client
/// on the other, and a dispatcher on temporary directories: the
/// connection's and the dispatcher's code paths without the event loop.
#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use bytes::Bytes;
    use crisp_core::grpc::client::{self, Client, ClientConfig};
    use crisp_proto::cri;
    use prost::Message;

    use super::*;
    use crate::config::Config;
    use crate::policy::Policy;

    pub(crate) const VERSION: &str = "/runtime.v1.RuntimeService/Version";

    /// How a call ended, as the client saw it.
    pub(crate) struct Answer {
        pub messages: Vec<Bytes>,
        pub status: Status,
    }

    pub(crate) struct Harness {
        dir: PathBuf,
        dispatcher: Dispatcher,
        cri: CriHost,
        workers: Workers,
        read_buf: Vec<u8>,
        conn: Conn,
        client: Client,
        /// `None` once the test closed the client's end.
        client_sock: Option<UnixStream>,
        /// The client's TLS session, when the connection has one.
        client_tls: Option<rustls::ClientConnection>,
        _poll: mio::Poll,
    }

    impl Harness {
        /// A connection from `peer`, under crispd's default access policy
        /// (root may call everything, others nothing).
        pub(crate) fn new(peer: Peer) -> Self {
            Self::with_access(peer, Config::default().access)
        }

        /// A connection from `peer` under the access policy `access`.
        pub(crate) fn with_access(peer: Peer, access: crate::config::AccessConfig) -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("crispd-conn-{}-{n}", std::process::id()));
            let config = Config {
                state_dir: dir.join("state"),
                runtime_dir: dir.join("run"),
                access,
                ..Config::default()
            };
            let policy = Policy::from_config(&config.access).unwrap();
            let dispatcher = Dispatcher::new(Arc::new(config), policy).unwrap();
            let cri =
                CriHost::restore(Arc::clone(&dispatcher.host), Arc::clone(&dispatcher.in_use));
            let poll = mio::Poll::new().unwrap();
            let waker = Arc::new(mio::Waker::new(poll.registry(), Token(usize::MAX)).unwrap());
            let one = crate::workers::PoolSize {
                threads: 1,
                queue: 4,
            };
            let workers = Workers::new(one, one, waker).unwrap();
            let (server_end, client_end) = UnixStream::pair().unwrap();
            let conn = Conn::new(7, Socket::Unix(server_end), peer, ServerConfig::default());
            Self {
                dir,
                dispatcher,
                cri,
                workers,
                read_buf: vec![0; 16 * 1024],
                conn,
                client: Client::new(ClientConfig::default()),
                client_sock: Some(client_end),
                client_tls: None,
                _poll: poll,
            }
        }

        /// Runs `f` on the connection with a `Ctx` over the harness's parts,
        /// as the event loop calls it.
        fn with_ctx<R>(&mut self, f: impl FnOnce(&mut Conn, &mut Ctx) -> R) -> R {
            let mut ctx = Ctx {
                dispatcher: &self.dispatcher,
                cri: &mut self.cri,
                workers: &self.workers,
                read_buf: &mut self.read_buf,
            };
            f(&mut self.conn, &mut ctx)
        }

        /// Let the connection read and answer what the socket holds.
        fn serve(&mut self, read_closed: bool) {
            self.with_ctx(|conn, ctx| conn.on_readable(ctx, Instant::now(), read_closed));
            self.conn.flush();
        }

        /// Make the connection a TCP one from 127.0.0.1 (the socket stays
        /// a socket pair), with TLS when `tls` is given: the server's
        /// acceptor and the client's configuration.
        fn tcp(&mut self, tls: Option<(&crate::tls::Acceptor, Arc<rustls::ClientConfig>)>) {
            let remote: SocketAddr = "127.0.0.1:40000".parse().unwrap();
            let (server_end, client_end) = UnixStream::pair().unwrap();
            let mut conn = Conn::new(
                8,
                Socket::Unix(server_end),
                Peer::Tcp,
                ServerConfig::default(),
            );
            conn = match tls {
                None => conn.with_tcp(remote, None),
                Some((acceptor, client)) => {
                    let name = "localhost".try_into().unwrap();
                    self.client_tls = Some(rustls::ClientConnection::new(client, name).unwrap());
                    let deadline = Instant::now() + acceptor.handshake_timeout;
                    conn.with_tcp(remote, Some((acceptor.session().unwrap(), deadline)))
                }
            };
            self.conn = conn;
            self.client_sock = Some(client_end);
        }

        /// The client's pending bytes into the socket.
        fn client_send(&mut self) {
            let sock = self.client_sock.as_mut().unwrap();
            let mut out = BytesMut::new();
            while self.client.transmit_into(&mut out) > 0 {}
            match self.client_tls.as_mut() {
                None => sock.write_all(&out).unwrap(),
                Some(tls) => {
                    tls.writer().write_all(&out).unwrap();
                    while tls.wants_write() {
                        tls.write_tls(sock).unwrap();
                    }
                }
            }
        }

        /// What the socket holds for the client, into it.
        fn client_recv(&mut self) {
            let sock = self.client_sock.as_mut().unwrap();
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match self.client_tls.as_mut() {
                    None => sock.read(&mut buf),
                    Some(tls) => match tls.read_tls(sock) {
                        Ok(0) => Ok(0),
                        Ok(_) => {
                            tls.process_new_packets().unwrap();
                            let mut plain = Vec::new();
                            match tls.reader().read_to_end(&mut plain) {
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                other => panic!("TLS reader: {other:?}"),
                            }
                            // The TLS client may have more to say (its
                            // handshake's second flight).
                            while tls.wants_write() {
                                tls.write_tls(sock).unwrap();
                            }
                            self.client.recv(&plain, Instant::now()).unwrap();
                            continue;
                        }
                        Err(e) => Err(e),
                    },
                };
                match n {
                    Ok(0) => return,
                    Ok(n) => self.client.recv(&buf[..n], Instant::now()).unwrap(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => panic!("client read: {e}"),
                }
            }
        }

        /// Exchange bytes until neither side has anything more to say.
        fn settle(&mut self) {
            for _ in 0..16 {
                self.client_send();
                self.serve(false);
                self.client_recv();
            }
        }

        /// Start a call with `body` (one encoded message); nothing moves yet.
        pub(crate) fn start(&mut self, path: &'static str, body: &[u8]) -> client::CallId {
            self.start_with(path, Vec::new(), body)
        }

        /// [`Harness::start`] with metadata.
        fn start_with(
            &mut self,
            path: &'static str,
            metadata: Vec<crisp_core::h2::Header>,
            body: &[u8],
        ) -> client::CallId {
            let id = self
                .client
                .start_call(path, metadata, None, Instant::now())
                .unwrap();
            self.client.send_encoded(id, body, true).unwrap();
            id
        }

        /// The answer to call `id`, once the exchange settles.
        pub(crate) fn answer(&mut self, id: client::CallId) -> Answer {
            self.settle();
            let mut messages = Vec::new();
            while let Some(event) = self.client.poll_event() {
                match event {
                    client::Event::Message { id: i, message } if i == id => messages.push(message),
                    client::Event::Finished { id: i, status, .. } if i == id => {
                        return Answer { messages, status }
                    }
                    _ => {}
                }
            }
            panic!("call {id:?} did not finish");
        }

        /// A streaming call that sends `bodies` (encoded messages) and
        /// half-closes; its answer, once the exchange settles.
        pub(crate) fn stream(&mut self, path: &'static str, bodies: &[Vec<u8>]) -> Answer {
            let id = self
                .client
                .start_call(path, Vec::new(), None, Instant::now())
                .unwrap();
            for body in bodies {
                self.client.send_encoded(id, body, false).unwrap();
            }
            self.client.close_send(id).unwrap();
            self.answer(id)
        }

        /// One unary call, start to end.
        pub(crate) fn call(&mut self, path: &'static str, body: &[u8]) -> Answer {
            let id = self.start(path, body);
            self.answer(id)
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const ROOT: Peer = Peer::Local {
        uid: 0,
        gid: 0,
        pid: 1,
    };

    #[test]
    fn a_version_call_round_trips_through_the_core() {
        let mut h = Harness::new(ROOT);
        let request = cri::VersionRequest {
            version: "v1".into(),
        };
        let answer = h.call(VERSION, &request.encode_to_vec());
        assert_eq!(answer.status.code, Code::Ok, "{:?}", answer.status);
        assert_eq!(answer.messages.len(), 1);
        let version = cri::VersionResponse::decode(answer.messages[0].clone()).unwrap();
        assert_eq!(version.runtime_name, "crisp");
        assert_eq!(version.runtime_api_version, "v1");
        assert!(!h.conn.is_done());
    }

    const PULL: &str = "/runtime.v1.ImageService/PullImage";

    /// A PullImage call from a port nothing listens on, started and
    /// deferred to the pull pool: its stop, as the connection keeps it.
    fn deferred_pull(h: &mut Harness) -> (client::CallId, Stop) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let req = cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: format!("127.0.0.1:{port}/nothing/here:1"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = h.start(PULL, &req.encode_to_vec());
        h.settle();
        assert_eq!(h.conn.stops.len(), 1, "the pull is deferred with a stop");
        let stop = h.conn.stops.values().next().unwrap().clone();
        assert_eq!(stop.reason(), None);
        (id, stop)
    }

    #[test]
    fn a_cancelled_pull_call_stops_its_pull() {
        let mut h = Harness::new(ROOT);
        let (id, stop) = deferred_pull(&mut h);
        h.client.cancel(id);
        h.settle();
        assert_eq!(stop.reason(), Some(Code::Cancelled));
        assert!(h.conn.stops.is_empty());
    }

    #[test]
    fn a_closed_connection_stops_its_pulls() {
        let mut h = Harness::new(ROOT);
        let (_, stop) = deferred_pull(&mut h);
        let (server_end, _client_end) = UnixStream::pair().unwrap();
        let closed = std::mem::replace(
            &mut h.conn,
            Conn::new(8, Socket::Unix(server_end), ROOT, ServerConfig::default()),
        );
        drop(closed);
        assert_eq!(stop.reason(), Some(Code::Cancelled));
    }

    #[test]
    fn reading_stops_while_output_is_backed_up() {
        let mut h = Harness::new(ROOT);
        h.settle(); // the handshake
                    // The peer does not read: unsent output at the limit.
        h.conn.out.extend_from_slice(&vec![0; HIGH_WATER]);
        let id = h.start(VERSION, &cri::VersionRequest::default().encode_to_vec());
        h.client_send();
        h.with_ctx(|conn, ctx| {
            conn.on_readable(ctx, Instant::now(), false);
            assert!(!conn.read_now(ctx, Instant::now()));
        });
        assert!(h.conn.calls.is_empty());
        assert!(h.conn.grpc.poll_event().is_none(), "the request was read");
        // Only writability is asked for until the output drains.
        h.conn.update_interest(h._poll.registry());
        assert_eq!(h.conn.interest, Some(Interest::WRITABLE));
        // Drained (the test's filler dropped rather than sent), the held
        // request is read and answered.
        h.conn.out.clear();
        let answer = h.answer(id);
        assert_eq!(answer.status.code, Code::Ok, "{:?}", answer.status);
        h.conn.update_interest(h._poll.registry());
        assert_eq!(h.conn.interest, Some(Interest::READABLE));
    }

    #[test]
    fn a_peer_that_closes_ends_the_connection() {
        let mut h = Harness::new(ROOT);
        h.settle();
        assert!(!h.conn.is_done());
        h.client_sock = None;
        h.serve(true);
        assert!(h.conn.eof);
        assert!(h.conn.is_done());
    }

    /// A CA and a server certificate for "localhost", by the openssl CLI
    /// (scripts/install-test-deps installs it), in `dir`.
    fn make_certs(dir: &std::path::Path) -> (crate::tls::Acceptor, Arc<rustls::ClientConfig>) {
        use rustls::pki_types::pem::PemObject;
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("the openssl CLI (scripts/install-test-deps)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=ca",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ]);
        let acceptor = crate::tls::Acceptor::load(&crate::config::TlsConfig {
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server.key"),
            client_ca_file: None,
            client_auth: crate::config::ClientAuth::Required,
            handshake_timeout_secs: 10,
        })
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        (acceptor, Arc::new(client))
    }

    fn ops_access() -> crate::config::AccessConfig {
        crate::config::AccessConfig {
            identities: vec![crate::config::IdentityConfig {
                name: "ops".into(),
                token_sha256: Some(crate::auth::TokenHash::new(b"t0ken", b"salt").to_string()),
                cert_subject: None,
                methods: vec!["read-only".into()],
            }],
            ..Default::default()
        }
    }

    fn bearer(token: &'static str) -> Vec<crisp_core::h2::Header> {
        vec![crisp_core::h2::Header::new(
            "authorization",
            format!("Bearer {token}"),
        )]
    }

    #[test]
    fn calls_over_tls_carry_credentials() {
        let mut h = Harness::with_access(Peer::Tcp, ops_access());
        let (acceptor, client) = make_certs(&h.dir.join("pki"));
        h.tcp(Some((&acceptor, client)));
        let version = cri::VersionRequest::default().encode_to_vec();
        let id = h.start_with(VERSION, bearer("t0ken"), &version);
        let answer = h.answer(id);
        assert_eq!(answer.status.code, Code::Ok, "{:?}", answer.status);
        assert_eq!(answer.messages.len(), 1);
        let id = h.start_with(VERSION, bearer("wrong"), &version);
        assert_eq!(h.answer(id).status.code, Code::Unauthenticated);
        let id = h.start_with(
            "/runtime.v1.RuntimeService/RunPodSandbox",
            bearer("t0ken"),
            &[],
        );
        let status = h.answer(id).status;
        assert_eq!(status.code, Code::PermissionDenied);
        assert!(status.message.contains("RunPodSandbox"), "{status:?}");
        // Anonymous: tcp_methods (read-only by default).
        assert_eq!(h.call(VERSION, &version).status.code, Code::Ok);
        assert!(h.conn.tls.as_ref().unwrap().handshake_deadline.is_none());
    }

    #[test]
    fn credentials_on_plaintext_tcp_are_refused() {
        let mut h = Harness::with_access(Peer::Tcp, ops_access());
        h.tcp(None);
        let version = cri::VersionRequest::default().encode_to_vec();
        let id = h.start_with(VERSION, bearer("t0ken"), &version);
        let status = h.answer(id).status;
        assert_eq!(status.code, Code::Unauthenticated);
        assert!(
            status
                .message
                .contains("credentials on a plaintext connection"),
            "{status:?}"
        );
        assert_eq!(h.call(VERSION, &version).status.code, Code::Ok);
    }

    #[test]
    fn a_handshake_past_its_deadline_closes_the_connection() {
        let mut h = Harness::with_access(Peer::Tcp, ops_access());
        let (acceptor, client) = make_certs(&h.dir.join("pki"));
        h.tcp(Some((&acceptor, client)));
        let deadline = h.conn.poll_timeout().unwrap();
        assert!(!h.conn.is_done());
        let at = deadline.max(Instant::now() + acceptor.handshake_timeout);
        h.with_ctx(|conn, ctx| conn.handle_timeout(ctx, at));
        assert!(h.conn.is_done());
    }
}
