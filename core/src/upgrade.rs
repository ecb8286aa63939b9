//! The HTTP/1.1 upgrade request that opens a streaming session, and its
//! answers.
//!
//! kubelet hands clients a URL `http://<addr>/{exec,attach,portforward}/<token>`;
//! the client sends one HTTP/1.1 request there (GET or POST) asking to
//! switch to SPDY/3.1 (`Upgrade: SPDY/3.1` plus `X-Stream-Protocol-Version`
//! offers, as client-go's SPDY round tripper does) or to WebSocket (RFC 6455
//! §4: `Upgrade: websocket`, `Sec-WebSocket-Key`, `Sec-WebSocket-Protocol`
//! offers). After our `101 Switching Protocols` the same bytes stream
//! carries SPDY frames or WebSocket frames.
//!
//! [`parse_request`] takes the bytes read so far and either asks for more,
//! or yields an [`UpgradeRequest`] (with the number of bytes the request
//! took: what follows belongs to the new protocol), or a [`Rejection`] whose
//! [`Rejection::response`] is the HTTP answer to write before closing.
//! Parsing is `httparse` (no allocation, no I/O); the protocol negotiation
//! follows k8s.io/apimachinery's `httpstream.Handshake` and `wsstream`: the
//! client's offers are tried in the client's order and the first one we
//! support wins; none → 403 with `X-Accepted-Stream-Protocol-Versions`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// The GUID RFC 6455 §1.3 appends to the client's key.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Remote command protocols over SPDY, best first (kubelet's list, v5 aside:
/// v5 differs from v4 only by a WebSocket CLOSE message).
pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The port-forward protocol over SPDY.
pub const PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// WebSocket subprotocols for exec and attach.
pub const WEBSOCKET_REMOTECOMMAND_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// WebSocket subprotocols for port forwarding: SPDY tunnelled in binary
/// messages (what kubectl does through the API server since 1.30), or the
/// channel form.
pub const WEBSOCKET_PORTFORWARD_PROTOCOLS: &[&str] = &[
    "SPDY/3.1+portforward.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// The HTTP header negotiating the SPDY stream protocol.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// What a 403 lists when no offered protocol is supported.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";

/// Limits on the request, against a client that never ends its headers.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of request line plus headers.
    pub max_head_bytes: usize,
    /// Longest token in the path.
    pub max_token_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 8 * 1024,
            max_token_len: 128,
        }
    }
}

/// Header lines we parse; more is 431.
const MAX_HEADERS: usize = 64;

/// Which streaming call the URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Exec,
    Attach,
    PortForward,
}

/// The protocol the connection switches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// SPDY/3.1; `protocol` is the negotiated `X-Stream-Protocol-Version`,
    /// `None` when the client offered none (the legacy v1 protocol; the
    /// answer then names none either).
    Spdy { protocol: Option<&'static str> },
    /// RFC 6455 WebSocket; `protocol` is the chosen subprotocol (`None`
    /// when the client offered none: plain `channel.k8s.io`), `accept`
    /// the `Sec-WebSocket-Accept` value.
    WebSocket {
        protocol: Option<&'static str>,
        accept: String,
    },
}

/// A well-formed upgrade request we can honour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// `true` for POST (as crictl sends), `false` for GET.
    pub post: bool,
    pub endpoint: Endpoint,
    /// The single-use token from the URL; the caller looks it up.
    pub token: String,
    /// The URL's query string, without the `?` (WebSocket port forwarding
    /// names its ports there: `?port=80&port=443`).
    pub query: String,
    pub transport: Transport,
}

