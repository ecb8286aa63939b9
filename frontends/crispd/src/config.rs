//! crispd's configuration: a TOML file where every key is optional, then
//! command-line overrides. `crispd --print-config` shows the result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/crisp/config.toml";

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The CRI socket kubelet and crictl connect to.
    pub socket: PathBuf,
    /// The group that owns the socket (name or number); mode is 0660.
    pub socket_group: String,
    /// Persistent records: pods, containers, images, runtime config.
    pub state_dir: PathBuf,
    /// Runtime files that do not survive a reboot (lock, monitor sockets).
    pub runtime_dir: PathBuf,
    /// Optional TCP listener, e.g. "127.0.0.1:10010", for tools that speak
    /// only TCP.
    pub tcp_listen: Option<String>,
    /// Allow `tcp_listen` on an address other than loopback.
    pub tcp_allow_non_loopback: bool,
    /// Threads for blocking work (disk, child processes); pulls have
    /// their own (`images.pull_workers`).
    pub workers: usize,
    /// Jobs waiting for a worker before new ones are refused.
    pub worker_queue: usize,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// How long shutdown waits for calls in flight.
    pub shutdown_timeout_secs: u64,
    /// Directory of CNI network configurations.
    pub cni_conf_dir: PathBuf,
    /// Directory of CNI plugin binaries.
    pub cni_bin_dir: PathBuf,
    /// How long one CNI plugin call (ADD, DEL) may take before it is
    /// killed and the call fails: a plugin that hangs must not hold
    /// RunPodSandbox (and the pod's name) for ever.
    pub cni_timeout_secs: u64,
    /// Most processes (and threads) each container may have, written to
    /// its cgroup's `pids.max`, as CRI-O's `pids_limit`: the CRI has no
    /// field for it. 0: no limit of crisp's own.
    pub pids_limit: u64,
    pub log: LogConfig,
    pub grpc: GrpcConfig,
    pub event_loop: EventLoopConfig,
    pub access: AccessConfig,
    pub images: ImagesConfig,
    pub streaming: StreamingConfig,
    /// TLS on `tcp_listen`; absent: the TCP listener speaks plaintext.
    pub tls: Option<TlsConfig>,
}

/// TLS on the TCP listener (`[tls]`). The files are read at start and
/// again on SIGHUP; connections accepted after that get the new ones.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to;
    /// absent: clients are not asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client must present a certificate.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// A TLS handshake not finished within this is closed.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
}

fn default_handshake_timeout_secs() -> u64 {
    10
}

/// Whether a client certificate is required (`client_auth`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client without a certificate is served (as an anonymous or
    /// token-carrying caller); one with a certificate must pass.
    Optional,
    /// The handshake fails without a valid client certificate.
    #[default]
    Required,
}

/// The streaming server behind the URLs that Exec, Attach and PortForward
/// answer (containerd's `stream_server_address`/`stream_server_port`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Address to listen on; the URLs name it.
    pub address: String,
    /// Port; 0 takes a free one at start (Status's verbose info and the
    /// log show which).
    pub port: u16,
    /// Allow `address` to be other than loopback. The server has no
    /// authentication of its own: the URLs' tokens are the credential.
    pub allow_non_loopback: bool,
    /// How long a URL may wait to be used (kubelet uses it at once).
    pub token_ttl_secs: u64,
    /// URLs outstanding at once; more requests get RESOURCE_EXHAUSTED.
    pub max_tokens: usize,
    /// Sessions (exec, attach, port-forward connections) at once.
    pub max_sessions: usize,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 0,
            allow_non_loopback: false,
            token_ttl_secs: 60,
            max_tokens: 256,
            max_sessions: 256,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace (or a tracing filter directive).
    pub level: String,
    /// "text" or "json".
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Largest request message accepted; kubelet uses 16 MiB.
    pub max_recv_message_size: usize,
    /// Concurrent calls per connection.
    pub max_concurrent_streams: u32,
}

