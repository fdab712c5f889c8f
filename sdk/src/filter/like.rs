//! SQL `LIKE` patterns: `%` matches any run of characters, `_` exactly one,
//! `\` makes the next character literal. Matching is case-sensitive.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Any,
    One,
    Char(char),
}

/// A compiled `LIKE` pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Vec<Part>);

impl Pattern {
    /// Compiles a pattern.
    pub fn new(src: &str) -> Pattern {
        let mut parts = Vec::new();
        let mut chars = src.chars();
        while let Some(c) = chars.next() {
            parts.push(match c {
                '%' => Part::Any,
                '_' => Part::One,
                '\\' => Part::Char(chars.next().unwrap_or('\\')),
                c => Part::Char(c),
            });
        }
        Pattern(parts)
    }

    /// Whether `text` matches, in time O(len(text) × len(pattern)) at worst.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut t, mut p) = (0, 0);
        // Where the last `%` was, and the text position it has absorbed up to.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.0.get(p) {
                Some(Part::Any) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(Part::One) => {
                    t += 1;
                    p += 1;
                }
                Some(Part::Char(c)) if *c == text[t] => {
                    t += 1;
                    p += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.0[p..].iter().all(|x| *x == Part::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn matches_like_sql() {
        let cases = [
            ("%@acme.test", "ann@acme.test", true),
            ("%@acme.test", "ann@acme.test.org", false),
            ("a_c", "abc", true),
            ("a_c", "ac", false),
            ("%", "", true),
            ("", "", true),
            ("", "x", false),
            ("%b%", "abc", true),
            ("a%c%e", "abcde", true),
            ("a%c%e", "abcdf", false),
            ("100\\%", "100%", true),
            ("100\\%", "1000", false),
            ("é_", "éa", true),
            ("A%", "abc", false),
        ];
        for (pat, text, want) in cases {
            assert_eq!(Pattern::new(pat).matches(text), want, "{pat} ~ {text}");
        }
    }
}
