//! Credentials for the push test servers, generated fresh: an APNs signing
//! key (.p8, EC P-256) and a Google service account (RSA, JSON).

use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

/// An APNs provider key.
pub struct ApnsKey {
    /// The `.p8` file's content (PKCS#8 PEM): the operator's secret.
    pub p8: String,
    /// Its public half (SPKI PEM): what the test server verifies with.
    pub public_pem: String,
}

impl ApnsKey {
    /// A fresh P-256 key.
    pub fn generate() -> anyhow::Result<ApnsKey> {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        Ok(ApnsKey {
            p8: k.serialize_pem(),
            public_pem: k.public_key_pem(),
        })
    }
}

/// A Google service account key.
pub struct ServiceAccount {
    /// The Firebase project.
    pub project_id: String,
    /// The service account's email.
    pub client_email: String,
    /// Its private key (PKCS#8 PEM).
    pub private_pem: String,
    /// Its public key (SPKI PEM).
    pub public_pem: String,
}

impl ServiceAccount {
    /// A fresh RSA 2048 service account of `project_id`.
    pub fn generate(project_id: &str) -> anyhow::Result<ServiceAccount> {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        Ok(ServiceAccount {
            project_id: project_id.to_string(),
            client_email: format!("crosscast@{project_id}.iam.gserviceaccount.com"),
            private_pem: key.to_pkcs8_pem(LineEnding::LF)?.to_string(),
            public_pem: key.to_public_key().to_public_key_pem(LineEnding::LF)?,
        })
    }

    /// The JSON key file the operator stores as a secret, naming `token_uri`.
    pub fn json(&self, token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": "test-key-1",
            "private_key": self.private_pem,
            "client_email": self.client_email,
            "client_id": "1",
            "token_uri": token_uri,
        })
        .to_string()
    }
}
