//! What crisp-image needs from the program that uses it: where the store
//! is and how to reach registries. crispd makes these from its config
//! (`[images]` and `state_dir`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The image store's and the registry client's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The content store's directory (crispd: `<state_dir>/images`).
    pub store_dir: PathBuf,
    /// Seconds to wait for a TCP (and TLS) connection to a registry
    /// (at least 1).
    pub connect_timeout_secs: u64,
    /// Seconds a registry may stay silent while answering; a pull of a
    /// large layer may take longer as a whole (at least 1).
    pub read_timeout_secs: u64,
    /// Per-registry settings.
    pub registries: Vec<RegistryConfig>,
}

/// How to reach one registry, as named in image references. Part of
/// crispd's configuration file (`[[images.registries]]`), hence serde.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// The registry as image names write it: "docker.io",
    /// "registry.k8s.io", "127.0.0.1:5000".
    pub host: String,
    /// Endpoints tried first, in order, keeping the repository path and
    /// tag ("http://127.0.0.1:5000", "https://mirror.example/prefix");
    /// the registry itself is tried last. Credentials from a pull request
    /// are sent only to the registry itself, never to a mirror.
    pub mirrors: Vec<String>,
    /// Plain HTTP instead of HTTPS. Unset: plain for localhost and
    /// loopback addresses, HTTPS for everything else.
    pub plain_http: Option<bool>,
    /// PEM files of CA certificates trusted for this host, in addition to
    /// the system's roots.
    pub ca_files: Vec<PathBuf>,
}
