//! The streaming server: the URLs that Exec, Attach and PortForward
//! answer lead here. The protocols are the core's
//! ([`crisp_core::streaming::Session`]); this module moves bytes between
//! the client's socket and what the session stands for — an exec'd
//! process's pipes or pty, a container's monitor, TCP connections inside
//! the pod — all on the event loop, edge-triggered, with bounded buffers
//! both ways. Starting a process or connecting in a pod's network
//! namespace can block, so it runs on the worker pool
//! ([`Started`] comes back through [`crate::workers::Done::Streaming`]).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use crisp_core::grpc::Status;
use crisp_core::remotecommand::{self as rc, TerminalSize};
use crisp_core::streaming::{self, Event, Kind, Output, Session, Tokens};
use crisp_core::upgrade::{self, Parsed};
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crisp_monitor::attach;

use crate::config::Config;
use crate::pods::{container, Host};
use crate::workers::{Done, Workers};

/// Tokens at and above this are the streaming server's (sockets, pipes,
/// pidfds); below are the gRPC side's.
pub const FIRST_TOKEN: usize = 1 << 40;

/// Stop reading a source while this much is waiting for its destination.
const HIGH_WATER: usize = 1 << 20;
/// A client must send its upgrade request within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the process exits, how long its output may still trickle in (a
/// background child can hold the pipe open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// After our last byte, how long we read (and drop) what the client still
/// sends before closing: closing with unread input sends a TCP reset,
/// which can destroy our last bytes (the exit status) in the client's
/// receive buffer.
const LINGER: Duration = Duration::from_secs(2);

/// What a URL's token stands for: the session's kind, and what to start.
#[derive(Clone, Debug)]
pub struct Ticket {
    pub kind: Kind,
    pub target: Target,
}

#[derive(Clone, Debug)]
pub enum Target {
    Exec {
        container: String,
        cmd: Vec<String>,
    },
    Attach {
        container: String,
    },
    /// The pod's network namespace (`None`: the host's) and its ID.
    PortForward {
        pod: String,
        netns: Option<PathBuf>,
    },
}

/// What Exec, Attach and PortForward need from the server: where it is,
/// and the table their tokens go into.
#[derive(Clone)]
pub struct Handle {
    pub addr: SocketAddr,
    pub tickets: Arc<Mutex<Tokens<Ticket>>>,
}

impl Handle {
    /// A fresh URL for `ticket`.
    pub fn url(&self, ticket: Ticket, now: Instant) -> Result<String, Status> {
        let entropy = crate::pods::entropy();
        let token: String = entropy[..16].iter().map(|b| format!("{b:02x}")).collect();
        let path = match ticket.kind {
            Kind::Exec(_) => "exec",
            Kind::Attach(_) => "attach",
            Kind::PortForward => "portforward",
        };
        self.tickets
            .lock()
            .map_err(|_| Status::internal("the streaming token table is poisoned"))?
            .insert(token.clone(), ticket, now)?;
        Ok(format!("http://{}/{path}/{token}", self.addr))
    }
}

/// What a worker came back with.
pub enum Started {
    Exec(Result<container::StreamingExec, Status>),
    /// The monitor's connection, and whether the client's end of stdin
    /// closes the container's (`stdin_once` without a tty, as containerd).
    Attach(Result<(std::os::unix::net::UnixStream, bool), Status>),
    Port {
        conn: u32,
        port: u16,
        result: Result<std::net::TcpStream, String>,
    },
}

/// Which descriptor a mio token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Socket,
    Stdin,
    Stdout,
    Stderr,
    Pidfd,
    Monitor,
    Port(u32),
}

/// Readiness seen on a descriptor since it last said WouldBlock.
#[derive(Clone, Copy, Debug, Default)]
struct Ready {
    read: bool,
    write: bool,
}

struct Fd {
    fd: OwnedFd,
    token: usize,
    ready: Ready,
}

/// An exec'd process.
struct Process {
    pid: Pid,
    pidfd: Option<Fd>,
    stdin: Option<Fd>,
    stdout: Option<Fd>,
    stderr: Option<Fd>,
    tty: bool,
    exit: Option<i32>,
    drain_until: Option<Instant>,
}

/// A connection to the container's monitor, for attach.
struct Monitor {
    stream: Fd,
    /// Frames read, not yet whole.
    input: BytesMut,
    /// Frames not yet written to the monitor.
    out: BytesMut,
    exit: Option<i32>,
    eof: bool,
    /// The client's end of stdin closes the container's.
    close_stdin: bool,
    /// STDIN_CLOSE is queued.
    stdin_closed: bool,
}

