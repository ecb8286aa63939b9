//! What the streams of `exec`, `attach` and `port-forward` mean, on either
//! transport: the remotecommand and portforward protocols of Kubernetes,
//! as kubelet's streaming server speaks them, without I/O.
//!
//! * Over SPDY, the client opens one stream per role and names it in the
//!   `streamtype` header ([`StreamType`]); [`ExecStreams`] collects them
//!   until every stream the request implies is there, as kubelet waits
//!   for them before starting the process.
//! * The `error` stream ends the session: from v4 on it carries a JSON
//!   `Status` ([`status_success`], [`status_exit_code`],
//!   [`status_internal_error`]); before v4 the error's text.
//! * The `resize` stream (and WebSocket channel 4) carries a sequence of
//!   JSON `TerminalSize` objects ([`ResizeDecoder`]).
//! * Port forwarding pairs a `data` and an `error` stream per forwarded
//!   connection by their `requestid` header ([`PortForwardPairs`]); over
//!   WebSocket the ports come from the URL and the first two bytes of
//!   each channel repeat the port ([`websocket_port_prefix`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::spdy::header;

/// The header naming a SPDY stream's role.
pub const STREAM_TYPE_HEADER: &str = "streamtype";
/// Port forwarding: the container port of a data/error pair.
pub const PORT_HEADER: &str = "port";
/// Port forwarding: what ties a data stream to its error stream.
pub const REQUEST_ID_HEADER: &str = "requestid";

/// A SPDY stream's role, from its `streamtype` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StreamType {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
    /// Port forwarding payload.
    Data,
}

impl StreamType {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "error" => Self::Error,
            "stdin" => Self::Stdin,
            "stdout" => Self::Stdout,
            "stderr" => Self::Stderr,
            "resize" => Self::Resize,
            "data" => Self::Data,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Stdin => "stdin",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Resize => "resize",
            Self::Data => "data",
        }
    }

    /// The WebSocket channel of the same role (exec and attach).
    pub fn channel(self) -> Option<u8> {
        Some(match self {
            Self::Stdin => 0,
            Self::Stdout => 1,
            Self::Stderr => 2,
            Self::Error => 3,
            Self::Resize => 4,
            Self::Data => return None,
        })
    }
}

/// The remotecommand protocol version negotiated over SPDY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`, or no protocol header at all.
    V1,
    V2,
    /// Adds the resize stream.
    V3,
    /// The error stream carries a JSON `Status`.
    V4,
}

impl Version {
    pub fn from_protocol(protocol: Option<&str>) -> Option<Self> {
        Some(match protocol {
            None | Some("channel.k8s.io") => Self::V1,
            Some("v2.channel.k8s.io") => Self::V2,
            Some("v3.channel.k8s.io") => Self::V3,
            Some("v4.channel.k8s.io") => Self::V4,
            Some(_) => return None,
        })
    }
}

/// Which streams an exec or attach asked for (from the CRI request the
/// token stands for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Why a stream cannot join the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamRejection {
    /// No or an unknown `streamtype` header.
    UnknownType(Option<String>),
    /// A second stream of the same type.
    Duplicate(StreamType),
    /// A type this session does not use (e.g. `data` on exec).
    Unexpected(StreamType),
}

/// Collects the streams of one exec or attach session.
#[derive(Clone, Debug)]
pub struct ExecStreams {
    version: Version,
    options: StreamOptions,
    streams: BTreeMap<StreamType, u32>,
}

impl ExecStreams {
    pub fn new(version: Version, options: StreamOptions) -> Self {
        Self {
            version,
            options,
            streams: BTreeMap::new(),
        }
    }

    /// How many streams the client will open, as kubelet counts them: the
    /// error stream, one per requested stdio stream (stderr is merged into
    /// stdout with a tty), and from v3 on the resize stream with a tty.
    /// v1 clients may omit streams, so v1 counts only what is required.
    pub fn expected(&self) -> usize {
        let o = self.options;
        let mut n = 1 + usize::from(o.stdin) + usize::from(o.stdout);
        n += usize::from(o.stderr && !o.tty);
        if self.version >= Version::V3 && o.tty {
            n += 1;
        }
        n
    }

