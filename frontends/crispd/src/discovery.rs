//! gRPC health checking and server reflection on crispd's sockets. The
//! answers are the core's (`crisp_core::grpc::health`, `::reflection`);
//! this only keeps their state for the loop: the health of the server
//! with its Watch calls, and the reflection index of the schema crisp-proto
//! compiled (the CRI, health and reflection protos).

use std::cell::RefCell;

use crisp_core::grpc::health::Health;
use crisp_core::grpc::reflection::{IndexError, Reflection, Session};
use crisp_core::grpc::Status;
use crisp_proto::methods::SERVICES;

/// A call, by connection and stream.
pub type CallKey = (usize, u32);

pub struct Discovery {
    /// Touched from the loop thread only, through `&Dispatcher`.
    health: RefCell<Health<CallKey>>,
    reflection: Reflection,
}

impl Discovery {
    /// Serving `""` and the two CRI services.
    pub fn new() -> Result<Self, IndexError> {
        let cri = SERVICES
            .iter()
            .filter(|s| s.is_cri())
            .map(|s| s.full_name());
        Ok(Self {
            health: RefCell::new(Health::new(cri)),
            reflection: Reflection::new(crisp_proto::FILE_DESCRIPTOR_SET)?,
        })
    }

    /// `Health/Check`.
    pub fn check(&self, request: &[u8]) -> Result<Vec<u8>, Status> {
        self.health.borrow().check(request)
    }

    /// `Health/List`.
    pub fn list(&self, request: &[u8]) -> Result<Vec<u8>, Status> {
        self.health.borrow().list(request)
    }

    /// `Health/Watch`: its first message; the call stays open.
    pub fn watch(&self, call: CallKey, request: &[u8]) -> Result<Vec<u8>, Status> {
        self.health.borrow_mut().watch(call, request)
    }

    /// A call ended (a Watch among them or not).
    pub fn call_ended(&self, call: CallKey) {
        self.health.borrow_mut().unwatch(&call);
    }

    /// A connection closed: its Watch calls with it.
    pub fn connection_closed(&self, conn: usize) {
        self.health.borrow_mut().unwatch_where(|&(c, _)| c == conn);
    }

    /// Shutting down: NOT_SERVING from now on. Returns the message for
    /// each Watch whose status changed, then every Watch call, which the
    /// loop ends (they would otherwise hold their connections open for the
    /// whole drain).
    pub fn shut_down(&self) -> (Vec<(CallKey, Vec<u8>)>, Vec<CallKey>) {
        let mut health = self.health.borrow_mut();
        let updates = health.set_serving(false);
        let watches = health.take_watchers();
        (updates, watches)
    }

    /// A new reflection stream.
    pub fn reflection_session(&self) -> Session {
        self.reflection.session()
    }

    /// One request on a reflection stream: its answer, or the status that
    /// ends the stream.
    pub fn reflect(&self, session: &mut Session, request: &[u8]) -> Result<Vec<u8>, Status> {
        session.answer(&self.reflection, request)
    }
}
