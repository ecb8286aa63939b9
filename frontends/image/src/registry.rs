//! A blocking client of the OCI distribution API (the registry HTTP API):
//! manifests and blobs over HTTP or HTTPS, with mirrors, per-registry TLS
//! roots, and anonymous, basic and bearer-token authentication.
//!
//! * Endpoints: a registry's configured mirrors first (the host is
//!   rewritten, the repository path and tag are kept, as containerd's
//!   `hosts.toml` does), then the registry itself. `docker.io` is served
//!   by `registry-1.docker.io`. Registries on localhost or a loopback
//!   address speak plain HTTP unless configured otherwise.
//! * TLS: rustls with the system's roots plus the CA files configured for
//!   the host (Mozilla's roots if the system has none).
//! * Auth: a request goes out with what we have (a bearer token from an
//!   earlier challenge, the request's registry token, or basic
//!   credentials after a Basic challenge). On 401 the `WWW-Authenticate`
//!   challenge says what to do: Basic → retry with the request's
//!   credentials; Bearer → fetch a token from the realm (with basic
//!   credentials, or an OAuth2 refresh-token grant for an identity
//!   token), then retry once. Credentials go only to the registry the
//!   image names (and its token realm), never to a mirror.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use crisp_core::cri::reference::DOCKER_HUB_API_HOST;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::Settings;

/// Why a registry request failed; the message names the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Cannot connect, TLS failure, timeout, 5xx.
    Unreachable,
    /// 401/403 after trying the credentials we have.
    Unauthorized,
    /// 404: no such repository, tag or blob.
    NotFound,
    /// Anything else the registry said that we cannot use.
    Protocol,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl RegistryError {
    fn new(kind: ErrorKind, message: String) -> Self {
        Self { kind, message }
    }
}

/// Credentials from a PullImage request's AuthConfig.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token, exchanged at the token realm.
    pub identity_token: String,
    /// A bearer token sent as is.
    pub registry_token: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field(
                "password",
                &(!self.password.is_empty()).then_some("<redacted>"),
            )
            .field(
                "identity_token",
                &(!self.identity_token.is_empty()).then_some("<redacted>"),
            )
            .field(
                "registry_token",
                &(!self.registry_token.is_empty()).then_some("<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// From the CRI AuthConfig fields. `auth` is base64 of
    /// `username:password` and wins over empty username/password.
    pub fn from_auth(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Self, AuthError> {
        let mut c = Self {
            username: username.to_owned(),
            password: password.to_owned(),
            identity_token: identity_token.to_owned(),
            registry_token: registry_token.to_owned(),
        };
        if !auth.is_empty() && c.username.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(AuthError::NotBase64)?;
            let text = String::from_utf8(raw).map_err(|_| AuthError::NotUtf8)?;
            let (u, p) = text.split_once(':').ok_or(AuthError::NoColon)?;
            c.username = u.to_owned();
            c.password = p.to_owned();
        }
        Ok(c)
    }

    /// A short hash of the credentials, to tell pulls apart without
    /// keeping the secrets in keys or logs.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &self.username,
            &self.password,
            &self.identity_token,
            &self.registry_token,
        )
            .hash(&mut h);
        h.finish()
    }

    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.identity_token.is_empty() && self.registry_token.is_empty()
    }

    fn basic(&self) -> Option<String> {
        if self.username.is_empty() {
            return None;
        }
        let raw = format!("{}:{}", self.username, self.password);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }
}

/// One place to send registry API requests.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `scheme://host[:port][/prefix]`, requests go to `{base}/v2/...`.
    pub base: String,
    /// `host[:port]`, for messages and TLS settings.
    pub host: String,
    pub is_mirror: bool,
    agent: ureq::Agent,
    connect_timeout: Duration,
}

