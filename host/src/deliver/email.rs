//! An email as it goes on the wire: MIME built with lettre from the
//! plugin's message, the headers the host owns (Date, a Message-ID stable
//! per run, activity and target), the plugin's own headers once checked,
//! the envelope (from the plugin's From, to the target record's stored
//! address), and the DKIM signature (RFC 6376) when the account signs:
//! `--param dkim_domain=... --param dkim_selector=... --param
//! dkim_key=SECRET` (an RSA private key, PKCS#1 PEM, kept as a secret that
//! never leaves the host).

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use sha2::{Digest, Sha256};

use super::failure::Failure;
use super::net::smtp::Built;
use crate::runtime::channel::wit::Email;
use crate::store::deliveries::Cause;
use crate::store::settings::Account;

/// Headers the host writes itself or derives from the message's fields: a
/// plugin may not set them (an address header would reach or name someone
/// the delivery log does not show; the others would contradict the host's).
const RESERVED: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "return-path",
    "received",
    "dkim-signature",
];

/// Checks a plugin's extra headers: each name an RFC 5322 field name
/// (printable US-ASCII but `:`), not one the host owns; no value with a
/// line break or NUL, which would start a header of its own.
pub fn check_headers(headers: &[(String, String)]) -> Result<(), String> {
    for (name, value) in headers {
        let field_name = !name.is_empty()
            && name.len() <= 76
            && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
        if !field_name {
            return Err(format!(
                "header name {name:?} is not an RFC 5322 field name (printable ASCII, no `:`, \
                 no space or line break)"
            ));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) || lower.starts_with("resent-") {
            return Err(format!(
                "header `{name}` is the host's to write (set the message's fields instead)"
            ));
        }
        if value.contains(['\r', '\n', '\0']) {
            return Err(format!(
                "the value of header `{name}` holds a line break or NUL"
            ));
        }
    }
    Ok(())
}

/// The Message-ID of the message for `target` in one run and activity: the
/// same on every attempt and after a crash, so a relay or mailbox can drop
/// a repeat. `key` (the data directory's own) keeps two installations'
/// ids apart; the domain is the sender's.
pub fn message_id(key: &[u8; 16], run: u64, activity: &str, target: u64, domain: &str) -> String {
    let mut h = Sha256::new();
    h.update(key);
    h.update(run.to_be_bytes());
    h.update(activity.as_bytes());
    h.update([0]);
    h.update(target.to_be_bytes());
    let digest = h.finalize();
    format!("<{}@{domain}>", hex::encode(&digest[..16]))
}

