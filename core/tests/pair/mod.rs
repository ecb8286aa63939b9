//! Two endpoints of the core wired back to back on virtual time, in the
//! manner of quinn-proto's test `Pair`: a client and a server (an
//! `h2::Connection` of each role, or the gRPC `Client` and `Server`) whose
//! output is delivered to the other after a configurable one-way latency,
//! with a clock that jumps to the earliest pending event (bytes arriving,
//! or either side's `poll_timeout`) until both are idle.
//!
//! Nothing here sleeps or reads a clock beyond the one `Instant` the pair
//! starts from, so tests of deadlines and timers are deterministic and
//! take no real time.
#![allow(dead_code)] // each test file uses its own part of this module

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crisp_core::grpc::client::{self, Client};
use crisp_core::grpc::server::{self, Server};
use crisp_core::h2::{self, Connection, ConnectionError};

/// What the pair needs of an endpoint: the core's driver contract.
pub trait Endpoint {
    type Event;
    fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError>;
    fn handle_timeout(&mut self, now: Instant);
    fn poll_event(&mut self) -> Option<Self::Event>;
    fn poll_transmit(&mut self) -> Option<Bytes>;
    fn poll_timeout(&self) -> Option<Instant>;
}

macro_rules! endpoint {
    ($ty:ty, $event:ty) => {
        impl Endpoint for $ty {
            type Event = $event;
            fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
                <$ty>::recv(self, data, now)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$ty>::handle_timeout(self, now)
            }
            fn poll_event(&mut self) -> Option<$event> {
                <$ty>::poll_event(self)
            }
            fn poll_transmit(&mut self) -> Option<Bytes> {
                <$ty>::poll_transmit(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$ty>::poll_timeout(self)
            }
        }
    };
}

endpoint!(Connection, h2::Event);
endpoint!(Server, server::Event);
endpoint!(Client, client::Event);

/// Steps taken by [`Pair::drive`] before it decides the pair never goes
/// idle (a livelock in the core, or a test that keeps feeding it).
const MAX_STEPS: usize = 100_000;

/// One side of the pair: the endpoint, the bytes on their way to it, and
/// the events it produced, each with the (virtual) time it happened.
pub struct Side<E: Endpoint> {
    pub endpoint: E,
    /// Bytes in flight towards this side and when they arrive.
    inbound: VecDeque<(Instant, Bytes)>,
    pub events: VecDeque<(Instant, E::Event)>,
    /// Connection errors `recv` returned, with their time.
    pub recv_errors: Vec<(Instant, ConnectionError)>,
    /// Drop everything this side sends (a peer gone silent, or a network
    /// that stopped delivering in one direction).
    pub mute: bool,
    /// Bytes this side has sent (delivered or dropped).
    pub bytes_sent: usize,
}

impl<E: Endpoint> Side<E> {
    fn new(endpoint: E) -> Self {
        Self {
            endpoint,
            inbound: VecDeque::new(),
            events: VecDeque::new(),
            recv_errors: Vec::new(),
            mute: false,
            bytes_sent: 0,
        }
    }

    /// Take every event so far.
    pub fn take_events(&mut self) -> Vec<(Instant, E::Event)> {
        self.events.drain(..).collect()
    }

    /// Deliver what has arrived by `now`, then fire a timer that is due.
    fn drive(&mut self, now: Instant) {
        while self.inbound.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, bytes)) = self.inbound.pop_front() {
                if let Err(e) = self.endpoint.recv(&bytes, now) {
                    self.recv_errors.push((now, e));
                }
            }
        }
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        while let Some(event) = self.endpoint.poll_event() {
            self.events.push_back((now, event));
        }
    }

    /// Everything the endpoint wants to send now.
    fn transmit(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(bytes) = self.endpoint.poll_transmit() {
            self.bytes_sent += bytes.len();
            if !self.mute {
                out.push(bytes);
            }
        }
        out
    }

    /// The earliest moment something happens on this side by itself.
    fn next_wakeup(&self) -> Option<Instant> {
        let arrival = self.inbound.front().map(|(at, _)| *at);
        earliest(arrival, self.endpoint.poll_timeout())
    }
}

/// A client and a server talking through an in-memory pipe on a virtual
/// clock.
pub struct Pair<C: Endpoint, S: Endpoint> {
    pub client: Side<C>,
    pub server: Side<S>,
    /// When the pair started: virtual times are reported from here.
    pub epoch: Instant,
    pub now: Instant,
    /// One-way delay of every write.
    pub latency: Duration,
}

impl<C: Endpoint, S: Endpoint> Pair<C, S> {
    /// Wire `client` and `server` together with no latency. The transport
    /// is "up" at once: both get `handle_timeout(now)`, which starts their
    /// SETTINGS timers as the driver contract asks.
    pub fn new(client: C, server: S) -> Self {
        let now = Instant::now();
        let mut pair = Self {
            client: Side::new(client),
            server: Side::new(server),
            epoch: now,
            now,
            latency: Duration::ZERO,
        };
        pair.client.endpoint.handle_timeout(now);
        pair.server.endpoint.handle_timeout(now);
        pair
    }

    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.epoch
    }

    /// Deliver what has arrived by now, fire due timers, and put what each
    /// side has to say on its way to the other.
    fn process_now(&mut self) {
        let now = self.now;
        self.client.drive(now);
        self.server.drive(now);
        let arrive = now + self.latency;
        for bytes in self.client.transmit() {
            self.server.inbound.push_back((arrive, bytes));
        }
        for bytes in self.server.transmit() {
            self.client.inbound.push_back((arrive, bytes));
        }
    }

    /// When the next thing happens: bytes arrive or a timer comes due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        earliest(self.client.next_wakeup(), self.server.next_wakeup())
    }

    /// One turn: do what is due now, then move the clock to the next thing
    /// that will happen. False once nothing ever will (both sides idle).
    pub fn step(&mut self) -> bool {
        self.process_now();
        match self.next_wakeup() {
            Some(t) => {
                self.now = self.now.max(t);
                true
            }
            None => false,
        }
    }

    /// Step until both sides are idle: no bytes in flight, nothing to
    /// send, no timer armed.
    pub fn drive(&mut self) {
        for _ in 0..MAX_STEPS {
            if !self.step() {
                return;
            }
        }
        panic!(
            "the pair never went idle ({:?} of virtual time)",
            self.elapsed()
        );
    }

    /// Step until the clock reaches `now + d` (or the pair goes idle
    /// before). What is due exactly then is not done yet.
    pub fn drive_for(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..MAX_STEPS {
            self.process_now();
            match self.next_wakeup() {
                Some(t) if t <= self.now => {}
                Some(t) if t < until => self.now = t,
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("the pair kept busy before {until:?}");
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
