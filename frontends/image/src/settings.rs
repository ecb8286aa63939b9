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
    /// Seconds a registry connection may stay silent (no byte) before
    /// that endpoint counts as stalled: the no-progress timeout. A pull
    /// of a large layer may take longer as a whole; the caller's deadline
    /// bounds it (at least 1).
    pub read_timeout_secs: u64,
    /// Most bytes one layer may decompress to.
    pub max_layer_bytes: u64,
    /// Most bytes the layers one pull unpacks may decompress to together.
    pub max_image_bytes: u64,
    /// Free bytes the store's filesystem must keep while a layer unpacks.
    pub min_free_bytes: u64,
    /// Layers one pull fetches at once.
    pub max_parallel_layers: usize,
    /// Layers all pulls together fetch at once.
    pub max_concurrent_downloads: usize,
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
    /// Pull only from the mirrors, never from the registry itself.
    pub mirrors_only: bool,
    /// Plain HTTP instead of HTTPS. Unset: plain for localhost and
    /// loopback addresses, HTTPS for everything else.
    pub plain_http: Option<bool>,
    /// PEM files of CA certificates trusted for this host, in addition to
    /// the system's roots.
    pub ca_files: Vec<PathBuf>,
}

impl Settings {
    /// 32 GiB: no real layer comes near; a gzip bomb goes past.
    pub const DEFAULT_MAX_LAYER_BYTES: u64 = 32 << 30;
    /// 64 GiB.
    pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 64 << 30;
    /// 256 MiB kept free for everything else on the filesystem.
    pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;

    /// The defaults for a store in `store_dir`.
    pub fn new(store_dir: PathBuf) -> Self {
        Self {
            store_dir,
            connect_timeout_secs: 15,
            read_timeout_secs: 60,
            max_layer_bytes: Self::DEFAULT_MAX_LAYER_BYTES,
            max_image_bytes: Self::DEFAULT_MAX_IMAGE_BYTES,
            min_free_bytes: Self::DEFAULT_MIN_FREE_BYTES,
            max_parallel_layers: 3,
            max_concurrent_downloads: 8,
            registries: Vec::new(),
        }
    }
}
