//! Per-call credentials on the TCP listener, as a gRPC server
//! interceptor checks them: each call's metadata (`authorization: Bearer
//! <token>`, or a `username`/`password` pair) or the connection's TLS
//! client certificate names an identity of `[[access.identities]]`,
//! before the request is decoded. Tokens are kept as salted SHA-256
//! hashes only and compared in constant time.

use std::fmt;

use crisp_core::h2::hpack::Header;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::policy::{Peer, Policy};

/// The prefix of a stored token hash: `$sha256$<salt hex>$<digest hex>`,
/// the digest being SHA-256(salt || token).
const SCHEME: &str = "$sha256$";

/// Bytes of salt `crispd hash-token` draws.
const SALT_LEN: usize = 16;

/// A token as the config keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash {
    salt: Vec<u8>,
    digest: [u8; 32],
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    /// Hash `token` with `salt`.
    pub fn new(token: &[u8], salt: &[u8]) -> Self {
        Self {
            salt: salt.to_vec(),
            digest: salted_digest(salt, token),
        }
    }

    /// Hash `token` with a fresh random salt (from the kernel).
    pub fn generate(token: &[u8]) -> std::io::Result<Self> {
        let mut salt = [0u8; SALT_LEN];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut salt)?;
        Ok(Self::new(token, &salt))
    }

    /// Read `$sha256$<salt hex>$<digest hex>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("a token hash starts with {SCHEME:?}"))?;
        let (salt, digest) = rest
            .split_once('$')
            .ok_or("a token hash is $sha256$<salt hex>$<digest hex>")?;
        let salt = from_hex(salt).ok_or("the token hash's salt is not hex")?;
        if salt.is_empty() {
            return Err("the token hash has no salt".into());
        }
        let digest: [u8; 32] = from_hex(digest)
            .and_then(|d| d.try_into().ok())
            .ok_or("the token hash's digest is not 64 hex digits")?;
        Ok(Self { salt, digest })
    }

    /// Whether `token` is the one hashed, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, token: &[u8]) -> bool {
        salted_digest(&self.salt, token).ct_eq(&self.digest).into()
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}${}", to_hex(&self.salt), to_hex(&self.digest))
    }
}

fn salted_digest(salt: &[u8], token: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(token);
    h.finalize().into()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a call says about its caller in its metadata.
#[derive(Debug, PartialEq, Eq)]
enum Credentials<'a> {
    None,
    Bearer(&'a [u8]),
    Password {
        username: &'a [u8],
        password: &'a [u8],
    },
    /// Metadata that tries to say something but cannot be read (another
    /// `authorization` scheme, a username without a password, ...).
    Malformed(&'static str),
}

fn credentials(headers: &[Header]) -> Credentials<'_> {
    let mut authorization = None;
    let mut username = None;
    let mut password = None;
    for h in headers {
        let slot = match &h.name[..] {
            b"authorization" => &mut authorization,
            b"username" => &mut username,
            b"password" => &mut password,
            _ => continue,
        };
        if slot.replace(&h.value[..]).is_some() {
            return Credentials::Malformed("repeated credential metadata");
        }
    }
    match (authorization, username, password) {
        (None, None, None) => Credentials::None,
        (Some(a), None, None) => match a.split_at_checked(7) {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty() =>
            {
                Credentials::Bearer(token)
            }
            _ => Credentials::Malformed("authorization is not \"Bearer <token>\""),
        },
        (None, Some(username), Some(password)) => Credentials::Password { username, password },
        (None, _, _) => Credentials::Malformed("username and password go together"),
        (Some(_), _, _) => Credentials::Malformed("both authorization and username/password"),
    }
}

/// How a TCP connection reached us.
#[derive(Clone, Copy, Debug)]
pub struct Transport<'a> {
    /// The connection is TLS.
    pub tls: bool,
    /// The peer's address is loopback.
    pub loopback: bool,
    /// The subject CN of the client certificate the handshake verified.
    pub cert_cn: Option<&'a str>,
}

/// Why a call's credentials were refused (UNAUTHENTICATED). The text
/// never holds the secret.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

/// The caller of one call on a TCP connection: the identity its
/// metadata proves, else the one its client certificate proves, else
/// the anonymous [`Peer::Tcp`].
pub fn authenticate(
    policy: &Policy,
    headers: &[Header],
    transport: Transport<'_>,
) -> Result<Peer, Refusal> {
    let creds = credentials(headers);
    if let Credentials::Malformed(why) = creds {
        return Err(Refusal(why));
    }
    if creds != Credentials::None
        && !transport.tls
        && !(transport.loopback && policy.allow_plaintext_credentials_on_loopback())
    {
        return Err(Refusal("credentials on a plaintext connection"));
    }
    let identity = match creds {
        Credentials::Bearer(token) => Some(
            policy
                .identity_by_token(token)
                .ok_or(Refusal("unknown token"))?,
        ),
        Credentials::Password { username, password } => Some(
            policy
                .identity_by_password(username, password)
                .ok_or(Refusal("wrong username or password"))?,
        ),
        Credentials::None | Credentials::Malformed(_) => transport
            .cert_cn
            .and_then(|cn| policy.identity_by_cert_cn(cn)),
    };
    Ok(identity.map_or(Peer::Tcp, Peer::Identity))
}