    /// Adds a stream the client opened; `Ok(true)` once all are there.
    pub fn add(
        &mut self,
        stream_id: u32,
        headers: &[(String, String)],
    ) -> Result<bool, StreamRejection> {
        let raw = header(headers, STREAM_TYPE_HEADER);
        let kind = raw
            .and_then(StreamType::parse)
            .ok_or_else(|| StreamRejection::UnknownType(raw.map(str::to_string)))?;
        if kind == StreamType::Data || (kind == StreamType::Resize && self.version < Version::V3) {
            return Err(StreamRejection::Unexpected(kind));
        }
        if self.streams.contains_key(&kind) {
            return Err(StreamRejection::Duplicate(kind));
        }
        self.streams.insert(kind, stream_id);
        Ok(self.is_complete())
    }

    pub fn is_complete(&self) -> bool {
        self.streams.len() >= self.expected()
    }

    /// The stream id of a role, once opened.
    pub fn get(&self, kind: StreamType) -> Option<u32> {
        self.streams.get(&kind).copied()
    }

    /// The role of a stream id.
    pub fn role(&self, stream_id: u32) -> Option<StreamType> {
        self.streams
            .iter()
            .find(|(_, id)| **id == stream_id)
            .map(|(k, _)| *k)
    }

    pub fn version(&self) -> Version {
        self.version
    }
}

// ---- the error stream ----

/// `Status` for a command that exited 0 (v4 and later).
pub fn status_success() -> Vec<u8> {
    br#"{"metadata":{},"status":"Success"}"#.to_vec()
}

/// `Status` for a non-zero exit: client-go reads the code from the cause
/// of type `ExitCode` and exits `kubectl exec` with it.
pub fn status_exit_code(code: i32, message: &str) -> Vec<u8> {
    format!(
        r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{code}"}}]}}}}"#,
        crate::json::string(message)
    )
    .into_bytes()
}

/// `Status` for a failure to run the command at all (HTTP 500, as
/// kubelet's `NewInternalError`).
pub fn status_internal_error(error: &str) -> Vec<u8> {
    format!(
        r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"InternalError","details":{{"causes":[{{"message":{}}}]}},"code":500}}"#,
        crate::json::string(&format!("Internal error occurred: {error}")),
        crate::json::string(error)
    )
    .into_bytes()
}

/// What to write on the error stream when the process ended with `code`
/// (`None`: it could not be run, with `error`).
pub fn error_stream_message(version: Version, code: Option<i32>, error: &str) -> Vec<u8> {
    match (version >= Version::V4, code) {
        (true, Some(0)) => status_success(),
        (true, Some(c)) => status_exit_code(
            c,
            &format!("command terminated with non-zero exit code: exit status {c}"),
        ),
        (true, None) => status_internal_error(error),
        // Before v4 the stream carries the error's text, and nothing for success.
        (false, Some(0)) => Vec::new(),
        (false, Some(c)) => {
            format!("command terminated with non-zero exit code: exit status {c}").into_bytes()
        }
        (false, None) => error.as_bytes().to_vec(),
    }
}

// ---- resize ----

/// A terminal size from the resize stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// Why the resize stream is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeError {
    /// Not a JSON object of numbers.
    Malformed,
    /// An object larger than the buffer limit.
    TooLong,
}

/// Splits the resize stream into JSON objects and reads `Width` and
/// `Height` from each, as Go's decoder does: keys match case-insensitively,
/// other keys are ignored, missing ones are 0.
#[derive(Clone, Debug, Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

/// The longest object accepted; real ones are about 25 bytes.
const MAX_RESIZE_OBJECT: usize = 4096;

