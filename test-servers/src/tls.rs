//! A throwaway certificate authority and a server certificate for 127.0.0.1,
//! so TLS servers here are verified by clients that trust only this CA.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A test CA and the server identity it signed.
pub struct TestTls {
    /// The CA certificate, PEM: give it to clients as their trust anchor.
    pub ca_pem: String,
    /// The server's certificate, PEM (for a server configured by files).
    pub server_pem: String,
    /// The server's private key, PEM (PKCS#8).
    pub key_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl TestTls {
    /// A fresh CA and a certificate for `127.0.0.1` and `localhost`.
    pub fn new() -> anyhow::Result<TestTls> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Crosscast test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "crosscast test server");
        let cert = params.signed_by(&key, &issuer)?;
        Ok(TestTls {
            ca_pem: ca_cert.pem(),
            server_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            server_cert: cert.der().clone(),
            server_key: key.serialize_der(),
        })
    }

    /// A rustls server config offering exactly `alpn` protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert.clone()], key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