/// Why CRI `AuthConfig.auth` is unusable.
#[derive(Debug)]
pub enum AuthError {
    NotBase64(base64::DecodeError),
    NotUtf8,
    /// Decoded, but no `username:password`.
    NoColon,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotBase64(e) => write!(f, "invalid auth in AuthConfig (not base64): {e}"),
            Self::NotUtf8 => f.write_str("invalid auth in AuthConfig (not UTF-8)"),
            Self::NoColon => f.write_str("invalid auth in AuthConfig (expected username:password)"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Why the `[[images.registries]]` settings are unusable.
#[derive(Debug)]
pub enum SettingsError {
    MissingHost,
    /// `mirrors_only` for a registry that has no mirrors.
    MirrorsOnlyWithoutMirrors(String),
    Mirror {
        mirror: String,
        host: String,
        source: EndpointError,
    },
    CaFile {
        host: String,
        source: CaFileError,
    },
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingHost => f.write_str("[[images.registries]] entry without host"),
            Self::MirrorsOnlyWithoutMirrors(host) => {
                write!(f, "registry {host}: mirrors_only = true but no mirrors")
            }
            Self::Mirror {
                mirror,
                host,
                source,
            } => write!(f, "invalid mirror {mirror:?} for {host}: {source}"),
            Self::CaFile { host, source } => write!(f, "registry {host}: {source}"),
        }
    }
}

impl std::error::Error for SettingsError {}

/// Why a registry endpoint cannot be used.
#[derive(Debug)]
pub enum EndpointError {
    /// A URL with a scheme other than http:// or https://.
    Scheme,
    BadHost(String),
    CaFile(CaFileError),
    AgentCachePoisoned,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scheme => f.write_str("only http:// and https:// endpoints"),
            Self::BadHost(host) => write!(f, "bad host {host:?}"),
            Self::CaFile(e) => e.fmt(f),
            Self::AgentCachePoisoned => f.write_str("agent cache poisoned"),
        }
    }
}

impl std::error::Error for EndpointError {}

/// Why a configured CA file gives no certificates.
#[derive(Debug)]
pub enum CaFileError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Pem {
        path: PathBuf,
        source: Box<ureq::Error>,
    },
    Empty(PathBuf),
}

impl fmt::Display for CaFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => {
                write!(f, "cannot read CA file {}: {source}", path.display())
            }
            Self::Pem { path, source } => {
                write!(f, "invalid PEM in CA file {}: {source}", path.display())
            }
            Self::Empty(path) => write!(f, "no certificate in CA file {}", path.display()),
        }
    }
}

impl std::error::Error for CaFileError {}

/// Per-registry settings, resolved from the config.
pub struct Registries {
    config: Settings,
    agents: Mutex<HashMap<(String, bool), ureq::Agent>>,
    system_roots: OnceLock<Arc<Vec<Certificate<'static>>>>,
}

impl Registries {
    pub fn new(config: &Settings) -> Result<Self, SettingsError> {
        for r in &config.registries {
            if r.host.is_empty() {
                return Err(SettingsError::MissingHost);
            }
            if r.mirrors_only && r.mirrors.is_empty() {
                return Err(SettingsError::MirrorsOnlyWithoutMirrors(r.host.clone()));
            }
            for m in &r.mirrors {
                parse_endpoint_url(m, None).map_err(|source| SettingsError::Mirror {
                    mirror: m.clone(),
                    host: r.host.clone(),
                    source,
                })?;
            }
            for f in &r.ca_files {
                load_pem(f).map_err(|source| SettingsError::CaFile {
                    host: r.host.clone(),
                    source,
                })?;
            }
        }
        Ok(Self {
            config: config.clone(),
            agents: Mutex::new(HashMap::new()),
            system_roots: OnceLock::new(),
        })
    }

