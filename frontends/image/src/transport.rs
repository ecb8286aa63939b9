//! The registry client's connections: ureq's own (CONNECT proxy, TCP,
//! rustls), with one layer between TCP and TLS that waits for bytes in
//! short slices and gives up as soon as the pull this thread works for
//! has stopped ([`crate::stop`]). Without it a read on a registry that
//! went silent would hold the thread until the no-progress timeout, long
//! after the caller has gone.

use std::time::Duration;

use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, NextTimeout, RustlsConnector,
    TcpConnector, Transport,
};

/// How long one wait for bytes lasts before the stop is checked again.
const SLICE: Duration = Duration::from_millis(200);

/// The connector of every registry agent.
pub(crate) fn connector() -> impl Connector {
    ().chain(ConnectProxyConnector::default())
        .chain(TcpConnector::default())
        .chain(StopConnector)
        .chain(RustlsConnector::default())
}

/// Wraps each new connection in a [`StopTransport`].
#[derive(Debug)]
struct StopConnector;

impl<In: Transport> Connector<In> for StopConnector {
    type Out = StopTransport<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| StopTransport { inner }))
    }
}

#[derive(Debug)]
struct StopTransport<T> {
    inner: T,
}

/// The error a stopped pull's I/O fails with; the pull reports the
/// stop's own reason instead.
fn stopped() -> ureq::Error {
    // Not `Interrupted`: readers retry those.
    ureq::Error::Io(std::io::Error::other("the pull was stopped"))
}

impl<T: Transport> Transport for StopTransport<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if crate::stop::current().is_some() {
            return Err(stopped());
        }
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        // The budget this read has (the no-progress timeout, or less),
        // spent in slices with a look at the stop between them. A slice
        // that times out has read nothing, so waiting again is safe.
        let budget = timeout.for_read();
        let started = std::time::Instant::now();
        loop {
            if crate::stop::current().is_some() {
                return Err(stopped());
            }
            let left = match budget.after {
                UreqDuration::Exact(d) => Some(d.saturating_sub(started.elapsed())),
                UreqDuration::NotHappening => None,
            };
            let slice = left.map_or(SLICE, |l| l.min(SLICE));
            let last = left.is_some_and(|l| l <= SLICE);
            let attempt = NextTimeout {
                after: UreqDuration::Exact(slice),
                reason: budget.reason,
                per_read: None,
                per_write: timeout.per_write,
            };
            match self.inner.await_input(attempt) {
                Err(ureq::Error::Timeout(_)) if !last => continue,
                Err(ureq::Error::Timeout(_)) => return Err(ureq::Error::Timeout(budget.reason)),
                other => return other,
            }
        }
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}
