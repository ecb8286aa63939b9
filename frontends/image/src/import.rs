//! `crispd import PATH`: load images without a registry, for offline
//! nodes. PATH is an OCI image layout directory, an `oci-archive` (a tar
//! of such a directory) or a `docker-archive` (`docker save`; a tar with
//! `manifest.json`), possibly gzip- or zstd-compressed.
//!
//! Content is checked exactly as in a pull (every blob against its digest
//! and size, every layer against its diff ID) and enters the store the
//! same way, so importing while crispd runs is safe: both take the
//! store's locks.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crisp_core::cri::images::{choose_platform, repo_digest, Platform};
use crisp_core::cri::reference::{Algorithm, Digest, Reference};
use serde::Deserialize;

use super::oci::{
    self, Compression, Descriptor, HashingReader, ImageConfig, Index, Kind, Manifest,
};
use super::pull::{unpack_stream, Cap, Guard, LayerError};
use super::store::{ImageRecord, LayerRecord, Temp};
use super::{ImageError, ImageService};

/// One image an import added.
#[derive(Clone, Debug)]
pub struct Imported {
    pub id: String,
    pub names: Vec<String>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

impl ImageService {
    /// Import every image in `path`. `name` names the image when the
    /// archive does not (or overrides it); it must then hold one image.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<Imported>, ImageError> {
        let user = self
            .store
            .user()
            .map_err(|e| ImageError::local("lock the image store", e))?;
        let result = self.import_locked(path, name);
        drop(user);
        self.collect_deferred_garbage();
        result
    }

    fn import_locked(&self, path: &Path, name: Option<&str>) -> Result<Vec<Imported>, ImageError> {
        let name = match name {
            Some(n) => Some(
                Reference::parse_normalized(n).map_err(|e| ImageError::invalid(e.to_string()))?,
            ),
            None => None,
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| ImageError::invalid(format!("cannot read {}: {e}", path.display())))?;
        let mut _decompressed: Option<Temp> = None;
        let source: Box<dyn Source> = if meta.is_dir() {
            Box::new(DirSource {
                root: path.to_owned(),
            })
        } else {
            let mut head = [0u8; 4];
            let n = File::open(path)
                .and_then(|mut f| f.read(&mut head))
                .map_err(|e| ImageError::invalid(format!("cannot read {}: {e}", path.display())))?;
            let tar_path = match Compression::sniff(&head[..n]) {
                Compression::None => path.to_owned(),
                c => {
                    let tmp = self.decompress(path, c)?;
                    let p = tmp.path().join("archive.tar");
                    _decompressed = Some(tmp);
                    p
                }
            };
            Box::new(TarSource::open(&tar_path).map_err(|e| {
                ImageError::invalid(format!("{} is not a tar archive: {e}", path.display()))
            })?)
        };
        let what = path.display().to_string();
        if source.exists("index.json") && source.exists("oci-layout") {
            self.import_oci(source.as_ref(), &what, name)
        } else if source.exists("manifest.json") {
            self.import_docker(source.as_ref(), &what, name)
        } else {
            Err(ImageError::invalid(format!(
                "{what} is neither an OCI image layout (oci-layout, index.json) nor a docker-archive (manifest.json)"
            )))
        }
    }