impl ResizeDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the sizes of the objects they complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if self.buf.is_empty() {
                return Ok(sizes);
            }
            match parse_size(&self.buf)? {
                Some((size, used)) => {
                    sizes.push(size);
                    self.buf.drain(..used.min(self.buf.len()));
                }
                None => {
                    if self.buf.len() > MAX_RESIZE_OBJECT {
                        return Err(ResizeError::TooLong);
                    }
                    return Ok(sizes);
                }
            }
        }
    }
}

/// Parses one `{"Width":n,"Height":n}` object at the start of `b`;
/// `Ok(None)` when it is not complete yet.
fn parse_size(b: &[u8]) -> Result<Option<(TerminalSize, usize)>, ResizeError> {
    let mut p = Cursor { b, at: 0 };
    let mut size = TerminalSize {
        width: 0,
        height: 0,
    };
    match p.next() {
        None => return Ok(None),
        Some(b'{') => {}
        Some(_) => return Err(ResizeError::Malformed),
    }
    p.skip_ws();
    match p.peek() {
        None => return Ok(None),
        Some(b'}') => return Ok(Some((size, p.at + 1))),
        Some(_) => {}
    }
    loop {
        p.skip_ws();
        let Some(key) = p.string()? else {
            return Ok(None);
        };
        p.skip_ws();
        match p.next() {
            None => return Ok(None),
            Some(b':') => {}
            Some(_) => return Err(ResizeError::Malformed),
        }
        p.skip_ws();
        let Some(value) = p.number()? else {
            return Ok(None);
        };
        let value = u16::try_from(value).map_err(|_| ResizeError::Malformed)?;
        if key.eq_ignore_ascii_case("width") {
            size.width = value;
        } else if key.eq_ignore_ascii_case("height") {
            size.height = value;
        }
        p.skip_ws();
        match p.next() {
            None => return Ok(None),
            Some(b',') => continue,
            Some(b'}') => return Ok(Some((size, p.at))),
            Some(_) => return Err(ResizeError::Malformed),
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    /// A plain JSON string (no escapes needed for these keys).
    fn string(&mut self) -> Result<Option<&'a str>, ResizeError> {
        match self.next() {
            None => return Ok(None),
            Some(b'"') => {}
            Some(_) => return Err(ResizeError::Malformed),
        }
        let start = self.at;
        loop {
            match self.next() {
                None => return Ok(None),
                Some(b'"') => break,
                Some(b'\\') => return Err(ResizeError::Malformed),
                Some(_) => {}
            }
        }
        let b: &'a [u8] = self.b;
        let s = b.get(start..self.at - 1).ok_or(ResizeError::Malformed)?;
        std::str::from_utf8(s)
            .map(Some)
            .map_err(|_| ResizeError::Malformed)
    }

    /// A non-negative integer; `None` if the input may still continue it.
    fn number(&mut self) -> Result<Option<u64>, ResizeError> {
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .ok_or(ResizeError::Malformed)?;
            self.at += 1;
        }
        if self.at == start {
            return if self.peek().is_none() {
                Ok(None)
            } else {
                Err(ResizeError::Malformed)
            };
        }
        if self.peek().is_none() {
            return Ok(None);
        }
        Ok(Some(value))
    }
}

// ---- port forwarding ----

/// A complete data/error stream pair for one forwarded connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortForwardPair {
    pub request_id: String,
    pub port: u16,
    pub data_stream: u32,
    pub error_stream: u32,
}

/// Why a port-forward stream is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairError {
    /// Missing or unknown `streamtype` (only `data` and `error` exist here).
    BadStreamType(Option<String>),
    /// Missing or invalid `port` (1..=65535).
    BadPort(Option<String>),
    /// A second stream of the same type for a request id.
    Duplicate { request_id: String },
    /// The two streams of a pair name different ports.
    PortMismatch { request_id: String },
    /// Too many incomplete pairs at once.
    TooManyPending,
}

