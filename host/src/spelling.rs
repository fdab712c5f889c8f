//! "Did you mean": the known name a mistyped one most likely meant.

/// The name in `names` that `name` is most likely a misspelling of: at most
/// two edits away, and fewer edits than the name has letters.
pub fn near<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .copied()
        .filter(|n| *n != name)
        .map(|n| (strsim::levenshtein(name, n), n))
        .filter(|(d, n)| *d <= 2 && *d < n.len())
        .min()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_near_miss_names_the_list_meant() {
        let lists = ["email", "sms", "apns", "fcm"];
        assert_eq!(near("smss", &lists), Some("sms"));
        assert_eq!(near("emial", &lists), Some("email"));
        assert_eq!(near("sms", &lists), None, "itself is no near miss");
        assert_eq!(near("chat-optouts", &lists), None);
        assert_eq!(
            near("x", &lists),
            None,
            "one letter is not a near miss of `sms`"
        );
    }
}