    /// Where to look for images named with registry `domain`, in order.
    pub fn endpoints(&self, domain: &str) -> Result<Vec<Endpoint>, EndpointError> {
        let mut out = Vec::new();
        if let Some(reg) = self.config.registries.iter().find(|r| r.host == domain) {
            for m in &reg.mirrors {
                let (scheme, host, prefix) =
                    parse_endpoint_url(m, self.plain_http_for(&host_of(m)))?;
                out.push(Endpoint {
                    base: format!("{scheme}://{host}{prefix}"),
                    agent: self.agent(&host, scheme == "http")?,
                    host,
                    is_mirror: true,
                    connect_timeout: self.connect_timeout(),
                });
            }
        }
        if self
            .config
            .registries
            .iter()
            .any(|r| r.host == domain && r.mirrors_only)
        {
            return Ok(out);
        }
        let api_host = if domain == "docker.io" {
            DOCKER_HUB_API_HOST.to_owned()
        } else {
            domain.to_owned()
        };
        let plain = self
            .plain_http_for(domain)
            .unwrap_or_else(|| is_loopback_host(domain));
        let scheme = if plain { "http" } else { "https" };
        out.push(Endpoint {
            base: format!("{scheme}://{api_host}"),
            agent: self.agent(domain, plain)?,
            host: domain.to_owned(),
            is_mirror: false,
            connect_timeout: self.connect_timeout(),
        });
        Ok(out)
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.config.connect_timeout_secs.max(1))
    }

    fn plain_http_for(&self, host: &str) -> Option<bool> {
        self.config
            .registries
            .iter()
            .find(|r| r.host == host)
            .and_then(|r| r.plain_http)
    }

    /// An agent for `host`: its CA files (if configured) on top of the
    /// system roots; no proxy for loopback hosts.
    fn agent(&self, host: &str, plain: bool) -> Result<ureq::Agent, EndpointError> {
        let key = (host.to_owned(), plain);
        let mut agents = self
            .agents
            .lock()
            .map_err(|_| EndpointError::AgentCachePoisoned)?;
        if let Some(a) = agents.get(&key) {
            return Ok(a.clone());
        }
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(
                self.config.connect_timeout_secs.max(1),
            )))
            .timeout_recv_response(Some(Duration::from_secs(
                self.config.read_timeout_secs.max(1),
            )))
            .timeout_per_read(Some(Duration::from_secs(
                self.config.read_timeout_secs.max(1),
            )))
            .user_agent(concat!("crisp/", env!("CARGO_PKG_VERSION")));
        if is_loopback_host(host) {
            builder = builder.proxy(None);
        }
        if !plain {
            let mut roots: Vec<Certificate<'static>> = self.system_roots().as_ref().clone();
            let extra: Vec<PathBuf> = self
                .config
                .registries
                .iter()
                .filter(|r| r.host == host)
                .flat_map(|r| r.ca_files.iter().cloned())
                .collect();
            for f in &extra {
                roots.extend(load_pem(f).map_err(EndpointError::CaFile)?);
            }
            let root_certs = if roots.is_empty() {
                RootCerts::WebPki
            } else {
                RootCerts::Specific(Arc::new(roots))
            };
            builder = builder.tls_config(TlsConfig::builder().root_certs(root_certs).build());
        }
        let agent = ureq::Agent::with_parts(
            builder.build(),
            crate::transport::connector(),
            ureq::unversioned::resolver::DefaultResolver::default(),
        );
        agents.insert(key, agent.clone());
        Ok(agent)
    }

    fn system_roots(&self) -> Arc<Vec<Certificate<'static>>> {
        self.system_roots
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "while loading the system's CA certificates");
                }
                let certs: Vec<Certificate<'static>> = found
                    .certs
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                    .collect();
                if certs.is_empty() {
                    tracing::warn!("no system CA certificates found; using Mozilla's roots");
                }
                Arc::new(certs)
            })
            .clone()
    }
}

fn load_pem(path: &PathBuf) -> Result<Vec<Certificate<'static>>, CaFileError> {
    let data = std::fs::read(path).map_err(|source| CaFileError::Read {
        path: path.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&data) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => out.push(c.to_owned()),
            Ok(_) => {}
            Err(source) => {
                return Err(CaFileError::Pem {
                    path: path.clone(),
                    source: Box::new(source),
                })
            }
        }
    }
    if out.is_empty() {
        return Err(CaFileError::Empty(path.clone()));
    }
    Ok(out)
}

