//! PullImage: resolve a reference at a registry (or its mirrors), choose
//! the host's platform from an index, fetch and verify the config, fetch,
//! verify and unpack each layer not already in the store, then record the
//! image.
//!
//! Every blob is checked against its descriptor's digest and size, and
//! each layer's uncompressed stream against the config's diff ID, before
//! anything is renamed into the store; a mismatch fails the pull and
//! leaves only temporaries that are removed at once.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crisp_core::cri::images::{choose_platform, repo_digest, Platform};
use crisp_core::cri::reference::{Digest, Reference};

use super::oci::{
    self, Compression, Descriptor, HashingReader, ImageConfig, Index, Kind, Manifest,
};
use super::registry::{Credentials, Session};
use super::store::{ImageRecord, LayerRecord};
use super::unpack;
use super::{ImageError, ImageService, Stop};
use crisp_core::grpc::Code;

/// How often a layer download logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl ImageService {
    /// Pull `image` and return its ID. Concurrent pulls of the same
    /// reference share one pull, which goes on while one of their callers
    /// still waits; once every caller has gone (`stop`) it stops, keeping
    /// nothing half-written.
    pub fn pull(
        &self,
        image: &str,
        credentials: &Credentials,
        stop: &Stop,
    ) -> Result<String, ImageError> {
        let reference = Reference::parse_normalized(image.trim())
            .map_err(|e| ImageError::invalid(e.to_string()))?;
        // Pulls with different credentials must not share an outcome.
        let key = format!("pull {reference} as {}", credentials.fingerprint());
        let result = self.flights.run(&key, stop, |shared| {
            let pulled = self.pull_now(&reference, credentials, shared);
            if let Some(o) = &self.observer {
                o.pull_finished(&reference.to_string());
            }
            pulled
        });
        self.collect_deferred_garbage();
        result
    }

    /// Try each endpoint in order (mirrors, then the registry unless
    /// `mirrors_only`) until one serves the whole image.
    fn pull_now(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        stop: &Stop,
    ) -> Result<String, ImageError> {
        let started = Instant::now();
        let _user = self
            .store
            .user()
            .map_err(|e| ImageError::local("lock the image store", e))?;
        self.limits
            .check_free_space(self.store.root())
            .map_err(|why| ImageError::exhausted(format!("cannot pull {reference}: {why}")))?;
        let endpoints = self
            .registries
            .endpoints(reference.domain())
            .map_err(|e| ImageError::internal(e.to_string()))?;
        let stopped = |code| {
            tracing::info!(image = %reference, ?code, "pull stopped: no caller waits for it any more");
            ImageError::stopped(code, &format!("pull of {reference}"))
        };
        let count = endpoints.len();
        let mut failures: Vec<String> = Vec::new();
        let mut last_code = Code::Unavailable;
        for (i, endpoint) in endpoints.into_iter().enumerate() {
            if let Some(code) = stop.reason() {
                return Err(stopped(code));
            }
            let place = if endpoint.is_mirror {
                format!("mirror {}", endpoint.base)
            } else {
                format!("registry {}", endpoint.base)
            };
            let base = endpoint.base.clone();
            let session = Session::new(endpoint, reference.path(), credentials);
            match self.pull_from(session, reference, stop, started) {
                Ok(id) => return Ok(id),
                Err(e) => {
                    if let Some(code) = stop.reason() {
                        return Err(stopped(code));
                    }
                    if !tries_next_endpoint(&e) {
                        return Err(e);
                    }
                    if i + 1 < count {
                        tracing::warn!(image = %reference, endpoint = %place, error = %e, "endpoint failed or stalled; trying the next");
                    }
                    last_code = e.code;
                    failures.push(if e.message.contains(&base) {
                        e.message
                    } else {
                        format!("{place}: {}", e.message)
                    });
                }
            }
        }
        Err(ImageError {
            code: last_code,
            message: format!(
                "cannot pull {reference} (tried {count} place{}): {}",
                if count == 1 { "" } else { "s" },
                failures.join("; ")
            ),
        })
    }

    /// The whole pull from one endpoint.
    fn pull_from(
        &self,
        mut session: Session,
        reference: &Reference,
        stop: &Stop,
        started: Instant,
    ) -> Result<String, ImageError> {
        let (body, content_type) = session
            .manifest(&reference.object())
            .map_err(ImageError::from)?;
        tracing::info!(image = %reference, from = %session.endpoint().base, "pulling image");

        // The top-level document: verify it if the reference pins it.
        let top_alg = reference
            .digest()
            .map(Digest::algorithm)
            .unwrap_or(crisp_core::cri::reference::Algorithm::Sha256);
        let top_digest = oci::digest_of(top_alg, &body);
        if let Some(want) = reference.digest() {
            if &top_digest != want {
                return Err(ImageError::corrupt(format!(
                    "manifest of {reference} from {}: digest mismatch: expected {want}, got {top_digest}",
                    session.endpoint().base
                )));
            }
        }
        let mut blobs: Vec<(Digest, Vec<u8>)> = Vec::new();
        let mut index_digest = None;
        let (mut doc, mut doc_type, mut doc_digest) = (body, content_type, top_digest.clone());
        let mut depth = 0;
        let manifest: Manifest = loop {
            let kind = oci::classify(doc_type.as_deref(), &doc)
                .map_err(|e| ImageError::unsupported(format!("{reference}: {e}")))?;
            match kind {
                Kind::Manifest => {
                    let m: Manifest = serde_json::from_slice(&doc).map_err(|e| {
                        ImageError::unsupported(format!("{reference}: invalid manifest: {e}"))
                    })?;
                    blobs.push((doc_digest.clone(), doc));
                    break m;
                }
                Kind::Index => {
                    depth += 1;
                    if depth > 2 {
                        return Err(ImageError::unsupported(format!(
                            "{reference}: image indexes nested too deep"
                        )));
                    }
                    let index: Index = serde_json::from_slice(&doc).map_err(|e| {
                        ImageError::unsupported(format!("{reference}: invalid image index: {e}"))
                    })?;
                    let chosen = self.choose(reference, &index, &doc_digest)?;
                    if index_digest.is_none() {
                        index_digest = Some(doc_digest.clone());
                    }
                    blobs.push((doc_digest.clone(), doc));
                    let want = parse_digest(reference, "manifest", &chosen.digest)?;
                    let (child, child_type) =
                        session.manifest(&chosen.digest).map_err(ImageError::from)?;
                    oci::verify("manifest", &child, &want, Some(chosen.size)).map_err(|e| {
                        ImageError::corrupt(format!(
                            "{reference} from {}: {e}",
                            session.endpoint().base
                        ))
                    })?;
                    let media = (!chosen.media_type.is_empty()).then(|| chosen.media_type.clone());
                    doc = child;
                    doc_type = media.or(child_type);
                    doc_digest = want;
                }
            }
        };
        let manifest_digest = doc_digest;

        // The config.
        let config_digest = parse_digest(reference, "config", &manifest.config.digest)?;
        let config_bytes = {
            let fetched = session
                .blob(
                    &manifest.config.digest,
                    u64::try_from(manifest.config.size).ok(),
                )
                .map_err(ImageError::from)?;
            let mut data = Vec::new();
            fetched
                .body
                .take(oci::MAX_DOCUMENT + 1)
                .read_to_end(&mut data)
                .map_err(|e| {
                    ImageError::unavailable(format!(
                        "{reference}: reading config {config_digest} from {}: {e}",
                        session.endpoint().base
                    ))
                })?;
            data
        };
        oci::verify(
            "config",
            &config_bytes,
            &config_digest,
            Some(manifest.config.size),
        )
        .map_err(|e| {
            ImageError::corrupt(format!("{reference} from {}: {e}", session.endpoint().base))
        })?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            ImageError::unsupported(format!("{reference}: invalid image config: {e}"))
        })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::unsupported(format!(
                "{reference}: manifest has {} layers but the config lists {} diff IDs",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }

        // The layers, bottom first in the record; fetched up to
        // `max_parallel_layers` at a time; ones already in the store are
        // skipped.
        let mut layers = Vec::new();
        let mut size = manifest.config.size.max(0) as u64;
        let mut wanted = Vec::new();
        for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            if let Some(why) = oci::unsupported_layer(&desc.media_type) {
                return Err(ImageError::unsupported(format!("{reference}: {why}")));
            }
            let diff_id = parse_digest(reference, "diff ID", diff_id)?;
            size += desc.size.max(0) as u64;
            layers.push(LayerRecord {
                digest: desc.digest.clone(),
                diff_id: diff_id.to_string(),
                size: desc.size.max(0) as u64,
                media_type: desc.media_type.clone(),
            });
            wanted.push((desc, diff_id));
        }
        self.fetch_layers(&session, reference, &wanted, stop)?;

        blobs.push((config_digest.clone(), config_bytes));
        if let Some(code) = stop.reason() {
            return Err(ImageError::stopped(code, &format!("pull of {reference}")));
        }
        for (digest, data) in &blobs {
            self.store
                .put_blob(digest, data)
                .map_err(|e| local_or_full("store a blob", e))?;
        }
        let record = ImageRecord {
            id: config_digest.to_string(),
            size,
            manifest_digest: Some(manifest_digest.to_string()),
            index_digest: index_digest.map(|d| d.to_string()),
            platform: config_platform(&config),
            user: config.config.and_then(|c| c.user).unwrap_or_default(),
            created: config.created,
            layers,
            source: format!("pull {}", session.endpoint().base),
            ..ImageRecord::default()
        };
        let mut names = vec![];
        if reference.tag().is_some() {
            names.push(reference.clone());
        }
        names.push(
            Reference::parse_normalized(&repo_digest(reference, &top_digest))
                .map_err(|e| ImageError::internal(e.to_string()))?,
        );
        let stored = self
            .store
            .commit(record, &names)
            .map_err(|e| local_or_full("record the image", e))?;
        tracing::info!(
            image = %reference,
            id = %stored.id,
            size = stored.size,
            seconds = started.elapsed().as_secs_f64(),
            "pulled image"
        );
        Ok(stored.id)
    }

    fn choose<'a>(
        &self,
        reference: &Reference,
        index: &'a Index,
        digest: &Digest,
    ) -> Result<&'a Descriptor, ImageError> {
        let candidates: Vec<Option<Platform>> = index
            .manifests
            .iter()
            .map(|d| d.platform.as_ref().map(|p| p.to_platform()))
            .collect();
        match choose_platform(&candidates, &self.platform) {
            Some(i) => Ok(&index.manifests[i]),
            None => {
                let have: Vec<String> =
                    candidates.iter().flatten().map(|p| p.to_string()).collect();
                Err(ImageError::not_found(format!(
                    "{reference}: no image for platform {} in index {digest} (it has: {})",
                    self.platform,
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                )))
            }
        }
    }

    /// Fetch the layers of `wanted` not in the store, up to
    /// `max_parallel_layers` at once, each thread with its own copy of
    /// `session`. The first failure stops the others.
    fn fetch_layers(
        &self,
        session: &Session,
        reference: &Reference,
        wanted: &[(&Descriptor, Digest)],
        stop: &Stop,
    ) -> Result<(), ImageError> {
        let failed = Stop::never();
        let layers_stop = Stop::any_of(stop.clone(), failed.clone());
        let image_used = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(PullProgress {
            image: reference.to_string(),
            total: wanted.iter().map(|(d, _)| d.size.max(0) as u64).sum(),
            layers: wanted.len(),
            done: AtomicU64::new(0),
            layers_done: AtomicUsize::new(0),
            started: Instant::now(),
            last: Mutex::new(Instant::now()),
            observer: self.observer.clone(),
        });
        if let Some(o) = &self.observer {
            let layers: Vec<(String, u64)> = wanted
                .iter()
                .map(|(d, _)| (d.digest.clone(), d.size.max(0) as u64))
                .collect();
            o.pull_started(&reference.to_string(), &layers);
        }
        let next = AtomicUsize::new(0);
        let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
        let threads = self
            .limits
            .max_parallel_layers
            .clamp(1, wanted.len().max(1));
        let fetch_some = || {
            let _entered = crate::stop::enter(&layers_stop);
            let mut session = session.clone();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((desc, diff_id)) = wanted.get(i) else {
                    return;
                };
                if layers_stop.reason().is_some() {
                    return;
                }
                let budget = ImageBudget {
                    used: Arc::clone(&image_used),
                    max: self.limits.max_image_bytes,
                    progress: Arc::clone(&progress),
                };
                let layer = LayerPull {
                    reference,
                    desc,
                    diff_id,
                    budget,
                };
                let fetched = self.ensure_layer(&mut session, layer, &layers_stop);
                if fetched.is_ok() {
                    progress.layers_done.fetch_add(1, Ordering::SeqCst);
                    if let Some(o) = &progress.observer {
                        o.layer_done(&desc.digest);
                    }
                }
                if let Err(e) = fetched {
                    let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    // A layer stopped because another failed is no news.
                    if first.is_none() && !(e.is_stop() && stop.reason().is_none()) {
                        *first = Some(e);
                    }
                    failed.cancel();
                    return;
                }
            }
        };
        if threads == 1 {
            fetch_some();
        } else {
            std::thread::scope(|scope| {
                for i in 0..threads {
                    let started = std::thread::Builder::new()
                        .name(format!("crisp-layers-{i}"))
                        .spawn_scoped(scope, fetch_some);
                    if let Err(e) = started {
                        tracing::warn!(error = %e, "cannot start a layer thread; fetching with fewer");
                        if i == 0 {
                            fetch_some();
                        }
                        break;
                    }
                }
            });
        }
        if let Some(code) = stop.reason() {
            return Err(ImageError::stopped(code, &format!("pull of {reference}")));
        }
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Make sure the layer `diff_id` is unpacked in the store, fetching
    /// `desc` if not. Concurrent pulls needing one layer share the work;
    /// at most `max_concurrent_downloads` layers download at once in all.
    fn ensure_layer(
        &self,
        session: &mut Session,
        layer: LayerPull<'_>,
        stop: &Stop,
    ) -> Result<(), ImageError> {
        let diff_id = layer.diff_id;
        if self.store.has_layer(diff_id) {
            tracing::debug!(image = %layer.reference, layer = %layer.desc.digest, "layer already present");
            return Ok(());
        }
        let key = format!("layer {diff_id}");
        self.flights
            .run(&key, stop, |shared| {
                if self.store.has_layer(diff_id) {
                    return Ok(String::new());
                }
                let _slot = self
                    .downloads
                    .acquire(shared)
                    .map_err(|code| layer_stopped(code, layer.reference, layer.desc))?;
                self.fetch_layer(session, layer, shared)
                    .map(|_| String::new())
            })
            .map(|_| ())
    }

    fn fetch_layer(
        &self,
        session: &mut Session,
        layer: LayerPull<'_>,
        stop: &Stop,
    ) -> Result<u64, ImageError> {
        let LayerPull {
            reference,
            desc,
            diff_id,
            budget,
        } = layer;
        let blob_digest = parse_digest(reference, "layer", &desc.digest)?;
        let from = session.endpoint().base.clone();
        let source = format!("layer {} of {reference} from {from}", desc.digest);
        let fetched = session
            .blob(&desc.digest, u64::try_from(desc.size).ok())
            .map_err(ImageError::from)?;
        let tmp = self
            .store
            .temp_dir("layer")
            .map_err(|e| local_or_full("create a temporary directory", e))?;
        // Never read more than one byte past the size the manifest
        // promised: enough to see a mismatch, bounded against a registry
        // that does not stop.
        let bounded: Box<dyn Read + Send> = if desc.size >= 0 {
            Box::new(fetched.body.take(desc.size as u64 + 1))
        } else {
            fetched.body
        };
        let progress = Progress {
            pull: Arc::clone(&budget.progress),
            inner: bounded,
            image: reference.to_string(),
            layer: desc.digest.clone(),
            total: desc.size.max(0) as u64,
            done: 0,
            started: Instant::now(),
            last: Instant::now(),
        };
        tracing::info!(image = %reference, layer = %desc.digest, bytes = desc.size, "fetching layer");
        let blob = HashingReader::new(progress, blob_digest.algorithm());
        let mut buf = BufReader::with_capacity(256 << 10, blob);
        let guard = Guard {
            cap: Cap {
                bytes: self.limits.max_layer_bytes,
                what: "the layer decompressed size cap (max_layer_bytes)",
            },
            image: Some(budget),
            min_free_bytes: self.limits.min_free_bytes,
            store_dir: self.store.root().to_path_buf(),
        };
        let outcome = unpack_stream(&mut buf, tmp.path(), diff_id, &guard);
        if let Some(code) = stop.reason() {
            return Err(layer_stopped(code, reference, desc));
        }
        if let Err(LayerError::Exhausted(why)) = &outcome {
            return Err(ImageError::exhausted(format!("{source}: {why}")));
        }
        // Hash what is left of the blob, whatever happened: a wrong
        // digest explains a broken archive better than the archive error.
        let drained = io::copy(&mut buf, &mut io::sink());
        let blob = buf.into_inner();
        let hashed = drained.and_then(|_| blob.finish());
        let (got, size) = match hashed {
            Ok(v) => v,
            Err(e) => {
                if let Some(code) = stop.reason() {
                    return Err(layer_stopped(code, reference, desc));
                }
                return Err(ImageError::unavailable(format!(
                    "layer {} of {reference}: download from {from} failed: {e}",
                    desc.digest
                )));
            }
        };
        if got != blob_digest {
            return Err(ImageError::corrupt(format!(
                "{source}: digest mismatch: expected {blob_digest}, got {got}"
            )));
        }
        if size != desc.size.max(0) as u64 {
            return Err(ImageError::corrupt(format!(
                "{source}: size mismatch: expected {} bytes, got {size}",
                desc.size
            )));
        }
        let (stats, unpacked) = outcome.map_err(|e| match e {
            LayerError::Unpack(u) if u.is_no_space() => {
                ImageError::exhausted(format!("{source}: the disk is full: {u}"))
            }
            LayerError::Exhausted(why) => ImageError::exhausted(format!("{source}: {why}")),
            LayerError::Unpack(u) if u.is_escape() => {
                ImageError::corrupt(format!("{source} is unsafe: {u}"))
            }
            LayerError::Unpack(u) => ImageError::corrupt(format!("{source}: {u}")),
            LayerError::DiffId(got) => ImageError::corrupt(format!(
                "{source}: uncompressed content does not match the config's diff ID: expected {diff_id}, got {got}"
            )),
            LayerError::Io(e) => ImageError::corrupt(format!("{source}: {e}")),
        })?;
        self.store
            .commit_layer(tmp, diff_id)
            .map_err(|e| local_or_full("store a layer", e))?;
        tracing::info!(
            image = %reference,
            layer = %desc.digest,
            bytes = size,
            unpacked,
            files = stats.entries,
            "layer unpacked"
        );
        Ok(unpacked)
    }
}

