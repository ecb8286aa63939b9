//! Access control: every call's caller is known from SO_PEERCRED (Unix
//! socket), or is a TCP caller that proved an identity of
//! `[[access.identities]]` (`auth`), or an anonymous TCP peer; a policy
//! from the config says which methods it may call.

use std::fmt;

use crisp_proto::methods::{Method, MethodDesc, METHODS};

use crate::auth::TokenHash;
use crate::config::AccessConfig;

/// Who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A process on the Unix socket, as the kernel reports it.
    Local { uid: u32, gid: u32, pid: i32 },
    /// A TCP client without credentials.
    Tcp,
    /// A TCP client that proved this identity (token or certificate).
    Identity(&'static Identity),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Local { uid, gid, pid } => write!(f, "uid={uid} gid={gid} pid={pid}"),
            Peer::Tcp => f.write_str("tcp"),
            Peer::Identity(i) => write!(f, "identity={}", i.name),
        }
    }
}

/// A set of methods, one bit per rpc.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct MethodSet(u64);

impl MethodSet {
    const ALL: Self = Self((1u64 << METHODS.len()) - 1);

    fn contains(self, m: Method) -> bool {
        self.0 & (1 << m as u32) != 0
    }

    fn parse(names: &[String]) -> Result<Self, PolicyError> {
        let mut set = 0u64;
        for name in names {
            set |= match name.as_str() {
                "*" => Self::ALL.0,
                "read-only" => METHODS
                    .iter()
                    .filter(|d| d.read_only)
                    .fold(0, |acc, d| acc | 1 << d.method as u32),
                other => {
                    let d = METHODS
                        .iter()
                        .find(|d| d.name == other || d.path == other)
                        .ok_or_else(|| PolicyError::UnknownMethod(other.to_owned()))?;
                    1 << d.method as u32
                }
            };
        }
        Ok(Self(set))
    }
}

#[derive(Clone, Debug)]
struct Rule {
    uid: Option<u32>,
    gid: Option<u32>,
    methods: MethodSet,
}

/// One `[[access.identities]]` entry, ready to match.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    token: Option<TokenHash>,
    /// From `cert_subject = "CN=..."`.
    cert_cn: Option<String>,
    methods: MethodSet,
}

#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    tcp: MethodSet,
    /// Built once at start and kept for the daemon's life, so that a
    /// [`Peer`] can name one and stay `Copy`.
    identities: &'static [Identity],
    allow_plaintext_credentials_on_loopback: bool,
}

impl Policy {
    pub fn from_config(c: &AccessConfig) -> Result<Self, PolicyError> {
        let mut rules = Vec::new();
        for r in &c.rules {
            if r.uid.is_none() && r.gid.is_none() {
                return Err(PolicyError::RuleWithoutCaller);
            }
            rules.push(Rule {
                uid: r.uid,
                gid: r.gid,
                methods: MethodSet::parse(&r.methods)?,
            });
        }
        let mut identities = Vec::new();
        for i in &c.identities {
            let bad = |why: String| PolicyError::Identity {
                name: i.name.clone(),
                why,
            };
            if i.name.is_empty() {
                return Err(bad("an identity needs a name".into()));
            }
            if identities.iter().any(|o: &Identity| o.name == i.name) {
                return Err(bad("named twice".into()));
            }
            let token = i
                .token_sha256
                .as_deref()
                .map(TokenHash::parse)
                .transpose()
                .map_err(bad)?;
            let cert_cn = match i.cert_subject.as_deref() {
                None => None,
                Some(s) => Some(
                    s.strip_prefix("CN=")
                        .filter(|cn| !cn.is_empty())
                        .ok_or_else(|| bad(format!("cert_subject {s:?} is not \"CN=<name>\"")))?
                        .to_owned(),
                ),
            };
            if token.is_none() && cert_cn.is_none() {
                return Err(bad("needs token_sha256 or cert_subject".into()));
            }
            identities.push(Identity {
                name: i.name.clone(),
                token,
                cert_cn,
                methods: MethodSet::parse(&i.methods)?,
            });
        }
        Ok(Self {
            rules,
            tcp: MethodSet::parse(&c.tcp_methods)?,
            identities: Vec::leak(identities),
            allow_plaintext_credentials_on_loopback: c.allow_plaintext_credentials_on_loopback,
        })
    }

    pub fn allow_plaintext_credentials_on_loopback(&self) -> bool {
        self.allow_plaintext_credentials_on_loopback
    }