    fn decompress(&self, path: &Path, c: Compression) -> Result<Temp, ImageError> {
        let tmp = self
            .store
            .temp_dir("import")
            .map_err(|e| ImageError::local("create a temporary directory", e))?;
        let out = tmp.path().join("archive.tar");
        let input = BufReader::new(
            File::open(path)
                .map_err(|e| ImageError::invalid(format!("{}: {e}", path.display())))?,
        );
        let mut reader: Box<dyn Read> = match c {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(input)
                    .map_err(|e| ImageError::invalid(format!("{}: {e}", path.display())))?,
            ),
            Compression::None => Box::new(input),
        };
        let mut file =
            File::create(&out).map_err(|e| ImageError::local("write a temporary file", e))?;
        io::copy(&mut reader, &mut file).map_err(|e| {
            ImageError::invalid(format!("cannot decompress {}: {e}", path.display()))
        })?;
        Ok(tmp)
    }

    fn import_oci(
        &self,
        source: &dyn Source,
        what: &str,
        name: Option<Reference>,
    ) -> Result<Vec<Imported>, ImageError> {
        let index_bytes = source.read_all("index.json", oci::MAX_DOCUMENT)?;
        let index: Index = serde_json::from_slice(&index_bytes)
            .map_err(|e| ImageError::invalid(format!("{what}: invalid index.json: {e}")))?;
        if index.manifests.is_empty() {
            return Err(ImageError::invalid(format!(
                "{what}: index.json lists no image"
            )));
        }
        if name.is_some() && index.manifests.len() > 1 {
            return Err(ImageError::invalid(format!(
                "{what} holds {} images; --name can only name one",
                index.manifests.len()
            )));
        }
        let mut out = Vec::new();
        for top in &index.manifests {
            let annotations = top.annotations.clone().unwrap_or_default();
            let reference = oci_name(&annotations, name.as_ref()).ok_or_else(|| {
                ImageError::invalid(format!(
                    "{what}: image {} has no name ({REF_NAME} is {:?}); give one with --name",
                    top.digest,
                    annotations
                        .get(REF_NAME)
                        .map(String::as_str)
                        .unwrap_or("unset")
                ))
            })?;
            let top_digest = parse(what, &top.digest)?;
            let mut desc = top.clone();
            let mut index_digest = None;
            let mut blobs = Vec::new();
            let mut depth = 0;
            let manifest: Manifest = loop {
                let digest = parse(what, &desc.digest)?;
                let doc = self.read_blob(source, what, &desc)?;
                let media = (!desc.media_type.is_empty()).then_some(desc.media_type.as_str());
                match oci::classify(media, &doc)
                    .map_err(|e| ImageError::unsupported(format!("{what}: {e}")))?
                {
                    Kind::Manifest => {
                        let m = serde_json::from_slice(&doc).map_err(|e| {
                            ImageError::unsupported(format!(
                                "{what}: invalid manifest {digest}: {e}"
                            ))
                        })?;
                        blobs.push((digest, doc));
                        break m;
                    }
                    Kind::Index => {
                        depth += 1;
                        if depth > 2 {
                            return Err(ImageError::unsupported(format!(
                                "{what}: indexes nested too deep"
                            )));
                        }
                        let idx: Index = serde_json::from_slice(&doc).map_err(|e| {
                            ImageError::unsupported(format!("{what}: invalid index {digest}: {e}"))
                        })?;
                        let cands: Vec<Option<Platform>> = idx
                            .manifests
                            .iter()
                            .map(|d| d.platform.as_ref().map(|p| p.to_platform()))
                            .collect();
                        let Some(i) = choose_platform(&cands, &self.platform) else {
                            return Err(ImageError::not_found(format!(
                                "{what}: no image for platform {} in index {digest}",
                                self.platform
                            )));
                        };
                        index_digest.get_or_insert(digest.clone());
                        blobs.push((digest, doc));
                        desc = idx.manifests[i].clone();
                    }
                }
            };
            let manifest_digest = blobs.last().map(|(d, _)| d.clone()).expect("a manifest");
            let config_desc = manifest.config.clone();
            let config_bytes = self.read_blob(source, what, &config_desc)?;
            let layers: Vec<(String, Descriptor)> = manifest
                .layers
                .iter()
                .map(|l| (blob_path(&l.digest), l.clone()))
                .collect();
            let mut names = vec![reference.clone()];
            if reference.digest().is_none() {
                names.push(
                    Reference::parse_normalized(&repo_digest(&reference, &top_digest))
                        .map_err(|e| ImageError::internal(e.to_string()))?,
                );
            }
            let imported = self.finish_import(
                source,
                what,
                &config_bytes,
                Some(&config_desc),
                &layers,
                blobs,
                Some(manifest_digest),
                index_digest,
                &names,
            )?;
            out.push(imported);
        }
        Ok(out)
    }

    fn import_docker(
        &self,
        source: &dyn Source,
        what: &str,
        name: Option<Reference>,
    ) -> Result<Vec<Imported>, ImageError> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "Config")]
            config: String,
            #[serde(rename = "RepoTags", default)]
            repo_tags: Option<Vec<String>>,
            #[serde(rename = "Layers", default)]
            layers: Vec<String>,
        }
        let data = source.read_all("manifest.json", oci::MAX_DOCUMENT)?;
        let entries: Vec<Entry> = serde_json::from_slice(&data)
            .map_err(|e| ImageError::invalid(format!("{what}: invalid manifest.json: {e}")))?;
        if entries.is_empty() {
            return Err(ImageError::invalid(format!(
                "{what}: manifest.json lists no image"
            )));
        }
        if name.is_some() && entries.len() > 1 {
            return Err(ImageError::invalid(format!(
                "{what} holds {} images; --name can only name one",
                entries.len()
            )));
        }
        let mut out = Vec::new();
        for entry in entries {
            let config_bytes = source.read_all(&entry.config, oci::MAX_DOCUMENT)?;
            let config_digest = oci::digest_of(Algorithm::Sha256, &config_bytes);
            // The file is named by its digest ("<hex>.json" or
            // "blobs/sha256/<hex>"): check it.
            let stem = entry
                .config
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".json");
            if stem.len() == 64 && stem != config_digest.hex() {
                return Err(ImageError::corrupt(format!(
                    "{what}: config {}: digest mismatch: got {config_digest}",
                    entry.config
                )));
            }
            let mut names = Vec::new();
            if let Some(n) = &name {
                names.push(n.clone());
            } else {
                for t in entry.repo_tags.iter().flatten() {
                    names.push(Reference::parse_normalized(t).map_err(|e| {
                        ImageError::invalid(format!("{what}: RepoTags {t:?}: {e}"))
                    })?);
                }
            }
            if names.is_empty() {
                return Err(ImageError::invalid(format!(
                    "{what}: image {} has no RepoTags; give a name with --name",
                    entry.config
                )));
            }
            let layers: Vec<(String, Descriptor)> = entry
                .layers
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        Descriptor {
                            size: -1,
                            ..Descriptor::default()
                        },
                    )
                })
                .collect();
            let imported = self.finish_import(
                source,
                what,
                &config_bytes,
                None,
                &layers,
                Vec::new(),
                None,
                None,
                &names,
            )?;
            out.push(imported);
        }
        Ok(out)
    }

    /// Check the config, bring in the layers, store the blobs and record
    /// the image under `names`. Layers with an empty descriptor digest (docker-archive)
    /// are identified by their content.
    #[allow(clippy::too_many_arguments)]
    fn finish_import(
        &self,
        source: &dyn Source,
        what: &str,
        config_bytes: &[u8],
        config_desc: Option<&Descriptor>,
        layers: &[(String, Descriptor)],
        mut blobs: Vec<(Digest, Vec<u8>)>,
        manifest_digest: Option<Digest>,
        index_digest: Option<Digest>,
        names: &[Reference],
    ) -> Result<Imported, ImageError> {
        let config_digest = match config_desc {
            Some(d) => parse(what, &d.digest)?,
            None => oci::digest_of(Algorithm::Sha256, config_bytes),
        };
        let config: ImageConfig = serde_json::from_slice(config_bytes)
            .map_err(|e| ImageError::unsupported(format!("{what}: invalid image config: {e}")))?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(ImageError::unsupported(format!(
                "{what}: {} layers but the config lists {} diff IDs",
                layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut size = config_bytes.len() as u64;
        let mut records = Vec::new();
        for ((path, desc), diff_id) in layers.iter().zip(&config.rootfs.diff_ids) {
            let diff_id = parse(what, diff_id)?;
            let (digest, len, media) = self.import_layer(source, what, path, desc, &diff_id)?;
            size += len;
            records.push(LayerRecord {
                digest: digest.to_string(),
                diff_id: diff_id.to_string(),
                size: len,
                media_type: media,
            });
        }
        blobs.push((config_digest.clone(), config_bytes.to_vec()));
        for (d, data) in &blobs {
            self.store
                .put_blob(d, data)
                .map_err(|e| ImageError::local("store a blob", e))?;
        }
        let mut platform = format!("{}/{}", config.os, config.architecture);
        if let Some(v) = config.variant.as_deref().filter(|v| !v.is_empty()) {
            platform = format!("{platform}/{v}");
        }
        let record = ImageRecord {
            id: config_digest.to_string(),
            size,
            manifest_digest: manifest_digest.map(|d| d.to_string()),
            index_digest: index_digest.map(|d| d.to_string()),
            platform,
            user: config.config.and_then(|c| c.user).unwrap_or_default(),
            created: config.created,
            layers: records,
            source: format!("import {what}"),
            ..ImageRecord::default()
        };
        let stored = self
            .store
            .commit(record, names)
            .map_err(|e| ImageError::local("record the image", e))?;
        tracing::info!(source = what, id = %stored.id, names = ?stored.repo_tags, "imported image");
        Ok(Imported {
            id: stored.id,
            names: names.iter().map(|n| n.to_string()).collect(),
        })
    }

    /// Bring one layer in, verifying it; returns its blob digest, size
    /// and media type.
    fn import_layer(
        &self,
        source: &dyn Source,
        what: &str,
        path: &str,
        desc: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(Digest, u64, String), ImageError> {
        let expected = if desc.digest.is_empty() {
            None
        } else {
            Some(parse(what, &desc.digest)?)
        };
        let alg = expected
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm);
        let reader = source.open(path)?;
        // At most one byte past the promised size (see pull.rs).
        let reader: Box<dyn Read + '_> = if expected.is_some() && desc.size >= 0 {
            Box::new(reader.take(desc.size as u64 + 1))
        } else {
            reader
        };
        let mut buf = BufReader::with_capacity(256 << 10, HashingReader::new(reader, alg));
        let head = buf.fill_buf_compat()?;
        let media = match Compression::sniff(head) {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        };
        let media = if desc.media_type.is_empty() {
            media.to_owned()
        } else {
            desc.media_type.clone()
        };
        let present = self.store.has_layer(diff_id);
        let tmp = if present {
            None
        } else {
            Some(
                self.store
                    .temp_dir("layer")
                    .map_err(|e| ImageError::local("create a temporary directory", e))?,
            )
        };
        let guard = Guard {
            cap: Cap {
                bytes: self.limits.max_layer_bytes,
                what: "the layer decompressed size cap (max_layer_bytes)",
            },
            image: None,
            min_free_bytes: self.limits.min_free_bytes,
            store_dir: self.store.root().to_path_buf(),
        };
        let outcome = match &tmp {
            Some(t) => unpack_stream(&mut buf, t.path(), diff_id, &guard).map(|_| ()),
            None => Ok(()),
        };
        if let Err(LayerError::Exhausted(why)) = &outcome {
            return Err(ImageError::exhausted(format!(
                "{what}: layer {path}: {why}"
            )));
        }
        io::copy(&mut buf, &mut io::sink())
            .map_err(|e| ImageError::invalid(format!("{what}: reading {path}: {e}")))?;
        let (got, len) = buf
            .into_inner()
            .finish()
            .map_err(|e| ImageError::invalid(format!("{what}: reading {path}: {e}")))?;
        if let Some(want) = &expected {
            if &got != want || (desc.size >= 0 && len != desc.size as u64) {
                return Err(ImageError::corrupt(format!(
                    "{what}: layer {path}: digest or size mismatch: expected {want} ({} bytes), got {got} ({len} bytes)",
                    desc.size
                )));
            }
        }
        outcome.map_err(|e| match e {
            LayerError::Unpack(u) => ImageError::corrupt(format!("{what}: layer {path}: {u}")),
            LayerError::DiffId(g) => ImageError::corrupt(format!(
                "{what}: layer {path}: does not match the config's diff ID: expected {diff_id}, got {g}"
            )),
            LayerError::Io(e) => ImageError::invalid(format!("{what}: layer {path}: {e}")),
            LayerError::Exhausted(why) => {
                ImageError::exhausted(format!("{what}: layer {path}: {why}"))
            }
        })?;
        if let Some(t) = tmp {
            self.store
                .commit_layer(t, diff_id)
                .map_err(|e| ImageError::local("store a layer", e))?;
        }
        Ok((got, len, media))
    }

    fn read_blob(
        &self,
        source: &dyn Source,
        what: &str,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, ImageError> {
        let digest = parse(what, &desc.digest)?;
        let data = source.read_all(&blob_path(&desc.digest), oci::MAX_DOCUMENT)?;
        oci::verify("blob", &data, &digest, Some(desc.size))
            .map_err(|e| ImageError::corrupt(format!("{what}: {e}")))?;
        Ok(data)
    }
}

trait FillBufCompat {
    fn fill_buf_compat(&mut self) -> Result<&[u8], ImageError>;
}

impl<R: Read> FillBufCompat for BufReader<R> {
    fn fill_buf_compat(&mut self) -> Result<&[u8], ImageError> {
        use std::io::BufRead;
        self.fill_buf()
            .map_err(|e| ImageError::invalid(format!("cannot read a layer: {e}")))
    }
}

/// The name of an image in an OCI layout: `--name`, else containerd's
/// full-name annotation, else a `ref.name` that is a whole reference
/// (skopeo writes `busybox:1.36`; a bare tag names no repository).
fn oci_name(annotations: &BTreeMap<String, String>, name: Option<&Reference>) -> Option<Reference> {
    if let Some(n) = name {
        return Some(n.clone());
    }
    if let Some(full) = annotations.get(CONTAINERD_NAME) {
        if let Ok(r) = Reference::parse_normalized(full) {
            return Some(r);
        }
    }
    let ref_name = annotations.get(REF_NAME).map(String::as_str).unwrap_or("");
    if ref_name.contains([':', '/', '@']) {
        return Reference::parse_normalized(ref_name).ok();
    }
    None
}

fn blob_path(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("blobs/{alg}/{hex}"),
        None => format!("blobs/{digest}"),
    }
}

fn parse(what: &str, s: &str) -> Result<Digest, ImageError> {
    Digest::parse(s).map_err(|e| ImageError::invalid(format!("{what}: invalid digest {s:?}: {e}")))
}

/// Files of an image layout or archive, by relative path.
trait Source {
    fn open(&self, path: &str) -> Result<Box<dyn Read + '_>, ImageError>;
    fn exists(&self, path: &str) -> bool;

    fn read_all(&self, path: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let mut data = Vec::new();
        self.open(path)?
            .take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| ImageError::invalid(format!("cannot read {path}: {e}")))?;
        if data.len() as u64 > limit {
            return Err(ImageError::invalid(format!(
                "{path} is larger than {limit} bytes"
            )));
        }
        Ok(data)
    }
}

