//! Egress policy, checked on the resolved address: an account may not reach
//! a loopback, private, link-local or otherwise internal address unless the
//! operator allowed it on that account (`--param allow_private=true`),
//! whether its URL names a host (checked on every address it resolves to,
//! so a name granted for a public provider cannot be pointed inside the
//! network by DNS rebinding or a poisoned resolver) or an IP literal. One
//! rule for every protocol: HTTP connections, token exchanges and SMTP
//! relays all go through it.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// True for addresses that are not on the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64.0.0/10, carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// An account's destination refused by the egress policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressDenied {
    /// The host name or literal the account names.
    pub host: String,
    /// The internal addresses it is (or resolved to).
    pub addresses: Vec<IpAddr>,
}

impl std::fmt::Display for EgressDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<String> = self.addresses.iter().map(IpAddr::to_string).collect();
        let literal = self.addresses.len() == 1 && shown[0] == self.host.trim_matches(['[', ']']);
        if literal {
            write!(f, "egress denied: {} is an internal address", self.host)?;
        } else {
            write!(
                f,
                "egress denied: {} resolved to {} (internal)",
                self.host,
                shown.join(", ")
            )?;
        }
        f.write_str("; allow it with --param allow_private=true on the account")
    }
}

impl std::error::Error for EgressDenied {}

/// A host name that did not resolve.
#[derive(Debug)]
pub struct Unresolved {
    /// The name.
    pub host: String,
    /// The resolver's error.
    pub source: std::io::Error,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot resolve {}", self.host)
    }
}

impl std::error::Error for Unresolved {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Checks an IP literal against the policy (a name is checked when it
/// resolves); `host` as a URL writes it, IPv6 in brackets.
pub fn check_literal(host: &str, allow_internal: bool) -> Result<(), EgressDenied> {
    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) if is_internal(ip) && !allow_internal => Err(EgressDenied {
            host: host.to_string(),
            addresses: vec![ip],
        }),
        _ => Ok(()),
    }
}

/// The addresses `host:port` may be reached at under the policy: a literal
/// checked as it is, a name resolved and its internal addresses dropped
/// unless allowed (refused if nothing is left).
pub async fn resolve(
    host: &str,
    port: u16,
    allow_internal: bool,
) -> Result<Vec<SocketAddr>, BoxError> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        check_literal(host, allow_internal)?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| Unresolved {
            host: host.to_string(),
            source,
        })?
        .collect();
    if allow_internal {
        return Ok(addrs);
    }
    let public: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| !is_internal(a.ip()))
        .collect();
    if public.is_empty() {
        return Err(Box::new(EgressDenied {
            host: host.to_string(),
            addresses: addrs.iter().map(|a| a.ip()).collect(),
        }));
    }
    Ok(public)
}

/// A resolver that drops internal addresses of names not allowed to have them.
#[derive(Clone)]
pub struct PolicyResolver {
    /// Host names whose accounts allow internal addresses.
    allow_internal: Arc<HashSet<String>>,
}

impl PolicyResolver {
    /// A resolver allowing internal addresses for `names` only.
    pub fn new(names: HashSet<String>) -> PolicyResolver {
        PolicyResolver {
            allow_internal: Arc::new(names),
        }
    }
}

impl PolicyResolver {
    /// The addresses `host` may be reached at.
    fn lookup(
        &self,
        host: String,
    ) -> impl Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send + 'static {
        let allow = self.allow_internal.contains(&host.to_ascii_lowercase());
        async move { resolve(&host, 0, allow).await }
    }
}

/// Errors as both HTTP clients take them.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// For reqwest (token exchanges).
impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup(name.as_str().to_string());
        Box::pin(async move { Ok(Box::new(lookup.await?.into_iter()) as Addrs) })
    }
}

/// For hyper's connector (messages).
impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let lookup = self.lookup(name.as_str().to_string());
        Box::pin(async move { Ok(lookup.await?.into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["17.253.144.10", "142.250.74.10", "2a00:1450:4007:80e::200a"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn denies_names_resolving_inside_unless_allowed() {
        let deny = PolicyResolver::new(HashSet::new());
        let err = match deny.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost must be denied"),
            Err(e) => e,
        };
        let denied = err
            .downcast_ref::<EgressDenied>()
            .expect("a typed egress denial");
        assert_eq!(denied.host, "localhost");
        assert!(!denied.addresses.is_empty());
        assert!(denied.addresses.iter().all(|ip| ip.is_loopback()));
        // Literals too, unless allowed.
        let denied = check_literal("127.0.0.1", false).unwrap_err();
        assert_eq!(denied.host, "127.0.0.1");
        assert_eq!(denied.addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        // The text (for people) says how to allow it.
        assert!(denied.to_string().contains("allow_private=true"));
        assert!(check_literal("[::1]", false).is_err());
        assert!(check_literal("127.0.0.1", true).is_ok());
        assert!(check_literal("17.253.144.10", false).is_ok());
        assert!(resolve("10.0.0.1", 25, false).await.is_err());
        assert_eq!(
            resolve("10.0.0.1", 25, true).await.unwrap(),
            ["10.0.0.1:25".parse::<SocketAddr>().unwrap()]
        );
        let allow = PolicyResolver::new(["localhost".to_string()].into_iter().collect());
        let addrs: Vec<SocketAddr> = allow
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
