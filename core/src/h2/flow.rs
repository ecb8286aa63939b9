//! Flow-control windows (RFC 9113 §5.2, §6.9).

/// Largest legal window: 2^31 - 1.
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// The RFC's default initial window for streams and the connection.
pub const DEFAULT_WINDOW: u32 = 65_535;

/// A window that may go negative: lowering SETTINGS_INITIAL_WINDOW_SIZE can
/// leave a stream owing bytes it already sent (RFC 9113 §6.9.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(i64);

/// The peer sent more than the window allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowExceeded;

/// A window update or settings change would push a window past 2^31 - 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowOverflow;

impl Window {
    pub const fn new(size: u32) -> Self {
        Self(size as i64)
    }

    /// Bytes that may be sent (or received) now; zero when negative.
    pub fn available(self) -> u32 {
        self.0.clamp(0, MAX_WINDOW) as u32
    }

    pub fn value(self) -> i64 {
        self.0
    }

    /// Spend `n` bytes. The caller has checked `n <= available()`.
    pub fn spend(&mut self, n: u32) {
        self.0 -= i64::from(n);
    }

    /// Spend `n` received bytes, failing if the peer overran the window.
    pub fn spend_received(&mut self, n: u32) -> Result<(), WindowExceeded> {
        if i64::from(n) > self.0 {
            return Err(WindowExceeded);
        }
        self.0 -= i64::from(n);
        Ok(())
    }

    /// WINDOW_UPDATE: grow by `increment`.
    pub fn grow(&mut self, increment: u32) -> Result<(), WindowOverflow> {
        self.shift(i64::from(increment))
    }

    /// A change of the initial window size shifts every stream window by the
    /// difference, up or down.
    pub fn shift(&mut self, delta: i64) -> Result<(), WindowOverflow> {
        let next = self.0 + delta;
        if next > MAX_WINDOW {
            return Err(WindowOverflow);
        }
        self.0 = next;
        Ok(())
    }
}

/// The receive side of one window: what the peer may still send, and what
/// we have consumed but not yet handed back with WINDOW_UPDATE.
///
/// Updates are batched: we return credit once half the target window has
/// been consumed, so a stream of small DATA frames does not cause a
/// WINDOW_UPDATE per frame.
#[derive(Clone, Copy, Debug)]
pub struct RecvWindow {
    window: Window,
    target: u32,
    unreturned: u32,
}

impl RecvWindow {
    pub fn new(size: u32) -> Self {
        Self {
            window: Window::new(size),
            target: size,
            unreturned: 0,
        }
    }

    /// The peer sent `n` flow-controlled bytes.
    pub fn receive(&mut self, n: u32) -> Result<(), WindowExceeded> {
        self.window.spend_received(n)
    }

    /// The application consumed `n` bytes. Returns the increment to send in
    /// a WINDOW_UPDATE, if one is due now.
    pub fn release(&mut self, n: u32) -> Option<u32> {
        self.unreturned = self.unreturned.saturating_add(n);
        if self.unreturned == 0 || self.unreturned < self.target / 2 {
            return None;
        }
        let increment = self.unreturned;
        self.unreturned = 0;
        // Cannot overflow: the window only ever returns to at most `target`.
        let _ = self.window.grow(increment);
        Some(increment)
    }

    /// Our SETTINGS_INITIAL_WINDOW_SIZE changed (and was acknowledged).
    pub fn retarget(&mut self, size: u32) -> Result<(), WindowOverflow> {
        let delta = i64::from(size) - i64::from(self.target);
        self.window.shift(delta)?;
        self.target = size;
        Ok(())
    }

    /// Grow the target (used for the connection window, which only the
    /// WINDOW_UPDATE frames we send can enlarge). Returns the increment.
    pub fn enlarge(&mut self, size: u32) -> Option<u32> {
        if size <= self.target {
            return None;
        }
        let increment = size - self.target;
        self.target = size;
        self.window.grow(increment).ok()?;
        Some(increment)
    }

    pub fn available(&self) -> u32 {
        self.window.available()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_goes_negative_and_recovers() {
        let mut w = Window::new(100);
        w.spend(100);
        w.shift(-50).unwrap();
        assert_eq!(w.value(), -50);
        assert_eq!(w.available(), 0);
        w.grow(70).unwrap();
        assert_eq!(w.available(), 20);
    }

    #[test]
    fn window_overflow_is_detected() {
        let mut w = Window::new(DEFAULT_WINDOW);
        assert_eq!(w.grow((MAX_WINDOW as u32) - DEFAULT_WINDOW), Ok(()));
        assert_eq!(w.grow(1), Err(WindowOverflow));
    }

    #[test]
    fn overrun_of_receive_window_fails() {
        let mut r = RecvWindow::new(10);
        assert!(r.receive(10).is_ok());
        assert!(r.receive(1).is_err());
    }

    #[test]
    fn updates_are_batched_at_half_the_window() {
        let mut r = RecvWindow::new(100);
        r.receive(30).unwrap();
        assert_eq!(r.release(30), None);
        r.receive(30).unwrap();
        assert_eq!(r.release(30), Some(60));
        assert_eq!(r.available(), 100);
    }

    #[test]
    fn retarget_shifts_available() {
        let mut r = RecvWindow::new(100);
        r.receive(40).unwrap();
        r.retarget(200).unwrap();
        assert_eq!(r.available(), 160);
    }
}