/// Whether a failure at one endpoint leaves the next worth trying: what
/// one registry or mirror does wrong (unreachable, stalled, missing,
/// refusing, serving bad content); not caps, full disks or local faults.
fn tries_next_endpoint(e: &ImageError) -> bool {
    matches!(
        e.code,
        Code::Unavailable
            | Code::NotFound
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::DataLoss
    )
}

/// A local disk failure; RESOURCE_EXHAUSTED when the disk is full.
fn local_or_full(what: &str, e: io::Error) -> ImageError {
    if e.raw_os_error() == Some(nix::libc::ENOSPC) {
        ImageError::exhausted(format!("cannot {what}: the disk is full: {e}"))
    } else {
        ImageError::local(what, e)
    }
}

/// How many decompressed bytes a layer may have, and which setting says so.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cap {
    pub bytes: u64,
    pub what: &'static str,
}

/// What an unpacking layer must stay within.
pub(super) struct Guard {
    pub cap: Cap,
    /// The image's decompressed bytes so far, shared by its layers.
    pub image: Option<ImageBudget>,
    pub min_free_bytes: u64,
    pub store_dir: std::path::PathBuf,
}

/// One layer of a pull, as `ensure_layer` and `fetch_layer` take it.
struct LayerPull<'a> {
    reference: &'a Reference,
    desc: &'a Descriptor,
    diff_id: &'a Digest,
    budget: ImageBudget,
}

