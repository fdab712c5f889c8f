//! Suppression lists: addresses no delivery sends to.
//!
//! One list per channel: `email` for every email channel (an address opted
//! out of email whatever plugin sends it), the channel plugin's name for the
//! others (`sms`, `apns`, `fcm`) unless the operator installed it with
//! another list (a third party's SMS channel with `--suppression-list sms`
//! honours the opt-outs every SMS provider reported). An entry is either a *quarantine* (the
//! provider said the address can never work: a hard bounce, an unregistered
//! device token) or a *denylist* entry (the recipient opted out, or the
//! operator imported it). Deliveries look addresses up before sending and
//! log each exclusion with the entry's reason.

use serde::{Deserialize, Serialize};

use super::audience::{Check, normalise_phone};
use super::{Result, Store, json_decode, json_encode};

/// Why an address is suppressed.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionKind {
    /// The address does not work (hard bounce, unregistered token).
    Quarantine,
    /// The recipient opted out, or the operator listed the address.
    Denylist,
}

impl std::fmt::Display for SuppressionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SuppressionKind::Quarantine => "quarantine",
            SuppressionKind::Denylist => "denylist",
        })
    }
}

/// One suppressed address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Suppression {
    /// Quarantine or denylist.
    pub kind: SuppressionKind,
    /// Why (the provider's answer, "one-click unsubscribe", the import file).
    pub reason: String,
    /// Where it came from: `run 3 / deliver_email`, `import`, `unsubscribe`.
    pub source: String,
    /// When, on the clock of whatever recorded it (ms).
    pub at: i64,
}

impl Suppression {
    /// The reason a delivery logs when it excludes the address.
    pub fn exclusion(&self, list: &str) -> String {
        match self.kind {
            SuppressionKind::Quarantine => format!(
                "quarantined on {list} since {}: {}",
                crate::clock::format_ms(self.at),
                self.reason
            ),
            SuppressionKind::Denylist => format!(
                "on the {list} denylist since {}: {}",
                crate::clock::format_ms(self.at),
                self.reason
            ),
        }
    }
}

/// What a suppression list holds, and so which stored address of a
/// message's target record it is checked against.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    /// Email addresses (a recipient's `email`), compared without case.
    Email,
    /// Mobile numbers (a recipient's `mobile`), in E.164.
    Phone,
    /// Device tokens (a subscription's `token`), as they are.
    Token,
}

impl AddressKind {
    /// The kind of a list whose kind was never declared: `email` holds
    /// emails, `sms` numbers, any other list device tokens (how lists were
    /// read before kinds were declared).
    pub fn inferred(list: &str) -> AddressKind {
        match list {
            EMAIL_LIST => AddressKind::Email,
            "sms" => AddressKind::Phone,
            _ => AddressKind::Token,
        }
    }

    /// The dimension whose records hold such addresses, and the column.
    pub fn column(self) -> (&'static str, &'static str) {
        match self {
            AddressKind::Email => ("recipient", "email"),
            AddressKind::Phone => ("recipient", "mobile"),
            AddressKind::Token => ("subscription", "token"),
        }
    }

    /// What such a list holds, in words.
    pub fn plural(self) -> &'static str {
        match self {
            AddressKind::Email => "email addresses",
            AddressKind::Phone => "phone numbers",
            AddressKind::Token => "device tokens",
        }
    }

    /// Its name, as the command line writes it.
    pub fn name(self) -> &'static str {
        match self {
            AddressKind::Email => "email",
            AddressKind::Phone => "phone",
            AddressKind::Token => "token",
        }
    }

    /// The form an address is listed and compared under: email addresses
    /// without case, numbers in E.164, tokens as they are.
    pub fn normalise(self, address: &str) -> String {
        let a = address.trim();
        match self {
            AddressKind::Email => a.to_ascii_lowercase(),
            AddressKind::Phone => normalise_phone(a).unwrap_or_else(|| a.to_string()),
            AddressKind::Token => a.to_string(),
        }
    }

    /// Checks an address of this kind (emails and numbers by syntax); `Ok`
    /// carries its normal form.
    pub fn check(self, address: &str) -> std::result::Result<String, String> {
        let a = address.trim();
        if a.is_empty() {
            return Err("the address is empty".into());
        }
        match self {
            AddressKind::Email => Check::Email.apply(Some(a)).map(|_| self.normalise(a)),
            AddressKind::Phone => Check::Phone.apply(Some(a)).map(|v| v.unwrap_or_default()),
            AddressKind::Token => Ok(a.to_string()),
        }
    }
}

impl std::fmt::Display for AddressKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The list every email is checked against, whatever channel sends it.
pub const EMAIL_LIST: &str = "email";

