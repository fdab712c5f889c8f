//! Limits on a selection (Query's `limit`, each Split subset's `limit`): how
//! many records to keep, as a count or a percentage, and which ones — the
//! first by id, a reproducible random sample, or the best ranked by an
//! attribute.
//!
//! Selection keeps a bounded heap of the `k` best candidates, so memory is
//! O(k) whatever the population's size; a percentage needs one counting pass
//! first (populations can be read again: `rewind`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::filter::{Column, Field};

/// A limit as written in a config: `limit = { size = "10%", select = "random", seed = 7 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// A count (`1000`) or a percentage (`"10%"`).
    pub size: SizeConfig,
    /// `first` (lowest ids, the default), `random` or `rank`.
    #[serde(default)]
    pub select: Option<String>,
    /// Seed of `random`: the same seed picks the same records.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Attribute path `rank` orders by.
    #[serde(default)]
    pub by: Option<String>,
    /// `rank` keeps the highest values first (default: the lowest).
    #[serde(default)]
    pub descending: bool,
}

/// A count or a percentage as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeConfig {
    /// A number of records.
    Count(u64),
    /// A percentage such as `"10%"`.
    Text(String),
}

/// How many records a limit keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    /// At most this many.
    Count(u64),
    /// This percentage of the candidates, rounded to the nearest record.
    Percent(f64),
}

/// Which records a limit keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    /// The lowest ids (import order).
    First,
    /// A uniform random sample, reproducible with the seed.
    Random(u64),
    /// The lowest (or highest, `descending`) values of an attribute; records
    /// without a value come last; ties go to the lowest id.
    Rank {
        /// The attribute path.
        by: String,
        /// Highest first.
        descending: bool,
    },
}

/// A validated limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// How many.
    pub size: Size,
    /// Which.
    pub pick: Pick,
}

impl LimitConfig {
    /// Validates the limit found at config field `at`.
    pub fn validate(&self, at: &str) -> Result<Limit, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let size = match &self.size {
            SizeConfig::Count(n) => Size::Count(*n),
            SizeConfig::Text(t) => {
                match t.trim().strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
                    Some(Ok(p)) if (0.0..=100.0).contains(&p) => Size::Percent(p),
                    _ => {
                        errors.push(ConfigError::new(
                            format!("{at}.size"),
                            format!("`{t}` is neither a count nor a percentage such as \"10%\""),
                        ));
                        Size::Count(0)
                    }
                }
            }
        };
        let pick = match self.select.as_deref().unwrap_or("first") {
            "first" => Pick::First,
            "random" => Pick::Random(self.seed.unwrap_or(0)),
            "rank" => match &self.by {
                Some(by) => {
                    crate::config::attribute(&format!("{at}.by"), by);
                    Pick::Rank {
                        by: by.clone(),
                        descending: self.descending,
                    }
                }
                None => {
                    errors.push(ConfigError::new(
                        format!("{at}.by"),
                        "`select = \"rank\"` needs the attribute to rank by, e.g. by = \"score\"",
                    ));
                    Pick::First
                }
            },
            other => {
                errors.push(ConfigError::new(
                    format!("{at}.select"),
                    format!("`{other}` is not a selection (expected first, random or rank)"),
                ));
                Pick::First
            }
        };
        if self.seed.is_some() && !matches!(pick, Pick::Random(_)) {
            errors.push(ConfigError::new(
                format!("{at}.seed"),
                "a seed only applies to select = \"random\"",
            ));
        }
        if self.by.is_some() && !matches!(pick, Pick::Rank { .. }) {
            errors.push(ConfigError::new(
                format!("{at}.by"),
                "`by` only applies to select = \"rank\"",
            ));
        }
        if errors.is_empty() {
            Ok(Limit { size, pick })
        } else {
            Err(errors)
        }
    }
}

impl Limit {
    /// The attribute the selection reads, if any.
    pub fn field(&self) -> Option<Field> {
        match &self.pick {
            Pick::Rank { by, .. } => Some(Field {
                path: by.clone(),
                presence_only: false,
            }),
            _ => None,
        }
    }

