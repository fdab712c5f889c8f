//! Recipients, app subscriptions and any further dimension: the schema, and
//! attribute storage by column.
//!
//! Each dimension lives in its own tree. Records get dense internal ids
//! (0, 1, 2, ...) at import, mapped from their external `id`. Attributes are
//! stored by column in blocks of [`BLOCK`] consecutive ids, so fetching a
//! column for a batch of 10,000 sorted ids reads three blocks, not 10,000
//! keys. A link (`subscription.recipient`) is stored as a column of internal
//! ids of the target dimension, resolved once at import.
//!
//! Keys inside a dimension tree: `k<external id>` → internal id;
//! `c<column>\0<block>` → text block; `l<link>\0<block>` → link block;
//! `m:next` → next internal id; `m:columns` → column names.

use std::collections::{BTreeMap, HashMap};

use super::{Result, Store, StoreError, decode, encode, json_decode, json_encode};

/// Ids per column block.
pub const BLOCK: u64 = 4096;

/// A link from one dimension to another through a key column.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The path segment that follows it (`recipient` in `recipient.email`).
    pub name: &'static str,
    /// The column holding the target's external id.
    pub column: &'static str,
    /// The target dimension.
    pub target: &'static str,
}

/// A rule a column's values must follow at import.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// An email address, if present.
    Email,
    /// A mobile number, if present: E.164 after normalisation (spaces,
    /// dashes, dots and parentheses dropped, a leading `00` read as `+`).
    Phone,
    /// Present and one of these values.
    OneOf(&'static [&'static str]),
    /// Present.
    Required,
}

impl Check {
    /// Checks a value; `Ok` carries the value to store (normalised).
    pub fn apply(&self, value: Option<&str>) -> std::result::Result<Option<String>, String> {
        match (self, value) {
            (Check::Email | Check::Phone, None) => Ok(None),
            (Check::OneOf(allowed), None) => {
                Err(format!("is empty (expected {})", allowed.join(" or ")))
            }
            (Check::Required, None) => Err("is empty".into()),
            (Check::Email, Some(v)) => match v.parse::<lettre::Address>() {
                Ok(_) => Ok(Some(v.to_string())),
                Err(_) => Err(format!("`{v}` is not an email address")),
            },
            (Check::Phone, Some(v)) => normalise_phone(v)
                .map(Some)
                .ok_or_else(|| format!("`{v}` is not an E.164 number such as +15550001111")),
            (Check::OneOf(allowed), Some(v)) => {
                if allowed.contains(&v) {
                    Ok(Some(v.to_string()))
                } else {
                    Err(format!(
                        "`{v}` is unknown (expected {})",
                        allowed.join(" or ")
                    ))
                }
            }
            (Check::Required, Some(v)) => Ok(Some(v.to_string())),
        }
    }
}

/// A mobile number in E.164 form (`+` and 7 to 15 digits, no leading zero),
/// after dropping separators; `None` when it cannot be one.
pub fn normalise_phone(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    let digits = match compact.strip_prefix('+') {
        Some(d) => d,
        None => compact.strip_prefix("00")?,
    };
    let ok = (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| format!("+{digits}"))
}

/// A target dimension: a kind of record workflows run on.
#[derive(Debug, Clone, Copy)]
pub struct Dimension {
    /// Its name in workflows and on the command line.
    pub name: &'static str,
    /// Its documented columns (after `id`), in order; files may have more.
    pub columns: &'static [&'static str],
    /// Rules columns follow at import.
    pub checks: &'static [(&'static str, Check)],
    /// Links to other dimensions.
    pub links: &'static [Link],
}

impl Dimension {
    /// Columns a file of this dimension must have (besides `id`).
    pub fn required(&self) -> impl Iterator<Item = &'static str> {
        self.links.iter().map(|l| l.column).chain(
            self.checks
                .iter()
                .filter(|(_, c)| matches!(c, Check::Required | Check::OneOf(_)))
                .map(|(name, _)| *name),
        )
    }
}

