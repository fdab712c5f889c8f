//! What the host checks on each message a channel built before it may
//! leave, whatever the plugin wrote: that it goes to the address stored on
//! its target record (the address suppression lists are checked against,
//! and an email's envelope recipient), and that its headers cannot smuggle
//! a line onto the wire.

use std::collections::{BTreeMap, HashMap};

use lettre::message::Mailbox;

use super::failure::Failure;
use crate::runtime::channel::wit;
use crate::store::Store;
use crate::store::deliveries::Cause;
use crate::store::suppression::{AddressKind, EMAIL_LIST, Suppression};

/// The suppression list and address kind of each kind of message a channel
/// sends.
#[derive(Debug, Clone)]
pub struct Lists {
    /// The list of its HTTP messages (its own, the one it declares, or the
    /// operator's choice) and what that list holds.
    pub http: (String, AddressKind),
    /// The dimension the channel's ids are of.
    pub target: String,
}

impl Lists {
    /// The list a message is checked against, and what it holds: `email`
    /// for every email, the channel's HTTP list otherwise.
    pub fn of(&self, message: &wit::Message) -> (&str, AddressKind) {
        match message {
            wit::Message::Email(_) => (EMAIL_LIST, AddressKind::Email),
            wit::Message::Http(_) => (&self.http.0, self.http.1),
        }
    }
}

/// The stored addresses of a round's targets, by kind, fetched once per
/// kind its messages need.
pub struct Stored(HashMap<AddressKind, Vec<Option<String>>>);

impl Stored {
    /// Reads, for `ids` (of the lists' target dimension, sorted), the
    /// address column of every kind `prepared` needs.
    pub fn fetch(
        store: &Store,
        lists: &Lists,
        ids: &[u64],
        prepared: &[wit::Prepared],
    ) -> Result<Stored, String> {
        let mut kinds: Vec<AddressKind> = prepared
            .iter()
            .filter_map(|p| match p {
                wit::Prepared::Send(out) => Some(lists.of(&out.message).1),
                wit::Prepared::Exclude(_) => None,
            })
            .collect();
        kinds.sort_by_key(|k| k.name());
        kinds.dedup();
        let mut by_kind = HashMap::new();
        for kind in kinds {
            let (dimension, column) = kind.column();
            if dimension != lists.target {
                // Every message of that kind is refused in `recipient`.
                continue;
            }
            let values = store
                .audience()
                .fetch(dimension, ids, &[column.to_string()])
                .map_err(|e| e.to_string())?
                .into_iter()
                .next()
                .unwrap_or_default();
            by_kind.insert(kind, values);
        }
        Ok(Stored(by_kind))
    }

    /// The address the message at position `i` (target `ids[i]`) goes to:
    /// its record's stored address, if the message names it. `Err`: why the
    /// host refuses to send it.
    pub fn recipient(
        &self,
        lists: &Lists,
        i: usize,
        message: &wit::Message,
    ) -> Result<String, String> {
        let (_, kind) = lists.of(message);
        let (dimension, column) = kind.column();
        let Some(values) = self.0.get(&kind) else {
            return Err(format!(
                "a message to {} goes to a {dimension}'s {column}, and this channel sends per {}",
                kind.plural(),
                lists.target
            ));
        };
        let stored = values
            .get(i)
            .and_then(|v| v.as_deref())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the {dimension} has no {column}, yet a message was built"))?;
        let declared = match message {
            wit::Message::Email(e) => {
                let mailbox: Mailbox = e.to.parse().map_err(|err| {
                    format!("`to` must hold exactly one mailbox; `{}`: {err}", e.to)
                })?;
                mailbox.email.to_string()
            }
            wit::Message::Http(h) => h.recipient.clone(),
        };
        if kind.normalise(&declared) != kind.normalise(stored) {
            return Err(format!(
                "the message is addressed to `{declared}`, but the {dimension}'s {column} is \
                 `{stored}`"
            ));
        }
        Ok(stored.to_string())
    }
}