    /// Whether the size depends on how many candidates there are.
    pub fn needs_count(&self) -> bool {
        matches!(self.size, Size::Percent(_))
    }

    /// How many to keep out of `candidates` (`None`: not counted yet).
    pub fn keep(&self, candidates: Option<u64>) -> u64 {
        match self.size {
            Size::Count(n) => n,
            Size::Percent(p) => {
                let c = candidates.expect("a percentage needs the count of candidates") as f64;
                (c * p / 100.0).round() as u64
            }
        }
    }
}

/// A sort key: what a record ranks by.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    /// Ids and random ranks, compared exactly.
    Unsigned(u64),
    Number(f64),
    Text(String),
    /// No value: after every value.
    Absent,
}

impl Key {
    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Unsigned(a), Key::Unsigned(b)) => a.cmp(b),
            (Key::Number(a), Key::Number(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            // Numbers before texts, so a mixed column still sorts totally.
            (Key::Number(_), Key::Text(_)) => Ordering::Less,
            (Key::Text(_), Key::Number(_)) => Ordering::Greater,
            (Key::Absent, Key::Absent) => Ordering::Equal,
            (Key::Absent, _) => Ordering::Greater,
            (_, Key::Absent) => Ordering::Less,
            // One selector uses one kind of key; ids break any tie.
            (Key::Unsigned(_), _) | (_, Key::Unsigned(_)) => Ordering::Equal,
        }
    }
}

/// One candidate in the heap; the heap's top is the worst kept candidate.
#[derive(Debug)]
struct Entry {
    key: Key,
    descending: bool,
    id: u64,
}