impl UpgradeRequest {
    /// Every value of query parameter `name`, in order (no percent-decoding:
    /// the parameters that matter here are numbers).
    pub fn query_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

impl UpgradeRequest {
    /// The `101 Switching Protocols` answer.
    pub fn accept_response(&self) -> Vec<u8> {
        let mut out = String::from("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n");
        match &self.transport {
            Transport::Spdy { protocol } => {
                out.push_str("Upgrade: SPDY/3.1\r\n");
                if let Some(p) = protocol {
                    out.push_str(PROTOCOL_HEADER);
                    out.push_str(": ");
                    out.push_str(p);
                    out.push_str("\r\n");
                }
            }
            Transport::WebSocket { protocol, accept } => {
                out.push_str("Upgrade: websocket\r\nSec-WebSocket-Accept: ");
                out.push_str(accept);
                out.push_str("\r\n");
                if let Some(p) = protocol {
                    out.push_str("Sec-WebSocket-Protocol: ");
                    out.push_str(p);
                    out.push_str("\r\n");
                }
            }
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A request we refuse, with the HTTP answer to send before closing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// What was wrong (the response body).
    pub reason: String,
    /// Extra header lines (name, value).
    pub headers: Vec<(&'static str, String)>,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    /// The complete HTTP/1.1 response; the connection closes after it.
    pub fn response(&self) -> Vec<u8> {
        let phrase = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let body = format!("{}\n", self.reason);
        let mut out = format!("HTTP/1.1 {} {phrase}\r\n", self.status);
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        out.push_str("Connection: close\r\n");
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        out.push_str(&body);
        out.into_bytes()
    }
}

/// What [`parse_request`] made of the bytes so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet; read more and call again with all of it.
    Partial,
    /// The request, and how many bytes of the input it took.
    Complete(UpgradeRequest, usize),
}

/// Parses the upgrade request at the start of `buf`.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head_bytes {
                Err(Rejection::new(431, "request head too large"))
            } else {
                Ok(Parsed::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(431, "too many header fields"))
        }
        Err(e) => return Err(Rejection::new(400, format!("malformed request: {e}"))),
    };
    if consumed > limits.max_head_bytes {
        return Err(Rejection::new(431, "request head too large"));
    }
    if req.version != Some(1) {
        return Err(Rejection::new(400, "HTTP/1.1 required"));
    }
    let post = match req.method {
        Some("GET") => false,
        Some("POST") => true,
        _ => {
            let mut r = Rejection::new(405, "only GET and POST are served");
            r.headers.push(("Allow", "GET, POST".to_string()));
            return Err(r);
        }
    };
    let path = req.path.unwrap_or("");
    let (endpoint, token) = parse_path(path, limits)?;
    let query = path
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or(""))
        .unwrap_or("")
        .to_string();
    let request = Headers(req.headers);

    if !request.has_token("connection", "upgrade") {
        return Err(Rejection::new(
            400,
            "an upgrade to SPDY/3.1 or websocket is required (Connection: Upgrade)",
        ));
    }
    let transport = if request.has_token("upgrade", "spdy/3.1") {
        let offered: Vec<&str> = request.list("x-stream-protocol-version").collect();
        let supported = match endpoint {
            Endpoint::PortForward => PORTFORWARD_PROTOCOLS,
            Endpoint::Exec | Endpoint::Attach => REMOTECOMMAND_PROTOCOLS,
        };
        let protocol = negotiate(&offered, supported, || {
            let mut r = Rejection::new(
                403,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
                ),
            );
            for p in supported {
                r.headers
                    .push((ACCEPTED_PROTOCOLS_HEADER, (*p).to_string()));
            }
            r
        })?;
        Transport::Spdy { protocol }
    } else if request.has_token("upgrade", "websocket") {
        websocket_transport(&request, endpoint)?
    } else {
        return Err(Rejection::new(
            400,
            "unsupported upgrade: expected SPDY/3.1 or websocket",
        ));
    };
    Ok(Parsed::Complete(
        UpgradeRequest {
            post,
            endpoint,
            token,
            query,
            transport,
        },
        consumed,
    ))
}

fn websocket_transport(request: &Headers<'_>, endpoint: Endpoint) -> Result<Transport, Rejection> {
    if request.get("sec-websocket-version").map(str::trim) != Some("13") {
        let mut r = Rejection::new(426, "Sec-WebSocket-Version 13 required");
        r.headers.push(("Sec-WebSocket-Version", "13".to_string()));
        return Err(r);
    }
    let key = request
        .get("sec-websocket-key")
        .map(str::trim)
        .ok_or_else(|| Rejection::new(400, "Sec-WebSocket-Key missing"))?;
    // RFC 6455 §4.2.1: the key is 16 random bytes, base64-encoded.
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => {
            return Err(Rejection::new(
                400,
                "Sec-WebSocket-Key is not 16 bytes in base64",
            ))
        }
    }
    let offered: Vec<&str> = request.list("sec-websocket-protocol").collect();
    let supported = match endpoint {
        Endpoint::PortForward => WEBSOCKET_PORTFORWARD_PROTOCOLS,
        Endpoint::Exec | Endpoint::Attach => WEBSOCKET_REMOTECOMMAND_PROTOCOLS,
    };
    let protocol = negotiate(&offered, supported, || {
        Rejection::new(
            400,
            format!(
                "none of the requested subprotocols {offered:?} is supported; supported: {supported:?}"
            ),
        )
    })?;
    Ok(Transport::WebSocket {
        protocol,
        accept: websocket_accept(key),
    })
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §1.3): base64 of the
/// SHA-1 of the key followed by the protocol's GUID.
pub fn websocket_accept(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.digest().bytes())
}