/// Checks a message's headers: an email's as RFC 5322 fields the host does
/// not own, an HTTP request's as RFC 9110 fields; no value may hold a line
/// break.
pub fn headers(message: &wit::Message) -> Result<(), String> {
    match message {
        wit::Message::Email(e) => super::email::check_headers(&e.headers),
        wit::Message::Http(h) => {
            // Checked here, before the intent, so a dry run reports it and
            // a run never records a message it could not send.
            if !h.path.starts_with('/') {
                return Err(format!(
                    "request path `{}` must start with `/` (it is appended to the account's URL)",
                    h.path
                ));
            }
            http::Method::from_bytes(h.method.as_bytes())
                .map_err(|_| format!("`{}` is not an HTTP method", h.method))?;
            for (name, value) in &h.headers {
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("header name {name:?} is not an HTTP field name"))?;
                http::HeaderValue::from_str(value).map_err(|_| {
                    format!("the value of header `{name}` holds a line break or control character")
                })?;
            }
            Ok(())
        }
    }
}

/// The suppression lists of a channel's messages (`target`: the dimension
/// of its ids). Its HTTP messages' list is the one the operator installed
/// it with, else the one it declares, else its own name; that list's kind
/// must be of the records the channel sends to.
pub(super) fn lists(
    store: &Store,
    plugin: &str,
    descriptor: &wit::Descriptor,
    target: &str,
) -> Result<Lists, String> {
    let record = store.plugin(plugin).map_err(|e| e.to_string())?;
    let list = match (record.suppression_list, &descriptor.suppression_list) {
        (Some(list), _) => list,
        (None, Some(list)) => {
            crate::store::suppression::check_list_name(list)
                .map_err(|e| format!("plugin `{plugin}` declares a suppression list: {e}"))?;
            list.clone()
        }
        (None, None) => descriptor.name.clone(),
    };
    let kind = store.list_kind(&list).map_err(|e| e.to_string())?;
    Ok(Lists {
        http: (list, kind),
        target: target.to_string(),
    })
}

/// A built message after the host's checks.
pub(super) enum Vetted {
    /// The plugin excluded the target.
    Excluded(String),
    /// The host refuses to send it.
    Refused(wit::Outgoing, Failure),
    /// It may go, to this stored address (suppression lists permitting).
    Send(wit::Outgoing, String),
}

/// Checks what the plugin built for the `i`-th target: an account granted
/// to the plugin, headers that add no line, a recipient that is the
/// record's stored address.
pub(super) fn vet(
    lists: &Lists,
    stored: &Stored,
    accounts: &[String],
    plugin: &str,
    i: usize,
    prepared: wit::Prepared,
) -> Vetted {
    let out = match prepared {
        wit::Prepared::Exclude(reason) => return Vetted::Excluded(reason),
        wit::Prepared::Send(out) => out,
    };
    let account = super::account_of(&out.message);
    if !accounts.iter().any(|a| a == account) {
        let reason = format!("account `{account}` is not granted to plugin `{plugin}`");
        return Vetted::Refused(out, Failure::permanent(Cause::Policy, reason));
    }
    let checked = headers(&out.message)
        .and_then(|()| stored.recipient(lists, i, &out.message))
        .map_err(|reason| {
            Failure::permanent(Cause::Plugin, format!("plugin `{plugin}`: {reason}"))
        });
    match checked {
        Ok(to) => Vetted::Send(out, to),
        Err(failure) => Vetted::Refused(out, failure),
    }
}

/// For each vetted message that may go, its list's entry if its stored
/// address is quarantined or denylisted: (list, entry). One lookup per
/// list and batch.
pub(super) fn suppressions(
    store: &Store,
    lists: &Lists,
    vetted: &[Vetted],
) -> Result<Vec<Option<(String, Suppression)>>, String> {
    let mut found: Vec<Option<(String, Suppression)>> = vec![None; vetted.len()];
    let mut by_list: BTreeMap<&str, (Vec<usize>, Vec<&str>)> = BTreeMap::new();
    for (i, v) in vetted.iter().enumerate() {
        if let Vetted::Send(out, to) = v {
            let (at, addresses) = by_list.entry(lists.of(&out.message).0).or_default();
            at.push(i);
            addresses.push(to);
        }
    }
    for (list, (at, addresses)) in by_list {
        let entries = store
            .suppressions(list, &addresses)
            .map_err(|e| e.to_string())?;
        for (i, entry) in at.into_iter().zip(entries) {
            found[i] = entry.map(|s| (list.to_string(), s));
        }
    }
    Ok(found)
}

