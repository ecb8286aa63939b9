//! Access control, the local form of per-RPC credentials: every call's
//! caller is known from SO_PEERCRED (Unix socket) or is an anonymous TCP
//! peer, and a policy from the config says which methods it may call.

use std::fmt;

use crisp_proto::methods::{Method, MethodDesc, METHODS};

use crate::config::AccessConfig;

/// Who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A process on the Unix socket, as the kernel reports it.
    Local { uid: u32, gid: u32, pid: i32 },
    /// A TCP client: no credentials.
    Tcp,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Local { uid, gid, pid } => write!(f, "uid={uid} gid={gid} pid={pid}"),
            Peer::Tcp => f.write_str("tcp"),
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

#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    tcp: MethodSet,
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
        Ok(Self {
            rules,
            tcp: MethodSet::parse(&c.tcp_methods)?,
        })
    }

    pub fn allows(&self, peer: Peer, method: &MethodDesc) -> bool {
        match peer {
            Peer::Tcp => self.tcp.contains(method.method),
            Peer::Local { uid: 0, .. } => true,
            Peer::Local { uid, gid, .. } => self.rules.iter().any(|r| {
                (r.uid == Some(uid) || r.gid == Some(gid)) && r.methods.contains(method.method)
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
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RuleWithoutCaller => f.write_str("an access rule needs uid or gid"),
            Self::UnknownMethod(m) => write!(f, "unknown method {m:?} in access policy"),
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
    fn unknown_method_names_are_refused() {
        let c = AccessConfig {
            rules: vec![AccessRule {
                uid: Some(1),
                gid: None,
                methods: vec!["Versoin".into()],
            }],
            tcp_methods: vec![],
        };
        assert!(Policy::from_config(&c).is_err());
    }
}