/// `http://h:p/prefix`, `https://h`, or a bare `h[:p]` (HTTP for
/// loopback, else HTTPS unless `plain` says otherwise).
fn parse_endpoint_url(
    url: &str,
    plain: Option<bool>,
) -> Result<(&'static str, String, String), EndpointError> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = url.strip_prefix("https://") {
        ("https", r)
    } else if url.contains("://") {
        return Err(EndpointError::Scheme);
    } else {
        let host = url.split('/').next().unwrap_or("");
        let plain = plain.unwrap_or_else(|| is_loopback_host(host));
        (if plain { "http" } else { "https" }, url)
    };
    let (host, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(['@', ' ', '?', '#']) {
        return Err(EndpointError::BadHost(host.to_owned()));
    }
    let prefix = prefix.strip_suffix("/v2").unwrap_or(prefix);
    Ok((scheme, host.to_owned(), prefix.to_owned()))
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or("").to_owned()
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name == "localhost"
        || name
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Requests for one repository on one endpoint, keeping the token the
/// registry issued.
#[derive(Clone)]
pub struct Session {
    endpoint: Endpoint,
    repository: String,
    credentials: Credentials,
    authorization: Option<String>,
}

/// A registry response with its body still to be read.
pub struct Fetched {
    pub content_type: Option<String>,
    pub body: Box<dyn Read + Send>,
}

impl Session {
    /// `credentials` are dropped for mirrors.
    pub fn new(endpoint: Endpoint, repository: &str, credentials: &Credentials) -> Self {
        let credentials = if endpoint.is_mirror {
            Credentials::default()
        } else {
            credentials.clone()
        };
        let authorization = (!credentials.registry_token.is_empty())
            .then(|| format!("Bearer {}", credentials.registry_token));
        Self {
            endpoint,
            repository: repository.to_owned(),
            credentials,
            authorization,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The manifest (or index) `reference` (a tag or a digest) names.
    pub fn manifest(
        &mut self,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let fetched = self.get(&path, Some(super::oci::MANIFEST_ACCEPT), "manifest")?;
        let data = read_limited(fetched.body, super::oci::MAX_DOCUMENT).map_err(|e| {
            RegistryError::new(
                ErrorKind::Unreachable,
                format!("{}: reading manifest {reference}: {e}", self.where_()),
            )
        })?;
        Ok((data, fetched.content_type))
    }

    /// A blob's content, streamed. When the connection breaks off before
    /// `size` bytes (if known), the rest is asked for with a Range request.
    pub fn blob(&mut self, digest: &str, size: Option<u64>) -> Result<Fetched, RegistryError> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let fetched = self.get(&path, None, "blob")?;
        let body = ResumingBody {
            agent: self.endpoint.agent.clone(),
            connect_timeout: self.endpoint.connect_timeout,
            url: format!("{}{path}", self.endpoint.base),
            authorization: self.authorization.clone(),
            body: fetched.body,
            offset: 0,
            size,
            resumes_left: MAX_RESUMES,
        };
        Ok(Fetched {
            content_type: fetched.content_type,
            body: Box::new(body),
        })
    }

    fn where_(&self) -> String {
        if self.endpoint.is_mirror {
            format!("mirror {} ({})", self.endpoint.host, self.endpoint.base)
        } else {
            format!("registry {} ({})", self.endpoint.host, self.endpoint.base)
        }
    }

    fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Fetched, RegistryError> {
        let url = format!("{}{path}", self.endpoint.base);
        let mut tried_challenge = false;
        let mut retries = 0;
        loop {
            let mut req = self.endpoint.agent.get(&url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(auth) = &self.authorization {
                req = req.header("Authorization", auth);
            }
            let resp = within_deadline(req, self.endpoint.connect_timeout)
                .call()
                .map_err(|e| self.transport_error(&url, e))?;
            let status = resp.status().as_u16();
            match status {
                200..=299 => {
                    let content_type = header(&resp, "content-type");
                    return Ok(Fetched {
                        content_type,
                        body: Box::new(resp.into_body().into_reader()),
                    });
                }
                401 if !tried_challenge => {
                    tried_challenge = true;
                    let challenge = header(&resp, "www-authenticate").unwrap_or_default();
                    self.answer_challenge(&challenge)?;
                }
                401 | 403 => {
                    let detail = error_detail(resp);
                    let msg = if self.credentials.is_empty() {
                        format!(
                            "{} requires authentication for {url} (no credentials were given){detail}",
                            self.where_()
                        )
                    } else {
                        format!(
                            "{} rejected the credentials for {url} (HTTP {status}){detail}",
                            self.where_()
                        )
                    };
                    return Err(RegistryError::new(ErrorKind::Unauthorized, msg));
                }
                404 => {
                    let detail = error_detail(resp);
                    return Err(RegistryError::new(
                        ErrorKind::NotFound,
                        format!(
                            "{} has no {what} at {url} (HTTP 404){detail}",
                            self.where_()
                        ),
                    ));
                }
                429 | 500..=599 => {
                    let retry_after = header(&resp, "retry-after")
                        .and_then(|v| parse_retry_after(&v, std::time::SystemTime::now()));
                    let detail = error_detail(resp);
                    let failed = |why: String| {
                        RegistryError::new(
                            ErrorKind::Unreachable,
                            format!(
                                "{} failed for {url}: HTTP {status}{detail}{why}",
                                self.where_()
                            ),
                        )
                    };
                    if retries >= MAX_RETRIES {
                        return Err(failed(format!(" (after {retries} retries)")));
                    }
                    let wait = retry_wait(retries, retry_after);
                    if let Some(why) = wait_fits_deadline(wait) {
                        return Err(failed(why));
                    }
                    retries += 1;
                    tracing::warn!(
                        url = %url,
                        status,
                        retry = retries,
                        wait_ms = wait.as_millis() as u64,
                        "registry busy or failing; retrying"
                    );
                    if !sleep_unless_stopped(wait) {
                        return Err(failed(
                            " (the pull was stopped while waiting to retry)".into(),
                        ));
                    }
                }
                _ => {
                    let detail = error_detail(resp);
                    return Err(RegistryError::new(
                        ErrorKind::Protocol,
                        format!("{} answered HTTP {status} for {url}{detail}", self.where_()),
                    ));
                }
            }
        }
    }

    fn transport_error(&self, url: &str, e: ureq::Error) -> RegistryError {
        let detail = match &e {
            ureq::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        RegistryError::new(
            ErrorKind::Unreachable,
            format!("cannot reach {} at {url}: {detail}", self.where_()),
        )
    }

    fn answer_challenge(&mut self, challenge: &str) -> Result<(), RegistryError> {
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match self.credentials.basic() {
                Some(b) => {
                    self.authorization = Some(b);
                    Ok(())
                }
                None => Err(RegistryError::new(
                    ErrorKind::Unauthorized,
                    format!(
                        "{} requires authentication (Basic) and no credentials were given",
                        self.where_()
                    ),
                )),
            },
            "bearer" => {
                let token = self.fetch_token(&params)?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(RegistryError::new(
                ErrorKind::Unauthorized,
                format!(
                    "{} asked for authentication crisp does not speak: {challenge:?}",
                    self.where_()
                ),
            )),
        }
    }

    /// The token endpoint of the distribution spec: GET with basic
    /// credentials (or none), or an OAuth2 refresh-token POST for an
    /// identity token.
    fn fetch_token(&self, params: &HashMap<String, String>) -> Result<String, RegistryError> {
        let Some(realm) = params.get("realm") else {
            return Err(RegistryError::new(
                ErrorKind::Protocol,
                format!("{} sent a Bearer challenge without a realm", self.where_()),
            ));
        };
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(RegistryError::new(
                ErrorKind::Protocol,
                format!(
                    "{}: token realm {realm:?} is not an http(s) URL",
                    self.where_()
                ),
            ));
        }
        let service = params.get("service").cloned().unwrap_or_default();
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let agent = &self.endpoint.agent;
        let result = if !self.credentials.identity_token.is_empty() {
            agent.post(realm).send_form([
                ("grant_type", "refresh_token"),
                ("refresh_token", self.credentials.identity_token.as_str()),
                ("service", service.as_str()),
                ("scope", scope.as_str()),
                ("client_id", "crisp"),
            ])
        } else {
            let mut url = format!("{realm}{}", if realm.contains('?') { '&' } else { '?' });
            if !service.is_empty() {
                url.push_str(&format!("service={}&", query_escape(&service)));
            }
            url.push_str(&format!("scope={}", query_escape(&scope)));
            let mut req = agent.get(&url);
            if let Some(b) = self.credentials.basic() {
                req = req.header("Authorization", b);
            }
            req.call()
        };
        let resp = result.map_err(|e| {
            RegistryError::new(
                ErrorKind::Unreachable,
                format!(
                    "cannot reach the token service {realm} of {}: {e}",
                    self.where_()
                ),
            )
        })?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RegistryError::new(
                ErrorKind::Unauthorized,
                format!(
                    "the token service {realm} of {} rejected the credentials (HTTP {status})",
                    self.where_()
                ),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(RegistryError::new(
                ErrorKind::Protocol,
                format!("the token service {realm} answered HTTP {status}"),
            ));
        }
        let body =
            read_limited(Box::new(resp.into_body().into_reader()), 1 << 20).map_err(|e| {
                RegistryError::new(
                    ErrorKind::Unreachable,
                    format!("reading token from {realm}: {e}"),
                )
            })?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            RegistryError::new(
                ErrorKind::Protocol,
                format!("token from {realm} is not JSON: {e}"),
            )
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                RegistryError::new(
                    ErrorKind::Protocol,
                    format!("no token in the answer of {realm}"),
                )
            })
    }
}

/// Retries of a request the registry answered 429 or 5xx.
const MAX_RETRIES: u32 = 4;
/// The longest wait between them, whatever `Retry-After` asks.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// Range requests per blob after its connection broke off.
const MAX_RESUMES: u32 = 5;

/// How long to wait before retry number `retries + 1`: what the
/// registry's `Retry-After` asks (at most [`MAX_RETRY_WAIT`]), else 1 s,
/// 2 s, 4 s, ... .
pub fn retry_wait(retries: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or_else(|| Duration::from_secs(1u64 << retries.min(5)))
        .min(MAX_RETRY_WAIT)
}

/// `Retry-After` (RFC 9110 10.2.3): seconds, or an HTTP date (IMF-fixdate),
/// as a wait from `now`. A date in the past is no wait.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → seconds since the epoch.
fn parse_http_date(s: &str) -> Option<u64> {
    let mut parts = s.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + sec)
}

