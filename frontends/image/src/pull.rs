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
use std::time::{Duration, Instant};

use crisp_core::cri::images::{choose_platform, repo_digest, Platform};
use crisp_core::cri::reference::{Digest, Reference};

use super::oci::{
    self, Compression, Descriptor, HashingReader, ImageConfig, Index, Kind, Manifest,
};
use super::registry::{Credentials, ErrorKind, RegistryError, Session};
use super::store::{ImageRecord, LayerRecord};
use super::unpack;
use super::{ImageError, ImageService};

/// How often a layer download logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl ImageService {
    /// Pull `image` and return its ID. Concurrent pulls of the same
    /// reference share one pull.
    pub fn pull(&self, image: &str, credentials: &Credentials) -> Result<String, ImageError> {
        let reference = Reference::parse_normalized(image.trim())
            .map_err(|e| ImageError::invalid(e.to_string()))?;
        // Pulls with different credentials must not share an outcome.
        let key = format!("pull {reference} as {}", credentials.fingerprint());
        let result = self
            .flights
            .run(&key, || self.pull_now(&reference, credentials));
        self.collect_deferred_garbage();
        result
    }

    fn pull_now(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<String, ImageError> {
        let started = Instant::now();
        let _user = self
            .store
            .user()
            .map_err(|e| ImageError::local("lock the image store", e))?;
        let endpoints = self
            .registries
            .endpoints(reference.domain())
            .map_err(|e| ImageError::internal(e.to_string()))?;
        let mut failures: Vec<RegistryError> = Vec::new();
        let mut resolved = None;
        for endpoint in endpoints {
            let mut session = Session::new(endpoint, reference.path(), credentials);
            match session.manifest(&reference.object()) {
                Ok((body, content_type)) => {
                    resolved = Some((session, body, content_type));
                    break;
                }
                Err(e) => {
                    if session.endpoint().is_mirror {
                        tracing::warn!(image = %reference, error = %e, "mirror failed; trying the next endpoint");
                    }
                    failures.push(e);
                }
            }
        }
        let Some((mut session, body, content_type)) = resolved else {
            return Err(registry_failure(reference, failures));
        };
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
                .blob(&manifest.config.digest)
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

        // The layers, bottom first; ones already in the store are skipped.
        let mut layers = Vec::new();
        let mut size = manifest.config.size.max(0) as u64;
        for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            if let Some(why) = oci::unsupported_layer(&desc.media_type) {
                return Err(ImageError::unsupported(format!("{reference}: {why}")));
            }
            let diff_id = parse_digest(reference, "diff ID", diff_id)?;
            self.ensure_layer(&mut session, reference, desc, &diff_id)?;
            size += desc.size.max(0) as u64;
            layers.push(LayerRecord {
                digest: desc.digest.clone(),
                diff_id: diff_id.to_string(),
                size: desc.size.max(0) as u64,
                media_type: desc.media_type.clone(),
            });
        }

        blobs.push((config_digest.clone(), config_bytes));
        for (digest, data) in &blobs {
            self.store
                .put_blob(digest, data)
                .map_err(|e| ImageError::local("store a blob", e))?;
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
            .map_err(|e| ImageError::local("record the image", e))?;
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

    /// Make sure the layer `diff_id` is unpacked in the store, fetching
    /// `desc` if not. Concurrent pulls needing one layer share the work.
    fn ensure_layer(
        &self,
        session: &mut Session,
        reference: &Reference,
        desc: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(), ImageError> {
        if self.store.has_layer(diff_id) {
            tracing::debug!(image = %reference, layer = %desc.digest, "layer already present");
            return Ok(());
        }
        let key = format!("layer {diff_id}");
        self.flights
            .run(&key, || {
                if self.store.has_layer(diff_id) {
                    return Ok(String::new());
                }
                self.fetch_layer(session, reference, desc, diff_id)
                    .map(|()| String::new())
            })
            .map(|_| ())
    }

    fn fetch_layer(
        &self,
        session: &mut Session,
        reference: &Reference,
        desc: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(), ImageError> {
        let blob_digest = parse_digest(reference, "layer", &desc.digest)?;
        let from = session.endpoint().base.clone();
        let fetched = session.blob(&desc.digest).map_err(ImageError::from)?;
        let tmp = self
            .store
            .temp_dir("layer")
            .map_err(|e| ImageError::local("create a temporary directory", e))?;
        // Never read more than one byte past the size the manifest
        // promised: enough to see a mismatch, bounded against a registry
        // that does not stop.
        let bounded: Box<dyn Read + Send> = if desc.size >= 0 {
            Box::new(fetched.body.take(desc.size as u64 + 1))
        } else {
            fetched.body
        };
        let progress = Progress {
            inner: bounded,
            image: reference.to_string(),
            layer: desc.digest.clone(),
            total: desc.size.max(0) as u64,
            done: 0,
            last: Instant::now(),
        };
        tracing::info!(image = %reference, layer = %desc.digest, bytes = desc.size, "fetching layer");
        let blob = HashingReader::new(progress, blob_digest.algorithm());
        let mut buf = BufReader::with_capacity(256 << 10, blob);
        let outcome = unpack_stream(&mut buf, tmp.path(), diff_id);
        // Hash what is left of the blob, whatever happened: a wrong
        // digest explains a broken archive better than the archive error.
        let drained = io::copy(&mut buf, &mut io::sink());
        let blob = buf.into_inner();
        let hashed = drained.and_then(|_| blob.finish());
        let (got, size) = match hashed {
            Ok(v) => v,
            Err(e) => {
                return Err(ImageError::unavailable(format!(
                    "layer {} of {reference}: download from {from} failed: {e}",
                    desc.digest
                )))
            }
        };
        if got != blob_digest {
            return Err(ImageError::corrupt(format!(
                "layer {} of {reference} from {from}: digest mismatch: expected {blob_digest}, got {got}",
                desc.digest
            )));
        }
        if size != desc.size.max(0) as u64 {
            return Err(ImageError::corrupt(format!(
                "layer {} of {reference} from {from}: size mismatch: expected {} bytes, got {size}",
                desc.digest, desc.size
            )));
        }
        let stats = outcome.map_err(|e| match e {
            LayerError::Unpack(u) if u.is_escape() => ImageError::corrupt(format!(
                "layer {} of {reference} from {from} is unsafe: {u}",
                desc.digest
            )),
            LayerError::Unpack(u) => ImageError::corrupt(format!(
                "layer {} of {reference} from {from}: {u}",
                desc.digest
            )),
            LayerError::DiffId(got) => ImageError::corrupt(format!(
                "layer {} of {reference} from {from}: uncompressed content does not match the config's diff ID: expected {diff_id}, got {got}",
                desc.digest
            )),
            LayerError::Io(e) => ImageError::corrupt(format!(
                "layer {} of {reference} from {from}: {e}",
                desc.digest
            )),
        })?;
        self.store
            .commit_layer(tmp, diff_id)
            .map_err(|e| ImageError::local("store a layer", e))?;
        tracing::info!(
            image = %reference,
            layer = %desc.digest,
            bytes = size,
            files = stats.entries,
            "layer unpacked"
        );
        Ok(())
    }
}

pub(super) enum LayerError {
    Unpack(unpack::UnpackError),
    DiffId(Digest),
    Io(io::Error),
}

/// Decompress (by magic bytes) and unpack a layer from `input` into
/// `dir`, checking the uncompressed stream against `diff_id`.
pub(super) fn unpack_stream<R: BufRead>(
    input: &mut R,
    dir: &std::path::Path,
    diff_id: &Digest,
) -> Result<unpack::Stats, LayerError> {
    let head = input.fill_buf().map_err(LayerError::Io)?;
    let compression = Compression::sniff(head);
    let decoder: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(LayerError::Io)?)
        }
        Compression::None => Box::new(input),
    };
    let mut tar = HashingReader::new(decoder, diff_id.algorithm());
    let stats =
        unpack::unpack(&mut tar, dir, unpack::Options::default()).map_err(LayerError::Unpack)?;
    let (got, _) = tar.finish().map_err(LayerError::Io)?;
    if &got != diff_id {
        return Err(LayerError::DiffId(got));
    }
    Ok(stats)
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

/// The error of a pull no endpoint could serve: the registry's own
/// failure, with the mirrors' failures before it.
fn registry_failure(reference: &Reference, failures: Vec<RegistryError>) -> ImageError {
    let kind = failures
        .last()
        .map(|f| f.kind)
        .unwrap_or(ErrorKind::Unreachable);
    let message = failures
        .iter()
        .map(|f| f.message.clone())
        .collect::<Vec<_>>()
        .join("; ");
    ImageError::from(RegistryError {
        kind,
        message: format!("cannot pull {reference}: {message}"),
    })
}

/// Counts a layer's bytes and logs progress now and then.
struct Progress {
    inner: Box<dyn Read + Send>,
    image: String,
    layer: String,
    total: u64,
    done: u64,
    last: Instant,
}

impl Read for Progress {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            tracing::info!(
                image = %self.image,
                layer = %self.layer,
                bytes = self.done,
                total = self.total,
                "pulling layer"
            );
        }
        Ok(n)
    }
}
