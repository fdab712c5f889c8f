//! What outbound TLS trusts, for every protocol alike: the public roots
//! (webpki-roots) and the CAs the operator added (`crosscast ca add`).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, pem::PemObject};

/// The certificates outbound TLS trusts.
#[derive(Clone)]
pub struct Trust {
    /// The operator's CAs: (name, PEM).
    cas: Vec<(String, Vec<u8>)>,
    roots: Arc<rustls::RootCertStore>,
}

impl Trust {
    /// The public roots and these CAs (name, PEM), each checked to be a
    /// usable PEM certificate.
    pub fn new(cas: Vec<(String, Vec<u8>)>) -> anyhow::Result<Trust> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for (name, pem) in &cas {
            let mut any = false;
            for der in CertificateDer::pem_slice_iter(pem) {
                let der = der.map_err(|e| {
                    anyhow::anyhow!("trusted CA `{name}` is not a PEM certificate: {e}")
                })?;
                roots.add(der).map_err(|e| {
                    anyhow::anyhow!("trusted CA `{name}` is not a usable certificate: {e}")
                })?;
                any = true;
            }
            if !any {
                anyhow::bail!("trusted CA `{name}` holds no PEM certificate");
            }
        }
        Ok(Trust {
            cas,
            roots: Arc::new(roots),
        })
    }

    /// A rustls client configuration trusting these roots (ring, safe
    /// defaults, no client certificate, no ALPN).
    pub fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(self.roots.clone())
        .with_no_client_auth())
    }

    /// A reqwest client builder trusting these roots (token exchanges).
    pub fn reqwest(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder();
        for (_, pem) in &self.cas {
            // Checked in `new`.
            if let Ok(cert) = reqwest::Certificate::from_pem(pem) {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
    }

    /// The operator's CAs as PEM, for lettre's STARTTLS parameters.
    pub fn ca_pems(&self) -> impl Iterator<Item = &[u8]> {
        self.cas.iter().map(|(_, pem)| pem.as_slice())
    }
}