    /// The identity whose token this is. Every identity's hash is
    /// computed and compared, so the time taken does not say which (or
    /// whether one) matched.
    pub fn identity_by_token(&self, token: &[u8]) -> Option<&'static Identity> {
        let mut found = None;
        for i in self.identities {
            if i.token.as_ref().is_some_and(|h| h.matches(token)) {
                found = found.or(Some(i));
            }
        }
        found
    }

    /// The identity named `username` whose token is `password`.
    pub fn identity_by_password(
        &self,
        username: &[u8],
        password: &[u8],
    ) -> Option<&'static Identity> {
        let i = self
            .identities
            .iter()
            .find(|i| i.name.as_bytes() == username)?;
        i.token.as_ref()?.matches(password).then_some(i)
    }

    /// The identity a verified client certificate with this CN is.
    pub fn identity_by_cert_cn(&self, cn: &str) -> Option<&'static Identity> {
        self.identities
            .iter()
            .find(|i| i.cert_cn.as_deref() == Some(cn))
    }

    pub fn allows(&self, peer: Peer, method: &MethodDesc) -> bool {
        match peer {
            Peer::Tcp => self.tcp.contains(method.method),
            // Health and reflection (only read, and say nothing about pods
            // or images) are for every caller a rule or identity names.
            Peer::Identity(i) => i.methods.contains(method.method) || !method.service.is_cri(),
            Peer::Local { uid: 0, .. } => true,
            Peer::Local { uid, gid, .. } => self.rules.iter().any(|r| {
                (r.uid == Some(uid) || r.gid == Some(gid))
                    && (r.methods.contains(method.method) || !method.service.is_cri())
            }),
        }
    }
}

/// Why the `[access]` section cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// A rule names neither a uid nor a gid.
    RuleWithoutCaller,
    /// A rule names a method crisp does not know.
    UnknownMethod(String),
    /// An `[[access.identities]]` entry is unusable.
    Identity { name: String, why: String },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RuleWithoutCaller => f.write_str("an access rule needs uid or gid"),
            Self::UnknownMethod(m) => write!(f, "unknown method {m:?} in access policy"),
            Self::Identity { name, why } => write!(f, "access identity {name:?}: {why}"),
        }
    }
}

impl std::error::Error for PolicyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AccessRule;

    fn desc(m: Method) -> &'static MethodDesc {
        m.desc()
    }

    #[test]
    fn root_only_by_default() {
        let p = Policy::from_config(&AccessConfig::default()).unwrap();
        let root = Peer::Local {
            uid: 0,
            gid: 0,
            pid: 1,
        };
        let user = Peer::Local {
            uid: 1000,
            gid: 1000,
            pid: 2,
        };
        assert!(p.allows(root, desc(Method::RunPodSandbox)));
        assert!(!p.allows(user, desc(Method::Version)));
    }

    #[test]
    fn read_only_rule() {
        let c = AccessConfig {
            rules: vec![AccessRule {
                uid: Some(1000),
                gid: None,
                methods: vec!["read-only".into()],
            }],
            tcp_methods: vec![],
            ..AccessConfig::default()
        };
        let p = Policy::from_config(&c).unwrap();
        let user = Peer::Local {
            uid: 1000,
            gid: 5,
            pid: 2,
        };
        assert!(p.allows(user, desc(Method::Version)));
        assert!(p.allows(user, desc(Method::ListContainers)));
        assert!(p.allows(user, desc(Method::ImageFsInfo)));
        assert!(!p.allows(user, desc(Method::RemoveImage)));
        assert!(!p.allows(Peer::Tcp, desc(Method::Version)));
    }

    #[test]
    fn health_and_reflection_for_every_caller_a_rule_or_identity_names() {
        let c = AccessConfig {
            rules: vec![AccessRule {
                uid: None,
                gid: Some(7),
                methods: vec!["RunPodSandbox".into()],
            }],
            tcp_methods: vec!["read-only".into()],
            identities: vec![crate::config::IdentityConfig {
                name: "kubelet".into(),
                token_sha256: None,
                cert_subject: Some("CN=kubelet".into()),
                methods: vec!["RunPodSandbox".into()],
            }],
            ..AccessConfig::default()
        };
        let p = Policy::from_config(&c).unwrap();
        let kubelet = Peer::Identity(p.identity_by_cert_cn("kubelet").unwrap());
        let named = Peer::Local {
            uid: 1000,
            gid: 7,
            pid: 2,
        };
        let stranger = Peer::Local {
            uid: 1001,
            gid: 8,
            pid: 3,
        };
        for m in [
            Method::HealthCheck,
            Method::HealthWatch,
            Method::ServerReflectionInfo,
            Method::ServerReflectionInfoV1Alpha,
        ] {
            assert!(p.allows(named, desc(m)), "{m:?}");
            assert!(p.allows(kubelet, desc(m)), "{m:?}");
            assert!(!p.allows(stranger, desc(m)), "{m:?}");
            assert!(p.allows(Peer::Tcp, desc(m)), "read-only covers {m:?}");
        }
        assert!(!p.allows(named, desc(Method::Version)));
        assert!(!p.allows(kubelet, desc(Method::Version)));
    }

    #[test]
    fn unknown_method_names_are_refused() {
        let c = AccessConfig {
            rules: vec![AccessRule {
                uid: Some(1),
                gid: None,
                methods: vec!["Versoin".into()],
            }],
            tcp_methods: vec![],
            ..AccessConfig::default()
        };
        assert!(Policy::from_config(&c).is_err());
    }
}