impl Entry {
    fn order(&self, other: &Entry) -> Ordering {
        let by_key = match (&self.key, &other.key, self.descending) {
            // Absent values stay last in either direction.
            (Key::Absent, _, _) | (_, Key::Absent, _) | (_, _, false) => self.key.cmp(&other.key),
            (_, _, true) => other.key.cmp(&self.key),
        };
        by_key.then(self.id.cmp(&other.id))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.order(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order(other)
    }
}

/// A 64-bit mix of seed and id (SplitMix64's finaliser): a fixed, uniform
/// pseudo-random rank per record, so a sample is the same on every run.
pub fn random_rank(seed: u64, id: u64) -> u64 {
    let mut z = seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Keeps the best `k` candidates offered to it.
pub struct Selector {
    pick: Pick,
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl Selector {
    /// A selector keeping `k` records chosen by `pick`.
    pub fn new(pick: Pick, k: u64) -> Selector {
        let k = usize::try_from(k).unwrap_or(usize::MAX);
        Selector {
            pick,
            k,
            heap: BinaryHeap::new(),
        }
    }

    /// Offers the rows of a batch where `candidate[i]` holds; `rank` is the
    /// column of the ranking attribute (needed for [`Pick::Rank`]).
    pub fn offer(&mut self, ids: &[u64], candidate: &[bool], rank: Option<&Column>) {
        if self.k == 0 {
            return;
        }
        for (i, &id) in ids.iter().enumerate() {
            if !candidate[i] {
                continue;
            }
            let (key, descending) = match &self.pick {
                Pick::First => (Key::Unsigned(id), false),
                Pick::Random(seed) => (Key::Unsigned(random_rank(*seed, id)), false),
                Pick::Rank { descending, .. } => {
                    let key = match rank.and_then(|c| c.get(i)) {
                        None => Key::Absent,
                        Some(crate::filter::Scalar::Text(s)) => match s.trim().parse::<f64>() {
                            Ok(n) => Key::Number(n),
                            Err(_) => Key::Text(s.to_string()),
                        },
                        Some(
                            crate::filter::Scalar::Integer(n) | crate::filter::Scalar::Timestamp(n),
                        ) => Key::Number(n as f64),
                        Some(crate::filter::Scalar::Float(n)) => Key::Number(n),
                        Some(crate::filter::Scalar::Boolean(b)) => Key::Number(b as u8 as f64),
                    };
                    (key, *descending)
                }
            };
            let entry = Entry {
                key,
                descending,
                id,
            };
            if self.heap.len() < self.k {
                self.heap.push(entry);
            } else if let Some(top) = self.heap.peek()
                && entry < *top
            {
                self.heap.pop();
                self.heap.push(entry);
            }
        }
    }

    /// The kept ids, ascending.
    pub fn finish(self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.heap.into_iter().map(|e| e.id).collect();
        ids.sort_unstable();
        ids
    }
}

/// A set of ids as a bitmap: ids are dense per dimension, so a million ids
/// take 125 KB.
#[derive(Debug, Clone, Default)]
pub struct IdSet {
    words: Vec<u64>,
    len: u64,
}

impl IdSet {
    /// An empty set.
    pub fn new() -> IdSet {
        IdSet::default()
    }

    /// A set of these ids.
    pub fn from_ids(ids: &[u64]) -> IdSet {
        let mut s = IdSet::new();
        ids.iter().for_each(|&id| s.insert(id));
        s
    }

    /// Adds an id.
    pub fn insert(&mut self, id: u64) {
        let w = (id / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let bit = 1u64 << (id % 64);
        if self.words[w] & bit == 0 {
            self.words[w] |= bit;
            self.len += 1;
        }
    }

    /// Whether the id is in the set.
    pub fn contains(&self, id: u64) -> bool {
        self.words
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    /// How many ids the set holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64u64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_k() {
        let ids: Vec<u64> = (0..100).collect();
        let all = vec![true; 100];
        let mut s = Selector::new(Pick::First, 3);
        s.offer(&ids, &all, None);
        assert_eq!(s.finish(), vec![0, 1, 2]);

        let scores = Column::Text(
            (0..100)
                .map(|i| (i % 7 != 0).then(|| ((i * 37) % 101).to_string()))
                .collect(),
        );
        let mut s = Selector::new(
            Pick::Rank {
                by: "score".into(),
                descending: true,
            },
            2,
        );
        s.offer(&ids, &all, Some(&scores));
        // The two highest scores: 37*i mod 101 is 100 at i = 30 and 99 at i = 60.
        assert_eq!(s.finish(), vec![30, 60]);

        let mut a = Selector::new(Pick::Random(7), 10);
        a.offer(&ids, &all, None);
        let mut b = Selector::new(Pick::Random(7), 10);
        b.offer(&ids[50..], &all[50..], None);
        b.offer(&ids[..50], &all[..50], None);
        let (a, b) = (a.finish(), b.finish());
        assert_eq!(
            a, b,
            "the same seed picks the same records, in any batch order"
        );
        let mut c = Selector::new(Pick::Random(8), 10);
        c.offer(&ids, &all, None);
        assert_ne!(a, c.finish());
    }

    #[test]
    fn sizes_and_sets() {
        let l = LimitConfig {
            size: SizeConfig::Text("10%".into()),
            select: None,
            seed: None,
            by: None,
            descending: false,
        }
        .validate("limit")
        .unwrap();
        assert_eq!(l.keep(Some(1005)), 101);
        let bad = LimitConfig {
            size: SizeConfig::Text("ten".into()),
            select: Some("rank".into()),
            seed: Some(1),
            by: None,
            descending: false,
        }
        .validate("subsets.0.limit")
        .unwrap_err();
        let fields: Vec<&str> = bad.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "subsets.0.limit.size",
                "subsets.0.limit.by",
                "subsets.0.limit.seed"
            ]
        );
        let mut s = IdSet::from_ids(&[3, 64, 3, 1000]);
        assert_eq!(s.len(), 3);
        assert!(s.contains(64) && !s.contains(65) && !s.contains(5000));
        s.insert(65);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 64, 65, 1000]);
    }
}
