//! The one event loop: listeners, connections, worker completions, timers
//! and signals, all on one thread that never blocks on anything but
//! `poll`.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::hash::BuildHasherDefault;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crisp_core::grpc::json::JsonCodec;
use crisp_core::grpc::server::ServerConfig;
use crisp_core::grpc::Status;
use crisp_core::h2;
use mio::net::{TcpListener, UnixListener};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{umask, Mode};

use crate::config::Config;
use crate::conn::{Conn, Ctx, Socket};
use crate::cri_host::CriHost;
use crate::dispatch::Dispatcher;
use crate::error::{self, StartError};
use crate::exits::{self, ExitWatchers, Subject};
use crate::policy::{Peer, Policy};
use crate::streaming::{self, StreamServer};
use crate::tls::Acceptor;
use crate::workers::{Done, PoolSize, Workers};

const UNIX_LISTENER: Token = Token(0);
const TCP_LISTENER: Token = Token(1);
const WAKER: Token = Token(2);
const SIGNALS: Token = Token(3);
const STREAM_LISTENER: Token = Token(4);
const FIRST_CONN: usize = 16;

const READ_BUF: usize = 64 * 1024;

/// Everything the loop owns.
struct Daemon {
    config: Arc<Config>,
    poll: Poll,
    unix: Option<UnixListener>,
    tcp: Option<TcpListener>,
    /// TLS for new TCP connections (`[tls]`), reloaded on SIGHUP.
    tls: Option<Acceptor>,
    signals: SignalFd,
    workers: Workers,
    dispatcher: Dispatcher,
    cri: CriHost,
    /// Exec, attach and port-forward sessions (tokens from
    /// `streaming::FIRST_TOKEN` up).
    streams: StreamServer,
    /// Running containers' and sandbox holders' exits (tokens from
    /// `exits::FIRST_TOKEN` up to `streaming::FIRST_TOKEN`).
    exits: ExitWatchers,
    /// By token: looked up several times per call, so hashed with a
    /// multiply rather than SipHash (tokens are ours, not the peer's).
    conns: HashMap<usize, Conn, BuildHasherDefault<h2::StreamIdHasher>>,
    next_conn: usize,
    /// Each connection's next core deadline, earliest first.
    timers: BTreeSet<(Instant, usize)>,
    scheduled: HashMap<usize, Instant, BuildHasherDefault<h2::StreamIdHasher>>,
    server_config: ServerConfig,
    shutdown_at: Option<Instant>,
    /// When to write again the records whose last write failed (set while
    /// some did: see `RECORD_RETRY`).
    record_retry_at: Option<Instant>,
    /// The connection that last brought a request: while the loop spins it
    /// is read directly (see `wait`).
    hot: Option<usize>,
    /// Holds the runtime directory's lock (see `take_lock`).
    _lock: File,
}

/// Why `wait` returned.
enum Woke {
    /// `events` holds what the poll reported (possibly nothing: a timer).
    Events,
    /// Nothing was polled: the hot connection was read directly and must
    /// be settled.
    Hot(usize),
}

/// While spinning, the hot connection is read this many times per poll of
/// everything else.
const HOT_READS_PER_POLL: u32 = 4;
/// How often records whose write failed (a full state directory) are
/// written again, until they are durable: the retries are small writes,
/// and a kubelet sync period is longer.
const RECORD_RETRY: Duration = Duration::from_secs(2);