/// The dimensions Crosscast knows. A further dimension is one more entry.
pub const SCHEMA: &[Dimension] = &[
    Dimension {
        name: "recipient",
        columns: &[
            "email",
            "mobile",
            "first_name",
            "last_name",
            "locale",
            "timezone",
        ],
        checks: &[("email", Check::Email), ("mobile", Check::Phone)],
        links: &[],
    },
    Dimension {
        name: "subscription",
        columns: &["recipient_id", "app", "platform", "token"],
        checks: &[
            ("app", Check::Required),
            ("platform", Check::OneOf(&["ios", "android"])),
            ("token", Check::Required),
        ],
        links: &[Link {
            name: "recipient",
            column: "recipient_id",
            target: "recipient",
        }],
    },
];

/// Looks a dimension up by name.
pub fn dimension(name: &str) -> Result<&'static Dimension> {
    SCHEMA.iter().find(|d| d.name == name).ok_or_else(|| {
        let known: Vec<&str> = SCHEMA.iter().map(|d| d.name).collect();
        StoreError::NotFound(format!(
            "unknown dimension `{name}` (known: {})",
            known.join(", ")
        ))
    })
}

/// One record to upsert: its external id, attributes and resolved links.
#[derive(Debug, Clone)]
pub struct Row {
    /// External id (the file's `id`).
    pub key: String,
    /// Attribute values by column (`None`: empty).
    pub values: Vec<(String, Option<String>)>,
    /// Link name → internal id of the target record.
    pub links: Vec<(&'static str, u64)>,
}

/// What an import changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upserted {
    /// Records that did not exist.
    pub inserted: u64,
    /// Records that existed and were overwritten.
    pub updated: u64,
}

type TextBlock = Vec<Option<String>>;
type LinkBlock = Vec<Option<u64>>;

fn block_key(tag: u8, name: &str, block: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 6);
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&(block as u32).to_be_bytes());
    k
}

fn ext_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'k');
    k.extend_from_slice(key.as_bytes());
    k
}

/// Access to the audience data of the store.
pub struct Audience<'a> {
    store: &'a Store,
}

impl Store {
    /// The audience: dimensions, their records and attributes.
    pub fn audience(&self) -> Audience<'_> {
        Audience { store: self }
    }
}