/// A forwarded TCP connection inside the pod.
struct Port {
    stream: Option<(TcpStream, usize, Ready)>,
    /// Client bytes not yet written to the pod.
    to_pod: BytesMut,
    client_eof: bool,
    shut_write: bool,
    pod_eof: bool,
}

enum Work {
    /// Waiting for the client's streams, or for a worker.
    Idle,
    Starting,
    Exec(Process),
    Attach(Monitor),
    /// Nothing left to run (it failed or ended).
    Over,
}

struct Conn {
    socket: TcpStream,
    socket_token: usize,
    socket_ready: Ready,
    read_closed: bool,
    /// The upgrade request so far; `None` once it is complete.
    handshake: Option<Vec<u8>>,
    /// A complete request (and the bytes after it) awaiting its ticket.
    upgrade: Option<(upgrade::UpgradeRequest, Vec<u8>)>,
    handshake_deadline: Instant,
    session: Option<Session>,
    target: Option<Target>,
    out: BytesMut,
    /// Written everything and then close (a refused request).
    close_after_flush: bool,
    work: Work,
    stdin: BytesMut,
    stdin_eof: bool,
    resize: Option<TerminalSize>,
    ports: BTreeMap<u32, Port>,
    /// Our side is shut down; the socket closes at the client's EOF or at
    /// this time.
    linger_until: Option<Instant>,
}

/// The listener and every session.
pub struct StreamServer {
    listener: TcpListener,
    handle: Handle,
    config: streaming::Config,
    max_sessions: usize,
    host: Arc<Host>,
    conns: HashMap<usize, Conn>,
    /// mio token → (connection, descriptor).
    sources: HashMap<usize, (usize, Source)>,
    next_token: usize,
}