/// Adds RFC 8058 one-click unsubscribe headers, unless the plugin set its own.
pub(super) fn add_list_unsubscribe(email: &mut wit::Email, link: &str) {
    if email
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("list-unsubscribe"))
    {
        return;
    }
    email
        .headers
        .push(("List-Unsubscribe".into(), format!("<{link}>")));
    email.headers.push((
        "List-Unsubscribe-Post".into(),
        "List-Unsubscribe=One-Click".into(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(to: &str) -> wit::Message {
        wit::Message::Email(wit::Email {
            account: "smtp".into(),
            from: "news@acme.example".into(),
            to: to.into(),
            reply_to: None,
            subject: "s".into(),
            text: "t".into(),
            html: None,
            headers: vec![],
        })
    }

    fn sms(recipient: &str, headers: &[(&str, &str)]) -> wit::Message {
        wit::Message::Http(wit::HttpRequest {
            account: "twilio".into(),
            method: "POST".into(),
            path: "/send".into(),
            recipient: recipient.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: vec![],
        })
    }

    #[test]
    fn a_message_goes_only_to_its_record_s_stored_address() {
        let lists = Lists {
            http: ("sms".into(), AddressKind::Phone),
            target: "recipient".into(),
        };
        let stored = Stored(HashMap::from([
            (
                AddressKind::Email,
                vec![Some("Ann@Example.test".into()), None],
            ),
            (AddressKind::Phone, vec![Some("+447700900123".into()), None]),
        ]));
        // A display name and another case are the same mailbox.
        assert_eq!(
            stored.recipient(&lists, 0, &email("Someone <ann@example.TEST>")),
            Ok("Ann@Example.test".into())
        );
        let other = stored
            .recipient(&lists, 0, &email("Someone <bob@example.test>"))
            .unwrap_err();
        assert!(other.contains("addressed to `bob@example.test`"), "{other}");
        let two = stored
            .recipient(&lists, 0, &email("ann@example.test, bob@example.test"))
            .unwrap_err();
        assert!(two.contains("exactly one mailbox"), "{two}");
        let none = stored
            .recipient(&lists, 1, &email("x@example.test"))
            .unwrap_err();
        assert!(none.contains("has no email"), "{none}");
        // Numbers compare in E.164.
        assert_eq!(
            stored.recipient(&lists, 0, &sms("+44 7700 900123", &[])),
            Ok("+447700900123".into())
        );
        assert!(
            stored
                .recipient(&lists, 0, &sms("+447700900999", &[]))
                .is_err()
        );
        // A list of tokens is read from subscriptions: not for this channel.
        let tokens = Lists {
            http: ("fcm".into(), AddressKind::Token),
            target: "recipient".into(),
        };
        let e = stored.recipient(&tokens, 0, &sms("tok", &[])).unwrap_err();
        assert!(e.contains("sends per recipient"), "{e}");
    }

    #[test]
    fn headers_that_would_inject_lines_are_refused() {
        assert!(headers(&sms("+1", &[("content-type", "application/json")])).is_ok());
        let mut relative = sms("+1", &[]);
        if let wit::Message::Http(h) = &mut relative {
            h.path = "send".into();
        }
        let refused = headers(&relative).unwrap_err();
        assert!(refused.contains("must start with `/`"), "{refused}");
        assert!(headers(&sms("+1", &[("X-A\r\nBcc", "v")])).is_err());
        assert!(headers(&sms("+1", &[("x-a", "v\r\nX-B: w")])).is_err());
    }
}
