//! The stored form of one block of a text column, read without decoding.
//!
//! Layout (little-endian): `n: u32`, a presence bitmap of `ceil(n / 8)`
//! bytes, `n` cumulative end offsets (`u32`), then the UTF-8 bytes of every
//! present value back to back. A value is a slice of the block: testing
//! presence or building a dictionary reads no allocation per record, which is
//! what filters on `is empty`, `app` or `platform` need.

use super::{Result, StoreError};

/// Encodes values (`None`: absent) as a block.
pub fn encode(values: &[Option<String>]) -> Vec<u8> {
    let n = values.len();
    let bytes: usize = values.iter().flatten().map(String::len).sum();
    let mut out = Vec::with_capacity(4 + n.div_ceil(8) + 4 * n + bytes);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    let mut bitmap = vec![0u8; n.div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        if v.is_some() {
            bitmap[i / 8] |= 1 << (i % 8);
        }
    }
    out.extend_from_slice(&bitmap);
    let mut end = 0u32;
    for v in values {
        end += v.as_ref().map_or(0, |s| s.len() as u32);
        out.extend_from_slice(&end.to_le_bytes());
    }
    for v in values.iter().flatten() {
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// A block, borrowed from its stored bytes: its head (which slots hold a
/// value, where each ends) and the values.
#[derive(Clone, Copy)]
pub struct View<'a> {
    head: Presence<'a>,
    bytes: &'a [u8],
}

fn corrupt(m: &str) -> StoreError {
    StoreError::Corrupt {
        tree: "audience",
        message: format!("text block: {m}"),
    }
}

impl<'a> View<'a> {
    /// Checks the layout of stored bytes and borrows them.
    pub fn parse(buf: &'a [u8]) -> Result<View<'a>> {
        let head = Presence::parse(buf)?;
        let view = View {
            head,
            bytes: &buf[presence_prefix(head.n)..],
        };
        if head.n > 0 && head.end(head.n - 1) as usize != view.bytes.len() {
            return Err(corrupt("offsets do not match the data"));
        }
        Ok(view)
    }

    /// How many slots it holds.
    pub fn len(&self) -> usize {
        self.head.n
    }

    /// Whether it holds no slot.
    pub fn is_empty(&self) -> bool {
        self.head.n == 0
    }

    /// Whether slot `i` holds a non-empty value.
    pub fn present(&self, i: usize) -> bool {
        self.head.present(i)
    }

    /// The value of slot `i` (`None`: absent, empty or past the end).
    pub fn get(&self, i: usize) -> Option<&'a str> {
        let h = &self.head;
        if i >= h.n || h.bitmap[i / 8] & (1 << (i % 8)) == 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { h.end(i - 1) as usize };
        let end = h.end(i) as usize;
        // Written from `String`s by `encode`; a damaged block reads as absent.
        std::str::from_utf8(self.bytes.get(start..end)?).ok()
    }

    /// Every slot, owned.
    pub fn to_vec(&self) -> Vec<Option<String>> {
        (0..self.head.n)
            .map(|i| self.get(i).map(str::to_string))
            .collect()
    }
}

/// Bytes from the start of a block of `n` slots that say which slots hold
/// a value: its length, presence bitmap and end offsets, not the values.
pub fn presence_prefix(n: usize) -> usize {
    4 + n.div_ceil(8) + 4 * n
}

/// Which slots of a block hold a non-empty value, read from the start of
/// the block only (see [`presence_prefix`]): what `is empty` needs, at a
/// fraction of the bytes.
#[derive(Clone, Copy)]
pub struct Presence<'a> {
    n: usize,
    bitmap: &'a [u8],
    ends: &'a [u8],
}

impl<'a> Presence<'a> {
    /// Checks and borrows the start of a block (or a whole one).
    pub fn parse(buf: &'a [u8]) -> Result<Presence<'a>> {
        let n = u32::from_le_bytes(
            buf.get(..4)
                .ok_or_else(|| corrupt("too short"))?
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let bitmap_end = 4 + n.div_ceil(8);
        if buf.len() < presence_prefix(n) {
            return Err(corrupt("truncated"));
        }
        Ok(Presence {
            n,
            bitmap: &buf[4..bitmap_end],
            ends: &buf[bitmap_end..presence_prefix(n)],
        })
    }

    fn end(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.ends[4 * i..4 * i + 4].try_into().expect("4 bytes"))
    }

    /// Whether slot `i` holds a non-empty value.
    pub fn present(&self, i: usize) -> bool {
        i < self.n
            && self.bitmap[i / 8] & (1 << (i % 8)) != 0
            && self.end(i) > if i == 0 { 0 } else { self.end(i - 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let values = vec![
            Some("ios".to_string()),
            None,
            Some(String::new()),
            Some("Chloé".to_string()),
        ];
        let buf = encode(&values);
        let v = View::parse(&buf).unwrap();
        assert_eq!(v.to_vec(), values);
        assert_eq!(
            (0..5).map(|i| v.present(i)).collect::<Vec<_>>(),
            [true, false, false, true, false]
        );
        assert_eq!(v.get(3), Some("Chloé"));
        assert!(View::parse(&buf[..buf.len() - 1]).is_err());
        assert!(View::parse(&[1, 0]).is_err());
        assert_eq!(View::parse(&encode(&[])).unwrap().len(), 0);
        // Presence from the start of the block alone, as from all of it.
        let head = &buf[..presence_prefix(values.len())];
        let p = Presence::parse(head).unwrap();
        assert_eq!(
            (0..5).map(|i| p.present(i)).collect::<Vec<_>>(),
            [true, false, false, true, false]
        );
        assert!(Presence::parse(&head[..head.len() - 1]).is_err());
    }
}