/// Pairs port-forward streams by request id, as kubelet does.
#[derive(Clone, Debug)]
pub struct PortForwardPairs {
    pending: BTreeMap<String, Pending>,
    timeout: Duration,
    max_pending: usize,
}

#[derive(Clone, Debug)]
struct Pending {
    port: u16,
    data: Option<u32>,
    error: Option<u32>,
    since: Instant,
}

impl PortForwardPairs {
    /// `timeout`: how long half a pair may wait for the other half
    /// (kubelet: the stream creation timeout, 30 s by default).
    pub fn new(timeout: Duration, max_pending: usize) -> Self {
        Self {
            pending: BTreeMap::new(),
            timeout,
            max_pending,
        }
    }

    /// Adds a stream; returns the pair it completes.
    pub fn add(
        &mut self,
        stream_id: u32,
        headers: &[(String, String)],
        now: Instant,
    ) -> Result<Option<PortForwardPair>, PairError> {
        let raw_type = header(headers, STREAM_TYPE_HEADER);
        let kind = match raw_type.and_then(StreamType::parse) {
            Some(k @ (StreamType::Data | StreamType::Error)) => k,
            _ => return Err(PairError::BadStreamType(raw_type.map(str::to_string))),
        };
        let raw_port = header(headers, PORT_HEADER);
        let port = raw_port
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| PairError::BadPort(raw_port.map(str::to_string)))?;
        let request_id = match header(headers, REQUEST_ID_HEADER) {
            Some(id) if !id.is_empty() => id.to_string(),
            // Clients older than the header: the error stream comes first
            // and the data stream two ids later (kubelet's best effort).
            _ => match kind {
                StreamType::Error => stream_id.to_string(),
                _ => stream_id.saturating_sub(2).to_string(),
            },
        };
        if !self.pending.contains_key(&request_id) && self.pending.len() >= self.max_pending {
            return Err(PairError::TooManyPending);
        }
        let entry = self
            .pending
            .entry(request_id.clone())
            .or_insert_with(|| Pending {
                port,
                data: None,
                error: None,
                since: now,
            });
        if entry.port != port {
            return Err(PairError::PortMismatch { request_id });
        }
        let slot = match kind {
            StreamType::Data => &mut entry.data,
            _ => &mut entry.error,
        };
        if slot.is_some() {
            return Err(PairError::Duplicate { request_id });
        }
        *slot = Some(stream_id);
        if let (Some(data_stream), Some(error_stream)) = (entry.data, entry.error) {
            self.pending.remove(&request_id);
            return Ok(Some(PortForwardPair {
                request_id,
                port,
                data_stream,
                error_stream,
            }));
        }
        Ok(None)
    }

    /// Removes the halves that waited too long; returns their stream ids
    /// (to reset).
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        let timeout = self.timeout;
        let mut expired = Vec::new();
        self.pending.retain(|_, p| {
            let keep = now.saturating_duration_since(p.since) < timeout;
            if !keep {
                expired.extend(p.data.iter().chain(p.error.iter()));
            }
            keep
        });
        expired
    }

    /// When [`PortForwardPairs::expire`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.since + self.timeout).min()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The text kubelet writes on a pair's error stream when forwarding fails.
pub fn port_forward_error(port: u16, pod: &str, error: &str) -> Vec<u8> {
    format!("error forwarding port {port} to pod {pod}: {error}").into_bytes()
}

/// WebSocket port forwarding: the ports of the URL's `port` parameters.
pub fn websocket_ports<'a>(values: impl Iterator<Item = &'a str>) -> Result<Vec<u16>, String> {
    let ports: Vec<u16> = values
        .map(|v| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port {v:?}"))
        })
        .collect::<Result<_, _>>()?;
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".to_string());
    }
    // Two channels per port, numbered by one byte.
    if ports.len() > 127 {
        return Err("too many ports".to_string());
    }
    Ok(ports)
}