/// The subject's common name (the last CN, as TLS libraries read it) of
/// a DER certificate that the handshake already verified; `None` when it
/// has none or is not what we expect.
pub fn subject_cn(cert: &[u8]) -> Option<String> {
    let (cert, _) = der_take(cert, 0x30)?;
    let (tbs, _) = der_take(cert, 0x30)?;
    let mut rest = tbs;
    // version [0] EXPLICIT, optional
    if rest.first() == Some(&0xa0) {
        rest = der_take(rest, 0xa0)?.1;
    }
    rest = der_take(rest, 0x02)?.1; // serialNumber
    rest = der_take(rest, 0x30)?.1; // signature
    rest = der_take(rest, 0x30)?.1; // issuer
    rest = der_take(rest, 0x30)?.1; // validity
    let (mut subject, _) = der_take(rest, 0x30)?;
    let mut cn = None;
    while !subject.is_empty() {
        let (mut set, next) = der_take(subject, 0x31)?;
        subject = next;
        while !set.is_empty() {
            let (attr, next) = der_take(set, 0x30)?;
            set = next;
            let (oid, value) = der_take(attr, 0x06)?;
            if oid == [0x55, 0x04, 0x03] {
                // UTF8String, PrintableString, IA5String, T61String
                let tag = *value.first()?;
                if matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
                    let (text, _) = der_take(value, tag)?;
                    cn = Some(String::from_utf8(text.to_vec()).ok()?);
                }
            }
        }
    }
    cn
}

/// One DER element with tag `tag` at the start of `input`: its contents
/// and what follows it.
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AccessConfig, IdentityConfig};

    #[test]
    fn token_hashes_round_trip_and_match() {
        let h = TokenHash::generate(b"s3cret").unwrap();
        let text = h.to_string();
        assert!(text.starts_with("$sha256$"));
        assert!(!text.contains("s3cret"));
        let back = TokenHash::parse(&text).unwrap();
        assert_eq!(back, h);
        assert!(back.matches(b"s3cret"));
        assert!(!back.matches(b"s3cres"));
        assert!(!back.matches(b""));
        // Two hashes of one token differ by their salt.
        assert_ne!(TokenHash::generate(b"s3cret").unwrap(), h);
        for bad in [
            "",
            "sha256$00$00",
            "$sha256$$00",
            "$sha256$0g$00",
            "$sha256$00$0011",
        ] {
            assert!(TokenHash::parse(bad).is_err(), "{bad}");
        }
    }

    fn policy(allow_loopback: bool) -> Policy {
        let ops = TokenHash::new(b"ops-token", b"salt").to_string();
        Policy::from_config(&AccessConfig {
            allow_plaintext_credentials_on_loopback: allow_loopback,
            identities: vec![
                IdentityConfig {
                    name: "ops".into(),
                    token_sha256: Some(ops),
                    cert_subject: None,
                    methods: vec!["read-only".into()],
                },
                IdentityConfig {
                    name: "deployer".into(),
                    token_sha256: None,
                    cert_subject: Some("CN=deployer".into()),
                    methods: vec!["*".into()],
                },
            ],
            ..AccessConfig::default()
        })
        .unwrap()
    }

    fn h(name: &'static str, value: &'static str) -> Header {
        Header::new(name.as_bytes(), value.as_bytes())
    }

    const TLS: Transport<'static> = Transport {
        tls: true,
        loopback: false,
        cert_cn: None,
    };

    fn name(p: Result<Peer, Refusal>) -> Result<String, Refusal> {
        p.map(|p| match p {
            Peer::Identity(i) => i.name.clone(),
            other => other.to_string(),
        })
    }

    #[test]
    fn credentials_name_an_identity_or_are_refused() {
        let p = policy(false);
        let auth = |hs: &[Header], t| name(authenticate(&p, hs, t));
        assert_eq!(auth(&[], TLS), Ok("tcp".into()));
        assert_eq!(
            auth(&[h("authorization", "Bearer ops-token")], TLS),
            Ok("ops".into())
        );
        assert_eq!(
            auth(&[h("authorization", "bearer ops-token")], TLS),
            Ok("ops".into())
        );
        assert_eq!(
            auth(&[h("username", "ops"), h("password", "ops-token")], TLS),
            Ok("ops".into())
        );
        assert_eq!(
            auth(&[h("authorization", "Bearer nope")], TLS),
            Err(Refusal("unknown token"))
        );
        assert_eq!(
            auth(
                &[h("username", "deployer"), h("password", "ops-token")],
                TLS
            ),
            Err(Refusal("wrong username or password"))
        );
        assert!(auth(&[h("authorization", "Basic b3BzOng=")], TLS).is_err());
        assert!(auth(&[h("username", "ops")], TLS).is_err());
        let with_cert = Transport {
            cert_cn: Some("deployer"),
            ..TLS
        };
        assert_eq!(auth(&[], with_cert), Ok("deployer".into()));
        // The call's own credentials win over the connection's.
        assert_eq!(
            auth(&[h("authorization", "Bearer ops-token")], with_cert),
            Ok("ops".into())
        );
        let unknown_cert = Transport {
            cert_cn: Some("stranger"),
            ..TLS
        };
        assert_eq!(auth(&[], unknown_cert), Ok("tcp".into()));
    }

    #[test]
    fn credentials_on_plaintext_are_refused_unless_loopback_is_allowed() {
        let plain = Transport {
            tls: false,
            loopback: true,
            cert_cn: None,
        };
        let bearer = [h("authorization", "Bearer ops-token")];
        assert_eq!(
            name(authenticate(&policy(false), &bearer, plain)),
            Err(Refusal("credentials on a plaintext connection"))
        );
        assert_eq!(
            name(authenticate(&policy(true), &bearer, plain)),
            Ok("ops".into())
        );
        let remote = Transport {
            loopback: false,
            ..plain
        };
        assert!(authenticate(&policy(true), &bearer, remote).is_err());
        assert_eq!(
            name(authenticate(&policy(false), &[], plain)),
            Ok("tcp".into())
        );
    }

    #[test]
    fn der_reading_never_panics_on_junk() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x80],
        ] {
            assert_eq!(subject_cn(input), None);
        }
    }
}
