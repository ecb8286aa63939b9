//! The few OCI image-spec and Docker schema 2 documents a pull reads:
//! descriptors, manifests, indexes (manifest lists) and the image config,
//! with only the fields crisp uses. Docker schema 2 and OCI share their
//! JSON shape; they differ only in media types.
//!
//! Also the digest helpers every blob goes through: hashing while
//! reading, and verification of digest and size.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};

use crisp_core::cri::images::Platform;
use crisp_core::cri::reference::{Algorithm, Digest};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The Accept header of a manifest request: every kind crisp reads.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json;q=0.9";

/// Manifests and configs are small; anything larger is refused rather
/// than held in memory.
pub const MAX_DOCUMENT: u64 = 8 << 20;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct PlatformJson {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl PlatformJson {
    pub fn to_platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone().unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// The image config, only what the runtime reads; the whole document is
/// kept as a blob for ImageStatus's verbose info.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// What a manifest document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Index,
    Manifest,
}

/// Classify a manifest by the media type the registry sent (or the
/// descriptor named), else the document's own `mediaType`, else its
/// shape. Schema 1 is refused with a clear message.
pub fn classify(content_type: Option<&str>, body: &[u8]) -> Result<Kind, ClassifyError> {
    let from_type = |t: &str| -> Option<Result<Kind, ClassifyError>> {
        let t = t.split(';').next().unwrap_or("").trim();
        match t {
            OCI_INDEX | DOCKER_LIST => Some(Ok(Kind::Index)),
            OCI_MANIFEST | DOCKER_MANIFEST => Some(Ok(Kind::Manifest)),
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Some(Err(ClassifyError::Schema1Served)),
            _ => None,
        }
    };
    if let Some(k) = content_type.and_then(from_type) {
        return k;
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(ClassifyError::NotJson)?;
    if let Some(k) = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .and_then(from_type)
    {
        return k;
    }
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        return Err(ClassifyError::Schema1);
    }
    if v.get("manifests").is_some() {
        Ok(Kind::Index)
    } else if v.get("config").is_some() && v.get("layers").is_some() {
        Ok(Kind::Manifest)
    } else {
        Err(ClassifyError::Unknown(
            content_type.unwrap_or("(none)").to_owned(),
        ))
    }
}

/// Why a manifest cannot be used.
#[derive(Debug)]
pub enum ClassifyError {
    /// The registry's media type says Docker schema 1.
    Schema1Served,
    NotJson(serde_json::Error),
    /// The document says `schemaVersion: 1`.
    Schema1,
    /// Neither type nor shape tells; the content type sent, or "(none)".
    Unknown(String),
}

impl fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Schema1Served => f.write_str("the registry serves this image only as a Docker schema 1 manifest, which crisp does not support (push it again with a current client)"),
            Self::NotJson(e) => write!(f, "manifest is not JSON: {e}"),
            Self::Schema1 => f.write_str("Docker schema 1 manifests are not supported"),
            Self::Unknown(t) => write!(f, "unknown manifest type {t:?}"),
        }
    }
}

impl std::error::Error for ClassifyError {}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the magic bytes at the start of the blob: media types lie
    /// (Docker's says gzip for every layer), the bytes do not.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Layer media types crisp refuses: Windows foreign layers and
/// encrypted layers.
pub fn unsupported_layer(media_type: &str) -> Option<&'static str> {
    if media_type.contains("foreign") {
        Some("foreign (Windows) layers are not supported")
    } else if media_type.contains("+encrypted") {
        Some("encrypted layers are not supported")
    } else {
        None
    }
}

/// An incremental hash of one of the digest algorithms.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (alg, bytes) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha384(h) => (Algorithm::Sha384, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest::from_hex(alg, &hex(&bytes)).expect("a hash is a valid digest")
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

pub fn digest_of(alg: Algorithm, data: &[u8]) -> Digest {
    let mut h = Hasher::new(alg);
    h.update(data);
    h.finish()
}

/// Check that `data` is what `expected` (digest and, if known, size)
/// describes.
pub fn verify(
    what: &str,
    data: &[u8],
    expected: &Digest,
    size: Option<i64>,
) -> Result<(), VerifyError> {
    if let Some(size) = size {
        if size < 0 || data.len() as u64 != size as u64 {
            return Err(VerifyError::Size {
                what: what.to_owned(),
                expected: expected.clone(),
                size,
                got: data.len(),
            });
        }
    }
    let got = digest_of(expected.algorithm(), data);
    if &got != expected {
        return Err(VerifyError::Digest {
            what: what.to_owned(),
            expected: expected.clone(),
            got,
        });
    }
    Ok(())
}

/// Content that is not what its descriptor says.
#[derive(Debug)]
pub enum VerifyError {
    Size {
        /// "blob", "manifest", "config".
        what: String,
        expected: Digest,
        /// The size the descriptor gives.
        size: i64,
        got: usize,
    },
    Digest {
        what: String,
        expected: Digest,
        got: Digest,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size {
                what,
                expected,
                size,
                got,
            } => write!(
                f,
                "{what} {expected}: size mismatch: expected {size} bytes, got {got}"
            ),
            Self::Digest {
                what,
                expected,
                got,
            } => write!(f, "{what} digest mismatch: expected {expected}, got {got}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, alg: Algorithm) -> Self {
        Self {
            inner,
            hasher: Hasher::new(alg),
            count: 0,
        }
    }

    /// Read what is left (so that the hash covers the whole stream), then
    /// give the digest and byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes into a hasher (for `io::copy`).
impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_header_field_or_shape() {
        assert_eq!(classify(Some(OCI_INDEX), b"{}").unwrap(), Kind::Index);
        assert_eq!(
            classify(
                Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
                b"{}"
            )
            .unwrap(),
            Kind::Manifest
        );
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        assert_eq!(classify(Some("application/json"), m).unwrap(), Kind::Index);
        assert_eq!(
            classify(None, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            Kind::Index
        );
        assert_eq!(
            classify(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#).unwrap(),
            Kind::Manifest
        );
        assert!(classify(Some(DOCKER_SCHEMA1_SIGNED), b"{}")
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
        assert!(classify(None, br#"{"schemaVersion":1}"#).is_err());
        assert!(classify(None, b"nope").is_err());
    }

    #[test]
    fn hashes_and_verification() {
        let d = digest_of(Algorithm::Sha256, b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(verify("blob", b"", &d, Some(0)).is_ok());
        assert!(verify("blob", b"x", &d, Some(1))
            .unwrap_err()
            .to_string()
            .contains("digest mismatch"));
        assert!(verify("blob", b"", &d, Some(3))
            .unwrap_err()
            .to_string()
            .contains("size mismatch"));
        let mut r = HashingReader::new(&b"abc"[..], Algorithm::Sha256);
        let mut first = [0u8; 1];
        r.read_exact(&mut first).unwrap();
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 3);
        assert_eq!(d, digest_of(Algorithm::Sha256, b"abc"));
    }

    #[test]
    fn compression_magic() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"usr/"), Compression::None);
    }
}