/// The data and error channels of the `index`-th forwarded port.
pub fn websocket_port_channels(index: usize) -> Option<(u8, u8)> {
    let data = u8::try_from(index.checked_mul(2)?).ok()?;
    Some((data, data.checked_add(1)?))
}

/// The first message on each port's channels: the port, little-endian.
pub fn websocket_port_prefix(port: u16) -> [u8; 2] {
    port.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn statuses_are_what_client_go_reads() {
        assert_eq!(
            status_success(),
            br#"{"metadata":{},"status":"Success"}"#.to_vec()
        );
        let s = String::from_utf8(status_exit_code(
            3,
            "command terminated with non-zero exit code: exit status 3",
        ))
        .unwrap();
        assert_eq!(
            s,
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        let e = String::from_utf8(status_internal_error("no \"sh\"\n")).unwrap();
        assert!(
            e.contains(r#""message":"Internal error occurred: no \"sh\"\n""#),
            "{e}"
        );
        assert!(e.ends_with(r#""code":500}"#));
        assert_eq!(
            error_stream_message(Version::V4, Some(0), ""),
            status_success()
        );
        assert!(error_stream_message(Version::V2, Some(0), "").is_empty());
        assert_eq!(error_stream_message(Version::V2, None, "boom"), b"boom");
        assert_eq!(crate::json::string("\u{1}"), "\"\\u0001\"");
    }

    #[test]
    fn resize_stream() {
        let mut d = ResizeDecoder::new();
        assert_eq!(d.push(br#"{"Width":80,"#).unwrap(), vec![]);
        assert_eq!(
            d.push(b"\"Height\":24}\n{\"width\": 100, \"height\" : 50}")
                .unwrap(),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert_eq!(
            d.push(br#"{"Height":7}{}"#).unwrap(),
            vec![
                TerminalSize {
                    width: 0,
                    height: 7
                },
                TerminalSize {
                    width: 0,
                    height: 0
                }
            ]
        );
        assert_eq!(
            ResizeDecoder::new().push(b"[1]"),
            Err(ResizeError::Malformed)
        );
        assert_eq!(
            ResizeDecoder::new().push(br#"{"Width":70000}"#),
            Err(ResizeError::Malformed)
        );
        assert_eq!(
            ResizeDecoder::new().push(br#"{"Width":"80"}"#),
            Err(ResizeError::Malformed)
        );
        let mut long = b"{\"".to_vec();
        long.extend(vec![b'a'; 5000]);
        assert_eq!(ResizeDecoder::new().push(&long), Err(ResizeError::TooLong));
    }

    #[test]
    fn websocket_port_forwarding_helpers() {
        assert_eq!(
            websocket_ports(["80", "443"].into_iter()),
            Ok(vec![80, 443])
        );
        assert!(websocket_ports([].into_iter()).is_err());
        assert!(websocket_ports(["0"].into_iter()).is_err());
        assert!(websocket_ports(["http"].into_iter()).is_err());
        assert_eq!(websocket_port_channels(0), Some((0, 1)));
        assert_eq!(websocket_port_channels(1), Some((2, 3)));
        assert_eq!(websocket_port_channels(200), None);
        assert_eq!(websocket_port_prefix(8080), [0x90, 0x1f]);
    }

    proptest! {
        #[test]
        fn resize_any_chunking(w in any::<u16>(), hgt in any::<u16>(), cut in 0usize..40) {
            let text = format!("{{\"Width\":{w},\"Height\":{hgt}}}\n");
            let cut = cut.min(text.len());
            let mut d = ResizeDecoder::new();
            let mut got = d.push(&text.as_bytes()[..cut]).unwrap();
            got.extend(d.push(&text.as_bytes()[cut..]).unwrap());
            // A number at the very end may still grow: the next object, or
            // more whitespace, completes it.
            got.extend(d.push(b" ").unwrap());
            prop_assert_eq!(got, vec![TerminalSize { width: w, height: hgt }]);
        }

        #[test]
        fn resize_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ResizeDecoder::new().push(&bytes);
        }
    }
}