/// Why waiting `wait` is pointless: the pull this thread works for must
/// be over before then.
fn wait_fits_deadline(wait: Duration) -> Option<String> {
    let deadline = crate::stop::current_stop()?.deadline()?;
    (std::time::Instant::now() + wait > deadline).then(|| {
        format!(
            " (a retry in {} s would come after the call's deadline)",
            wait.as_secs_f64()
        )
    })
}

/// Sleep `wait`, in slices, unless the pull is stopped meanwhile; false
/// if it was.
fn sleep_unless_stopped(wait: Duration) -> bool {
    let until = std::time::Instant::now() + wait;
    loop {
        if crate::stop::current().is_some() {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(100)));
    }
}

/// The request, its connection attempt bounded by the deadline of the
/// pull this thread works for. Once connected, the transport watches the
/// pull's stop itself ([`crate::transport`]); no global timeout here, as
/// a caller with a later deadline may join a shared pull meanwhile.
fn within_deadline(
    req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    connect_timeout: Duration,
) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
    let Some(deadline) = crate::stop::current_stop().and_then(|s| s.deadline()) else {
        return req;
    };
    let left = deadline
        .saturating_duration_since(std::time::Instant::now())
        .max(Duration::from_millis(1));
    req.config()
        .timeout_connect(Some(left.min(connect_timeout)))
        .build()
}