/// The error for a layer's fetch stopped with `code`.
fn layer_stopped(code: Code, reference: &Reference, desc: &Descriptor) -> ImageError {
    ImageError::stopped(
        code,
        &format!("pull of {reference} (layer {})", desc.digest),
    )
}

/// The decompressed bytes of one pull's layers, against `max_image_bytes`,
/// and the pull's progress.
#[derive(Clone, Debug)]
pub(super) struct ImageBudget {
    pub used: Arc<AtomicU64>,
    pub max: u64,
    pub progress: Arc<PullProgress>,
}

/// One pull's downloaded bytes over all its layers, logged at info every
/// [`PROGRESS_EVERY`].
pub(super) struct PullProgress {
    image: String,
    /// Compressed bytes of the pull's layers (those present included).
    total: u64,
    layers: usize,
    done: AtomicU64,
    layers_done: AtomicUsize,
    started: Instant,
    last: Mutex<Instant>,
    observer: Option<Arc<dyn crate::PullObserver>>,
}

impl std::fmt::Debug for PullProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullProgress")
            .field("image", &self.image)
            .field("total", &self.total)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl PullProgress {
    fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.elapsed() < PROGRESS_EVERY {
            return;
        }
        *last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = (rate > 0.0 && self.total > done)
            .then(|| ((self.total - done) as f64 / rate).round() as u64);
        tracing::info!(
            image = %self.image,
            bytes = done,
            total = self.total,
            layers_done = self.layers_done.load(Ordering::Relaxed),
            layers = self.layers,
            bytes_per_sec = rate as u64,
            eta_secs = eta,
            "pull progress"
        );
    }
}