impl StreamServer {
    /// Binds the listener (a free port when the config says 0).
    pub fn bind(config: &Config, host: Arc<Host>) -> io::Result<Self> {
        let addr = config
            .streaming_addr()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let s = &config.streaming;
        Ok(Self {
            listener,
            handle: Handle {
                addr,
                tickets: Arc::new(Mutex::new(Tokens::new(
                    Duration::from_secs(s.token_ttl_secs),
                    s.max_tokens,
                ))),
            },
            config: streaming::Config::default(),
            max_sessions: s.max_sessions,
            host,
            conns: HashMap::new(),
            sources: HashMap::new(),
            next_token: FIRST_TOKEN,
        })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)
    }

    fn token(&mut self, conn: usize, source: Source) -> usize {
        let t = self.next_token;
        self.next_token += 1;
        self.sources.insert(t, (conn, source));
        t
    }

    /// Accepts every waiting client.
    pub fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (mut socket, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "streaming accept failed");
                    return;
                }
            };
            if self.conns.len() >= self.max_sessions {
                tracing::warn!(%peer, limit = self.max_sessions, "too many streaming sessions; closing new one");
                continue;
            }
            let _ = socket.set_nodelay(true);
            let id = self.next_token;
            let token = self.token(id, Source::Socket);
            if let Err(e) = registry.register(
                &mut socket,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "cannot register a streaming connection");
                self.sources.remove(&token);
                continue;
            }
            self.conns.insert(
                id,
                Conn {
                    socket,
                    socket_token: token,
                    socket_ready: Ready {
                        read: true,
                        write: true,
                    },
                    read_closed: false,
                    handshake: Some(Vec::new()),
                    upgrade: None,
                    handshake_deadline: now + HANDSHAKE_TIMEOUT,
                    session: None,
                    target: None,
                    out: BytesMut::new(),
                    close_after_flush: false,
                    work: Work::Idle,
                    stdin: BytesMut::new(),
                    stdin_eof: false,
                    resize: None,
                    ports: BTreeMap::new(),
                    linger_until: None,
                },
            );
        }
    }

    /// Readiness on one of our descriptors.
    pub fn ready(
        &mut self,
        token: usize,
        event: &mio::event::Event,
        registry: &Registry,
        workers: &Workers,
        now: Instant,
    ) {
        let Some(&(id, source)) = self.sources.get(&token) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let read = event.is_readable() || event.is_read_closed() || event.is_error();
        let write = event.is_writable() || event.is_write_closed() || event.is_error();
        match source {
            Source::Socket => mark(&mut conn.socket_ready, read, write),
            Source::Stdin | Source::Stdout | Source::Stderr | Source::Pidfd => {
                if let Work::Exec(p) = &mut conn.work {
                    let fd = match source {
                        Source::Stdin => p.stdin.as_mut(),
                        Source::Stdout => p.stdout.as_mut(),
                        Source::Stderr => p.stderr.as_mut(),
                        _ => p.pidfd.as_mut(),
                    };
                    if let Some(fd) = fd {
                        mark(&mut fd.ready, read, write);
                    }
                }
            }
            Source::Monitor => {
                if let Work::Attach(m) = &mut conn.work {
                    mark(&mut m.stream.ready, read, write);
                }
            }
            Source::Port(c) => {
                if let Some((_, _, ready)) = conn.ports.get_mut(&c).and_then(|p| p.stream.as_mut())
                {
                    mark(ready, read, write);
                }
            }
        }
        self.pump(id, registry, workers, now);
    }

    /// A worker's result for connection `id`.
    pub fn started(
        &mut self,
        id: usize,
        started: Started,
        registry: &Registry,
        workers: &Workers,
        now: Instant,
    ) {
        if !self.conns.contains_key(&id) {
            // The client left meanwhile: undo what the worker did.
            if let Started::Exec(Ok(e)) = started {
                let _ = kill(e.pid, Signal::SIGKILL);
                let _ = waitpid(e.pid, None);
            }
            return;
        }
        match started {
            Started::Exec(Ok(e)) => {
                let gone = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.session.as_ref())
                    .is_none_or(Session::is_done);
                if gone {
                    // The client left while it started: it goes too, and
                    // is reaped through its pidfd like any other.
                    let _ = kill(e.pid, Signal::SIGKILL);
                }
                let mut reg = |fd: Option<OwnedFd>, source: Source, interest: Interest| {
                    fd.and_then(|fd| self.watch(id, fd, source, interest, registry))
                };
                let pidfd = crate::pods::pidfd_open(e.pid.as_raw())
                    .ok()
                    .and_then(|fd| reg(Some(fd), Source::Pidfd, Interest::READABLE));
                let process = Process {
                    pid: e.pid,
                    pidfd,
                    stdin: reg(e.stdin, Source::Stdin, Interest::WRITABLE),
                    stdout: reg(e.stdout, Source::Stdout, Interest::READABLE),
                    stderr: reg(e.stderr, Source::Stderr, Interest::READABLE),
                    tty: e.tty,
                    exit: None,
                    drain_until: None,
                };
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.work = Work::Exec(process);
                }
            }
            Started::Attach(Ok((stream, close_stdin))) => {
                let _ = stream.set_nonblocking(true);
                let with_stdin = matches!(
                    self.conns.get(&id).and_then(|c| c.session.as_ref()).map(Session::kind),
                    Some(Kind::Attach(o)) if o.stdin
                );
                let fd = OwnedFd::from(stream);
                let watched = self.watch(
                    id,
                    fd,
                    Source::Monitor,
                    Interest::READABLE | Interest::WRITABLE,
                    registry,
                );
                if let (Some(conn), Some(stream)) = (self.conns.get_mut(&id), watched) {
                    let mut out = BytesMut::new();
                    if with_stdin {
                        // Marks this client as a stdin writer, for the
                        // monitor's `stdin_once`, before it types anything.
                        out.extend_from_slice(&attach::encode_header(attach::STDIN, 0));
                    }
                    conn.work = Work::Attach(Monitor {
                        stream,
                        input: BytesMut::new(),
                        out,
                        exit: None,
                        eof: false,
                        close_stdin,
                        stdin_closed: false,
                    });
                }
            }
            Started::Exec(Err(s)) | Started::Attach(Err(s)) => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.work = Work::Over;
                    if let Some(session) = conn.session.as_mut() {
                        session.finish(Err(s.message));
                    }
                }
            }
            Started::Port {
                conn: c,
                port,
                result,
            } => {
                let pod = match self.conns.get(&id).and_then(|c| c.target.as_ref()) {
                    Some(Target::PortForward { pod, .. }) => pod.clone(),
                    _ => String::new(),
                };
                match result {
                    Ok(stream) => {
                        let _ = stream.set_nonblocking(true);
                        let mut stream = TcpStream::from_std(stream);
                        let token = self.token(id, Source::Port(c));
                        let registered = registry.register(
                            &mut stream,
                            Token(token),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                        let Some(conn) = self.conns.get_mut(&id) else {
                            return;
                        };
                        match (registered, conn.ports.get_mut(&c)) {
                            (Ok(()), Some(p)) => {
                                p.stream = Some((
                                    stream,
                                    token,
                                    Ready {
                                        read: true,
                                        write: true,
                                    },
                                ))
                            }
                            (r, _) => {
                                let _ = registry.deregister(&mut stream);
                                self.sources.remove(&token);
                                if let Err(e) = r {
                                    if let Some(s) = conn.session.as_mut() {
                                        let msg =
                                            rc::port_forward_error(port, &pod, &e.to_string());
                                        s.port_error(c, &String::from_utf8_lossy(&msg));
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(pod, port, error = %e, "port-forward connect failed");
                        if let Some(conn) = self.conns.get_mut(&id) {
                            conn.ports.remove(&c);
                            if let Some(s) = conn.session.as_mut() {
                                let msg = rc::port_forward_error(port, &pod, &e);
                                s.port_error(c, &String::from_utf8_lossy(&msg));
                            }
                        }
                    }
                }
            }
        }
        self.pump(id, registry, workers, now);
    }

    fn watch(
        &mut self,
        id: usize,
        fd: OwnedFd,
        source: Source,
        interest: Interest,
        registry: &Registry,
    ) -> Option<Fd> {
        let token = self.token(id, source);
        let raw = fd.as_raw_fd();
        match registry.register(&mut SourceFd(&raw), Token(token), interest) {
            Ok(()) => Some(Fd {
                fd,
                token,
                ready: Ready {
                    read: true,
                    write: true,
                },
            }),
            Err(e) => {
                tracing::warn!(error = %e, ?source, "cannot watch a streaming descriptor");
                self.sources.remove(&token);
                None
            }
        }
    }

    /// The earliest timer of any session.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .flat_map(|c| {
                let handshake = c.handshake.is_some().then_some(c.handshake_deadline);
                let session = c.session.as_ref().and_then(|s| s.poll_timeout());
                let drain = match &c.work {
                    Work::Exec(p) => p.drain_until,
                    _ => None,
                };
                [handshake, session, drain, c.linger_until]
            })
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, registry: &Registry, workers: &Workers, now: Instant) {
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let handshake = c.handshake.is_some() && c.handshake_deadline <= now;
                let session = c
                    .session
                    .as_ref()
                    .and_then(|s| s.poll_timeout())
                    .is_some_and(|at| at <= now);
                let drain =
                    matches!(&c.work, Work::Exec(p) if p.drain_until.is_some_and(|at| at <= now));
                handshake || session || drain
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(conn) = self.conns.get_mut(&id) {
                if conn.handshake.is_some() && conn.handshake_deadline <= now {
                    conn.handshake = None;
                    conn.close_after_flush = true;
                }
                if let Some(s) = conn.session.as_mut() {
                    s.handle_timeout(now);
                }
                if let Work::Exec(p) = &mut conn.work {
                    if p.drain_until.is_some_and(|at| at <= now) {
                        // Output still open after the exit: give up on it.
                        p.stdout = None;
                        p.stderr = None;
                    }
                }
            }
            self.pump(id, registry, workers, now);
        }
    }

    /// Stops everything (shutdown): exec'd processes are killed and reaped.
    pub fn close_all(&mut self, registry: &Registry) {
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(mut conn) = self.conns.remove(&id) {
                if let Work::Exec(p) = &mut conn.work {
                    if p.exit.is_none() {
                        let _ = kill(p.pid, Signal::SIGKILL);
                        let _ = waitpid(p.pid, None);
                    }
                }
                self.drop_conn(conn, registry);
            }
        }
    }

    /// Moves bytes for connection `id` until nothing more can move, then
    /// closes it if it is finished.
    fn pump(&mut self, id: usize, registry: &Registry, workers: &Workers, now: Instant) {
        for _ in 0..64 {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let mut progress = conn.read_socket(now);
            if let Some((req, rest)) = conn.upgrade.take() {
                self.open_session(id, &req, &rest, now);
            }
            progress |= self.apply_events(id, registry, workers);
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            progress |= conn.move_work(now);
            progress |= conn.write_socket();
            if !progress {
                break;
            }
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.is_finished() {
            return;
        }
        if conn.linger_until.is_none() && !conn.read_closed {
            let _ = conn.socket.shutdown(std::net::Shutdown::Write);
            conn.linger_until = Some(now + LINGER);
        }
        if !conn.read_closed {
            conn.discard_input();
        }
        if conn.read_closed || conn.linger_until.is_some_and(|at| now >= at) {
            if let Some(conn) = self.conns.remove(&id) {
                self.drop_conn(conn, registry);
            }
        }
    }

    /// The client's upgrade request is complete: its token decides.
    fn open_session(
        &mut self,
        id: usize,
        req: &upgrade::UpgradeRequest,
        rest: &[u8],
        now: Instant,
    ) {
        let ticket = self
            .handle
            .tickets
            .lock()
            .ok()
            .and_then(|mut t| t.take(&req.token, now));
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(ticket) = ticket else {
            return conn.refuse(http_error(404, "unknown or expired streaming token"));
        };
        match Session::new(req, ticket.kind, &self.config, now) {
            Ok(mut s) => {
                if !rest.is_empty() {
                    s.recv(rest, now);
                }
                conn.session = Some(s);
                conn.target = Some(ticket.target);
            }
            Err(refusal) => conn.refuse(http_error(refusal.status, &refusal.reason)),
        }
    }

    /// Deregisters and closes everything of a finished connection.
    fn drop_conn(&mut self, mut conn: Conn, registry: &Registry) {
        let _ = registry.deregister(&mut conn.socket);
        self.sources.remove(&conn.socket_token);
        let mut fds: Vec<Fd> = Vec::new();
        match std::mem::replace(&mut conn.work, Work::Over) {
            Work::Exec(p) => {
                fds.extend([p.pidfd, p.stdin, p.stdout, p.stderr].into_iter().flatten())
            }
            Work::Attach(m) => fds.push(m.stream),
            _ => {}
        }
        for fd in fds {
            let raw = fd.fd.as_raw_fd();
            let _ = registry.deregister(&mut SourceFd(&raw));
            self.sources.remove(&fd.token);
        }
        for (_, port) in std::mem::take(&mut conn.ports) {
            if let Some((mut s, token, _)) = port.stream {
                let _ = registry.deregister(&mut s);
                self.sources.remove(&token);
            }
        }
        // Tokens of descriptors closed earlier (a pipe at EOF).
        self.sources.retain(|_, (c, _)| *c != conn.socket_token);
    }

    /// Acts on the session's events; `true` when there were any.
    fn apply_events(&mut self, id: usize, registry: &Registry, workers: &Workers) -> bool {
        let mut any = false;
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return any;
            };
            let Some(event) = conn.session.as_mut().and_then(Session::poll_event) else {
                return any;
            };
            any = true;
            match event {
                Event::Start => {
                    let Some(target) = conn.target.clone() else {
                        continue;
                    };
                    conn.work = Work::Starting;
                    let kind = conn.session.as_ref().map(Session::kind);
                    // A resize that came with the streams sizes the pty
                    // before the process starts.
                    let size = conn.resize.map(|s| (s.width, s.height));
                    let host = Arc::clone(&self.host);
                    let job = move || {
                        let started = match (target, kind) {
                            (Target::Exec { container, cmd }, Some(Kind::Exec(o))) => {
                                Started::Exec(container::exec_streaming(
                                    &host, &container, cmd, o, size,
                                ))
                            }
                            (Target::Attach { container }, Some(Kind::Attach(o))) => {
                                let close_stdin =
                                    !o.tty && container::stdin_once(&host, &container);
                                Started::Attach(
                                    container::attach(&host, &container).map(|s| (s, close_stdin)),
                                )
                            }
                            _ => {
                                Started::Exec(Err(Status::internal("mismatched streaming ticket")))
                            }
                        };
                        Done::Streaming { conn: id, started }
                    };
                    if workers.submit_done(job).is_err() {
                        conn.work = Work::Over;
                        if let Some(s) = conn.session.as_mut() {
                            s.finish(Err("crispd is too busy to start the command".into()));
                        }
                    }
                }
                Event::Stdin(data) => {
                    if !conn.stdin_eof {
                        conn.stdin.extend_from_slice(&data);
                    }
                }
                Event::StdinEof => conn.stdin_eof = true,
                Event::Resize(size) => conn.resize = Some(size),
                Event::PortOpen { conn: c, port } => {
                    conn.ports.insert(
                        c,
                        Port {
                            stream: None,
                            to_pod: BytesMut::new(),
                            client_eof: false,
                            shut_write: false,
                            pod_eof: false,
                        },
                    );
                    let netns = match &conn.target {
                        Some(Target::PortForward { netns, .. }) => netns.clone(),
                        _ => None,
                    };
                    let job = move || Done::Streaming {
                        conn: id,
                        started: Started::Port {
                            conn: c,
                            port,
                            result: connect_in(netns, port),
                        },
                    };
                    if workers.submit_done(job).is_err() {
                        conn.ports.remove(&c);
                        if let Some(s) = conn.session.as_mut() {
                            s.port_error(c, "crispd is too busy to forward the port");
                        }
                    }
                }
                Event::PortData { conn: c, data } => {
                    if let Some(p) = conn.ports.get_mut(&c) {
                        p.to_pod.extend_from_slice(&data);
                    }
                }
                Event::PortEof { conn: c } => {
                    if let Some(p) = conn.ports.get_mut(&c) {
                        p.client_eof = true;
                    }
                }
                Event::PortClosed { conn: c } => {
                    if let Some(p) = conn.ports.remove(&c) {
                        if let Some((mut s, token, _)) = p.stream {
                            let _ = registry.deregister(&mut s);
                            self.sources.remove(&token);
                        }
                    }
                }
                Event::Ended(why) => {
                    tracing::debug!(why, "streaming session ended by the client");
                    // A client that leaves takes its process along; the
                    // connection stays until it is reaped.
                    if let Work::Exec(p) = &mut conn.work {
                        if p.exit.is_none() {
                            let _ = kill(p.pid, Signal::SIGKILL);
                        }
                        p.stdin = None;
                    }
                }
            }
        }
    }
}