/// Relative paths only: names in manifest.json and index.json are data.
fn clean(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

struct DirSource {
    root: PathBuf,
}

impl Source for DirSource {
    fn open(&self, path: &str) -> Result<Box<dyn Read + '_>, ImageError> {
        let rel = clean(path).ok_or_else(|| ImageError::invalid(format!("bad path {path:?}")))?;
        let full = self.root.join(rel);
        let f = File::open(&full)
            .map_err(|e| ImageError::invalid(format!("cannot open {}: {e}", full.display())))?;
        Ok(Box::new(f))
    }

    fn exists(&self, path: &str) -> bool {
        clean(path).is_some_and(|p| self.root.join(p).is_file())
    }
}

/// An uncompressed tar, indexed once; members are read in place.
struct TarSource {
    path: PathBuf,
    members: HashMap<String, Member>,
}

enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

impl TarSource {
    fn open(path: &Path) -> io::Result<Self> {
        let mut members = HashMap::new();
        let mut archive = tar::Archive::new(BufReader::new(File::open(path)?));
        for entry in archive.entries()? {
            let entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = clean(&raw) else { continue };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                members.insert(
                    name,
                    Member::File {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                );
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                // Symlinks are relative to their directory (old `docker
                // save` links duplicate layers); hard links to the root.
                let resolved = if kind.is_symlink() {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    format!("{dir}/{target}")
                } else {
                    target
                };
                if let Some(t) = clean(&resolved) {
                    members.insert(name, Member::Link(t));
                }
            }
        }
        Ok(Self {
            path: path.to_owned(),
            members,
        })
    }

