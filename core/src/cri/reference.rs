//! Image references: parsing, validation and normalisation.
//!
//! The grammar is the one of the distribution project's `reference`
//! package, which Docker, containerd, CRI-O and every registry client
//! share:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ domain "/" ] path
//! domain           := host [ ":" port ]
//! host             := domain-name | IPv4 | "[" IPv6 "]"
//! domain-name      := component ( "." component )*      component: [a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?
//! path             := path-component ( "/" path-component )*   (at most 255 bytes)
//! path-component   := [a-z0-9]+ ( separator [a-z0-9]+ )*
//! separator        := "." | "_" | "__" | "-"+
//! tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest           := algorithm ":" hex                 (sha256: 64, sha384: 96, sha512: 128 lowercase hex)
//! ```
//!
//! Normalisation follows Docker's familiar names: the first path element
//! is a registry host only if it contains a `.` or a `:`, is `localhost`,
//! or has an uppercase letter; otherwise the host is `docker.io`, and a
//! one-element path on `docker.io` gains `library/`. A reference with
//! neither tag nor digest gets `:latest`; one with both keeps only the
//! digest (the digest names the content, the tag is then just a comment).
//!
//! `busybox` → `docker.io/library/busybox:latest`,
//! `localhost:5000/app` → `localhost:5000/app:latest`,
//! `quay.io/a/b:1@sha256:…` → `quay.io/a/b@sha256:…`.

use std::fmt;

/// Docker Hub's name in references.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy Docker Hub name, accepted and rewritten to `docker.io`.
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The namespace of Docker Hub's official images.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository path accepted.
pub const MAX_PATH_LEN: usize = 255;
/// Longest tag accepted.
pub const MAX_TAG_LEN: usize = 128;

/// Why a string is not a valid image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceError {
    /// The empty string.
    Empty,
    /// A bare 64-hex-digit string: an image ID, not a name.
    Identifier(String),
    /// The repository path has uppercase letters.
    Uppercase(String),
    /// The repository path is longer than [`MAX_PATH_LEN`].
    NameTooLong(usize),
    /// The registry host (and port) is malformed.
    InvalidDomain(String),
    /// A path component breaks the grammar.
    InvalidPath(String),
    InvalidTag(String),
    InvalidDigest(String),
    /// A well-formed digest of an algorithm we cannot verify.
    UnsupportedAlgorithm(String),
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("invalid reference: empty image name"),
            Self::Identifier(s) => write!(
                f,
                "invalid reference {s:?}: a 64-hex-digit string is an image ID, not a repository name"
            ),
            Self::Uppercase(s) => {
                write!(f, "invalid reference: repository name {s:?} must be lowercase")
            }
            Self::NameTooLong(n) => write!(
                f,
                "invalid reference: repository name is {n} characters, at most {MAX_PATH_LEN} allowed"
            ),
            Self::InvalidDomain(s) => write!(f, "invalid reference: bad registry host {s:?}"),
            Self::InvalidPath(s) => write!(
                f,
                "invalid reference: bad repository path component {s:?} (lowercase letters and digits, separated by '.', '_', '__' or '-')"
            ),
            Self::InvalidTag(s) => write!(
                f,
                "invalid reference: bad tag {s:?} (letters, digits, '_', '.', '-'; not starting with '.' or '-'; at most {MAX_TAG_LEN})"
            ),
            Self::InvalidDigest(s) => write!(f, "invalid reference: bad digest {s:?}"),
            Self::UnsupportedAlgorithm(s) => write!(
                f,
                "invalid reference: unsupported digest algorithm {s:?} (sha256, sha384 or sha512)"
            ),
        }
    }
}

impl std::error::Error for ReferenceError {}

/// A content digest's algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha384 => 96,
            Self::Sha512 => 128,
        }
    }
}