/// A blob's body that, when its connection breaks off (an error, or the
/// end before the size the manifest gave), asks for the rest with
/// `Range: bytes=N-` and reads on. A registry that ignores the range
/// (200) sends everything again; the first N bytes are skipped. The
/// caller still verifies the digest of the whole.
struct ResumingBody {
    agent: ureq::Agent,
    connect_timeout: Duration,
    url: String,
    authorization: Option<String>,
    body: Box<dyn Read + Send>,
    offset: u64,
    size: Option<u64>,
    resumes_left: u32,
}

impl Read for ResumingBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.body.read(buf) {
                Ok(0) if !buf.is_empty() && self.size.is_some_and(|s| self.offset < s) => {
                    let cause = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "connection closed after {} of {} bytes",
                            self.offset,
                            self.size.unwrap_or(0)
                        ),
                    );
                    self.resume(cause)?;
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(e)?,
            }
        }
    }
}

impl ResumingBody {
    fn resume(&mut self, cause: std::io::Error) -> std::io::Result<()> {
        if self.resumes_left == 0 || crate::stop::current().is_some() {
            return Err(cause);
        }
        self.resumes_left -= 1;
        tracing::warn!(
            url = %self.url,
            offset = self.offset,
            error = %cause,
            "blob download broke off; resuming with a Range request"
        );
        let mut req = self
            .agent
            .get(&self.url)
            .header("Range", format!("bytes={}-", self.offset));
        if let Some(auth) = &self.authorization {
            req = req.header("Authorization", auth);
        }
        let failed = |why: String| {
            std::io::Error::other(format!(
                "{cause}; resuming at byte {} failed: {why}",
                self.offset
            ))
        };
        let resp = within_deadline(req, self.connect_timeout)
            .call()
            .map_err(|e| failed(e.to_string()))?;
        let status = resp.status().as_u16();
        let mut body: Box<dyn Read + Send> = Box::new(resp.into_body().into_reader());
        match status {
            206 => {}
            200 => {
                let skipped =
                    std::io::copy(&mut (&mut body).take(self.offset), &mut std::io::sink())
                        .map_err(|e| failed(e.to_string()))?;
                if skipped != self.offset {
                    return Err(failed("the blob is shorter the second time".into()));
                }
            }
            _ => return Err(failed(format!("HTTP {status}"))),
        }
        self.body = body;
        Ok(())
    }
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The registry's JSON error (`{"errors":[{"code","message"}]}`), as
/// `: CODE message` for messages.
fn error_detail(resp: ureq::http::Response<ureq::Body>) -> String {
    let body = read_limited(Box::new(resp.into_body().into_reader()), 64 << 10).unwrap_or_default();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return String::new();
    };
    let Some(e) = v.get("errors").and_then(|e| e.get(0)) else {
        return String::new();
    };
    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
    format!(": {code} {msg}").trim_end().to_owned()
}

