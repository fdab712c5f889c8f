//! SMTP transport: lettre's pooled async client, one pool per account.

use std::collections::HashMap;
use std::sync::Mutex;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::runtime::channel::wit::{Answer, Email, SmtpReply};
use crate::store::settings::Account;

/// SMTP connection pools by account name.
#[derive(Default)]
pub struct SmtpTransports {
    pools: Mutex<HashMap<String, AsyncSmtpTransport<Tokio1Executor>>>,
}

impl SmtpTransports {
    /// Drops every pool (call inside the tokio runtime).
    pub fn close(&self) {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn pool(
        &self,
        account: &Account,
        secret: Option<&str>,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(&account.name) {
            return Ok(p.clone());
        }
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(&account.url).map_err(|e| {
                format!(
                    "account `{}` has an unusable SMTP URL `{}`: {e}",
                    account.name, account.url
                )
            })?;
        if let (Some(user), Some(secret)) = (&account.user, secret) {
            builder = builder.credentials(Credentials::new(user.clone(), secret.to_string()));
        }
        let transport = builder.build();
        pools.insert(account.name.clone(), transport.clone());
        Ok(transport)
    }

    /// Sends one email; the answer is the server's final reply.
    pub async fn send(&self, account: &Account, secret: Option<&str>, email: &Email) -> Answer {
        let message = match build(email) {
            Ok(m) => m,
            Err(e) => {
                return Answer::Smtp(SmtpReply {
                    code: 550,
                    message: format!("not sent: {e}"),
                });
            }
        };
        let transport = match self.pool(account, secret) {
            Ok(t) => t,
            Err(e) => return Answer::TransportError(e),
        };
        match transport.send(message).await {
            Ok(r) => Answer::Smtp(SmtpReply {
                code: r.code().to_string().parse().unwrap_or(250),
                message: r.message().collect::<Vec<_>>().join(" "),
            }),
            Err(e) => match e.status() {
                Some(code) => Answer::Smtp(SmtpReply {
                    code: code.to_string().parse().unwrap_or(554),
                    message: e.to_string(),
                }),
                None => Answer::TransportError(format!("SMTP: {e}")),
            },
        }
    }
}

/// Builds the MIME message: Date and Message-ID added, text or text + HTML.
fn build(email: &Email) -> Result<Message, String> {
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| format!("bad From `{}`: {e}", email.from))?;
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| format!("bad address `{}`: {e}", email.to))?;
    let mut b = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .message_id(None)
        .date_now();
    if let Some(r) = &email.reply_to {
        b = b.reply_to(r.parse().map_err(|e| format!("bad Reply-To `{r}`: {e}"))?);
    }
    let mut m = match &email.html {
        Some(html) => b.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            html.clone(),
        )),
        None => b.body(email.text.clone()),
    }
    .map_err(|e| e.to_string())?;
    for (name, value) in &email.headers {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|e| format!("bad header name `{name}`: {e}"))?;
        m.headers_mut()
            .insert_raw(HeaderValue::new(name, value.clone()));
    }
    Ok(m)
}