/// The pull limits from [`crate::Settings`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub max_layer_bytes: u64,
    pub max_image_bytes: u64,
    pub min_free_bytes: u64,
    pub max_parallel_layers: usize,
}

/// Slots for layer downloads, shared by all pulls
/// (`max_concurrent_downloads`).
pub(super) struct Downloads {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One download slot, given back when dropped.
pub(super) struct Slot<'a>(&'a Downloads);

impl Downloads {
    pub fn new(slots: usize) -> Self {
        Self {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Wait for a slot, unless `stop` stops first (its reason).
    pub fn acquire(&self, stop: &Stop) -> Result<Slot<'_>, Code> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(code) = stop.reason() {
                return Err(code);
            }
            if *free > 0 {
                *free -= 1;
                return Ok(Slot(self));
            }
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

impl Limits {
    /// Whether the store's filesystem has more than `min_free_bytes` free.
    pub fn check_free_space(&self, dir: &std::path::Path) -> Result<(), String> {
        check_free_space(dir, self.min_free_bytes)
    }
}

fn check_free_space(dir: &std::path::Path, min_free: u64) -> Result<(), String> {
    if min_free == 0 {
        return Ok(());
    }
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| format!("cannot measure free space on {}: {e}", dir.display()))?;
    let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    if free < min_free {
        return Err(format!(
            "only {free} bytes free on {}, below min_free_bytes ({min_free})",
            dir.display()
        ));
    }
    Ok(())
}

/// How often (in decompressed bytes) unpacking looks at the free space.
const SPACE_CHECK_EVERY: u64 = 1 << 20;

/// The decompressed stream of a layer, failing once it passes its cap or
/// the disk runs short; the reason is kept in `exhausted`, since the
/// unpacker reports it as just an I/O error.
struct Capped<'a, R> {
    inner: R,
    guard: &'a Guard,
    read: u64,
    next_check: u64,
    exhausted: &'a std::cell::RefCell<Option<String>>,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let image = self.guard.image.as_ref().map(|b| {
            (
                b.used.fetch_add(n as u64, Ordering::SeqCst) + n as u64,
                b.max,
            )
        });
        let why = if self.read > self.guard.cap.bytes {
            Some(format!(
                "decompresses to more than {} bytes, {}",
                self.guard.cap.bytes, self.guard.cap.what
            ))
        } else if let Some((used, max)) = image.filter(|(used, max)| used > max) {
            Some(format!(
                "the image's layers decompress to more than {max} bytes ({used} so far), the image's decompressed size cap (max_image_bytes)"
            ))
        } else if self.read >= self.next_check {
            self.next_check = self.read + SPACE_CHECK_EVERY;
            check_free_space(&self.guard.store_dir, self.guard.min_free_bytes).err()
        } else {
            None
        };
        if let Some(why) = why {
            let e = io::Error::other(why.clone());
            *self.exhausted.borrow_mut() = Some(why);
            return Err(e);
        }
        Ok(n)
    }
}