impl Audience<'_> {
    fn tree(&self, dim: &Dimension) -> Result<sled::Tree> {
        self.store.tree(&format!("dim/{}", dim.name))
    }

    /// How many records a dimension holds (ids are `0..count`).
    pub fn count(&self, dimension: &str) -> Result<u64> {
        let dim = self::dimension(dimension)?;
        let tree = self.tree(dim)?;
        Ok(match tree.get(b"m:next")? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])),
            None => 0,
        })
    }

    /// The internal id of an external id, if imported.
    pub fn lookup(&self, dimension: &str, key: &str) -> Result<Option<u64>> {
        let tree = self.tree(self::dimension(dimension)?)?;
        Ok(tree
            .get(ext_key(key))?
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))))
    }

    /// The columns a dimension has: the schema's, then extras seen at import.
    pub fn columns(&self, dimension: &str) -> Result<Vec<String>> {
        let dim = self::dimension(dimension)?;
        let tree = self.tree(dim)?;
        let mut cols: Vec<String> = vec!["id".to_string()];
        cols.extend(dim.columns.iter().map(|c| c.to_string()));
        if let Some(v) = tree.get(b"m:columns")? {
            for c in json_decode::<Vec<String>>("audience", &v)? {
                if !cols.contains(&c) {
                    cols.push(c);
                }
            }
        }
        Ok(cols)
    }

    /// Upserts rows of one dimension in one atomic batch, then flushes.
    /// Callers validate everything first: this either stores all or nothing.
    pub fn upsert(&self, dimension: &str, rows: &[Row]) -> Result<Upserted> {
        let r = self.upsert_chunk(dimension, rows, false)?;
        self.store.flush()?;
        Ok(r)
    }

    /// Records that an import of `file` is being stored (`None`: it ended).
    /// An import stores its chunks one batch at a time; a marker left behind
    /// says one was interrupted, so the next import can say so.
    pub fn mark_import(&self, dimension: &str, file: Option<&str>) -> Result<()> {
        let tree = self.tree(self::dimension(dimension)?)?;
        match file {
            Some(f) => tree.insert(b"m:importing", f.as_bytes())?,
            None => tree.remove(b"m:importing")?,
        };
        self.store.flush()?;
        Ok(())
    }

    /// The file of an import that was interrupted, if any.
    pub fn interrupted_import(&self, dimension: &str) -> Result<Option<String>> {
        let tree = self.tree(self::dimension(dimension)?)?;
        Ok(tree
            .get(b"m:importing")?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Upserts one chunk of rows in one sled batch, without flushing. With
    /// `all_new`, the caller guarantees no key exists yet (a first import
    /// checked for duplicates), which skips a lookup per row.
    pub fn upsert_chunk(&self, dimension: &str, rows: &[Row], all_new: bool) -> Result<Upserted> {
        let dim = self::dimension(dimension)?;
        let tree = self.tree(dim)?;
        let mut next = self.count(dimension)?;
        let mut batch = sled::Batch::default();
        let mut result = Upserted {
            inserted: 0,
            updated: 0,
        };
        let mut text: BTreeMap<(String, u64), TextBlock> = BTreeMap::new();
        let mut links: BTreeMap<(&'static str, u64), LinkBlock> = BTreeMap::new();
        let mut columns = self.columns(dimension)?;
        let mut assigned: HashMap<&str, u64> = HashMap::new();
        for row in rows {
            let existing = if all_new {
                None
            } else {
                tree.get(ext_key(&row.key))?
            };
            let id = match assigned.get(row.key.as_str()) {
                Some(id) => *id,
                None => match existing {
                    Some(v) => {
                        result.updated += 1;
                        u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))
                    }
                    None => {
                        let id = next;
                        next += 1;
                        result.inserted += 1;
                        batch.insert(ext_key(&row.key), &id.to_be_bytes());
                        id
                    }
                },
            };
            assigned.insert(row.key.as_str(), id);
            let (block, slot) = (id / BLOCK, (id % BLOCK) as usize);
            // The external id is an attribute too, so it can be filtered on.
            let id_value = ("id".to_string(), Some(row.key.clone()));
            for (col, value) in std::iter::once(&id_value).chain(row.values.iter()) {
                if !columns.contains(col) {
                    columns.push(col.clone());
                }
                let entry = text.entry((col.clone(), block));
                let blk = match entry {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let existing = match tree.get(block_key(b'c', col, block))? {
                            Some(bytes) => decode::<TextBlock>("audience", &bytes)?,
                            None => Vec::new(),
                        };
                        v.insert(existing)
                    }
                };
                if blk.len() <= slot {
                    blk.resize(slot + 1, None);
                }
                blk[slot] = value.clone();
            }
            for (link, target) in &row.links {
                let blk = match links.entry((link, block)) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let existing = match tree.get(block_key(b'l', link, block))? {
                            Some(bytes) => decode::<LinkBlock>("audience", &bytes)?,
                            None => Vec::new(),
                        };
                        v.insert(existing)
                    }
                };
                if blk.len() <= slot {
                    blk.resize(slot + 1, None);
                }
                blk[slot] = Some(*target);
            }
        }
        for ((col, block), blk) in &text {
            batch.insert(block_key(b'c', col, *block), encode(blk));
        }
        for ((link, block), blk) in &links {
            batch.insert(block_key(b'l', link, *block), encode(blk));
        }
        let extras: Vec<&String> = columns
            .iter()
            .filter(|c| *c != "id" && !dim.columns.contains(&c.as_str()))
            .collect();
        batch.insert(b"m:columns".to_vec(), json_encode(&extras));
        batch.insert(b"m:next".to_vec(), &next.to_be_bytes());
        tree.apply_batch(batch)?;
        Ok(result)
    }

    /// Fetches attribute paths for ids: one column of texts per path, in the
    /// order of `ids`. A path is `column` or `link.column`.
    pub fn fetch(
        &self,
        dimension: &str,
        ids: &[u64],
        paths: &[String],
    ) -> Result<Vec<Vec<Option<String>>>> {
        let dim = self::dimension(dimension)?;
        paths.iter().map(|p| self.fetch_path(dim, ids, p)).collect()
    }

    fn fetch_path(
        &self,
        dim: &'static Dimension,
        ids: &[u64],
        path: &str,
    ) -> Result<Vec<Option<String>>> {
        if let Some((head, rest)) = path.split_once('.')
            && let Some(link) = dim.links.iter().find(|l| l.name == head)
        {
            let targets = self.read_links(dim, link.name, ids)?;
            let target_dim = self::dimension(link.target)?;
            // Fetch the linked attribute for the distinct targets, in id order.
            let mut distinct: Vec<u64> = targets.iter().flatten().copied().collect();
            distinct.sort_unstable();
            distinct.dedup();
            let values = self.fetch_path(target_dim, &distinct, rest)?;
            return Ok(targets
                .iter()
                .map(|t| {
                    t.and_then(|t| {
                        distinct
                            .binary_search(&t)
                            .ok()
                            .and_then(|i| values[i].clone())
                    })
                })
                .collect());
        }
        let columns = self.columns(dim.name)?;
        if !columns.iter().any(|c| c == path) {
            let links: Vec<String> = dim
                .links
                .iter()
                .map(|l| format!("{}.<attribute>", l.name))
                .collect();
            return Err(StoreError::NotFound(format!(
                "unknown attribute `{path}` of dimension `{}` (known: {}{}{})",
                dim.name,
                columns.join(", "),
                if links.is_empty() { "" } else { ", " },
                links.join(", ")
            )));
        }
        let tree = self.tree(dim)?;
        read_blocks::<Option<String>>(&tree, b'c', path, ids)
            .map(|v| v.into_iter().map(Option::flatten).collect())
    }

    /// Every stored column of records `start..start + len` (at most one
    /// block), for export: `(column, values)` in column order.
    pub fn read_range(
        &self,
        dimension: &str,
        start: u64,
        len: u64,
    ) -> Result<Vec<(String, Vec<Option<String>>)>> {
        let dim = self::dimension(dimension)?;
        let ids: Vec<u64> = (start..start + len).collect();
        let tree = self.tree(dim)?;
        self.columns(dimension)?
            .into_iter()
            .map(|c| {
                let v = read_blocks::<Option<String>>(&tree, b'c', &c, &ids)?;
                Ok((c, v.into_iter().map(Option::flatten).collect()))
            })
            .collect()
    }

    /// Follows a link by name: the target id of each of `ids`, in order.
    pub fn follow(&self, dimension: &str, link: &str, ids: &[u64]) -> Result<Vec<Option<u64>>> {
        let dim = self::dimension(dimension)?;
        if !dim.links.iter().any(|l| l.name == link) {
            let known: Vec<&str> = dim.links.iter().map(|l| l.name).collect();
            return Err(StoreError::NotFound(format!(
                "dimension `{dimension}` has no link `{link}` (links: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        self.read_links(dim, link, ids)
    }

    /// The internal ids that records of `dim` link to through `link`.
    pub fn read_links(&self, dim: &Dimension, link: &str, ids: &[u64]) -> Result<Vec<Option<u64>>> {
        let tree = self.tree(dim)?;
        read_blocks::<Option<u64>>(&tree, b'l', link, ids)
            .map(|v| v.into_iter().map(Option::flatten).collect())
    }
}

/// Reads slot values for `ids` from the blocks of one column, each block once.
fn read_blocks<T: Clone + serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    tag: u8,
    name: &str,
    ids: &[u64],
) -> Result<Vec<Option<T>>> {
    let mut cache: HashMap<u64, Vec<T>> = HashMap::new();
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        let block = id / BLOCK;
        let blk = match cache.entry(block) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(match tree.get(block_key(tag, name, block))? {
                    Some(bytes) => decode::<Vec<T>>("audience", &bytes)?,
                    None => Vec::new(),
                })
            }
        };
        out.push(blk.get((id % BLOCK) as usize).cloned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, values: &[(&str, Option<&str>)], links: Vec<(&'static str, u64)>) -> Row {
        Row {
            key: key.into(),
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            links,
        }
    }

    #[test]
    fn upserts_by_key_and_fetches_columns_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.audience();
        // Enough recipients to span two column blocks.
        let rows: Vec<Row> = (0..5000)
            .map(|i| {
                row(
                    &format!("R{i}"),
                    &[
                        ("email", Some(&format!("r{i}@x.test"))),
                        ("tier", Some("gold")),
                    ],
                    vec![],
                )
            })
            .collect();
        assert_eq!(
            a.upsert("recipient", &rows).unwrap(),
            Upserted {
                inserted: 5000,
                updated: 0
            }
        );
        assert_eq!(a.count("recipient").unwrap(), 5000);
        assert_eq!(a.lookup("recipient", "R4097").unwrap(), Some(4097));
        // Upsert: same key, same id, new value; a new key gets the next id.
        let again = vec![
            row("R1", &[("email", None)], vec![]),
            row("R9", &[("email", Some("new@x.test"))], vec![]),
        ];
        let again: Vec<Row> = again
            .into_iter()
            .chain([row("R5000", &[("email", Some("last@x.test"))], vec![])])
            .collect();
        assert_eq!(
            a.upsert("recipient", &again).unwrap(),
            Upserted {
                inserted: 1,
                updated: 2
            }
        );
        let cols = a
            .fetch(
                "recipient",
                &[1, 9, 4097, 5000],
                &["email".into(), "tier".into(), "id".into()],
            )
            .unwrap();
        assert_eq!(
            cols[0],
            vec![
                None,
                Some("new@x.test".into()),
                Some("r4097@x.test".into()),
                Some("last@x.test".into())
            ]
        );
        assert_eq!(
            cols[1],
            vec![
                Some("gold".into()),
                Some("gold".into()),
                Some("gold".into()),
                None
            ]
        );
        assert_eq!(cols[2][3], Some("R5000".into()));
        assert!(
            a.columns("recipient")
                .unwrap()
                .contains(&"tier".to_string())
        );

        let subs = vec![
            row("S1", &[("platform", Some("ios"))], vec![("recipient", 9)]),
            row(
                "S2",
                &[("platform", Some("android"))],
                vec![("recipient", 4097)],
            ),
        ];
        a.upsert("subscription", &subs).unwrap();
        let cols = a
            .fetch(
                "subscription",
                &[1, 0],
                &["recipient.email".into(), "platform".into()],
            )
            .unwrap();
        assert_eq!(
            cols[0],
            vec![Some("r4097@x.test".into()), Some("new@x.test".into())]
        );
        assert_eq!(cols[1], vec![Some("android".into()), Some("ios".into())]);

        let err = a
            .fetch("subscription", &[0], &["colour".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown attribute `colour` of dimension `subscription`"),
            "{err}"
        );
        assert!(err.contains("recipient.<attribute>"), "{err}");
        assert!(
            a.fetch("planet", &[0], &[])
                .unwrap_err()
                .to_string()
                .contains("unknown dimension `planet`")
        );
    }
}
