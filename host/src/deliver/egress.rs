//! Egress policy, checked on the resolved address: an account's host name
//! may not resolve to a loopback, private, link-local or otherwise internal
//! address unless the operator allowed it on that account
//! (`--param allow_private=true`). This stops a name that was granted for a
//! public provider from being pointed (DNS rebinding, a poisoned resolver) at
//! services inside the network. An account whose URL is an IP literal names
//! its address outright and needs no resolution.

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
        let allow = self.allow_internal.clone();
        async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allow.contains(&host.to_ascii_lowercase()) {
                return Ok(addrs);
            }
            let public: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if public.is_empty() {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "egress denied: {host} resolved to {} (internal); allow it with --param allow_private=true on the account",
                    shown.join(", ")
                )
                .into());
            }
            Ok(public)
        }
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
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("egress denied: localhost resolved to") && err.contains("allow_private"),
            "{err}"
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