fn mark(ready: &mut Ready, read: bool, write: bool) {
    ready.read |= read;
    ready.write |= write;
}

impl Conn {
    fn is_finished(&self) -> bool {
        // A write error clears `out`: a client that is gone is flushed.
        let flushed = self.out.is_empty();
        if self.close_after_flush {
            return flushed;
        }
        if self.upgrade.is_some() {
            return false;
        }
        let Some(session) = &self.session else {
            return self.read_closed;
        };
        let reaped = match &self.work {
            Work::Exec(p) => p.exit.is_some(),
            Work::Starting => false,
            _ => true,
        };
        session.is_done() && reaped && flushed
    }

    /// While lingering: reads and drops what the client sends, until EOF.
    fn discard_input(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.socket.read(&mut buf) {
                Ok(0) => return self.read_closed = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.read_closed = true,
            }
        }
    }

    /// Reads the client; `true` when something was read.
    fn read_socket(&mut self, now: Instant) -> bool {
        if !self.socket_ready.read
            || self.read_closed
            || self.backlogged()
            || self.linger_until.is_some()
        {
            return false;
        }
        let mut buf = [0u8; 16 * 1024];
        let mut any = false;
        for _ in 0..16 {
            match self.socket.read(&mut buf) {
                Ok(0) => {
                    self.read_closed = true;
                    if let Some(s) = self.session.as_mut() {
                        s.peer_closed();
                    }
                    return true;
                }
                Ok(n) => {
                    any = true;
                    self.on_bytes(&buf[..n], now);
                    if self.backlogged() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket_ready.read = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.read_closed = true;
                    if let Some(s) = self.session.as_mut() {
                        s.peer_closed();
                    }
                    return true;
                }
            }
        }
        any
    }

    /// Client bytes waiting for a slow process or pod connection.
    fn backlogged(&self) -> bool {
        self.stdin.len() > HIGH_WATER || self.ports.values().any(|p| p.to_pod.len() > HIGH_WATER)
    }

    fn on_bytes(&mut self, data: &[u8], now: Instant) {
        if let Some(session) = self.session.as_mut() {
            session.recv(data, now);
            return;
        }
        let Some(buf) = self.handshake.as_mut() else {
            return;
        };
        buf.extend_from_slice(data);
        match upgrade::parse_request(buf, &upgrade::Limits::default()) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::Complete(req, used)) => {
                let rest = buf.get(used..).unwrap_or(&[]).to_vec();
                self.handshake = None;
                self.upgrade = Some((req, rest));
            }
            Err(rejection) => {
                self.handshake = None;
                self.refuse(rejection.response());
            }
        }
    }

    fn refuse(&mut self, response: Vec<u8>) {
        self.out.extend_from_slice(&response);
        self.close_after_flush = true;
    }

    /// Process, monitor and pod side; `true` on progress.
    fn move_work(&mut self, now: Instant) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        let room = self.out.len() < HIGH_WATER;
        let mut progress = false;
        match &mut self.work {
            Work::Exec(p) => {
                // A resize before the input that came with it: what the
                // client types next may ask for the terminal's size.
                if let (Some(size), true) = (self.resize.take(), p.tty) {
                    if let Some(fd) = p.stdout.as_ref() {
                        crate::pods::set_window_size(fd.fd.as_fd(), size.width, size.height);
                    }
                }
                progress |= pump_stdin(p.stdin.as_mut(), &mut self.stdin);
                if self.stdin_eof && self.stdin.is_empty() && p.stdin.is_some() && !p.tty {
                    p.stdin = None;
                    progress = true;
                }
                for which in [Output::Stdout, Output::Stderr] {
                    let slot = match which {
                        Output::Stdout => &mut p.stdout,
                        Output::Stderr => &mut p.stderr,
                    };
                    if room {
                        if let Some(fd) = slot.as_mut() {
                            match read_some(fd, |d| session.send_output(which, d)) {
                                ReadResult::Eof => {
                                    *slot = None;
                                    session.close_output(which);
                                    progress = true;
                                }
                                ReadResult::Read => progress = true,
                                ReadResult::Blocked => {}
                            }
                        }
                    }
                }
                if p.exit.is_none() && p.pidfd.as_ref().is_none_or(|f| f.ready.read) {
                    match waitpid(p.pid, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::Exited(_, c)) => p.exit = Some(c),
                        Ok(WaitStatus::Signaled(_, s, _)) => p.exit = Some(128 + s as i32),
                        Ok(_) => {
                            if let Some(f) = p.pidfd.as_mut() {
                                f.ready.read = false;
                            }
                        }
                        Err(_) => p.exit = Some(crate::pods::UNKNOWN_CODE),
                    }
                    if p.exit.is_some() {
                        p.pidfd = None;
                        p.drain_until = Some(now + DRAIN_TIMEOUT);
                        progress = true;
                    }
                }
                if let Some(code) = p.exit {
                    if p.stdout.is_none() && p.stderr.is_none() && !session.is_done() {
                        p.stdin = None;
                        p.drain_until = None;
                        session.finish(Ok(code));
                        progress = true;
                    }
                }
            }
            Work::Attach(m) => {
                let resize = self.resize.take();
                progress |= pump_monitor(m, session, &mut self.stdin, self.stdin_eof, resize, room);
            }
            Work::Idle | Work::Starting | Work::Over => {}
        }
        for (c, port) in self.ports.iter_mut() {
            progress |= pump_port(*c, port, session, room);
        }
        progress
    }

    /// Writes to the client; `true` when something was written.
    fn write_socket(&mut self) -> bool {
        if let Some(s) = self.session.as_mut() {
            while self.out.len() < HIGH_WATER * 2 {
                match s.poll_transmit() {
                    Some(b) => self.out.extend_from_slice(&b),
                    None => break,
                }
            }
        }
        let mut any = false;
        while !self.out.is_empty() && self.socket_ready.write {
            match self.socket.write(&self.out) {
                Ok(0) => break,
                Ok(n) => {
                    self.out.advance(n);
                    any = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.socket_ready.write = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.out.clear();
                    self.read_closed = true;
                    if let Some(s) = self.session.as_mut() {
                        s.peer_closed();
                    }
                    any = true;
                }
            }
        }
        any
    }
}

