//! IANA time zones, from jiff's database (its own copy when the machine has
//! none): looked up by name, with the name meant when one is mistyped.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

/// The zone named `name`, or why there is none, with the name meant when
/// it is close (`Europe/Pari` → `Europe/Paris`).
pub fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name).map_err(|_| unknown(name))
}

/// True if `name` is an IANA time zone. Names found once are remembered:
/// an import checks one per row, and a few hundred at most are in use.
pub fn known(name: &str) -> bool {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(name)
    {
        return true;
    }
    let found = jiff::tz::TimeZone::get(name).is_ok();
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    if found && seen.len() < 4096 {
        seen.insert(name.to_string());
    }
    found
}

/// Why `name` names no zone, with the one meant when it is close. The
/// search reads every name: its answers are remembered, and past a few
/// thousand different bad names (a file of nonsense) no name is suggested.
pub fn unknown(name: &str) -> String {
    static SAID: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let said = SAID.get_or_init(Default::default);
    let mut said = said.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = said.get(name) {
        return s.clone();
    }
    if said.len() >= 4096 {
        return format!("`{name}` is not an IANA time zone");
    }
    let why = suggest(name);
    said.insert(name.to_string(), why.clone());
    why
}

fn suggest(name: &str) -> String {
    let lower = name.to_lowercase();
    let meant = jiff::tz::db()
        .available()
        .map(|n| n.as_str().to_string())
        .map(|n| (strsim::levenshtein(&n.to_lowercase(), &lower), n))
        .filter(|(d, _)| *d <= 2)
        .min();
    match meant {
        Some((_, m)) => format!("`{name}` is not an IANA time zone; did you mean `{m}`?"),
        None => format!(
            "`{name}` is not an IANA time zone (such as Europe/Paris, America/New_York, UTC)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_known_by_their_iana_names_only() {
        assert!(known("Europe/Berlin") && known("America/New_York") && known("UTC"));
        assert!(known("Europe/Berlin"), "remembered");
        assert!(!known("Mars/Olympus"));
        assert!(!known("CEST+2"));
        assert_eq!(
            zone("America/New_Yrok").unwrap_err(),
            "`America/New_Yrok` is not an IANA time zone; did you mean `America/New_York`?"
        );
        assert!(
            zone("Mars/Olympus")
                .unwrap_err()
                .contains("(such as Europe/Paris")
        );
    }
}