pub(super) enum LayerError {
    Unpack(unpack::UnpackError),
    DiffId(Digest),
    Io(io::Error),
    /// Past the decompressed size cap, or the disk ran short.
    Exhausted(String),
}

/// Decompress (by magic bytes) and unpack a layer from `input` into
/// `dir`, checking the uncompressed stream against `diff_id` and keeping
/// within `guard`; what it unpacked and how many bytes it decompressed to.
pub(super) fn unpack_stream<R: BufRead>(
    input: &mut R,
    dir: &std::path::Path,
    diff_id: &Digest,
    guard: &Guard,
) -> Result<(unpack::Stats, u64), LayerError> {
    let head = input.fill_buf().map_err(LayerError::Io)?;
    let compression = Compression::sniff(head);
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(LayerError::Io)?)
        }
        Compression::None => Box::new(input),
    };
    let exhausted = std::cell::RefCell::new(None);
    let capped = Capped {
        inner: decoder,
        guard,
        read: 0,
        next_check: 0,
        exhausted: &exhausted,
    };
    let mut tar = HashingReader::new(capped, diff_id.algorithm());
    let unpacked = unpack::unpack(&mut tar, dir, unpack::Options::default());
    let finished = unpacked.map_err(LayerError::Unpack).and_then(|stats| {
        let (got, n) = tar.finish().map_err(LayerError::Io)?;
        Ok((stats, got, n))
    });
    if let Some(why) = exhausted.borrow_mut().take() {
        return Err(LayerError::Exhausted(why));
    }
    let (stats, got, n) = finished?;
    if &got != diff_id {
        return Err(LayerError::DiffId(got));
    }
    Ok((stats, n))
}