    fn find(&self, path: &str) -> Option<(u64, u64)> {
        let mut name = clean(path)?;
        for _ in 0..8 {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(t) => name = t.clone(),
            }
        }
        None
    }
}

impl Source for TarSource {
    fn open(&self, path: &str) -> Result<Box<dyn Read + '_>, ImageError> {
        let (offset, size) = self
            .find(path)
            .ok_or_else(|| ImageError::invalid(format!("the archive has no {path}")))?;
        let mut f = File::open(&self.path).map_err(|e| {
            ImageError::invalid(format!("cannot open {}: {e}", self.path.display()))
        })?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| {
            ImageError::invalid(format!("cannot read {}: {e}", self.path.display()))
        })?;
        Ok(Box::new(f.take(size)))
    }

    fn exists(&self, path: &str) -> bool {
        self.find(path).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_layout_annotations() {
        let mut a = BTreeMap::new();
        assert_eq!(oci_name(&a, None), None);
        a.insert(REF_NAME.to_string(), "latest".to_string());
        assert_eq!(oci_name(&a, None), None);
        let n = Reference::parse_normalized("myapp:v9").unwrap();
        assert_eq!(
            oci_name(&a, Some(&n)).unwrap().to_string(),
            "docker.io/library/myapp:v9"
        );
        a.insert(REF_NAME.to_string(), "busybox:1.0".to_string());
        assert_eq!(
            oci_name(&a, None).unwrap().to_string(),
            "docker.io/library/busybox:1.0"
        );
        a.insert(CONTAINERD_NAME.to_string(), "quay.io/x/y:2".to_string());
        assert_eq!(oci_name(&a, None).unwrap().to_string(), "quay.io/x/y:2");
    }

    #[test]
    fn paths_stay_relative() {
        assert_eq!(
            clean("./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(clean("../x"), None);
        assert_eq!(clean("/abs/x").as_deref(), Some("abs/x"));
        assert_eq!(clean(""), None);
        assert_eq!(blob_path("sha256:ab"), "blobs/sha256/ab");
    }
}