/// How the event loop waits for work.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventLoopConfig {
    /// After handling events, keep polling without sleeping for up to this
    /// many microseconds before blocking in `poll`. Waking a sleeping
    /// thread costs tens of microseconds on some VMs, far more than a
    /// unary call; a short spin answers a caller's next request without
    /// that cost, at the price of up to this much CPU after each burst of
    /// work. While spinning, the connection that last brought a request is
    /// read directly, several times per poll of everything else, so its
    /// next request needs no poll syscall first. 0 never spins. An idle
    /// crispd never spins.
    pub spin_us: u64,
}

impl Default for EventLoopConfig {
    fn default() -> Self {
        Self {
            spin_us: DEFAULT_SPIN_US,
        }
    }
}

/// See [`EventLoopConfig::spin_us`]; chosen from scripts/bench (BENCHMARKS.md).
pub const DEFAULT_SPIN_US: u64 = 50;

/// Who may call what. Root may always call everything; other callers need
/// a rule. Methods are named by rpc name ("Version"), full path
/// ("/runtime.v1.RuntimeService/Version"), "read-only" (the methods that
/// only read state) or "*".
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    pub rules: Vec<AccessRule>,
    /// Methods callers on the TCP listener may use without credentials.
    pub tcp_methods: Vec<String>,
    /// Accept credentials (`authorization`, `username`/`password`) on a
    /// plaintext TCP connection from a loopback address. Off: such calls
    /// are refused, so a token never travels in clear.
    pub allow_plaintext_credentials_on_loopback: bool,
    /// Callers on the TCP listener that prove who they are: by a token
    /// (`authorization: Bearer`, or `username` = name and `password` =
    /// token) or by a client certificate's subject.
    pub identities: Vec<IdentityConfig>,
}

/// The default: anonymous TCP callers may call the read-only methods, as
/// when there is no `[access]` at all (a file with only `[[access.rules]]`
/// used to leave them none).
impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            tcp_methods: vec!["read-only".into()],
            allow_plaintext_credentials_on_loopback: false,
            identities: Vec::new(),
        }
    }
}

/// One `[[access.identities]]` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    pub name: String,
    /// The token's salted hash, as `crispd hash-token` prints it
    /// (`$sha256$<salt hex>$<digest hex>`); never the token itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// A TLS client certificate whose subject is this ("CN=name") is
    /// this identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_subject: Option<String>,
    /// As in `[[access.rules]]`.
    pub methods: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessRule {
    /// Matches a caller with this uid...
    pub uid: Option<u32>,
    /// ...or with this primary gid.
    pub gid: Option<u32>,
    pub methods: Vec<String>,
}

/// Image pulls: registry endpoints, mirrors, TLS and timeouts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Seconds to wait for a TCP (and TLS) connection to a registry.
    pub connect_timeout_secs: u64,
    /// Seconds a registry connection may stay silent (the no-progress
    /// timeout): that endpoint counts as stalled and the next is tried. A
    /// pull as a whole is bounded by its caller's deadline.
    pub read_timeout_secs: u64,
    /// Threads that run pulls, apart from `workers`: a slow registry
    /// holds these, never the threads other calls need.
    pub pull_workers: usize,
    /// Pulls waiting for a pull worker before new ones are refused.
    pub pull_queue: usize,
    /// Most bytes one layer may decompress to (a gzip bomb stops here).
    pub max_layer_bytes: u64,
    /// Most bytes the layers of one pull may decompress to together.
    pub max_image_bytes: u64,
    /// Free bytes the image store's filesystem must keep: checked before
    /// a pull and while layers unpack.
    pub min_free_bytes: u64,
    /// Layers one pull fetches at once.
    pub max_parallel_layers: usize,
    /// Layers all pulls together fetch at once.
    pub max_concurrent_downloads: usize,
    /// Per-registry settings.
    pub registries: Vec<RegistryConfig>,
}

