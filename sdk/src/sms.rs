//! SMS segment counting (3GPP TS 23.038 / 23.040): what a text costs.
//!
//! A text that fits the GSM 7-bit alphabet goes as GSM-7: 160 septets in a
//! single message, 153 per part once concatenated (the user data header
//! takes the rest); characters of the extension table (`€ [ ] { } \ ~ ^ |`
//! and form feed) take two septets and are never split across parts. Any
//! other character makes the whole text UCS-2: 70 UTF-16 units alone, 67 per
//! part, a surrogate pair never split.

/// How a text is encoded and into how many parts it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// True for GSM-7, false for UCS-2.
    pub gsm7: bool,
    /// Billable parts (1 for an empty text).
    pub count: u32,
    /// Septets (GSM-7) or UTF-16 units (UCS-2) in the text.
    pub units: u32,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Septets of each ASCII character (0: not in the GSM 7-bit alphabet), from
/// the two tables above: most texts are ASCII, and a lookup per character
/// keeps counting cheap (scanning the alphabet per character was 40% of
/// building an SMS).
const ASCII_WIDTHS: [u8; 128] = {
    let t = mark([0u8; 128], GSM7_BASIC, 1);
    mark(t, GSM7_EXTENSION, 2)
};

/// `table` with the ASCII characters of `alphabet` set to `width`.
const fn mark(mut table: [u8; 128], alphabet: &str, width: u8) -> [u8; 128] {
    // Bytes of multi-byte characters are all 0x80 or above: skipped.
    let bytes = alphabet.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] < 128 {
            table[bytes[i] as usize] = width;
        }
        i += 1;
    }
    table
}

fn gsm7_width(c: char) -> Option<u32> {
    if c.is_ascii() {
        return match ASCII_WIDTHS[c as usize] {
            0 => None,
            w => Some(u32::from(w)),
        };
    }
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

impl Segments {
    /// Counts the parts of `text`.
    pub fn of(text: &str) -> Segments {
        let gsm7 = text.chars().all(|c| gsm7_width(c).is_some());
        let (single, per_part) = if gsm7 { (160, 153) } else { (70, 67) };
        let width = |c: char| match gsm7 {
            true => gsm7_width(c).unwrap_or(1),
            false => c.len_utf16() as u32,
        };
        let units: u32 = text.chars().map(width).sum();
        let count = if units <= single {
            1
        } else {
            // Greedy packing: a character that does not fit starts a part.
            let mut parts = 1;
            let mut used = 0;
            for w in text.chars().map(width) {
                if used + w > per_part {
                    parts += 1;
                    used = 0;
                }
                used += w;
            }
            parts
        };
        Segments { gsm7, count, units }
    }

    /// `GSM-7, 2 segments`, for logs and dry runs.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} segment{}",
            if self.gsm7 { "GSM-7" } else { "UCS-2" },
            self.count,
            if self.count == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Segments;

    fn seg(text: &str) -> (bool, u32, u32) {
        let s = Segments::of(text);
        (s.gsm7, s.count, s.units)
    }

    #[test]
    fn the_ascii_table_is_the_alphabet() {
        for b in 0u8..128 {
            let c = char::from(b);
            let want = if super::GSM7_BASIC.contains(c) {
                Some(1)
            } else if super::GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            };
            assert_eq!(super::gsm7_width(c), want, "{c:?}");
        }
        assert_eq!(super::gsm7_width('`'), None);
        assert_eq!(super::gsm7_width('€'), Some(2));
        assert_eq!(super::gsm7_width('é'), Some(1));
    }

    #[test]
    fn gsm7_limits() {
        assert_eq!(seg(""), (true, 1, 0));
        assert_eq!(seg("Hello @ £5 à"), (true, 1, 12));
        assert_eq!(seg(&"a".repeat(160)), (true, 1, 160));
        assert_eq!(seg(&"a".repeat(161)), (true, 2, 161));
        assert_eq!(seg(&"a".repeat(306)), (true, 2, 306));
        assert_eq!(seg(&"a".repeat(307)), (true, 3, 307));
    }

    #[test]
    fn extension_characters_take_two_septets_and_are_not_split() {
        assert_eq!(seg(&"€".repeat(80)), (true, 1, 160));
        assert_eq!(seg(&"€".repeat(81)), (true, 2, 162));
        // 152 septets then an escape pair: 154 does not fit in 153.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(10));
        assert_eq!(seg(&text), (true, 2, 164));
        let text = format!("{}€", "a".repeat(152 + 153));
        assert_eq!(Segments::of(&text).count, 3);
    }

    #[test]
    fn anything_else_is_ucs2() {
        assert_eq!(seg("ç"), (false, 1, 1), "ç is not GSM-7 (only Ç is)");
        assert_eq!(seg(&"й".repeat(70)), (false, 1, 70));
        assert_eq!(seg(&"й".repeat(71)), (false, 2, 71));
        assert_eq!(seg(&"й".repeat(134)), (false, 2, 134));
        assert_eq!(seg(&"й".repeat(135)), (false, 3, 135));
        // An emoji is a surrogate pair: two units, never split.
        assert_eq!(seg(&"😀".repeat(35)), (false, 1, 70));
        let text = format!("{}😀", "й".repeat(66));
        assert_eq!(seg(&format!("{text}{}", "й".repeat(10))), (false, 2, 78));
        assert_eq!(Segments::of("a😀").describe(), "UCS-2, 1 segment");
        assert_eq!(
            Segments::of(&"a".repeat(200)).describe(),
            "GSM-7, 2 segments"
        );
    }
}