/// The domain of a From address, for Message-IDs (`localhost` if it has
/// none the host can read).
pub fn sender_domain(from: &str) -> String {
    from.parse::<Mailbox>()
        .map(|m| m.email.domain().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Builds the message from the plugin's email, going to `to` (the stored
/// address, which the plugin's To names) with `message_id`; headers are
/// checked again here, so nothing unchecked reaches the wire.
pub fn build(
    email: &Email,
    to: &str,
    message_id: &str,
    dkim: Option<&DkimConfig>,
) -> Result<Built, String> {
    check_headers(&email.headers)?;
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| format!("bad From `{}`: {e}", email.from))?;
    let shown: Mailbox = email
        .to
        .parse()
        .map_err(|e| format!("bad To `{}`: {e}", email.to))?;
    let rcpt: lettre::Address = to.parse().map_err(|e| format!("bad address `{to}`: {e}"))?;
    // The plugin's display name, the stored address: the header shows
    // whom the envelope reaches.
    let mut b = Message::builder()
        .from(from.clone())
        .to(Mailbox::new(shown.name, rcpt.clone()))
        .subject(email.subject.clone())
        .message_id(Some(message_id.to_string()))
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
    if let Some(dkim) = dkim {
        m.sign(dkim);
    }
    let envelope = Envelope::new(Some(from.email), vec![rcpt]).map_err(|e| e.to_string())?;
    Ok(Built {
        envelope,
        raw: m.formatted(),
    })
}

/// The account's DKIM signing settings, its key the PEM `pem` of the
/// secret `key`.
pub fn dkim(account: &Account, pem: &str, key: &str) -> Result<DkimConfig, Failure> {
    let param = |p: &str| {
        account
            .param(p)
            .map(str::to_string)
            .map_err(|e| Failure::permanent(Cause::Account, e))
    };
    let signing = DkimSigningKey::new(pem, DkimSigningAlgorithm::Rsa).map_err(|e| {
        Failure::permanent(
            Cause::Credentials,
            format!("secret `{key}` is not an RSA private key (PKCS#1 PEM) for DKIM: {e}"),
        )
    })?;
    // relaxed/relaxed survives relays that refold headers; the one-click
    // headers are signed, as mailbox providers require. Not Content-Type:
    // lettre writes a multipart's at formatting, after signing, so the
    // signature would not hold.
    let signed = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Reply-To",
        "MIME-Version",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ];
    Ok(DkimConfig::new(
        param("dkim_selector")?,
        param("dkim_domain")?,
        signing,
        signed
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(to: &str, headers: &[(&str, &str)]) -> Email {
        Email {
            account: "smtp".into(),
            from: "News <news@acme.example>".into(),
            to: to.into(),
            reply_to: None,
            subject: "Hello".into(),
            text: "Hi".into(),
            html: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn header_names_and_values_cannot_inject_lines() {
        let ok = [("X-Campaign".to_string(), "spring, 2026".to_string())];
        assert!(check_headers(&ok).is_ok());
        for (name, value, says) in [
            ("X-A\r\nBcc", "x@evil.example", "field name"),
            ("X A", "v", "field name"),
            ("X:A", "v", "field name"),
            ("", "v", "field name"),
            ("X-A", "v\r\nBcc: x@evil.example", "line break"),
            ("X-A", "v\nBcc: x@evil.example", "line break"),
            ("Bcc", "x@evil.example", "the host's"),
            ("message-id", "<mine@x>", "the host's"),
            ("Resent-To", "x@evil.example", "the host's"),
        ] {
            let e = check_headers(&[(name.into(), value.into())]).unwrap_err();
            assert!(e.contains(says), "{name:?}: {e}");
        }
    }

    #[test]
    fn the_envelope_goes_to_the_stored_address_and_the_id_is_stable() {
        let key = [7u8; 16];
        let id = message_id(&key, 3, "deliver_email", 42, "acme.example");
        assert_eq!(id, message_id(&key, 3, "deliver_email", 42, "acme.example"));
        assert_ne!(id, message_id(&key, 3, "deliver_email", 43, "acme.example"));
        assert_ne!(id, message_id(&key, 4, "deliver_email", 42, "acme.example"));
        assert_ne!(
            id,
            message_id(&[8; 16], 3, "deliver_email", 42, "acme.example")
        );
        assert!(
            id.starts_with('<') && id.ends_with("@acme.example>"),
            "{id}"
        );
        assert_eq!(sender_domain("News <news@acme.example>"), "acme.example");
        let built = build(
            &email(
                "Ann Example <ann@example.test>",
                &[("X-Campaign", "spring")],
            ),
            "ann@example.test",
            &id,
            None,
        )
        .unwrap();
        assert_eq!(built.envelope.to(), ["ann@example.test".parse().unwrap()]);
        assert_eq!(
            built.envelope.from(),
            Some(&"news@acme.example".parse().unwrap())
        );
        let raw = String::from_utf8(built.raw).unwrap();
        assert!(raw.contains(&format!("Message-ID: {id}\r\n")), "{raw}");
        assert!(raw.contains("X-Campaign: spring\r\n"), "{raw}");
        assert!(
            raw.contains("To: \"Ann Example\" <ann@example.test>\r\n"),
            "{raw}"
        );
        let bad = build(
            &email("a@b.example", &[("X\r\nBcc", "x")]),
            "a@b.example",
            &id,
            None,
        );
        assert!(bad.is_err());
    }
}
