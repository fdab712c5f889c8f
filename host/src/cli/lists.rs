//! `crosscast denylist` and `crosscast unsubscribe`: suppression lists and
//! the one-click unsubscribe endpoint.

use std::io::Write as _;

use super::io::{Io, note, out};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::clock::format_ms;
use crate::store::Store;
use crate::store::suppression::{AddressKind, Suppression, SuppressionKind};
use crate::unsubscribe::Endpoint;

/// Suppression-list commands.
#[derive(Subcommand, Debug, serde::Serialize, serde::Deserialize)]
pub enum DenylistCommand {
    /// Add the addresses of a file to a denylist, all or nothing: one
    /// address per line, optionally `,reason`; `#` starts a comment.
    Import {
        /// The list: `email`, `sms`, or a channel's name (`apns`, `fcm`).
        list: String,
        /// The file.
        file: PathBuf,
        /// The reason recorded when a line gives none.
        #[arg(long, default_value = "imported")]
        reason: String,
    },
    /// Add one address to a denylist.
    Add {
        /// The list.
        list: String,
        /// The address (email, E.164 number, device token).
        address: String,
        /// Why.
        #[arg(long, default_value = "added by the operator")]
        reason: String,
    },
    /// List suppressed addresses (denylisted and quarantined).
    List {
        /// Only this list.
        list: Option<String>,
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<SuppressionKind>,
        /// As JSON (one object per line).
        #[arg(long)]
        json: bool,
    },
    /// Remove an address from a list (a denylist entry or a quarantine).
    Remove {
        /// The list.
        list: String,
        /// The address.
        address: String,
    },
}

/// One-click unsubscribe commands.
#[derive(Subcommand, Debug, serde::Serialize, serde::Deserialize)]
pub enum UnsubscribeCommand {
    /// Put RFC 8058 one-click links in every email and serve them from
    /// `crosscast worker` on this address.
    Setup {
        /// Where `crosscast worker` listens (e.g. 127.0.0.1:8025).
        #[arg(long)]
        listen: SocketAddr,
        /// The links' public base URL (a reverse proxy in front of the
        /// worker); `http://LISTEN/unsubscribe` by default.
        #[arg(long)]
        url: Option<String>,
    },
    /// Show the configuration.
    Show,
    /// Stop adding one-click links.
    Off,
}

/// Runs a denylist command.
pub fn denylist(
    io: &mut Io,
    store: &Store,
    now_ms: i64,
    cmd: DenylistCommand,
) -> anyhow::Result<()> {
    // A list no channel reads would take the addresses and protect no one.
    let named = match &cmd {
        DenylistCommand::Import { list, .. }
        | DenylistCommand::Add { list, .. }
        | DenylistCommand::Remove { list, .. } => Some(list),
        DenylistCommand::List { list, .. } => list.as_ref(),
    };
    if let Some(list) = named {
        store.check_known_list(list).map_err(anyhow::Error::msg)?;
    }
    match cmd {
        DenylistCommand::Import { list, file, reason } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (entries, errors) = parse_list(store.list_kind(&list)?, &text, &reason, now_ms);
            if !errors.is_empty() {
                for e in &errors {
                    note!(io, "{}:{e}", file.display());
                }
                bail!(
                    "{} invalid line(s) in {}: nothing imported",
                    errors.len(),
                    file.display()
                );
            }
            store.suppress(&list, &entries)?;
            out!(io, "{} address(es) on the {list} denylist", entries.len());
        }
        DenylistCommand::Add {
            list,
            address,
            reason,
        } => {
            let address = store
                .list_kind(&list)?
                .check(&address)
                .map_err(anyhow::Error::msg)?;
            store.suppress(
                &list,
                &[(address.clone(), entry(reason, "operator", now_ms))],
            )?;
            out!(io, "{address} is on the {list} denylist");
        }
        DenylistCommand::List { list, kind, json } => {
            for (list, address, s) in store.suppression_list(list.as_deref())? {
                if kind.is_some_and(|k| k != s.kind) {
                    continue;
                }
                if json {
                    let mut v = serde_json::to_value(&s)?;
                    v["list"] = list.into();
                    v["address"] = address.into();
                    out!(io, "{v}");
                } else {
                    out!(
                        io,
                        "{list:<8} {address:<32} {:<10} {}  {} ({})",
                        s.kind.to_string(),
                        format_ms(s.at),
                        s.reason,
                        s.source
                    );
                }
            }
        }
        DenylistCommand::Remove { list, address } => {
            if !store.unsuppress(&list, &address)? {
                bail!("{address} is not on the {list} list");
            }
            out!(io, "{address} removed from the {list} list");
        }
    }
    Ok(())
}

fn entry(reason: String, source: &str, now_ms: i64) -> Suppression {
    Suppression {
        kind: SuppressionKind::Denylist,
        reason,
        source: source.into(),
        at: now_ms,
    }
}

/// Reads a denylist file of addresses of `kind`: the entries, or every bad
/// line (`LINE: message`).
fn parse_list(
    kind: AddressKind,
    text: &str,
    default_reason: &str,
    now_ms: i64,
) -> (Vec<(String, Suppression)>, Vec<String>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (address, reason) = match line.split_once(',') {
            Some((a, r)) if !r.trim().is_empty() => (a, r.trim()),
            Some((a, _)) => (a, default_reason),
            None => (line, default_reason),
        };
        match kind.check(address) {
            Ok(a) => entries.push((a, entry(reason.to_string(), "import", now_ms))),
            Err(e) => errors.push(format!("{}: {e}", i + 1)),
        }
    }
    (entries, errors)
}

/// Runs an unsubscribe command.
pub fn unsubscribe(io: &mut Io, store: &Store, cmd: UnsubscribeCommand) -> anyhow::Result<()> {
    match cmd {
        UnsubscribeCommand::Setup { listen, url } => {
            let url = url.unwrap_or_else(|| format!("http://{listen}/unsubscribe"));
            url::Url::parse(&url).with_context(|| format!("`{url}` is not a URL"))?;
            store.set_unsubscribe(&Endpoint { listen, url })?;
            out!(
                io,
                "one-click unsubscribe links on; `crosscast worker` serves them on {listen}"
            );
        }
        UnsubscribeCommand::Show => match store.unsubscribe_endpoint()? {
            Some(e) => out!(io, "listen {}\nurl {}", e.listen, e.url),
            None => out!(io, "one-click unsubscribe links are off"),
        },
        UnsubscribeCommand::Off => {
            store.clear_unsubscribe()?;
            out!(io, "one-click unsubscribe links off");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_list;
    use crate::store::suppression::AddressKind;

    #[test]
    fn a_list_file_reports_every_bad_line() {
        let text =
            "# opted out by phone\n+44 7700 900123, asked by phone\n\n12345\n+15550001111\nnope\n";
        let (entries, errors) = parse_list(AddressKind::Phone, text, "imported", 0);
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("4: "), "{errors:?}");
        assert!(errors[1].starts_with("6: "), "{errors:?}");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "+447700900123");
        assert_eq!(entries[0].1.reason, "asked by phone");
        assert_eq!(entries[1].1.reason, "imported");
    }
}