fn read_limited(body: Box<dyn Read + Send>, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    body.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "document larger than {limit} bytes"
        )));
    }
    Ok(out)
}

/// `Bearer realm="https://auth",service="reg",scope="repository:a:pull"`
/// → ("Bearer", {realm, service, scope}).
pub fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some(eq) = s.find('=') else { break };
        let key = s[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        s = s[eq + 1..].trim_start();
        let value;
        if let Some(stripped) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = stripped.char_indices();
            let mut end = stripped.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            s = &stripped[end.min(stripped.len())..];
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_owned();
            s = &s[end..];
        }
        s = s.trim_start().trim_start_matches(',').trim_start();
        params.insert(key, value);
    }
    (scheme.to_owned(), params)
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryConfig;

    fn settings(registries: Vec<RegistryConfig>) -> Settings {
        Settings {
            registries,
            ..Settings::new(std::path::PathBuf::new())
        }
    }

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "Basic");
        assert_eq!(p["realm"], "Registry Realm");
        let (_, p) = parse_challenge(r#"Bearer realm=http://x/t, service = "a\"b""#);
        assert_eq!(p["realm"], "http://x/t");
        assert_eq!(p["service"], "a\"b");
        let _ = parse_challenge("");
        let _ = parse_challenge("Bearer realm=\"unterminated");
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "example.com:443",
            "[fe80::1]:5000",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn endpoints_mirrors_first() {
        let config = settings(vec![RegistryConfig {
            host: "registry.k8s.io".into(),
            mirrors: vec![
                "127.0.0.1:5000".into(),
                "https://mirror.example/cache/".into(),
            ],
            ..RegistryConfig::default()
        }]);
        let r = Registries::new(&config).unwrap();
        let eps = r.endpoints("registry.k8s.io").unwrap();
        let bases: Vec<_> = eps.iter().map(|e| (e.base.as_str(), e.is_mirror)).collect();
        assert_eq!(
            bases,
            vec![
                ("http://127.0.0.1:5000", true),
                ("https://mirror.example/cache", true),
                ("https://registry.k8s.io", false)
            ]
        );
        let eps = r.endpoints("docker.io").unwrap();
        assert_eq!(eps[0].base, "https://registry-1.docker.io");
        let eps = r.endpoints("localhost:5000").unwrap();
        assert_eq!(eps[0].base, "http://localhost:5000");
    }

    #[test]
    fn bad_config_is_refused() {
        let config = settings(vec![RegistryConfig {
            host: "x".into(),
            mirrors: vec!["ftp://m".into()],
            ..RegistryConfig::default()
        }]);
        assert!(Registries::new(&config).is_err());

        let config = settings(vec![RegistryConfig {
            host: "x".into(),
            ca_files: vec!["/nonexistent/ca.pem".into()],
            ..RegistryConfig::default()
        }]);
        let err = Registries::new(&config).err().expect("refused");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn credentials_from_auth() {
        let c = Credentials::from_auth("", "", "dXNlcjpwYXNz", "", "").unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pass"));
        assert!(Credentials::from_auth("", "", "!!", "", "").is_err());
        let c = Credentials::from_auth("a", "b", "", "", "").unwrap();
        assert_eq!(c.basic().unwrap(), "Basic YTpi");
        assert!(!format!("{c:?}").contains('b') || format!("{c:?}").contains("redacted"));
        assert!(Credentials::default().is_empty());
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600)
        );
        for bad in [
            "",
            "-1",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn retry_waits_are_bounded() {
        assert_eq!(retry_wait(0, None), Duration::from_secs(1));
        assert_eq!(retry_wait(3, None), Duration::from_secs(8));
        assert_eq!(
            retry_wait(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_wait(0, Some(Duration::from_secs(3600))),
            MAX_RETRY_WAIT
        );
    }

    #[test]
    fn mirrors_only_leaves_out_the_registry() {
        let config = settings(vec![RegistryConfig {
            host: "registry.k8s.io".into(),
            mirrors: vec![
                "http://127.0.0.1:5001".into(),
                "http://127.0.0.1:5000".into(),
            ],
            mirrors_only: true,
            ..RegistryConfig::default()
        }]);
        let r = Registries::new(&config).unwrap();
        let bases: Vec<_> = r
            .endpoints("registry.k8s.io")
            .unwrap()
            .into_iter()
            .map(|e| e.base)
            .collect();
        assert_eq!(bases, ["http://127.0.0.1:5001", "http://127.0.0.1:5000"]);
        let config = settings(vec![RegistryConfig {
            host: "x".into(),
            mirrors_only: true,
            ..RegistryConfig::default()
        }]);
        let err = Registries::new(&config).err().expect("refused");
        assert!(err.to_string().contains("mirrors_only"), "{err}");
    }

    #[test]
    fn query_escaping() {
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