/// A validated content digest, `algorithm:hex`, hex lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parse `algorithm:hex`. The algorithm must be one we can verify and
    /// the hex exactly its length, lowercase (as go-digest requires).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let bad = || ReferenceError::InvalidDigest(s.to_owned());
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        if !is_digest_algorithm(alg)
            || hex.len() < 32
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad());
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            _ => return Err(ReferenceError::UnsupportedAlgorithm(alg.to_owned())),
        };
        if hex.len() != algorithm.hex_len() || hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        Ok(Self {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// A digest from an algorithm and a hex string produced by hashing.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Self, ReferenceError> {
        Self::parse(&format!("{}:{hex}", algorithm.as_str()))
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

/// A normalised, named image reference: a repository with a tag or a
/// digest (never both, never neither).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parse and normalise the way `docker pull`, containerd and kubelet
    /// do (distribution's `ParseDockerRef`).
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        let repo = Repository::parse_with_suffix(s)?;
        let (repo, tag, digest) = repo;
        let (tag, digest) = match (tag, digest) {
            (_, Some(d)) => (None, Some(d)),
            (Some(t), None) => (Some(t), None),
            (None, None) => (Some(DEFAULT_TAG.to_owned()), None),
        };
        Ok(Self {
            domain: repo.domain,
            path: repo.path,
            tag,
            digest,
        })
    }

    /// A reference to `repository` with `tag`.
    pub fn with_tag(repository: &Repository, tag: &str) -> Result<Self, ReferenceError> {
        if !is_tag(tag) {
            return Err(ReferenceError::InvalidTag(tag.to_owned()));
        }
        Ok(Self {
            domain: repository.domain.clone(),
            path: repository.path.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        })
    }

    /// A reference to `repository` with `digest`.
    pub fn with_digest(repository: &Repository, digest: Digest) -> Self {
        Self {
            domain: repository.domain.clone(),
            path: repository.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The registry host as written in the name, e.g. `docker.io` or
    /// `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    pub fn repository(&self) -> Repository {
        Repository {
            domain: self.domain.clone(),
            path: self.path.clone(),
        }
    }

    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// What the registry API is asked for: the tag or the digest.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The short form Docker shows: `busybox:latest`, `quay.io/a/b@sha256:…`.
    pub fn familiar(&self) -> String {
        let name = familiar_name(&self.domain, &self.path);
        match (&self.tag, &self.digest) {
            (_, Some(d)) => format!("{name}@{d}"),
            (Some(t), None) => format!("{name}:{t}"),
            (None, None) => name,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")
        } else if let Some(t) = &self.tag {
            write!(f, ":{t}")
        } else {
            Ok(())
        }
    }
}

/// A normalised repository name: `domain/path`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    domain: String,
    path: String,
}

impl Repository {
    /// Parse a repository name without tag or digest, normalising it.
    pub fn parse_normalized(s: &str) -> Result<Self, ReferenceError> {
        match Self::parse_with_suffix(s)? {
            (repo, None, None) => Ok(repo),
            _ => Err(ReferenceError::InvalidPath(s.to_owned())),
        }
    }

    fn parse_with_suffix(
        s: &str,
    ) -> Result<(Self, Option<String>, Option<Digest>), ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if is_identifier(s) {
            return Err(ReferenceError::Identifier(s.to_owned()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'; an
        // earlier ':' belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !is_tag(t) {
                return Err(ReferenceError::InvalidTag(t.to_owned()));
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (domain, path) = split_domain(name);
        if !is_domain(domain) {
            return Err(ReferenceError::InvalidDomain(domain.to_owned()));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(ReferenceError::NameTooLong(path.len()));
        }
        if path.to_ascii_lowercase() != path
            && path.to_ascii_lowercase().split('/').all(is_path_component)
        {
            return Err(ReferenceError::Uppercase(path.to_owned()));
        }
        for component in path.split('/') {
            if !is_path_component(component) {
                return Err(ReferenceError::InvalidPath(component.to_owned()));
            }
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_REPO_PREFIX}{path}")
        } else {
            path.to_owned()
        };
        let repo = Self {
            domain: domain.to_owned(),
            path,
        };
        Ok((repo, tag.map(str::to_owned), digest))
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The short form Docker shows: `busybox`, `quay.io/a/b`.
    pub fn familiar(&self) -> String {
        familiar_name(&self.domain, &self.path)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)
    }
}

/// What a user may name an image by, locally: its ID (full, `sha256:`
/// prefixed, or a unique prefix of the hex), or a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnyReference {
    /// `sha256:<64 hex>` or bare 64 hex: an image ID.
    Id(Digest),
    /// A named reference (tag or digest).
    Named(Reference),
}