/// How to reach one registry (`[[images.registries]]`): crisp-image's.
pub use crisp_image::RegistryConfig;

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: 15,
            read_timeout_secs: 60,
            pull_workers: 4,
            pull_queue: 64,
            max_layer_bytes: crisp_image::Settings::DEFAULT_MAX_LAYER_BYTES,
            max_image_bytes: crisp_image::Settings::DEFAULT_MAX_IMAGE_BYTES,
            min_free_bytes: crisp_image::Settings::DEFAULT_MIN_FREE_BYTES,
            max_parallel_layers: 3,
            max_concurrent_downloads: 8,
            registries: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: "/run/crisp/crisp.sock".into(),
            socket_group: "root".into(),
            state_dir: "/var/lib/crisp".into(),
            runtime_dir: "/run/crisp".into(),
            tcp_listen: None,
            tcp_allow_non_loopback: false,
            workers: 4,
            worker_queue: 256,
            max_connections: 4096,
            shutdown_timeout_secs: 10,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dir: "/opt/cni/bin".into(),
            cni_timeout_secs: 60,
            pids_limit: 0,
            log: LogConfig::default(),
            grpc: GrpcConfig::default(),
            event_loop: EventLoopConfig::default(),
            access: AccessConfig::default(),
            images: ImagesConfig::default(),
            streaming: StreamingConfig::default(),
            tls: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            max_recv_message_size: 16 * 1024 * 1024,
            max_concurrent_streams: 1024,
        }
    }
}

impl Config {
    /// The image store's and registry client's settings: the store in
    /// `<state_dir>/images`, registries as `[images]` says.
    pub fn image_settings(&self) -> crisp_image::Settings {
        crisp_image::Settings {
            store_dir: self.state_dir.join("images"),
            connect_timeout_secs: self.images.connect_timeout_secs,
            read_timeout_secs: self.images.read_timeout_secs,
            max_layer_bytes: self.images.max_layer_bytes,
            max_image_bytes: self.images.max_image_bytes,
            min_free_bytes: self.images.min_free_bytes,
            max_parallel_layers: self.images.max_parallel_layers,
            max_concurrent_downloads: self.images.max_concurrent_downloads,
            registries: self.images.registries.clone(),
        }
    }

