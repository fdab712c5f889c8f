//! `crosscast doctor`: checks the installation without sending a message.
//! The data directory and its key file, the trusted CAs, each installed
//! plugin's stored component against its sha256 and its grants, and each
//! account reached step by step ([`crate::deliver::reach`]). Every line is
//! OK or FAIL, and a FAIL says how to fix it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::deliver::net::trust::Trust;
use crate::deliver::reach;
use crate::store::Store;

/// One line of the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`data directory`, `plugin email`, `account smtp`).
    pub subject: String,
    /// Which check (`mode`, `sha256`, `tls`...).
    pub check: String,
    /// True for OK.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it (FAIL lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(subject: impl Into<String>, check: &str, detail: impl Into<String>) -> Check {
        Check {
            subject: subject.into(),
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(
        subject: impl Into<String>,
        check: &str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            subject: subject.into(),
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check; network checks on `tokio`.
pub fn run(store: &Store, tokio: &tokio::runtime::Runtime) -> Vec<Check> {
    let mut out = Vec::new();
    out.extend(data_directory(store.dir()));
    out.extend(key_file(store));
    let trust = match store
        .cas()
        .map_err(anyhow::Error::from)
        .and_then(Trust::new)
    {
        Ok(t) => {
            let names: Vec<String> = store
                .cas()
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            let detail = match names.is_empty() {
                true => "the public roots only".to_string(),
                false => format!("the public roots and {}", names.join(", ")),
            };
            out.push(Check::ok("trusted CAs", "parse", detail));
            Some(t)
        }
        Err(e) => {
            out.push(Check::fail(
                "trusted CAs",
                "parse",
                e.to_string(),
                "replace it with `crosscast ca add NAME CA.pem` (a PEM certificate)",
            ));
            None
        }
    };
    out.extend(plugins(store));
    let accounts = store.accounts().unwrap_or_default();
    if accounts.is_empty() {
        out.push(Check::ok("accounts", "list", "none set"));
    }
    for account in accounts {
        let subject = format!("account {}", account.name);
        let Some(trust) = &trust else {
            out.push(Check::fail(
                subject,
                "tls",
                "not checked: the trusted CAs do not parse",
                "fix the trusted CAs first",
            ));
            continue;
        };
        for step in tokio.block_on(reach::check(store, trust, &account)) {
            out.push(match step.outcome {
                Ok(detail) => Check::ok(&subject, step.name, detail),
                Err(p) => Check::fail(&subject, step.name, p.message, p.fix),
            });
        }
    }
    out
}

/// The data directory: its owner's alone, writable, with room.
fn data_directory(dir: &Path) -> Vec<Check> {
    let subject = format!("data directory {}", dir.display());
    let mut out = Vec::new();
    match std::fs::metadata(dir).map(|m| m.permissions().mode() & 0o777) {
        Ok(0o700) => out.push(Check::ok(&subject, "mode", "0700: its owner's alone")),
        Ok(mode) => out.push(Check::fail(
            &subject,
            "mode",
            format!("{mode:04o}: others may read it"),
            format!("chmod 700 {}", dir.display()),
        )),
        Err(e) => out.push(Check::fail(
            &subject,
            "mode",
            e.to_string(),
            "check the path",
        )),
    }
    let probe = dir.join(".doctor-probe");
    match std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => out.push(Check::ok(&subject, "write", "writable")),
        Err(e) => out.push(Check::fail(
            &subject,
            "write",
            format!("cannot write: {e}"),
            "give the directory back to the user crosscast runs as",
        )),
    }
    if let Some(free) = free_bytes(dir) {
        const LOW: u64 = 1 << 30;
        let gb = free as f64 / (1u64 << 30) as f64;
        out.push(match free >= LOW {
            true => Check::ok(&subject, "space", format!("{gb:.1} GiB free")),
            false => Check::fail(
                &subject,
                "space",
                format!("{gb:.2} GiB free"),
                "free some space: imports and runs need room for the audience and the delivery log",
            ),
        });
    }
    out
}

/// Free bytes on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the plain struct it is given; the path is a
    // valid NUL-terminated string for the call's duration.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (r == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The key file: its owner's alone, and it opens every secret.
fn key_file(store: &Store) -> Vec<Check> {
    let path = store.key_file();
    let subject = format!("key file {}", path.display());
    let names = store.secret_names().unwrap_or_default();
    let mut out = Vec::new();
    match std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777) {
        Ok(0o600 | 0o400) => out.push(Check::ok(&subject, "mode", "0600: its owner's alone")),
        Ok(mode) => out.push(Check::fail(
            &subject,
            "mode",
            format!("{mode:04o}: others may read the key to every secret"),
            format!("chmod 600 {}", path.display()),
        )),
        Err(_) if names.is_empty() => {
            out.push(Check::ok(&subject, "mode", "not made yet (no secret)"));
            return out;
        }
        Err(e) => {
            out.push(Check::fail(
                &subject,
                "mode",
                e.to_string(),
                "point --key-file (or CROSSCAST_KEY_FILE) at the key this data directory's secrets were sealed with",
            ));
            return out;
        }
    }
    let unopened: Vec<&String> = names.iter().filter(|n| store.secret(n).is_err()).collect();
    out.push(match unopened.is_empty() {
        true => Check::ok(&subject, "secrets", format!("opens all {} secret(s)", names.len())),
        false => Check::fail(
            &subject,
            "secrets",
            format!(
                "does not open {}",
                unopened.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ),
            "point --key-file (or CROSSCAST_KEY_FILE) at the key they were sealed with, or set them again with `crosscast secret set`",
        ),
    });
    out
}