impl AnyReference {
    /// distribution's `ParseAnyReference`: an identifier, a digest, or a
    /// (normalised) name.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if is_identifier(s) {
            return Ok(Self::Id(Digest::parse(&format!("sha256:{s}"))?));
        }
        if let Ok(d) = Digest::parse(s) {
            return Ok(Self::Id(d));
        }
        Reference::parse_normalized(s).map(Self::Named)
    }
}

/// `true` for exactly 64 lowercase hex digits: an image ID without its
/// algorithm.
pub fn is_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's rule for where the registry host ends (`splitDockerDomain`).
fn split_domain(name: &str) -> (&str, &str) {
    let Some((first, rest)) = name.split_once('/') else {
        return (DEFAULT_DOMAIN, name);
    };
    if first == "localhost" {
        (first, rest)
    } else if first == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, rest)
    } else if first.contains(['.', ':']) || first.bytes().any(|b| b.is_ascii_uppercase()) {
        (first, rest)
    } else {
        (DEFAULT_DOMAIN, name)
    }
}

fn familiar_name(domain: &str, path: &str) -> String {
    if domain == DEFAULT_DOMAIN {
        match path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(short) if !short.contains('/') => short.to_owned(),
            _ => path.to_owned(),
        }
    } else {
        format!("{domain}/{path}")
    }
}