    /// Read `path`. A missing file is fine only when it is the default path
    /// (a node without a config file runs on defaults).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The TCP listen address, checked against the loopback rule.
    pub fn tcp_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(raw) = &self.tcp_listen else {
            return Ok(None);
        };
        let text = raw.strip_prefix("tcp://").unwrap_or(raw);
        let addr: SocketAddr = text.parse().map_err(|source| ConfigError::TcpListen {
            raw: raw.clone(),
            source,
        })?;
        if !addr.ip().is_loopback() && !self.tcp_allow_non_loopback {
            return Err(ConfigError::NotLoopback(addr));
        }
        Ok(Some(addr))
    }

    /// Where the streaming server listens.
    pub fn streaming_addr(&self) -> Result<SocketAddr, ConfigError> {
        let s = &self.streaming;
        let ip: std::net::IpAddr =
            s.address
                .parse()
                .map_err(|source| ConfigError::StreamingAddress {
                    raw: s.address.clone(),
                    source,
                })?;
        let addr = SocketAddr::new(ip, s.port);
        if !ip.is_loopback() && !s.allow_non_loopback {
            return Err(ConfigError::StreamingNotLoopback(addr));
        }
        Ok(addr)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Why crispd's configuration is unusable.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// `tcp_listen` is no socket address.
    TcpListen {
        raw: String,
        source: std::net::AddrParseError,
    },
    /// `tcp_listen` is not on loopback and that was not allowed.
    NotLoopback(SocketAddr),
    StreamingAddress {
        raw: String,
        source: std::net::AddrParseError,
    },
    StreamingNotLoopback(SocketAddr),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read { path, source } => {
                write!(f, "cannot read config {}: {source}", path.display())
            }
            Self::Parse { path, source } => {
                write!(f, "invalid config {}: {source}", path.display())
            }
            Self::TcpListen { raw, source } => write!(f, "invalid tcp_listen {raw:?}: {source}"),
            Self::NotLoopback(addr) => write!(
                f,
                "tcp_listen {addr} is not a loopback address; set tcp_allow_non_loopback = true to allow it"
            ),
            Self::StreamingAddress { raw, source } => {
                write!(f, "invalid streaming.address {raw:?}: {source}")
            }
            Self::StreamingNotLoopback(addr) => write!(
                f,
                "streaming.address {} is not a loopback address; set streaming.allow_non_loopback = true to allow it",
                addr.ip()
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::Parse { source, .. } => Some(source),
            Self::TcpListen { source, .. } | Self::StreamingAddress { source, .. } => Some(source),
            Self::NotLoopback(_) | Self::StreamingNotLoopback(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/crisp/crisp.sock"));
        assert_eq!(c.grpc.max_recv_message_size, 16 << 20);
    }

    #[test]
    fn printed_config_reads_back() {
        let c = Config::default();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.to_toml(), c.to_toml());
    }

    #[test]
    fn event_loop_spin() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c.event_loop.spin_us, DEFAULT_SPIN_US);
        let c: Config = toml::from_str("[event_loop]\nspin_us = 0").unwrap();
        assert_eq!(c.event_loop.spin_us, 0);
        assert!(toml::from_str::<Config>("[event_loop]\nspin = 1").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("sockett = \"/x\"").is_err());
    }

    #[test]
    fn image_registries() {
        let c: Config = toml::from_str(
            r#"
            [images]
            read_timeout_secs = 5
            pull_workers = 2
            max_layer_bytes = 1048576
            [[images.registries]]
            host = "registry.k8s.io"
            mirrors = ["http://127.0.0.1:5000"]
            mirrors_only = true
            [[images.registries]]
            host = "myreg.example:5443"
            plain_http = false
            ca_files = ["/etc/crisp/ca.pem"]
            "#,
        )
        .unwrap();
        assert_eq!(c.images.read_timeout_secs, 5);
        assert_eq!(c.images.connect_timeout_secs, 15);
        assert_eq!(c.images.registries.len(), 2);
        assert_eq!(
            c.images.registries[0].mirrors,
            vec!["http://127.0.0.1:5000"]
        );
        assert_eq!(c.images.registries[1].plain_http, Some(false));
        assert!(c.images.registries[0].mirrors_only);
        assert!(!c.images.registries[1].mirrors_only);
        assert_eq!(c.images.pull_workers, 2);
        let settings = c.image_settings();
        assert_eq!(settings.max_layer_bytes, 1 << 20);
        assert_eq!(
            settings.max_image_bytes,
            crisp_image::Settings::DEFAULT_MAX_IMAGE_BYTES
        );
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.to_toml(), c.to_toml());
        assert!(toml::from_str::<Config>("[[images.registries]]\nhots = \"x\"").is_err());
    }

    #[test]
    fn tls_and_identities() {
        let c: Config = toml::from_str(
            r#"
            [tls]
            cert_file = "/etc/crisp/tls/server.pem"
            key_file = "/etc/crisp/tls/server.key"
            client_ca_file = "/etc/crisp/tls/ca.pem"
            client_auth = "optional"
            [[access.identities]]
            name = "ops"
            token_sha256 = "$sha256$00$11"
            methods = ["read-only"]
            [[access.identities]]
            name = "deployer"
            cert_subject = "CN=deployer"
            methods = ["*"]
            "#,
        )
        .unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(tls.client_auth, ClientAuth::Optional);
        assert_eq!(tls.handshake_timeout_secs, 10);
        assert_eq!(c.access.identities.len(), 2);
        assert_eq!(c.access.tcp_methods, vec!["read-only"]);
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.to_toml(), c.to_toml());
        let c: Config = toml::from_str("[tls]\ncert_file = \"/a\"\nkey_file = \"/b\"").unwrap();
        assert_eq!(c.tls.unwrap().client_auth, ClientAuth::Required);
        assert!(toml::from_str::<Config>("[tls]\ncert_file = \"/a\"").is_err());
    }

    #[test]
    fn tcp_must_be_loopback_unless_allowed() {
        let mut c = Config {
            tcp_listen: Some("tcp://0.0.0.0:10010".into()),
            ..Config::default()
        };
        assert!(c.tcp_addr().is_err());
        c.tcp_allow_non_loopback = true;
        assert!(c.tcp_addr().unwrap().is_some());
        c.tcp_listen = Some("127.0.0.1:10010".into());
        c.tcp_allow_non_loopback = false;
        assert!(c.tcp_addr().unwrap().is_some());
    }
}