/// Each plugin: its stored component matches its sha256, its grants name
/// accounts that exist.
fn plugins(store: &Store) -> Vec<Check> {
    let accounts: Vec<String> = store
        .accounts()
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.name)
        .collect();
    let mut out = Vec::new();
    for p in store.plugins().unwrap_or_default() {
        let subject = format!("plugin {}", p.name);
        let reinstall = "install it again: `crosscast init` for a built-in, else `crosscast plugin install FILE --force`".to_string();
        match store.component(&p.sha256) {
            Ok(bytes) => {
                let found = hex::encode(Sha256::digest(&bytes));
                out.push(match found == p.sha256 {
                    true => Check::ok(
                        &subject,
                        "sha256",
                        format!("{} {}: component matches {}", p.name, p.version, &p.sha256[..16]),
                    ),
                    false => Check::fail(
                        &subject,
                        "sha256",
                        format!(
                            "the stored component's sha256 is {found}, not {}: it changed since install",
                            p.sha256
                        ),
                        reinstall,
                    ),
                });
            }
            Err(e) => out.push(Check::fail(&subject, "sha256", e.to_string(), reinstall)),
        }
        for granted in p.accounts.iter().filter(|a| !accounts.contains(a)) {
            out.push(Check::fail(
                &subject,
                "grants",
                format!("granted account `{granted}`, which does not exist"),
                format!("create it with `crosscast account set {granted} --url URL ...`"),
            ));
        }
    }
    out
}

/// The report as text: one line per check, the fix under a FAIL.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.subject.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let status = if c.ok { "OK  " } else { "FAIL" };
        out.push_str(&format!(
            "{status}  {:width$}  {}: {}\n",
            c.subject, c.check, c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("      {:width$}  fix: {fix}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::plugins::{PluginKind, PluginRecord};

    fn record(name: &str, sha256: String, accounts: &[&str]) -> PluginRecord {
        PluginRecord {
            name: name.into(),
            version: "1.0.0".into(),
            summary: String::new(),
            kind: PluginKind::Activity,
            sha256,
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            suppression_list: None,
            contract: None,
        }
    }

    #[test]
    fn a_component_that_changed_since_install_and_a_grant_to_nothing_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let bytes = b"\0asm component bytes";
        let good = hex::encode(Sha256::digest(bytes));
        store.put_plugin(&record("good", good, &[]), bytes).unwrap();
        // Stored under a sha256 that is not its own: bytes changed on disk.
        let claimed = hex::encode(Sha256::digest(b"what was installed"));
        store
            .put_plugin(&record("changed", claimed, &["gone"]), bytes)
            .unwrap();
        let checks = plugins(&store);
        let of = |name: &str, check: &str| {
            checks
                .iter()
                .find(|c| c.subject == format!("plugin {name}") && c.check == check)
                .cloned()
                .unwrap_or_else(|| panic!("{name} {check}: {checks:#?}"))
        };
        assert!(of("good", "sha256").ok);
        let changed = of("changed", "sha256");
        assert!(!changed.ok && changed.detail.contains("changed since install"));
        assert!(changed.fix.unwrap().contains("--force"));
        let grant = of("changed", "grants");
        assert!(!grant.ok && grant.detail.contains("`gone`"));
        let text = render(&checks);
        assert!(text.contains("FAIL  plugin changed"), "{text}");
    }

    #[test]
    fn a_data_directory_others_can_read_fails_with_chmod() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let checks = data_directory(dir.path());
        let mode = checks.iter().find(|c| c.check == "mode").unwrap();
        assert!(!mode.ok, "{mode:?}");
        assert_eq!(
            mode.fix.as_deref(),
            Some(format!("chmod 700 {}", dir.path().display()).as_str())
        );
        assert!(checks.iter().any(|c| c.check == "write" && c.ok));
    }
}