fn parse_digest(reference: &Reference, what: &str, s: &str) -> Result<Digest, ImageError> {
    Digest::parse(s).map_err(|e| {
        ImageError::unsupported(format!(
            "{reference}: {what} has an invalid digest {s:?}: {e}"
        ))
    })
}

fn config_platform(config: &ImageConfig) -> String {
    let mut p = format!("{}/{}", config.os, config.architecture);
    if let Some(v) = config.variant.as_deref().filter(|v| !v.is_empty()) {
        p.push('/');
        p.push_str(v);
    }
    p
}

/// Counts a layer's bytes and logs progress now and then.
struct Progress {
    pull: Arc<PullProgress>,
    inner: Box<dyn Read + Send>,
    image: String,
    layer: String,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Read for Progress {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.pull.add(n as u64);
        if let Some(o) = self.pull.observer.as_ref().filter(|_| n > 0) {
            o.layer_bytes(&self.layer, n as u64);
        }
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            let rate = if secs > 0.0 {
                (self.done as f64 / secs) as u64
            } else {
                0
            };
            tracing::info!(
                image = %self.image,
                layer = %self.layer,
                bytes = self.done,
                total = self.total,
                bytes_per_sec = rate,
                "pulling layer"
            );
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn guard(dir: &std::path::Path, bytes: u64) -> Guard {
        Guard {
            cap: Cap {
                bytes,
                what: "the test's cap",
            },
            image: None,
            min_free_bytes: 0,
            store_dir: dir.to_path_buf(),
        }
    }

    /// A small gzip stream of a tar holding one file of `n` zero bytes.
    fn bomb(n: u64) -> Vec<u8> {
        let mut tar = Vec::new();
        let mut header = tar::Header::new_ustar();
        header.set_path("zeros").unwrap();
        header.set_size(n);
        header.set_mode(0o644);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar).unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut left = n + 1024;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            gz.write_all(&zeros[..k]).unwrap();
            left -= k as u64;
        }
        gz.finish().unwrap()
    }

    #[test]
    fn a_layer_past_its_decompressed_cap_is_refused() {
        let dir = std::env::temp_dir().join(format!("crisp-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = bomb(8 << 20);
        assert!(data.len() < 64 << 10, "compressed to {}", data.len());
        let diff_id = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let out = dir.join("layer");
        std::fs::create_dir_all(&out).unwrap();
        match unpack_stream(&mut &data[..], &out, &diff_id, &guard(&dir, 1 << 20)) {
            Err(LayerError::Exhausted(why)) => {
                assert!(why.contains("more than 1048576 bytes"), "{why}");
                assert!(why.contains("the test's cap"), "{why}");
            }
            Err(_) => panic!("failed, but not for the cap"),
            Ok(_) => panic!("unpacked past the cap"),
        }
        // Under a cap it fits, it unpacks (to a diff ID mismatch here).
        let out2 = dir.join("layer2");
        std::fs::create_dir_all(&out2).unwrap();
        let r = unpack_stream(&mut &data[..], &out2, &diff_id, &guard(&dir, 64 << 20));
        assert!(matches!(r, Err(LayerError::DiffId(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn endpoints_are_left_for_the_next_only_for_their_own_faults() {
        for code in [Code::Unavailable, Code::NotFound, Code::DataLoss] {
            assert!(tries_next_endpoint(&ImageError {
                code,
                message: String::new()
            }));
        }
        for code in [Code::ResourceExhausted, Code::Internal, Code::Cancelled] {
            assert!(!tries_next_endpoint(&ImageError {
                code,
                message: String::new()
            }));
        }
    }
}
