//! Every provider at once, with fresh credentials: what the demo and the
//! end-to-end tests deliver to.

use crate::keys::{ApnsKey, ServiceAccount};
use crate::push::{ApnsConfig, ApnsServer, FcmConfig, FcmServer};
use crate::sms::SmsApi;
use crate::smtp::{SinkOptions, SmtpSink};
use crate::tls::TestTls;

/// The Twilio Account SID the SMS API accepts.
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// The Twilio auth token it accepts.
pub const AUTH_TOKEN: &str = "test-auth-token";
/// The APNs team id.
pub const TEAM_ID: &str = "TEAM123456";
/// The APNs key id.
pub const KEY_ID: &str = "KEY1234567";
/// The Firebase project.
pub const PROJECT_ID: &str = "crosscast-test";

/// The account parameter that lets an account reach loopback servers.
pub const LOOPBACK: &str = "allow_private=true";

/// Running servers and the credentials that open them.
pub struct Rig {
    /// SMTP sink.
    pub smtp: SmtpSink,
    /// Twilio-compatible SMS API.
    pub sms: SmsApi,
    /// APNs (HTTP/2, TLS).
    pub apns: ApnsServer,
    /// FCM HTTP v1 and its token endpoint (TLS).
    pub fcm: FcmServer,
    /// The CA that signed the TLS servers' certificate.
    pub tls: TestTls,
    /// The APNs provider key (`.p8`).
    pub apns_key: ApnsKey,
    /// The FCM service account.
    pub service_account: ServiceAccount,
}

impl Rig {
    /// Starts every server on 127.0.0.1 on the current tokio runtime.
    pub async fn start(smtp_options: SinkOptions) -> anyhow::Result<Rig> {
        let tls = TestTls::new()?;
        let apns_key = ApnsKey::generate()?;
        let service_account = ServiceAccount::generate(PROJECT_ID)?;
        let apns = ApnsServer::start(
            &tls,
            ApnsConfig {
                team_id: TEAM_ID.into(),
                key_id: KEY_ID.into(),
                public_key_pem: apns_key.public_pem.clone(),
            },
        )
        .await?;
        let fcm = FcmServer::start(
            &tls,
            FcmConfig {
                project_id: PROJECT_ID.into(),
                client_email: service_account.client_email.clone(),
                public_key_pem: service_account.public_pem.clone(),
            },
        )
        .await?;
        Ok(Rig {
            smtp: SmtpSink::start_with(smtp_options).await?,
            sms: SmsApi::start(ACCOUNT_SID, AUTH_TOKEN).await?,
            apns,
            fcm,
            tls,
            apns_key,
            service_account,
        })
    }

    /// The service account JSON (its token URI is this rig's FCM server).
    pub fn service_account_json(&self) -> String {
        self.service_account.json(&self.fcm.token_uri())
    }

    /// The `crosscast` commands (arguments after `crosscast --data DIR`) that
    /// configure accounts, secrets, the test CA and grants for this rig.
    /// Secret files are written into `dir`. Every account allows internal
    /// addresses (`--param allow_private=true`): the servers are on
    /// loopback, which the egress policy refuses otherwise.
    pub fn setup_commands(&self, dir: &std::path::Path) -> std::io::Result<Vec<Vec<String>>> {
        let write = |name: &str, content: &str| -> std::io::Result<String> {
            let p = dir.join(name);
            std::fs::write(&p, content)?;
            Ok(p.display().to_string())
        };
        let ca = write("test-ca.pem", &self.tls.ca_pem)?;
        let p8 = write("apns-key.p8", &self.apns_key.p8)?;
        let sa = write("fcm-service-account.json", &self.service_account_json())?;
        let token = write("twilio-token.txt", AUTH_TOKEN)?;
        let c = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Ok(vec![
            c(&["ca", "add", "test-ca", &ca]),
            c(&[
                "account",
                "set",
                "smtp",
                "--url",
                &self.smtp.url(),
                "--param",
                LOOPBACK,
            ]),
            c(&["secret", "set", "twilio-token", "--from-file", &token]),
            c(&[
                "account",
                "set",
                "twilio",
                "--url",
                &self.sms.url(),
                "--user",
                ACCOUNT_SID,
                "--secret",
                "twilio-token",
                "--param",
                LOOPBACK,
            ]),
            c(&["secret", "set", "apns-key", "--from-file", &p8]),
            c(&[
                "account",
                "set",
                "apns",
                "--url",
                &self.apns.url(),
                "--secret",
                "apns-key",
                "--auth",
                "apns",
                "--param",
                &format!("team_id={TEAM_ID}"),
                "--param",
                &format!("key_id={KEY_ID}"),
                "--param",
                LOOPBACK,
            ]),
            c(&["secret", "set", "fcm-service-account", "--from-file", &sa]),
            c(&[
                "account",
                "set",
                "fcm",
                "--url",
                &self.fcm.url(),
                "--secret",
                "fcm-service-account",
                "--auth",
                "google",
                "--param",
                &format!("project_id={PROJECT_ID}"),
                "--param",
                LOOPBACK,
            ]),
            c(&["plugin", "grant", "email", "--account", "smtp"]),
            c(&["plugin", "grant", "sms", "--account", "twilio"]),
            c(&["plugin", "grant", "apns", "--account", "apns"]),
            c(&["plugin", "grant", "fcm", "--account", "fcm"]),
        ])
    }
}
