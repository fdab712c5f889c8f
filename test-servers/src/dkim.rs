//! DKIM (RFC 6376) as a receiving server checks it, for `rsa-sha256` with
//! `simple` or `relaxed` canonicalization: a fresh signing key for the
//! operator, and the verifier a test runs on what the SMTP sink received
//! (the public key is handed over directly instead of through DNS).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::LineEnding;
use sha2::{Digest, Sha256};

/// A DKIM signing key.
pub struct DkimKey {
    /// The private key, PKCS#1 PEM: the operator's secret.
    pub private_pem: String,
    /// The public key, for the verifier.
    pub public: rsa::RsaPublicKey,
}

impl DkimKey {
    /// A fresh RSA 2048 key.
    pub fn generate() -> anyhow::Result<DkimKey> {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)?;
        Ok(DkimKey {
            private_pem: key.to_pkcs1_pem(LineEnding::LF)?.to_string(),
            public: key.to_public_key(),
        })
    }
}

/// The tags of a verified signature (`d`, `s`, `h`...).
pub type Tags = std::collections::BTreeMap<String, String>;

/// Verifies the `DKIM-Signature` of a raw message (headers, blank line,
/// body; CRLF line ends) with `key`; returns its tags.
pub fn verify(raw: &str, key: &rsa::RsaPublicKey) -> Result<Tags, String> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or("no header/body separator")?;
    let headers = raw_headers(head);
    let sig = headers
        .iter()
        .find(|h| name_of(h).eq_ignore_ascii_case("DKIM-Signature"))
        .ok_or("no DKIM-Signature header")?;
    let tags = parse_tags(&sig[sig.find(':').ok_or("bad header")? + 1..]);
    let tag = |t: &str| tags.get(t).cloned().ok_or(format!("no `{t}=` tag"));
    if tag("a")? != "rsa-sha256" {
        return Err(format!("unsupported algorithm {}", tag("a")?));
    }
    let canon = tags
        .get("c")
        .cloned()
        .unwrap_or_else(|| "simple/simple".into());
    let (head_c, body_c) = canon.split_once('/').unwrap_or((canon.as_str(), "simple"));

    let body_hash = STANDARD.encode(Sha256::digest(canonical_body(body, body_c)));
    if body_hash != tag("bh")? {
        return Err(format!(
            "body hash mismatch: computed {body_hash}, signed {}",
            tag("bh")?
        ));
    }

    let mut signed = String::new();
    for name in tag("h")?.split(':') {
        let name = name.trim();
        if let Some(h) = headers
            .iter()
            .find(|h| name_of(h).eq_ignore_ascii_case(name))
        {
            signed.push_str(&canonical_header(h, head_c));
            signed.push_str("\r\n");
        }
    }
    signed.push_str(&canonical_header(&strip_b(sig), head_c));
    let signature = STANDARD
        .decode(tag("b")?.replace([' ', '\t', '\r', '\n'], ""))
        .map_err(|e| format!("b= is not base64: {e}"))?;
    key.verify(
        rsa::Pkcs1v15Sign::new::<Sha256>(),
        &Sha256::digest(signed.as_bytes()),
        &signature,
    )
    .map_err(|e| format!("signature does not verify: {e}"))?;
    Ok(tags)
}

/// Header fields as they appear, folding kept (without the final CRLF).
fn raw_headers(head: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if (line.starts_with(' ') || line.starts_with('\t')) && !out.is_empty() {
            let last = out.last_mut().expect("checked");
            last.push_str("\r\n");
            last.push_str(line);
        } else {
            out.push(line.to_string());
        }
    }
    out
}

fn name_of(header: &str) -> &str {
    header.split(':').next().unwrap_or("").trim()
}

fn parse_tags(value: &str) -> Tags {
    value
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            let v: String = v.split_whitespace().collect::<Vec<_>>().join("");
            Some((k.trim().to_string(), v))
        })
        .collect()
}

/// The signature header with the `b=` value emptied (RFC 6376 §3.7).
fn strip_b(header: &str) -> String {
    let colon = header.find(':').unwrap_or(0) + 1;
    let (name, value) = header.split_at(colon);
    let parts: Vec<String> = value
        .split(';')
        .map(|t| match t.split_once('=') {
            Some((k, _)) if k.trim() == "b" => format!("{k}="),
            _ => t.to_string(),
        })
        .collect();
    format!("{name}{}", parts.join(";"))
}

fn canonical_header(header: &str, how: &str) -> String {
    if how != "relaxed" {
        return header.to_string();
    }
    let (name, value) = header.split_once(':').unwrap_or((header, ""));
    let value = value.replace("\r\n", "");
    let value: Vec<&str> = value.split_whitespace().collect();
    format!("{}:{}", name.trim().to_ascii_lowercase(), value.join(" "))
}

fn canonical_body(body: &str, how: &str) -> String {
    let mut lines: Vec<String> = body
        .split("\r\n")
        .map(|l| {
            if how == "relaxed" {
                let collapsed: Vec<&str> = l.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
                let lead = if l.starts_with([' ', '\t']) && !collapsed.is_empty() {
                    " "
                } else {
                    ""
                };
                format!("{lead}{}", collapsed.join(" "))
            } else {
                l.to_string()
            }
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return if how == "relaxed" {
            String::new()
        } else {
            "\r\n".into()
        };
    }
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out
}