/// Start serving; returns when a shutdown completes.
pub fn run(config: Arc<Config>, policy: Policy) -> Result<(), StartError> {
    // Blocked in this thread before any other starts, so every thread
    // inherits the mask and the signals arrive only through the signalfd.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGHUP);
    mask.thread_block().map_err(error::sys("block signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(error::sys("create signalfd"))?;

    raise_fd_limit(config.max_connections);
    create_dir(&config.runtime_dir, 0o711)?;
    create_dir(&config.state_dir, 0o700)?;
    let tls = match &config.tls {
        Some(c) => Some(Acceptor::load(c).map_err(StartError::Tls)?),
        None => None,
    };
    let lock = take_lock(&config.runtime_dir)?;
    let unix = bind_unix(&config.socket, &config.socket_group)?;
    let tcp = match config.tcp_addr()? {
        Some(addr) => {
            Some(TcpListener::bind(addr).map_err(error::io(format!("listen on tcp://{addr}")))?)
        }
        None => None,
    };

    if tls.is_some() && tcp.is_none() {
        tracing::warn!("[tls] is set but tcp_listen is not: TLS serves nothing");
    }
    let poll = Poll::new().map_err(error::io("create poll"))?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(error::io("create waker"))?);
    let workers = Workers::new(
        PoolSize {
            threads: config.workers,
            queue: config.worker_queue,
        },
        PoolSize {
            threads: config.images.pull_workers,
            queue: config.images.pull_queue,
        },
        waker,
    )
    .map_err(error::io("start workers"))?;
    let mut dispatcher = Dispatcher::new(Arc::clone(&config), policy)?;
    let streams =
        StreamServer::bind(&config, Arc::clone(&dispatcher.host)).map_err(error::io(format!(
            "listen for streaming on {}:{}",
            config.streaming.address, config.streaming.port
        )))?;
    dispatcher.streaming = Some(streams.handle());
    let cri = CriHost::restore(Arc::clone(&dispatcher.host), Arc::clone(&dispatcher.in_use));
    let exits = ExitWatchers::new(Arc::clone(&dispatcher.host));

    let mut d = Daemon {
        server_config: server_config(&config),
        config,
        poll,
        unix: Some(unix),
        tcp,
        tls,
        signals,
        workers,
        dispatcher,
        cri,
        streams,
        exits,
        conns: HashMap::default(),
        next_conn: FIRST_CONN,
        timers: BTreeSet::new(),
        record_retry_at: None,
        scheduled: HashMap::default(),
        shutdown_at: None,
        hot: None,
        _lock: lock,
    };
    d.register_sources()?;
    tracing::info!(
        socket = %d.config.socket.display(),
        tcp = d.tcp.as_ref().and_then(|t| t.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default(),
        tls = d.tls.is_some(),
        cgroups = d.dispatcher.cgroup_mode().as_str(),
        streaming = %d.streams.handle().addr,
        version = env!("CARGO_PKG_VERSION"),
        "crispd serving"
    );
    d.serve()
}

fn server_config(config: &Config) -> ServerConfig {
    ServerConfig {
        h2: h2::Config {
            max_concurrent_streams: config.grpc.max_concurrent_streams,
            ..h2::Config::default()
        },
        max_recv_message_size: config.grpc.max_recv_message_size,
        json: match JsonCodec::new(crisp_proto::FILE_DESCRIPTOR_SET) {
            Ok(codec) => Some(codec),
            Err(e) => {
                tracing::warn!(error = %e, "application/grpc+json is not served");
                None
            }
        },
        ..ServerConfig::default()
    }
}

impl Daemon {
    fn register_sources(&mut self) -> Result<(), StartError> {
        let r = self.poll.registry();
        if let Some(l) = self.unix.as_mut() {
            r.register(l, UNIX_LISTENER, Interest::READABLE)
                .map_err(error::io("register with poll"))?;
        }
        if let Some(l) = self.tcp.as_mut() {
            r.register(l, TCP_LISTENER, Interest::READABLE)
                .map_err(error::io("register with poll"))?;
        }
        self.streams
            .register(r, STREAM_LISTENER)
            .map_err(error::io("register with poll"))?;
        let fd = self.signals.as_raw_fd();
        r.register(&mut SourceFd(&fd), SIGNALS, Interest::READABLE)
            .map_err(error::io("register with poll"))?;
        Ok(())
    }

    fn serve(&mut self) -> Result<(), StartError> {
        let mut events = Events::with_capacity(1024);
        let mut read_buf = vec![0u8; READ_BUF];
        let mut touched = Vec::new();
        let spin = Duration::from_micros(self.config.event_loop.spin_us);
        loop {
            match self.wait(&mut events, spin, &mut read_buf) {
                Ok(Woke::Events) => {}
                Ok(Woke::Hot(id)) => touched.push(id),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StartError::Poll(e)),
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    token @ (UNIX_LISTENER | TCP_LISTENER) => self.accept(token, &mut touched),
                    WAKER => {}
                    SIGNALS => self.on_signal(now, &mut touched),
                    STREAM_LISTENER => self.streams.accept(self.poll.registry(), now),
                    Token(id) if id >= streaming::FIRST_TOKEN => {
                        self.streams
                            .ready(id, event, self.poll.registry(), &self.workers, now)
                    }
                    Token(id) if id >= exits::FIRST_TOKEN => {
                        self.exits.ready(id, self.poll.registry())
                    }
                    Token(id) => {
                        let closed = event.is_read_closed() || event.is_error();
                        let readable = event.is_readable() || closed;
                        let open = self.with_conn(id, &mut read_buf, |conn, ctx| {
                            if readable {
                                conn.on_readable(ctx, now, closed);
                            }
                        });
                        if open.is_some() {
                            if readable {
                                self.hot = Some(id);
                            }
                            touched.push(id);
                        }
                    }
                }
            }
            let finished: Vec<Done> = self.workers.finished().collect();
            for done in finished {
                match done {
                    Done::Call { conn, call, reply } => {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.complete(call, reply);
                            touched.push(conn);
                        }
                    }
                    Done::Stream { conn, call, reply } => {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.complete_stream(call, reply);
                            touched.push(conn);
                        }
                    }
                    Done::Action { id, outcome } => self.cri.outcome(id, outcome),
                    Done::Notice(n) => self.cri.notice(n),
                    Done::Watch { subject, step } => {
                        let registry = self.poll.registry();
                        if let Some(n) = self.exits.done(subject, step, registry, now) {
                            self.cri.notice(n);
                        }
                    }
                    Done::Streaming { conn, started } => self.streams.started(
                        conn,
                        started,
                        self.poll.registry(),
                        &self.workers,
                        now,
                    ),
                }
            }
            if self.streams.poll_timeout().is_some_and(|at| at <= now) {
                self.streams
                    .handle_timeout(self.poll.registry(), &self.workers, now);
            }
            while let Some(&(at, id)) = self.timers.first() {
                if at > now {
                    break;
                }
                self.timers.pop_first();
                self.scheduled.remove(&id);
                let open = self.with_conn(id, &mut read_buf, |conn, ctx| {
                    conn.handle_timeout(ctx, now);
                });
                if open.is_some() {
                    touched.push(id);
                }
            }
            if self.record_retry_at.is_some_and(|at| at <= now) {
                self.record_retry_at = None;
                self.cri.retry_records();
            }
            self.drive_cri(&mut touched);
            if self.record_retry_at.is_none() && self.cri.has_failed_records() {
                self.record_retry_at = Some(now + RECORD_RETRY);
            }
            touched.sort_unstable();
            touched.dedup();
            for id in touched.drain(..) {
                self.settle(id);
            }
            if let Some(deadline) = self.shutdown_at {
                if self.conns.is_empty() {
                    self.streams.close_all(self.poll.registry());
                    tracing::info!("all connections closed; crispd stopped");
                    return Ok(());
                }
                if now >= deadline {
                    self.abandon_all();
                    self.streams.close_all(self.poll.registry());
                    tracing::warn!(
                        connections = self.conns.len(),
                        "shutdown timeout: closing remaining connections"
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Runs `f` on connection `id`, with a `Ctx` over the loop's parts;
    /// `None` when the connection is gone.
    fn with_conn<R>(
        &mut self,
        id: usize,
        read_buf: &mut [u8],
        f: impl FnOnce(&mut Conn, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let conn = self.conns.get_mut(&id)?;
        let mut ctx = Ctx {
            dispatcher: &self.dispatcher,
            cri: &mut self.cri,
            workers: &self.workers,
            read_buf,
        };
        Some(f(conn, &mut ctx))
    }

    /// Wait for events: first poll without sleeping for up to `spin` (see
    /// `event_loop.spin_us`), stopping early at the next timer, then block
    /// until an event or the next timer.
    ///
    /// While spinning, the hot connection (the last to bring a request) is
    /// also read directly, `HOT_READS_PER_POLL` times per poll: its next
    /// request is then served on the read that finds it, without a poll
    /// syscall before that read. Everything else is polled as usual.
    fn wait(
        &mut self,
        events: &mut Events,
        spin: Duration,
        read_buf: &mut [u8],
    ) -> io::Result<Woke> {
        let next = self.next_wake();
        if !spin.is_zero() {
            let start = Instant::now();
            let mut round = 0u32;
            loop {
                if round % HOT_READS_PER_POLL == 0 {
                    self.poll.poll(events, Some(Duration::ZERO))?;
                    if !events.is_empty() {
                        return Ok(Woke::Events);
                    }
                }
                round = round.wrapping_add(1);
                if let Some(id) = self.hot {
                    match self
                        .with_conn(id, read_buf, |conn, ctx| conn.read_now(ctx, Instant::now()))
                    {
                        Some(true) => {
                            events.clear();
                            return Ok(Woke::Hot(id));
                        }
                        Some(false) => {}
                        None => self.hot = None,
                    }
                }
                let now = Instant::now();
                if now.duration_since(start) >= spin || next.is_some_and(|at| at <= now) {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let timeout = next.map(|at| at.saturating_duration_since(Instant::now()));
        self.poll.poll(events, timeout)?;
        Ok(Woke::Events)
    }

    /// Run the CRI state machine's outputs: actions to the workers,
    /// replies to their calls (dropped when the call is gone), events to
    /// every GetContainerEvents subscriber, started containers and made
    /// pods to the exit watchers (and their jobs to the pool).
    fn drive_cri(&mut self, touched: &mut Vec<usize>) {
        self.cri.pump(&self.workers);
        for id in self.cri.to_watch.drain(..) {
            self.exits.watch(Subject::Container(id));
        }
        for id in self.cri.pods_to_watch.drain(..) {
            self.exits.watch(Subject::Pod(id));
        }
        self.exits.pump(&self.workers, Instant::now());
        for (conn, call, reply) in self.cri.replies.drain(..) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.complete(call, reply);
                touched.push(conn);
            }
        }
        if self.cri.events.is_empty() {
            return;
        }
        let events: Vec<Vec<u8>> = self.cri.events.drain(..).collect();
        let conns = &mut self.conns;
        self.cri.subscribers.retain(|&(conn, call)| {
            let Some(c) = conns.get_mut(&conn) else {
                return false;
            };
            touched.push(conn);
            events.iter().all(|ev| c.send_stream(call, ev))
        });
    }

    fn next_wake(&self) -> Option<Instant> {
        [
            self.timers.first().map(|&(at, _)| at),
            self.streams.poll_timeout(),
            self.exits.poll_timeout(),
            self.shutdown_at,
            self.record_retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Accept every connection waiting on the listener behind `token`
    /// (`UNIX_LISTENER` or `TCP_LISTENER`).
    fn accept(&mut self, token: Token, touched: &mut Vec<usize>) {
        loop {
            let accepted = match (token, self.unix.as_ref(), self.tcp.as_ref()) {
                (UNIX_LISTENER, Some(l), _) => l
                    .accept()
                    .map(|(s, _)| local_peer(s).map(|(s, p)| (s, p, None))),
                (TCP_LISTENER, _, Some(l)) => l.accept().map(|(s, addr)| {
                    let _ = s.set_nodelay(true);
                    Some((Socket::Tcp(s), Peer::Tcp, Some(addr)))
                }),
                _ => return,
            };
            match accepted {
                Ok(Some((socket, peer, remote))) => self.add_conn(socket, peer, remote, touched),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn add_conn(
        &mut self,
        socket: Socket,
        peer: Peer,
        remote: Option<std::net::SocketAddr>,
        touched: &mut Vec<usize>,
    ) {
        if self.conns.len() >= self.config.max_connections {
            tracing::warn!(%peer, limit = self.config.max_connections, "too many connections; closing new one");
            return;
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let mut conn = Conn::new(id, socket, peer, self.server_config.clone());
        if let Some(remote) = remote {
            let tls = match &self.tls {
                None => None,
                Some(acceptor) => match acceptor.session() {
                    Ok(session) => Some((session, Instant::now() + acceptor.handshake_timeout)),
                    Err(e) => {
                        tracing::warn!(%remote, error = %e, "cannot start a TLS session; closing");
                        return;
                    }
                },
            };
            conn = conn.with_tcp(remote, tls);
        }
        // Starts the core's handshake timer: a peer that never speaks is
        // closed once the SETTINGS timeout passes.
        conn.start(Instant::now());
        if self.shutdown_at.is_some() {
            conn.go_away();
        }
        self.conns.insert(id, conn);
        touched.push(id);
    }

    /// After a connection did work: write what it has, close it if it is
    /// finished, else set its poll interest and timer.
    fn settle(&mut self, id: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.flush();
        if conn.is_done() {
            let _ = conn.socket().deregister(self.poll.registry());
            self.conns.remove(&id);
            self.dispatcher.discovery.connection_closed(id);
            if let Some(at) = self.scheduled.remove(&id) {
                self.timers.remove(&(at, id));
            }
            return;
        }
        conn.update_interest(self.poll.registry());
        let next = conn.poll_timeout();
        let current = self.scheduled.get(&id).copied();
        if next != current {
            if let Some(at) = current {
                self.timers.remove(&(at, id));
                self.scheduled.remove(&id);
            }
            if let Some(at) = next {
                self.timers.insert((at, id));
                self.scheduled.insert(id, at);
            }
        }
    }

    fn on_signal(&mut self, now: Instant, touched: &mut Vec<usize>) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let name = Signal::try_from(info.ssi_signo as i32)
                .map(|s| s.as_str())
                .unwrap_or("signal");
            if info.ssi_signo == Signal::SIGHUP as u32 {
                self.reload_tls();
                continue;
            }
            if self.shutdown_at.is_some() {
                continue;
            }
            tracing::info!(
                signal = name,
                connections = self.conns.len(),
                "shutting down"
            );
            self.shutdown_at = Some(now + Duration::from_secs(self.config.shutdown_timeout_secs));
            self.stop_listening();
            for (id, conn) in self.conns.iter_mut() {
                conn.go_away();
                touched.push(*id);
            }
            // Health watchers hear NOT_SERVING, then their calls end: they
            // would otherwise hold their connections for the whole drain.
            let (updates, watches) = self.dispatcher.discovery.shut_down();
            for ((conn, call), message) in updates {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.send_stream(call, &message);
                }
            }
            let status = Status::unavailable("crispd is shutting down");
            for (conn, call) in watches {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.end_call(call, &status);
                    touched.push(conn);
                }
            }
        }
    }

    /// SIGHUP: read `[tls]`'s files again; connections accepted from now
    /// on get them, those already up keep theirs. A file that does not
    /// load keeps the old configuration in use.
    fn reload_tls(&mut self) {
        let Some(c) = &self.config.tls else {
            tracing::info!("SIGHUP: no [tls] to reload");
            return;
        };
        match Acceptor::load(c) {
            Ok(acceptor) => {
                self.tls = Some(acceptor);
                tracing::info!(cert_file = %c.cert_file.display(), "SIGHUP: TLS certificates reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the old certificates")
            }
        }
    }

    fn stop_listening(&mut self) {
        if let Some(mut l) = self.unix.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(mut l) = self.tcp.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Err(e) = fs::remove_file(&self.config.socket) {
            tracing::warn!(socket = %self.config.socket.display(), error = %e, "cannot remove socket");
        }
    }

    /// Shutdown deadline: calls still waiting on workers get UNAVAILABLE.
    fn abandon_all(&mut self) {
        let status = Status::unavailable("crispd is shutting down");
        for conn in self.conns.values_mut() {
            conn.abandon_calls(&status);
            conn.flush();
        }
    }
}

/// Every connection is a file descriptor, and the soft RLIMIT_NOFILE a
/// daemon inherits is often 1024 (systemd, login shells) while
/// `max_connections` defaults to 4096: past the soft limit accept() fails
/// with EMFILE and new clients wait unanswered in the backlog. The hard
/// limit is ours to take, so take it, as Go programs do at start.
fn raise_fd_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit");
        }
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((soft, hard));
    // Listeners, poll, signalfd, waker, lock, stdio and some slack. (Each
    // running container and pod holder takes one more, for its exit.)
    if (soft as u128) < max_connections as u128 + 64 {
        tracing::warn!(
            limit = soft,
            max_connections,
            "the open-files limit is below max_connections; connections past it will wait unanswered"
        );
    }
}

/// A Unix connection with its peer's credentials, or `None` (it is
/// dropped, so closed) when the kernel cannot tell them.
fn local_peer(stream: mio::net::UnixStream) -> Option<(Socket, Peer)> {
    match getsockopt(&stream, sockopt::PeerCredentials) {
        Ok(c) => Some((
            Socket::Unix(stream),
            Peer::Local {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            None
        }
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<(), StartError> {
    if !path.exists() {
        fs::create_dir_all(path).map_err(error::io(format!("create {}", path.display())))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(error::io(format!("set mode of {}", path.display())))?;
    }
    Ok(())
}

/// One crispd per runtime directory: an exclusive lock held for life.
/// A POSIX record lock, not flock(2): it belongs to this process, not to
/// the open file, so a child forked by crispd that has not exec'd yet (a
/// spare monitor waiting at SCHED_IDLE for the CPU, a helper process)
/// does not hold it too, and a crispd killed with SIGKILL frees it at
/// once for the next one. Nothing else in crispd opens this file (closing
/// any descriptor of it would drop the lock).
fn take_lock(runtime_dir: &Path) -> Result<File, StartError> {
    let path = runtime_dir.join("crispd.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(error::io(format!("open {}", path.display())))?;
    let whole_file = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&file, FcntlArg::F_SETLK(&whole_file))
        .map_err(|errno| StartError::Locked { path, errno })?;
    Ok(file)
}

/// Bind the CRI socket: mode 0660 from the start (umask), group from the
/// config. A live socket means another server: refuse. A stale one is
/// replaced.
fn bind_unix(path: &Path, group: &str) -> Result<UnixListener, StartError> {
    if let Some(dir) = path.parent() {
        create_dir(dir, 0o711)?;
    }
    if path.exists() {
        if let Ok(probe) = std::os::unix::net::UnixStream::connect(path) {
            match listener_pid(&probe) {
                Some(pid) => {
                    return Err(StartError::SocketInUse {
                        path: path.to_owned(),
                        pid,
                    })
                }
                None => tracing::info!(
                    socket = %path.display(),
                    "the socket's server has exited; a child that has not exec'd yet still holds it"
                ),
            }
        }
        tracing::info!(socket = %path.display(), "replacing stale socket");
        fs::remove_file(path)
            .map_err(error::io(format!("remove stale socket {}", path.display())))?;
    }
    let gid = resolve_group(group)?;
    let old = umask(Mode::from_bits_truncate(0o117));
    let listener = UnixListener::bind(path);
    umask(old);
    let listener = listener.map_err(error::io(format!("listen on {}", path.display())))?;
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(error::io(format!(
        "give {} to group {group}",
        path.display()
    )))?;
    Ok(listener)
}

/// The pid of the live process that listens on the socket `probe` is
/// connected to, or None when that process has exited. A connection to a
/// Unix socket carries the credentials of the process that called
/// `listen`; the socket itself may outlive it for a while, held by a child
/// forked by a crispd that was killed before the child's exec closed its
/// descriptors (a spare monitor started at SCHED_IDLE can wait long for
/// the CPU there). Such a socket is stale: nobody will ever accept on it.
fn listener_pid(probe: &std::os::unix::net::UnixStream) -> Option<i32> {
    let pid = getsockopt(probe, sockopt::PeerCredentials).ok()?.pid();
    // Signal 0 checks that the process exists (EPERM: it does, not ours).
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => None,
        _ => Some(pid),
    }
}

fn resolve_group(group: &str) -> Result<u32, StartError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(StartError::UnknownGroup(group.to_owned())),
        Err(e) => Err(error::sys(format!("look up group {group:?}"))(e)),
    }
}