enum ReadResult {
    Read,
    Eof,
    Blocked,
}

/// Reads what `fd` has (up to a few buffers), handing it to `sink`.
fn read_some(fd: &mut Fd, mut sink: impl FnMut(&[u8])) -> ReadResult {
    if !fd.ready.read {
        return ReadResult::Blocked;
    }
    let mut buf = [0u8; 32 * 1024];
    let mut read = false;
    for _ in 0..4 {
        match nix::unistd::read(&fd.fd, &mut buf) {
            Ok(0) => return ReadResult::Eof,
            Ok(n) => {
                read = true;
                sink(buf.get(..n).unwrap_or(&[]));
            }
            Err(nix::errno::Errno::EAGAIN) => {
                fd.ready.read = false;
                break;
            }
            Err(nix::errno::Errno::EINTR) => {}
            // EIO: a pty whose other side is closed.
            Err(_) => return ReadResult::Eof,
        }
    }
    if read {
        ReadResult::Read
    } else {
        ReadResult::Blocked
    }
}

/// Writes buffered stdin to the process; `true` on progress.
fn pump_stdin(fd: Option<&mut Fd>, buf: &mut BytesMut) -> bool {
    let Some(fd) = fd else {
        // Nobody reads stdin: what the client sends is dropped.
        let had = !buf.is_empty();
        buf.clear();
        return had;
    };
    let mut progress = false;
    while !buf.is_empty() && fd.ready.write {
        match nix::unistd::write(&fd.fd, buf) {
            Ok(n) => {
                buf.advance(n);
                progress = true;
            }
            Err(nix::errno::Errno::EAGAIN) => fd.ready.write = false,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                buf.clear();
                progress = true;
            }
        }
    }
    progress
}