/// `host[:port]` where host is a DNS-like name, an IPv4 address in dotted
/// decimal (which the name rule covers) or a bracketed IPv6 address.
fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let addr = &rest[..end];
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(port) => return is_port(port),
            None => return after.is_empty(),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if !is_port(p) {
            return false;
        }
    }
    !host.is_empty() && host.split('.').all(is_domain_component)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*`, separator `.`, `_`, `__` or `-`+.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.first().is_some_and(alnum) || !b.last().is_some_and(alnum) {
        return false;
    }
    // Between the alphanumeric runs, every separator must be allowed.
    b.split(alnum)
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|&c| c == b'-'))
}

fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    b.len() <= MAX_TAG_LEN
        && b.first().is_some_and(|&c| word(c))
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*`
fn is_digest_algorithm(s: &str) -> bool {
    s.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphabetic)
            && b.iter().all(|c| c.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa";

    fn norm(s: &str) -> String {
        Reference::parse_normalized(s).unwrap().to_string()
    }

    #[test]
    fn familiar_names_normalise() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(norm("docker.io/a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn hosts_and_ports() {
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app:v2"), "localhost:5000/app:v2");
        assert_eq!(norm("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(
            norm("registry.k8s.io/e2e-test-images/busybox:1.29-2"),
            "registry.k8s.io/e2e-test-images/busybox:1.29-2"
        );
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
        assert_eq!(norm("Example.COM/app"), "Example.COM/app:latest");
        assert_eq!(norm("quay.io/app"), "quay.io/app:latest");
        // A single element with a port-looking suffix is a name and a tag.
        assert_eq!(norm("localhost:5000"), "docker.io/library/localhost:5000");
    }

    #[test]
    fn digests_win_over_tags() {
        assert_eq!(
            norm(&format!("busybox@{D}")),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            norm(&format!("busybox:1.36@{D}")),
            format!("docker.io/library/busybox@{D}")
        );
        let r = Reference::parse_normalized(&format!("localhost:5000/x@{D}")).unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "x");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.object(), D);
    }

    #[test]
    fn parts_and_familiar_forms() {
        let r = Reference::parse_normalized("busybox").unwrap();
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.familiar(), "busybox:latest");
        let r = Reference::parse_normalized("quay.io/a/b:1").unwrap();
        assert_eq!(r.familiar(), "quay.io/a/b:1");
        assert_eq!(r.repository().familiar(), "quay.io/a/b");
        assert_eq!(
            Reference::parse_normalized("docker.io/library/a/b")
                .unwrap()
                .familiar(),
            "library/a/b:latest"
        );
    }

    #[test]
    fn invalid_references_say_why() {
        use ReferenceError::*;
        let err = |s: &str| Reference::parse_normalized(s).unwrap_err();
        assert_eq!(err(""), Empty);
        assert!(matches!(err(&"a".repeat(64)), Identifier(_)));
        assert!(matches!(err("Busybox"), Uppercase(_)));
        assert!(matches!(err("docker.io/Library/busybox"), Uppercase(_)));
        assert!(matches!(err("busybox:"), InvalidTag(_)));
        assert!(matches!(err("busybox:-x"), InvalidTag(_)));
        assert!(matches!(
            err(&format!("busybox:{}", "t".repeat(129))),
            InvalidTag(_)
        ));
        assert!(matches!(err("busybox@sha256:abc"), InvalidDigest(_)));
        assert!(matches!(
            err(&format!(
                "busybox@{}",
                D.to_uppercase().replace("SHA", "sha")
            )),
            InvalidDigest(_)
        ));
        assert!(matches!(
            err("busybox@md5:0123456789abcdef0123456789abcdef"),
            UnsupportedAlgorithm(_)
        ));
        assert!(matches!(err("a//b"), InvalidPath(_)));
        assert!(matches!(err("a/b/"), InvalidPath(_)));
        assert!(matches!(err("a/-b"), InvalidPath(_)));
        assert!(matches!(err("a/b..c"), InvalidPath(_)));
        assert!(matches!(err("a/b___c"), InvalidPath(_)));
        assert!(matches!(err("-host.io/a"), InvalidDomain(_)));
        assert!(matches!(err("host.io:port/a"), InvalidDomain(_)));
        assert!(matches!(err("[zz]:5000/a"), InvalidDomain(_)));
        assert!(matches!(
            err(&format!("a/{}", "b".repeat(255))),
            NameTooLong(_)
        ));
        assert!(matches!(err("a b"), InvalidPath(_)));
        assert!(matches!(err(":tag"), Empty));
        // The messages are for people.
        assert!(err("Busybox").to_string().contains("must be lowercase"));
    }

    #[test]
    fn separators() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a.b-c_d__e", "0"] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in ["a..b", "a._b", "a___b", "_a", "a_", ".a", "a-", "A"] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn any_reference() {
        let hex = &D[7..];
        assert_eq!(
            AnyReference::parse(hex).unwrap(),
            AnyReference::Id(Digest::parse(D).unwrap())
        );
        assert_eq!(
            AnyReference::parse(D).unwrap(),
            AnyReference::Id(Digest::parse(D).unwrap())
        );
        assert!(matches!(
            AnyReference::parse("busybox").unwrap(),
            AnyReference::Named(_)
        ));
        // A short hex string is a name here; ID prefixes are resolved by
        // the image lookup, which knows the IDs.
        assert!(matches!(
            AnyReference::parse("7cc4b5aefd1d").unwrap(),
            AnyReference::Named(_)
        ));
    }

    #[test]
    fn repository_round_trip() {
        let r = Repository::parse_normalized("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        assert!(Repository::parse_normalized("busybox:1").is_err());
        let t = Reference::with_tag(&r, "1.36").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/busybox:1.36");
        assert!(Reference::with_tag(&r, "bad tag").is_err());
        let d = Reference::with_digest(&r, Digest::parse(D).unwrap());
        assert_eq!(d.to_string(), format!("docker.io/library/busybox@{D}"));
    }

    #[test]
    fn digest_forms() {
        assert!(Digest::parse(D).is_ok());
        let d512 = format!("sha512:{}", "a".repeat(128));
        assert_eq!(Digest::parse(&d512).unwrap().algorithm(), Algorithm::Sha512);
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert!(Digest::parse("sha256").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "g".repeat(64))).is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "@", ":", "/", "//", "a@", "@sha256:", "a:b:c", "[", "[]", "[::1", "[::1]x/a",
            "a/b:c/d", "é", "a\u{0}b", "a@b@c",
        ] {
            let _ = Reference::parse_normalized(s);
            let _ = AnyReference::parse(s);
        }
    }
}