/// The first of the client's offers (in its order) that we support; `None`
/// when the client offers none, `refuse()` when we support none of them.
fn negotiate(
    offered: &[&str],
    supported: &[&'static str],
    refuse: impl FnOnce() -> Rejection,
) -> Result<Option<&'static str>, Rejection> {
    if offered.is_empty() {
        return Ok(None);
    }
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == *o).copied())
        .map(Some)
        .ok_or_else(refuse)
}

fn parse_path(path: &str, limits: &Limits) -> Result<(Endpoint, String), Rejection> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let not_found = || Rejection::new(404, format!("no streaming endpoint at {path:?}"));
    let rest = path.strip_prefix('/').ok_or_else(not_found)?;
    let (kind, token) = rest.split_once('/').ok_or_else(not_found)?;
    let endpoint = match kind {
        "exec" => Endpoint::Exec,
        "attach" => Endpoint::Attach,
        "portforward" => Endpoint::PortForward,
        _ => return Err(not_found()),
    };
    let token_ok = !token.is_empty()
        && token.len() <= limits.max_token_len
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !token_ok {
        return Err(not_found());
    }
    Ok((endpoint, token.to_string()))
}

/// Case-insensitive header lookups over httparse's slice.
struct Headers<'a>(&'a [httparse::Header<'a>]);

impl<'a> Headers<'a> {
    fn values(&self, name: &'a str) -> impl Iterator<Item = &'a str> + '_ {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    }

    fn get(&self, name: &'a str) -> Option<&'a str> {
        self.values(name).next()
    }

    /// Every comma-separated element of every field `name`, trimmed.
    fn list(&self, name: &'a str) -> impl Iterator<Item = &'a str> + '_ {
        self.values(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    fn has_token(&self, name: &'a str, token: &str) -> bool {
        self.list(name).any(|v| v.eq_ignore_ascii_case(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(req: &str) -> Result<Parsed, Rejection> {
        parse_request(req.as_bytes(), &Limits::default())
    }

    fn complete(req: &str) -> UpgradeRequest {
        match parse(req) {
            Ok(Parsed::Complete(r, n)) => {
                assert_eq!(n, req.len());
                r
            }
            other => panic!("{other:?}"),
        }
    }

    fn status(req: &str) -> u16 {
        match parse(req) {
            Err(r) => r.status,
            other => panic!("{other:?}"),
        }
    }

    const SPDY_EXEC: &str = "POST /exec/abc123 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
        X-Stream-Protocol-Version: v5.channel.k8s.io\r\n\
        X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
        X-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n";

    #[test]
    fn rfc6455_accept_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn spdy_exec_negotiates_in_client_order() {
        let r = complete(SPDY_EXEC);
        assert!(r.post);
        assert_eq!(r.endpoint, Endpoint::Exec);
        assert_eq!(r.token, "abc123");
        assert_eq!(
            r.transport,
            Transport::Spdy {
                protocol: Some("v4.channel.k8s.io")
            }
        );
        let resp = String::from_utf8(r.accept_response()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Upgrade: SPDY/3.1\r\n"));
        assert!(resp.contains("X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"));
        assert!(resp.ends_with("\r\n\r\n"));
    }

    #[test]
    fn partial_then_complete_with_trailing_frames() {
        assert_eq!(parse(&SPDY_EXEC[..40]), Ok(Parsed::Partial));
        let mut bytes = SPDY_EXEC.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x80, 0x03, 0x00, 0x01]);
        match parse_request(&bytes, &Limits::default()) {
            Ok(Parsed::Complete(_, n)) => assert_eq!(n, SPDY_EXEC.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_common_protocol_is_403_listing_ours() {
        let req = "GET /attach/t HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: spdy/3.1\r\n\
            X-Stream-Protocol-Version: v9.channel.k8s.io\r\n\r\n";
        let r = parse(req).unwrap_err();
        assert_eq!(r.status, 403);
        let resp = String::from_utf8(r.response()).unwrap();
        for p in REMOTECOMMAND_PROTOCOLS {
            assert!(resp.contains(&format!("{ACCEPTED_PROTOCOLS_HEADER}: {p}\r\n")));
        }
    }

    #[test]
    fn portforward_takes_its_own_protocol() {
        let req = "POST /portforward/tok HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
            X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n";
        assert_eq!(
            complete(req).transport,
            Transport::Spdy {
                protocol: Some("portforward.k8s.io")
            }
        );
        let wrong =
            "POST /portforward/tok HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
            X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
        assert_eq!(status(wrong), 403);
    }

    #[test]
    fn no_offer_is_the_legacy_protocol() {
        let req = "GET /exec/t HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n";
        let r = complete(req);
        assert_eq!(r.transport, Transport::Spdy { protocol: None });
        let resp = String::from_utf8(r.accept_response()).unwrap();
        assert!(!resp.contains(PROTOCOL_HEADER));
    }

    #[test]
    fn websocket_exec() {
        let req = "GET /exec/tok HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\
            Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n\r\n";
        let r = complete(req);
        assert_eq!(
            r.transport,
            Transport::WebSocket {
                protocol: Some("v5.channel.k8s.io"),
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            }
        );
        let resp = String::from_utf8(r.accept_response()).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"));
    }

    #[test]
    fn websocket_portforward_tunnel() {
        let req = "GET /portforward/tok HTTP/1.1\r\nConnection: Upgrade\r\n\
            Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n";
        match complete(req).transport {
            Transport::WebSocket { protocol, .. } => {
                assert_eq!(protocol, Some("SPDY/3.1+portforward.k8s.io"))
            }
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn bad_websocket_requests() {
        let base = "GET /exec/tok HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n";
        assert_eq!(
            status(&format!(
                "{base}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )),
            426
        );
        assert_eq!(
            status(&format!("{base}Sec-WebSocket-Version: 13\r\n\r\n")),
            400
        );
        assert_eq!(
            status(&format!(
                "{base}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n"
            )),
            400
        );
        assert_eq!(
            status(&format!(
                "{base}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Protocol: chat\r\n\r\n"
            )),
            400
        );
    }

    #[test]
    fn bad_requests() {
        let up = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n";
        assert_eq!(status(&format!("GET /run/t HTTP/1.1\r\n{up}")), 404);
        assert_eq!(status(&format!("GET /exec/ HTTP/1.1\r\n{up}")), 404);
        assert_eq!(status(&format!("GET /exec/a%2fb HTTP/1.1\r\n{up}")), 404);
        assert_eq!(status(&format!("GET /exec HTTP/1.1\r\n{up}")), 404);
        assert_eq!(status(&format!("PUT /exec/t HTTP/1.1\r\n{up}")), 405);
        assert_eq!(status(&format!("GET /exec/t HTTP/1.0\r\n{up}")), 400);
        assert_eq!(status("GET /exec/t HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(
            status("GET /exec/t HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"),
            400
        );
        assert_eq!(status("\x01\x02garbage\r\n\r\n"), 400);
        // The query string is not part of the token.
        let r = complete(&format!(
            "GET /portforward/t?port=80&port=443 HTTP/1.1\r\n{up}"
        ));
        assert_eq!(r.token, "t");
        assert_eq!(r.query_values("port").collect::<Vec<_>>(), ["80", "443"]);
    }

    #[test]
    fn head_limits() {
        let huge = format!(
            "GET /exec/t HTTP/1.1\r\nX-Pad: {}\r\n",
            "a".repeat(10 * 1024)
        );
        assert_eq!(status(&huge), 431);
        let mut many = String::from("GET /exec/t HTTP/1.1\r\n");
        for i in 0..100 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(&many), 431);
        let long_token = format!(
            "GET /exec/{} HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
            "a".repeat(200)
        );
        assert_eq!(status(&long_token), 404);
    }

    #[test]
    fn rejection_response_is_well_formed() {
        let r = Rejection::new(404, "nope");
        let resp = String::from_utf8(r.response()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(resp.contains("Content-Length: 5\r\n"));
        assert!(resp.ends_with("\r\n\r\nnope\n"));
    }

    proptest::proptest! {
        #[test]
        fn any_split_point_gives_partial_then_the_same(split in 0usize..400) {
            let split = split.min(SPDY_EXEC.len());
            let head = &SPDY_EXEC.as_bytes()[..split];
            let r = parse_request(head, &Limits::default());
            if split < SPDY_EXEC.len() {
                proptest::prop_assert_eq!(r, Ok(Parsed::Partial));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_request(&bytes, &Limits::default());
        }
    }
}