/// Attach: client stdin, resizes and the end of stdin to the monitor as
/// frames (see crisp-monitor's `attach`), its output frames and the exit
/// back to the session.
fn pump_monitor(
    m: &mut Monitor,
    session: &mut Session,
    stdin: &mut BytesMut,
    stdin_eof: bool,
    resize: Option<TerminalSize>,
    room: bool,
) -> bool {
    let mut progress = false;
    // To the monitor. The monitor stops reading a client while the
    // container does not read its stdin: then `out` fills, the client's
    // stdin waits in `stdin`, and at last crispd stops reading the client.
    if let Some(size) = resize {
        m.out
            .extend_from_slice(&attach::encode_header(attach::RESIZE, 4));
        m.out.extend_from_slice(&size.width.to_be_bytes());
        m.out.extend_from_slice(&size.height.to_be_bytes());
        progress = true;
    }
    while !stdin.is_empty() && m.out.len() < HIGH_WATER {
        let n = stdin.len().min(attach::MAX_PAYLOAD as usize);
        m.out
            .extend_from_slice(&attach::encode_header(attach::STDIN, n as u32));
        m.out.extend_from_slice(&stdin.split_to(n));
        progress = true;
    }
    if stdin_eof && stdin.is_empty() && m.close_stdin && !m.stdin_closed {
        m.out
            .extend_from_slice(&attach::encode_header(attach::STDIN_CLOSE, 0));
        m.stdin_closed = true;
        progress = true;
    }
    while !m.out.is_empty() && m.stream.ready.write && !m.eof {
        match nix::unistd::write(&m.stream.fd, &m.out) {
            Ok(n) => {
                m.out.advance(n);
                progress = true;
            }
            Err(nix::errno::Errno::EAGAIN) => m.stream.ready.write = false,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                m.out.clear();
                m.eof = true;
            }
        }
    }
    // From the monitor: output and the exit.
    if room && !m.eof && m.stream.ready.read {
        let mut buf = [0u8; 32 * 1024];
        match nix::unistd::read(&m.stream.fd, &mut buf) {
            Ok(0) => m.eof = true,
            Ok(n) => m.input.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            Err(nix::errno::Errno::EAGAIN) => m.stream.ready.read = false,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => m.eof = true,
        }
        progress = true;
    }
    while let Some(head) = m.input.get(..attach::HEADER_LEN) {
        let mut h = [0u8; attach::HEADER_LEN];
        h.copy_from_slice(head);
        let Some((kind, len)) = attach::decode_header(&h) else {
            m.eof = true;
            break;
        };
        let len = len as usize;
        if m.input.len() < attach::HEADER_LEN + len {
            break;
        }
        m.input.advance(attach::HEADER_LEN);
        let payload = m.input.split_to(len);
        match (kind, payload.get(..4)) {
            (attach::STDOUT, _) => session.send_output(Output::Stdout, &payload),
            (attach::STDERR, _) => session.send_output(Output::Stderr, &payload),
            (attach::EXIT, Some(&[a, b, c, d])) => m.exit = Some(i32::from_be_bytes([a, b, c, d])),
            _ => {}
        }
        progress = true;
    }
    if stdin_eof && stdin.is_empty() && !m.close_stdin && !session.is_done() {
        // The client's stdin ended and the container's stays open: the
        // client is detached, its output ends (containerd's rule), and
        // the attach ends well.
        session.finish(Ok(0));
        m.eof = true;
        return true;
    }
    if (m.eof || m.exit.is_some()) && !session.is_done() {
        session.finish(match m.exit {
            Some(code) => Ok(code),
            None => Err("the container's monitor closed the attach connection (a client too slow for the container's output is dropped)".into()),
        });
        progress = true;
    }
    progress
}