/// Checks a list name an operator gives: lowercase letters, digits, `-`
/// and `_`, as channel names are (it prefixes the list's keys).
pub fn check_list_name(list: &str) -> std::result::Result<(), String> {
    let valid = !list.is_empty()
        && list.len() <= 64
        && list
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{list}` is not a list name: use lowercase letters, digits, `-` and `_` (such as `sms`)"
        ))
    }
}

fn key(list: &str, kind: AddressKind, address: &str) -> Vec<u8> {
    let mut k = list.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(kind.normalise(address).as_bytes());
    k
}

impl Store {
    /// The suppression lists a channel reads: `email`, each installed
    /// channel's (the one it was installed with, else its name) and every
    /// list declared with a kind.
    pub fn known_lists(&self) -> Result<std::collections::BTreeSet<String>> {
        let mut lists = std::collections::BTreeSet::from([EMAIL_LIST.to_string()]);
        for p in self.plugins()? {
            if p.kind == crate::store::plugins::PluginKind::Channel {
                lists.insert(p.suppression_list.unwrap_or(p.name));
            }
        }
        for key in self.tree("settings")?.scan_prefix("list-kind/").keys() {
            let key = key?;
            let key = String::from_utf8_lossy(&key);
            if let Some(list) = key.strip_prefix("list-kind/") {
                lists.insert(list.to_string());
            }
        }
        Ok(lists)
    }

    /// Refuses a list no channel reads, naming the one meant if it is close.
    pub fn check_known_list(&self, list: &str) -> std::result::Result<(), String> {
        let known = self.known_lists().map_err(|e| e.to_string())?;
        if known.contains(list) {
            return Ok(());
        }
        let names: Vec<&str> = known.iter().map(String::as_str).collect();
        Err(match crate::spelling::near(list, &names) {
            Some(meant) => format!("no suppression list `{list}`: did you mean `{meant}`?"),
            None => format!(
                "no suppression list `{list}` (no channel reads it): the lists are {}",
                names.join(", ")
            ),
        })
    }
}

/// Where a list's declared kind is kept, in the settings tree.
fn kind_key(list: &str) -> String {
    format!("list-kind/{list}")
}

impl Store {
    /// What `list` holds: as declared (at install), else inferred from its
    /// name ([`AddressKind::inferred`]).
    pub fn list_kind(&self, list: &str) -> Result<AddressKind> {
        if list == EMAIL_LIST {
            return Ok(AddressKind::Email);
        }
        match self.tree("settings")?.get(kind_key(list))? {
            Some(v) => json_decode("settings", &v),
            None => Ok(AddressKind::inferred(list)),
        }
    }

    /// The kind declared for `list`, if any.
    pub fn declared_list_kind(&self, list: &str) -> Result<Option<AddressKind>> {
        if list == EMAIL_LIST {
            return Ok(Some(AddressKind::Email));
        }
        self.tree("settings")?
            .get(kind_key(list))?
            .map(|v| json_decode("settings", &v))
            .transpose()
    }

    /// Declares what `list` holds (its addresses are normalised by it).
    pub fn declare_list_kind(&self, list: &str, kind: AddressKind) -> Result<()> {
        self.tree("settings")?
            .insert(kind_key(list), json_encode(&kind))?;
        self.flush()
    }

    /// The entries of `addresses` (in order) on `list`.
    pub fn suppressions(&self, list: &str, addresses: &[&str]) -> Result<Vec<Option<Suppression>>> {
        let kind = self.list_kind(list)?;
        let tree = self.tree("suppression")?;
        // Most lists are empty or short: one seek says whether any lookup
        // is worth making.
        let mut prefix = list.as_bytes().to_vec();
        prefix.push(0);
        if tree.scan_prefix(&prefix).next().transpose()?.is_none() {
            return Ok(vec![None; addresses.len()]);
        }
        addresses
            .iter()
            .map(|a| {
                tree.get(key(list, kind, a))?
                    .map(|v| json_decode("suppression", &v))
                    .transpose()
            })
            .collect()
    }

    /// Adds entries to `list` in one batch and flushes. An opt-out is never
    /// replaced by a quarantine: it is the recipient's own word.
    pub fn suppress(&self, list: &str, entries: &[(String, Suppression)]) -> Result<()> {
        let kind = self.list_kind(list)?;
        let tree = self.tree("suppression")?;
        let mut batch = sled::Batch::default();
        for (address, s) in entries {
            let k = key(list, kind, address);
            if s.kind == SuppressionKind::Quarantine
                && let Some(old) = tree.get(&k)?
                && json_decode::<Suppression>("suppression", &old)?.kind
                    == SuppressionKind::Denylist
            {
                continue;
            }
            batch.insert(k, json_encode(s));
        }
        tree.apply_batch(batch)?;
        self.flush()
    }

    /// Removes an address from `list`; false if it was not there.
    pub fn unsuppress(&self, list: &str, address: &str) -> Result<bool> {
        let kind = self.list_kind(list)?;
        let removed = self
            .tree("suppression")?
            .remove(key(list, kind, address))?
            .is_some();
        self.flush()?;
        Ok(removed)
    }

    /// Every entry, or those of one list: (list, address, entry).
    pub fn suppression_list(
        &self,
        list: Option<&str>,
    ) -> Result<Vec<(String, String, Suppression)>> {
        let tree = self.tree("suppression")?;
        let prefix = list
            .map(|l| key(l, AddressKind::Token, ""))
            .unwrap_or_default();
        let mut out = Vec::new();
        for kv in tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            let nul = k.iter().position(|b| *b == 0).unwrap_or(k.len());
            let list = String::from_utf8_lossy(&k[..nul]).into_owned();
            let address =
                String::from_utf8_lossy(k.get(nul + 1..).unwrap_or_default()).into_owned();
            out.push((list, address, json_decode("suppression", &v)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn entry(kind: SuppressionKind) -> Suppression {
        Suppression {
            kind,
            reason: "r".into(),
            source: "test".into(),
            at: 0,
        }
    }

    #[test]
    fn lists_are_separate_and_addresses_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        store
            .suppress(
                "email",
                &[("Ann@Example.COM".into(), entry(SuppressionKind::Quarantine))],
            )
            .unwrap();
        store
            .suppress(
                "sms",
                &[("+44 7700 900123".into(), entry(SuppressionKind::Denylist))],
            )
            .unwrap();
        let got = store
            .suppressions("email", &["ann@example.com", "bob@example.com"])
            .unwrap();
        assert_eq!(got[0].as_ref().unwrap().kind, SuppressionKind::Quarantine);
        assert!(got[1].is_none());
        assert!(store.suppressions("sms", &["ann@example.com"]).unwrap()[0].is_none());
        assert!(store.suppressions("sms", &["+447700900123"]).unwrap()[0].is_some());
        // A list with no entries (a name that prefixes another's, too)
        // answers without lookups, and answers none.
        assert_eq!(
            store.suppressions("sm", &["+447700900123", "x"]).unwrap(),
            vec![None, None]
        );
        // A quarantine never replaces an opt-out.
        store
            .suppress(
                "sms",
                &[("+447700900123".into(), entry(SuppressionKind::Quarantine))],
            )
            .unwrap();
        let all = store.suppression_list(Some("sms")).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1, "+447700900123");
        assert_eq!(all[0].2.kind, SuppressionKind::Denylist);
        assert!(store.unsuppress("email", "ANN@example.com").unwrap());
        assert!(!store.unsuppress("email", "ann@example.com").unwrap());
        assert_eq!(store.suppression_list(None).unwrap().len(), 1);
    }

    #[test]
    fn addresses_are_checked_per_kind() {
        use AddressKind::*;
        assert_eq!(Email.check(" A@B.example ").unwrap(), "a@b.example");
        assert!(Email.check("not-an-address").is_err());
        assert_eq!(Phone.check("0044 7700 900123").unwrap(), "+447700900123");
        assert!(Phone.check("12").is_err());
        assert_eq!(Token.check("Tok:EN").unwrap(), "Tok:EN");
        assert!(Token.check(" ").is_err());
    }

    #[test]
    fn a_declared_kind_decides_how_a_list_compares_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        // Undeclared: inferred from the name, as before kinds existed.
        assert_eq!(store.list_kind("sms").unwrap(), AddressKind::Phone);
        assert_eq!(store.list_kind("textline").unwrap(), AddressKind::Token);
        assert_eq!(store.declared_list_kind("textline").unwrap(), None);
        store
            .declare_list_kind("textline", AddressKind::Phone)
            .unwrap();
        assert_eq!(store.list_kind("textline").unwrap(), AddressKind::Phone);
        store
            .suppress(
                "textline",
                &[("0044 7700 900123".into(), entry(SuppressionKind::Denylist))],
            )
            .unwrap();
        let got = store
            .suppressions("textline", &["+44 7700-900123", "+447700900999"])
            .unwrap();
        assert!(got[0].is_some(), "numbers compare in E.164");
        assert!(got[1].is_none());
        // `email` is always a list of emails.
        store
            .declare_list_kind("email", AddressKind::Token)
            .unwrap();
        assert_eq!(store.list_kind("email").unwrap(), AddressKind::Email);
    }

    #[test]
    fn list_names_are_lowercase_words_that_cannot_reach_into_other_keys() {
        for good in ["sms", "textline-optouts", "push_2", &"a".repeat(64)] {
            assert!(check_list_name(good).is_ok(), "{good}");
        }
        // Upper case, spaces, NUL (the key separator), slashes, too long.
        for bad in [
            "",
            "SMS",
            "my list",
            "sms\0email",
            "../email",
            &"a".repeat(65),
        ] {
            let e = check_list_name(bad).unwrap_err();
            assert!(e.contains("is not a list name"), "{bad:?}: {e}");
        }
    }
}