/// One forwarded connection: client bytes in, pod bytes out.
fn pump_port(c: u32, p: &mut Port, session: &mut Session, room: bool) -> bool {
    let Some((stream, _, ready)) = p.stream.as_mut() else {
        return false;
    };
    let mut progress = false;
    while !p.to_pod.is_empty() && ready.write {
        match stream.write(&p.to_pod) {
            Ok(n) => {
                p.to_pod.advance(n);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.write = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                p.to_pod.clear();
                progress = true;
            }
        }
    }
    if p.client_eof && p.to_pod.is_empty() && !p.shut_write {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        p.shut_write = true;
        progress = true;
    }
    if room && ready.read && !p.pod_eof {
        let mut buf = [0u8; 32 * 1024];
        for _ in 0..4 {
            match stream.read(&mut buf) {
                Ok(0) => {
                    p.pod_eof = true;
                    session.port_eof(c);
                    progress = true;
                    break;
                }
                Ok(n) => {
                    session.port_data(c, buf.get(..n).unwrap_or(&[]));
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready.read = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    p.pod_eof = true;
                    session.port_error(c, &e.to_string());
                    progress = true;
                    break;
                }
            }
        }
    }
    progress
}

/// Connects to `port` on the loopback of network namespace `netns` (the
/// host's when `None`), as kubelet's port forwarding does: a short-lived
/// thread joins the namespace, so no other thread ever changes namespace.
fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<std::net::TcpStream, String> {
    let connect = move || -> Result<std::net::TcpStream, String> {
        if let Some(path) = &netns {
            let ns = std::fs::File::open(path)
                .map_err(|e| format!("open network namespace {}: {e}", path.display()))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("join network namespace {}: {e}", path.display()))?;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("dial tcp4 {addr}: {e}"))
    };
    match std::thread::Builder::new()
        .name("crispd-portfwd".into())
        .spawn(connect)
    {
        Ok(t) => t
            .join()
            .unwrap_or_else(|_| Err("the connecting thread panicked".into())),
        Err(e) => Err(format!("cannot start a thread: {e}")),
    }
}

fn http_error(status: u16, reason: &str) -> Vec<u8> {
    upgrade::Rejection {
        status,
        reason: reason.to_string(),
        headers: Vec::new(),
    }
    .response()
}
