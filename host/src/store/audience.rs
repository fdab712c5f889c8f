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
//! Keys inside a dimension tree: `c<column>\0<block>` → text block (see
//! [`textblock`]; the external id is the `id` column, from which a
//! [`KeyIndex`] is built when needed); `l<link>\0<block>` → link block;
//! `m:next` → next internal id; `m:columns` → column names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::blockfiles::{Files, Location};
pub use super::keyindex::KeyIndex;
use super::manifest::{self, Manifest};
pub use super::staging::{Claim, Import};
use super::{Result, Store, StoreError, decode, textblock};

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
    /// An IANA time zone (`Europe/Paris`), if present.
    TimeZone,
}

impl Check {
    /// Checks a value; `Ok` carries the value to store (normalised).
    pub fn apply(&self, value: Option<&str>) -> std::result::Result<Option<String>, String> {
        match (self, value) {
            (Check::Email | Check::Phone | Check::TimeZone, None) => Ok(None),
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
            (Check::TimeZone, Some(v)) if crate::timezones::known(v) => Ok(Some(v.to_string())),
            (Check::TimeZone, Some(v)) => Err(crate::timezones::unknown(v)),
        }
    }
}

/// A mobile number in E.164 form (`+` and 7 to 15 digits, no leading zero),
/// after dropping separators; `None` when it cannot be one.
pub fn normalise_phone(raw: &str) -> Option<String> {
    let separator = |b: &u8| matches!(b, b' ' | b'-' | b'.' | b'(' | b')');
    // Bytes, not chars: checking and copying a million numbers char by
    // char was a tenth of an import. A no-break space is two bytes.
    let without_nbsp;
    let raw = if raw.is_ascii() {
        raw
    } else {
        without_nbsp = raw.replace('\u{a0}', "");
        &without_nbsp
    };
    let compact: Vec<u8> = raw.bytes().filter(|b| !separator(b)).collect();
    let digits = match compact.strip_prefix(b"+") {
        Some(d) => d,
        None => compact.strip_prefix(b"00")?,
    };
    let ok = (7..=15).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
        && digits[0] != b'0';
    ok.then(|| {
        let mut out = String::with_capacity(digits.len() + 1);
        out.push('+');
        // Checked above: ASCII digits only.
        out.push_str(std::str::from_utf8(digits).unwrap_or_default());
        out
    })
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

/// Headers people give documented columns, by column: a file that says
/// `phone` most likely means `mobile`, and would otherwise import it as an
/// unchecked attribute of its own.
const ALIASES: &[(&str, &[&str])] = &[
    (
        "email",
        &["e_mail", "mail", "email_address", "emailaddress"],
    ),
    (
        "mobile",
        &[
            "phone",
            "phone_number",
            "phonenumber",
            "mobile_phone",
            "cell",
            "cellphone",
            "msisdn",
        ],
    ),
    ("first_name", &["firstname", "given_name", "givenname"]),
    ("last_name", &["lastname", "family_name", "surname"]),
    ("recipient_id", &["recipient", "recipientid"]),
];

impl Dimension {
    /// The documented column a header most likely means when it is not one
    /// itself: the same but for case, `-` or spaces (`Email`, `First Name`),
    /// or a usual alias (`phone`).
    pub fn meant(&self, header: &str) -> Option<&'static str> {
        let all = || {
            let links = self.links.iter().map(|l| l.column);
            std::iter::once("id")
                .chain(self.columns.iter().copied())
                .chain(links)
        };
        let known = |c: &str| all().any(|k| k == c);
        if known(header) {
            return None;
        }
        let normal = header.trim().to_lowercase().replace(['-', ' '], "_");
        if let Some(c) = all().find(|c| *c == normal) {
            return Some(c);
        }
        ALIASES
            .iter()
            .find(|(c, aliases)| known(c) && aliases.contains(&normal.as_str()))
            .map(|(c, _)| *c)
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
        checks: &[
            ("email", Check::Email),
            ("mobile", Check::Phone),
            ("timezone", Check::TimeZone),
        ],
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
    /// Its internal id, when [`Import::claim`] gave it one already.
    pub id: Option<u64>,
    /// Attribute values by column (`None`: empty); column names are shared
    /// between rows.
    pub values: Vec<(Arc<str>, Option<String>)>,
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

/// Access to the audience data of the store, as published when first used:
/// every dimension's [`Manifest`] is pinned together then, so all reads
/// through one `Audience` see one version of the audience, whatever an
/// import publishes meanwhile.
pub struct Audience<'a> {
    pub(super) store: &'a Store,
    pinned: std::cell::OnceCell<BTreeMap<&'static str, Arc<Manifest>>>,
}

/// Every dimension's manifest as published at one instant: the version of
/// the audience a pinned [`Store`] reads, kept (files included) while held.
pub type Pinned = Arc<BTreeMap<&'static str, Arc<Manifest>>>;

impl Store {
    /// The audience: dimensions, their records and attributes (this
    /// handle's pinned version, if it has one).
    pub fn audience(&self) -> Audience<'_> {
        let pinned = std::cell::OnceCell::new();
        if let Some(p) = &self.pinned {
            let _ = pinned.set(p.as_ref().clone());
        }
        Audience {
            store: self,
            pinned,
        }
    }

    /// A handle on the same store that reads the audience as published
    /// now, whatever an import publishes later: one activity execution
    /// reads one version throughout (a delivery's last round the same
    /// records as its first).
    pub fn pinned_now(&self) -> Result<Store> {
        let trees = SCHEMA
            .iter()
            .map(|d| Ok((d.name, self.tree(&format!("dim/{}", d.name))?)))
            .collect::<Result<Vec<_>>>()?;
        let mut store = self.clone();
        store.pinned = Some(Arc::new(self.published.get_all(&trees)?));
        Ok(store)
    }
}

impl<'a> Audience<'a> {
    pub(super) fn tree(&self, dim: &Dimension) -> Result<sled::Tree> {
        self.store.tree(&format!("dim/{}", dim.name))
    }

    /// The pinned manifest of a dimension.
    fn manifest(&self, dim: &Dimension) -> Result<Arc<Manifest>> {
        if self.pinned.get().is_none() {
            let trees = SCHEMA
                .iter()
                .map(|d| Ok((d.name, self.tree(d)?)))
                .collect::<Result<Vec<_>>>()?;
            let all = self.store.published.get_all(&trees)?;
            let _ = self.pinned.set(all);
        }
        Ok(self.pinned.get().expect("pinned above")[dim.name].clone())
    }

    /// Reads the blocks of `manifest`, a version of `dim`.
    fn source<'m>(&self, dim: &Dimension, manifest: &'m Manifest) -> Result<Source<'m>>
    where
        'a: 'm,
    {
        Ok(Source {
            files: &self.store.blocks,
            tree: self.tree(dim)?,
            dim: dim.name,
            manifest,
        })
    }

    /// How many records a dimension holds (ids are `0..count`).
    pub fn count(&self, dimension: &str) -> Result<u64> {
        Ok(self.manifest(self::dimension(dimension)?)?.next)
    }

    /// The internal id of an external id, if imported (builds the whole
    /// index: for one-off lookups; imports keep a [`KeyIndex`]).
    pub fn lookup(&self, dimension: &str, key: &str) -> Result<Option<u64>> {
        Ok(self.key_index(dimension)?.get(key))
    }

    /// The map from external ids to internal ids of a dimension, read from
    /// its `id` column. Kept in memory for an import rather than as one sled
    /// key per record: a million keys cost sled far more time and memory
    /// than reading 245 blocks.
    pub fn key_index(&self, dimension: &str) -> Result<KeyIndex> {
        let dim = self::dimension(dimension)?;
        let manifest = self.manifest(dim)?;
        key_index(&self.source(dim, &manifest)?, 0)
    }

    /// The columns a dimension has: the schema's, then extras seen at import.
    pub fn columns(&self, dimension: &str) -> Result<Vec<String>> {
        let dim = self::dimension(dimension)?;
        Ok(columns(dim, &*self.manifest(dim)?))
    }

    /// Every attribute path of a dimension: its columns, then each linked
    /// dimension's behind the link (`recipient.email`).
    pub fn paths(&self, dimension: &str) -> Result<Vec<String>> {
        let mut out = self.columns(dimension)?;
        for link in self::dimension(dimension)?.links {
            for c in self.columns(link.target)? {
                out.push(format!("{}.{c}", link.name));
            }
        }
        Ok(out)
    }

    /// Upserts rows of one dimension as one import, published at once.
    /// Callers validate everything first: this either stores all or nothing.
    pub fn upsert(&self, dimension: &str, rows: &[Row]) -> Result<Upserted> {
        let mut import = self.begin(dimension, "(rows)", rows.len() as u64)?;
        import.write(rows.to_vec())?;
        import.publish()
    }

    /// Deletes what an interrupted import of a dimension staged, if one
    /// was, and says what it was.
    pub fn recover(&self, dimension: &str) -> Result<Option<manifest::Interrupted>> {
        let dim = self::dimension(dimension)?;
        manifest::recover(&self.tree(dim)?, &self.store.blocks, dim.name)
    }

    /// The import of a dimension that was interrupted (or is running), if
    /// any: what it staged is not part of the audience.
    pub fn interrupted_import(&self, dimension: &str) -> Result<Option<manifest::Staging>> {
        manifest::staging(&self.tree(self::dimension(dimension)?)?)
    }
}

/// The map from external ids to internal ids in one version of a dimension,
/// sized for an import of about `expected` records.
pub(super) fn key_index(source: &Source<'_>, expected: u64) -> Result<KeyIndex> {
    let count = source.manifest.next;
    let mut index: Option<KeyIndex> = None;
    let mut start = 0;
    while start < count {
        let end = (start + BLOCK).min(count);
        let ids: Vec<u64> = (start..end).collect();
        let blocks = TextBlocks::read(source, "id", &ids)?;
        let index = index.get_or_insert_with(|| {
            // Room reserved for every key there may be costs nothing until
            // used; the tables are filled as they are sized, so they are
            // sized for what an import most often does: either bring new
            // records or update existing ones. Beyond, they grow one at a
            // time.
            let sample: usize = blocks.each(&ids, |v| v.map_or(0, str::len)).iter().sum();
            let per_key = sample.div_ceil(ids.len()).max(1);
            let keys = (count + expected) as usize;
            KeyIndex::with_capacity(count.max(expected) as usize, keys, keys * per_key)
        });
        let mut failed = None;
        blocks.each(&ids, |key| {
            if let Err(e) = index.push(key) {
                failed.get_or_insert(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        start = end;
    }
    let expected = expected as usize;
    Ok(index.unwrap_or_else(|| KeyIndex::with_capacity(expected, expected, expected * 12)))
}

/// The columns of one version of a dimension: `id`, the schema's, then
/// extras seen at import.
pub(super) fn columns(dim: &Dimension, manifest: &Manifest) -> Vec<String> {
    let mut cols: Vec<String> = vec!["id".to_string()];
    cols.extend(dim.columns.iter().map(|c| c.to_string()));
    for c in &manifest.extras {
        if !cols.contains(c) {
            cols.push(c.clone());
        }
    }
    cols
}

/// One version of a dimension's blocks, for reading.
pub(super) struct Source<'m> {
    pub(super) files: &'m Files,
    pub(super) tree: sled::Tree,
    pub(super) dim: &'static str,
    pub(super) manifest: &'m Manifest,
}

impl Source<'_> {
    /// At most the first `max` bytes of a block, if it has any.
    fn head(&self, tag: u8, name: &str, block: u64, max: u32) -> Result<Option<Vec<u8>>> {
        match self.manifest.location(tag, name, block) {
            Some(Location::File {
                generation,
                offset,
                len,
            }) => self
                .files
                .read(self.dim, generation, offset, len.min(max))
                .map(Some),
            _ => self.get(tag, name, block),
        }
    }

    /// Whether each of `ids` has a non-empty value in a text column, read
    /// from the start of each block only.
    fn presence(&self, column: &str, ids: &[u64]) -> Result<Vec<bool>> {
        let max = textblock::presence_prefix(BLOCK as usize) as u32;
        let mut out = Vec::with_capacity(ids.len());
        // Ids mostly arrive sorted: each block read once per run of its ids.
        let mut i = 0;
        while i < ids.len() {
            let b = ids[i] / BLOCK;
            let run = ids[i..].iter().take_while(|id| *id / BLOCK == b).count();
            let head = self.head(manifest::TEXT, column, b, max)?;
            let presence = head
                .as_deref()
                .map(textblock::Presence::parse)
                .transpose()?;
            out.extend(ids[i..i + run].iter().map(|id| {
                presence
                    .as_ref()
                    .is_some_and(|p| p.present((id % BLOCK) as usize))
            }));
            i += run;
        }
        Ok(out)
    }

    /// The stored bytes of a block, if it has any.
    fn get(&self, tag: u8, name: &str, block: u64) -> Result<Option<Vec<u8>>> {
        read_block(
            self.files,
            &self.tree,
            self.dim,
            self.manifest,
            tag,
            name,
            block,
        )
    }
}

/// The stored bytes of block `block` of `name` in `manifest`, a version of
/// `dim`.
pub(super) fn read_block(
    files: &Files,
    tree: &sled::Tree,
    dim: &str,
    manifest: &Manifest,
    tag: u8,
    name: &str,
    block: u64,
) -> Result<Option<Vec<u8>>> {
    match manifest.location(tag, name, block) {
        None => Ok(None),
        Some(Location::Legacy) => Ok(tree
            .get(manifest::legacy_key(tag, name, block))?
            .map(|v| v.to_vec())),
        Some(Location::File {
            generation,
            offset,
            len,
        }) => files.read(dim, generation, offset, len).map(Some),
    }
}

impl Audience<'_> {
    /// Fetches attribute paths for ids: one column of texts per path, in the
    /// order of `ids`. A path is `column` or `link.column`.
    pub fn fetch(
        &self,
        dimension: &str,
        ids: &[u64],
        paths: &[String],
    ) -> Result<Vec<Vec<Option<String>>>> {
        let wants: Vec<(String, Want)> = paths.iter().map(|p| (p.clone(), Want::Text)).collect();
        Ok(self
            .fetch_as(dimension, ids, &wants)?
            .into_iter()
            .map(Values::into_text)
            .collect())
    }

    /// Fetches attribute paths for ids, each in the form asked for.
    pub fn fetch_as(
        &self,
        dimension: &str,
        ids: &[u64],
        wants: &[(String, Want)],
    ) -> Result<Vec<Values>> {
        let dim = self::dimension(dimension)?;
        // Paths behind the same link share one resolution of the link.
        let mut resolved: HashMap<&str, Resolved> = HashMap::new();
        let mut out = Vec::with_capacity(wants.len());
        for (path, want) in wants {
            if let Some((head, rest)) = path.split_once('.')
                && let Some(link) = dim.links.iter().find(|l| l.name == head)
            {
                if !resolved.contains_key(link.name) {
                    resolved.insert(link.name, self.resolve(dim, link, ids)?);
                }
                let r = &resolved[link.name];
                let target = self::dimension(link.target)?;
                out.push(
                    self.fetch_path(target, &r.distinct, rest, *want)?
                        .gather(&r.slots),
                );
            } else {
                out.push(self.fetch_path(dim, ids, path, *want)?);
            }
        }
        Ok(out)
    }

    /// Follows a link for a batch: the distinct targets, and each id's slot
    /// among them.
    fn resolve(&self, dim: &Dimension, link: &Link, ids: &[u64]) -> Result<Resolved> {
        let targets = self.read_links(dim, link.name, ids)?;
        let mut distinct: Vec<u64> = targets.iter().flatten().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let slots = targets
            .iter()
            .map(|t| t.and_then(|t| distinct.binary_search(&t).ok()))
            .collect();
        Ok(Resolved { distinct, slots })
    }

    fn fetch_path(
        &self,
        dim: &'static Dimension,
        ids: &[u64],
        path: &str,
        want: Want,
    ) -> Result<Values> {
        if let Some((head, rest)) = path.split_once('.')
            && let Some(link) = dim.links.iter().find(|l| l.name == head)
        {
            // Fetch the linked attribute once per distinct target, in id order.
            let r = self.resolve(dim, link, ids)?;
            let target_dim = self::dimension(link.target)?;
            let values = self.fetch_path(target_dim, &r.distinct, rest, want)?;
            return Ok(values.gather(&r.slots));
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
        let manifest = self.manifest(dim)?;
        let source = self.source(dim, &manifest)?;
        if want == Want::Presence {
            return Ok(Values::Presence(source.presence(path, ids)?));
        }
        let blocks = TextBlocks::read(&source, path, ids)?;
        Ok(match want {
            Want::Presence => Values::Presence(blocks.presence(ids)),
            Want::Text => Values::Text(blocks.texts(ids)),
            Want::Auto => match blocks.dictionary(ids) {
                Some(d) => d,
                None => Values::Text(blocks.texts(ids)),
            },
        })
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
        let manifest = self.manifest(dim)?;
        let source = self.source(dim, &manifest)?;
        self.columns(dimension)?
            .into_iter()
            .map(|c| {
                let blocks = TextBlocks::read(&source, &c, &ids)?;
                Ok((c, blocks.texts(&ids)))
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
        let manifest = self.manifest(dim)?;
        read_blocks::<Option<u64>>(&self.source(dim, &manifest)?, manifest::LINK, link, ids)
            .map(|v| v.into_iter().map(Option::flatten).collect())
    }
}

/// The form a caller wants a column in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Every value.
    Text,
    /// Only whether each record has a value.
    Presence,
    /// A dictionary when the values repeat a lot (an app, a platform),
    /// otherwise every value.
    Auto,
}

/// A fetched column, in the form it was asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Every value (`None`: absent).
    Text(Vec<Option<String>>),
    /// Each distinct value once, and an index per record.
    Dictionary {
        /// The distinct values.
        values: Vec<String>,
        /// Per record, an index into `values`.
        rows: Vec<Option<u32>>,
    },
    /// Whether each record has a (non-empty) value.
    Presence(Vec<bool>),
}

impl Values {
    /// The values as texts (a presence column has none).
    pub fn into_text(self) -> Vec<Option<String>> {
        match self {
            Values::Text(v) => v,
            Values::Dictionary { values, rows } => rows
                .into_iter()
                .map(|r| r.map(|k| values[k as usize].clone()))
                .collect(),
            Values::Presence(v) => v.into_iter().map(|_| None).collect(),
        }
    }

    /// The column for rows that take slot `slots[i]` of this one.
    fn gather(self, slots: &[Option<usize>]) -> Values {
        match self {
            Values::Text(v) => {
                Values::Text(slots.iter().map(|s| s.and_then(|s| v[s].clone())).collect())
            }
            Values::Dictionary { values, rows } => Values::Dictionary {
                values,
                rows: slots.iter().map(|s| s.and_then(|s| rows[s])).collect(),
            },
            Values::Presence(v) => {
                Values::Presence(slots.iter().map(|s| s.is_some_and(|s| v[s])).collect())
            }
        }
    }
}

/// A link followed for a batch of ids.
struct Resolved {
    /// The distinct targets, ascending.
    distinct: Vec<u64>,
    /// Per id, its target's index in `distinct`.
    slots: Vec<Option<usize>>,
}

/// The stored blocks of one text column that a batch of ids touches.
struct TextBlocks {
    /// (block number, stored bytes), sorted by block.
    blocks: Vec<(u64, Vec<u8>)>,
}

impl TextBlocks {
    fn read(source: &Source<'_>, column: &str, ids: &[u64]) -> Result<TextBlocks> {
        let mut wanted: Vec<u64> = Vec::new();
        for &id in ids {
            let b = id / BLOCK;
            // Ids mostly arrive sorted: comparing with the last is enough then.
            if wanted.last() != Some(&b) {
                wanted.push(b);
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut blocks = Vec::with_capacity(wanted.len());
        for b in wanted {
            if let Some(bytes) = source.get(manifest::TEXT, column, b)? {
                textblock::View::parse(&bytes)?;
                blocks.push((b, bytes));
            }
        }
        Ok(TextBlocks { blocks })
    }

    /// The view of the block holding `id`.
    fn view(&self, id: u64) -> Option<textblock::View<'_>> {
        let b = id / BLOCK;
        let i = self.blocks.binary_search_by_key(&b, |(k, _)| *k).ok()?;
        // Checked in `read`.
        textblock::View::parse(&self.blocks[i].1).ok()
    }

    /// Whether each id has a non-empty value, without reading the values.
    fn presence(&self, ids: &[u64]) -> Vec<bool> {
        self.each_slot(ids, |slot| slot.is_some_and(|(v, i)| v.present(i)))
    }

    fn texts(&self, ids: &[u64]) -> Vec<Option<String>> {
        self.each(ids, |v| v.map(str::to_string))
    }

    /// Calls `f` with each id's value.
    fn each<T>(&self, ids: &[u64], mut f: impl FnMut(Option<&str>) -> T) -> Vec<T> {
        self.each_slot(ids, |slot| f(slot.and_then(|(v, i)| v.get(i))))
    }

    /// Calls `f` with each id's block view and slot, parsing each block's view
    /// once per run of ids in the same block.
    fn each_slot<T>(
        &self,
        ids: &[u64],
        mut f: impl FnMut(Option<(&textblock::View<'_>, usize)>) -> T,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(ids.len());
        let mut current: Option<(u64, Option<textblock::View<'_>>)> = None;
        for &id in ids {
            let b = id / BLOCK;
            if current.as_ref().map(|(k, _)| *k) != Some(b) {
                current = Some((b, self.view(id)));
            }
            let view = current.as_ref().and_then(|(_, v)| v.as_ref());
            out.push(f(view.map(|v| (v, (id % BLOCK) as usize))));
        }
        out
    }

    /// The values as a dictionary, or `None` when they are mostly distinct.
    fn dictionary(&self, ids: &[u64]) -> Option<Values> {
        // Give up early on columns that are mostly distinct (emails, tokens).
        let limit = (ids.len() / 16).max(16);
        let mut index: rustc_hash::FxHashMap<String, u32> = Default::default();
        let mut values: Vec<String> = Vec::new();
        let mut overflow = false;
        let rows = self.each(ids, |v| {
            let v = v.filter(|s| !s.is_empty())?;
            if overflow {
                return None;
            }
            if let Some(k) = index.get(v) {
                return Some(*k);
            }
            if values.len() >= limit {
                overflow = true;
                return None;
            }
            let k = values.len() as u32;
            index.insert(v.to_string(), k);
            values.push(v.to_string());
            Some(k)
        });
        (!overflow).then_some(Values::Dictionary { values, rows })
    }
}

/// Reads slot values for `ids` from the blocks of one column, each block once.
fn read_blocks<T: Clone + serde::de::DeserializeOwned>(
    source: &Source<'_>,
    tag: u8,
    name: &str,
    ids: &[u64],
) -> Result<Vec<Option<T>>> {
    // Each block decoded once; ids mostly arrive sorted, so the block of the
    // previous id is usually the one needed.
    let mut decoded: Vec<(u64, Vec<T>)> = Vec::new();
    let mut out = Vec::with_capacity(ids.len());
    let mut current = usize::MAX;
    for &id in ids {
        let block = id / BLOCK;
        if decoded.get(current).map(|(b, _)| *b) != Some(block) {
            current = match decoded.iter().position(|(b, _)| *b == block) {
                Some(i) => i,
                None => {
                    let values = match source.get(tag, name, block)? {
                        Some(bytes) => decode::<Vec<T>>("audience", &bytes)?,
                        None => Vec::new(),
                    };
                    decoded.push((block, values));
                    decoded.len() - 1
                }
            };
        }
        out.push(decoded[current].1.get((id % BLOCK) as usize).cloned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, values: &[(&str, Option<&str>)], links: Vec<(&'static str, u64)>) -> Row {
        Row {
            key: key.into(),
            id: None,
            values: values
                .iter()
                .map(|(k, v)| (Arc::from(*k), v.map(str::to_string)))
                .collect(),
            links,
        }
    }

    #[test]
    fn upserts_by_key_and_fetches_columns_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
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
            store.audience().upsert("recipient", &rows).unwrap(),
            Upserted {
                inserted: 5000,
                updated: 0
            }
        );
        assert_eq!(store.audience().count("recipient").unwrap(), 5000);
        assert_eq!(
            store.audience().lookup("recipient", "R4097").unwrap(),
            Some(4097)
        );
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
            store.audience().upsert("recipient", &again).unwrap(),
            Upserted {
                inserted: 1,
                updated: 2
            }
        );
        let cols = store
            .audience()
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
            store
                .audience()
                .columns("recipient")
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
        store.audience().upsert("subscription", &subs).unwrap();
        let cols = store
            .audience()
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

        let err = store
            .audience()
            .fetch("subscription", &[0], &["colour".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown attribute `colour` of dimension `subscription`"),
            "{err}"
        );
        assert!(err.contains("recipient.<attribute>"), "{err}");
        assert!(
            store
                .audience()
                .fetch("planet", &[0], &[])
                .unwrap_err()
                .to_string()
                .contains("unknown dimension `planet`")
        );
    }

    #[test]
    fn serves_presence_dictionaries_and_texts_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let people: Vec<Row> = (0..100)
            .map(|i| {
                let email = format!("p{i}@x.test");
                let tier = ["gold", "silver"][i % 2];
                row(
                    &format!("R{i}"),
                    &[
                        ("email", (i % 3 != 0).then_some(email.as_str())),
                        ("tier", Some(tier)),
                    ],
                    vec![],
                )
            })
            .collect();
        store.audience().upsert("recipient", &people).unwrap();
        let subs: Vec<Row> = (0..10)
            .map(|i| row(&format!("S{i}"), &[], vec![("recipient", 9 - i as u64)]))
            .collect();
        store.audience().upsert("subscription", &subs).unwrap();
        let ids: Vec<u64> = (0..10).collect();
        let got = store
            .audience()
            .fetch_as(
                "subscription",
                &ids,
                &[
                    ("recipient.email".into(), Want::Presence),
                    ("recipient.tier".into(), Want::Auto),
                    ("recipient.email".into(), Want::Auto),
                ],
            )
            .unwrap();
        // Subscription i links to recipient 9 - i.
        let present: Vec<bool> = (0..10).map(|i| (9 - i) % 3 != 0).collect();
        assert_eq!(got[0], Values::Presence(present));
        let Values::Dictionary { values, rows } = &got[1] else {
            panic!("tiers repeat: {:?}", got[1])
        };
        assert_eq!(values.len(), 2);
        let tiers: Vec<&str> = rows
            .iter()
            .map(|r| values[r.unwrap() as usize].as_str())
            .collect();
        assert_eq!(tiers[0], "silver");
        assert_eq!(tiers[1], "gold");
        // Whatever the encoding, the values read back the same.
        let emails = got[2].clone().into_text();
        assert_eq!(emails[0], None);
        assert_eq!(emails[1].as_deref(), Some("p8@x.test"));
        // Mostly distinct values in a large batch are served as text.
        let all: Vec<u64> = (0..100).collect();
        let wide = store
            .audience()
            .fetch_as("recipient", &all, &[("email".into(), Want::Auto)])
            .unwrap();
        assert!(matches!(wide[0], Values::Text(_)));
    }

    fn emails(a: &Audience<'_>, n: u64) -> Vec<Option<String>> {
        let ids: Vec<u64> = (0..n).collect();
        a.fetch("recipient", &ids, &["email".into()])
            .unwrap()
            .remove(0)
    }

    fn people(range: std::ops::Range<u64>, domain: &str) -> Vec<Row> {
        range
            .map(|i| {
                let email = format!("r{i}@{domain}");
                row(&format!("R{i}"), &[("email", Some(email.as_str()))], vec![])
            })
            .collect()
    }

    /// The generations of recipients that have a block file.
    fn files(store: &Store) -> Vec<u32> {
        store.blocks.generations("recipient").unwrap()
    }

    /// A store holding 5000 recipients at `a.test` (generation 1).
    fn five_thousand() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        store
            .audience()
            .upsert("recipient", &people(0..5000, "a.test"))
            .unwrap();
        (dir, store)
    }

    #[test]
    fn an_import_is_seen_only_once_published_and_a_dropped_one_is_discarded() {
        let (_dir, store) = five_thousand();
        let before = emails(&store.audience(), 5000);
        assert_eq!(files(&store), [1]);

        // Staged, not published: nobody sees it, not even a new reader.
        let audience = store.audience();
        let mut import = audience.begin("recipient", "b.csv", 6000).unwrap();
        import.write(people(0..6000, "b.test")).unwrap();
        // One import of a dimension at a time; other dimensions are free.
        let again = store.audience().begin("recipient", "c.csv", 1).err();
        assert!(
            matches!(again, Some(StoreError::ImportUnderWay(ref d)) if d == "recipient"),
            "{again:?}"
        );
        drop(store.audience().begin("subscription", "s.csv", 1).unwrap());
        assert_eq!(store.audience().count("recipient").unwrap(), 5000);
        assert_eq!(emails(&store.audience(), 5000), before);
        assert_eq!(files(&store), [1, 2]);
        // As a crash leaves it (dropped, it would delete what it staged).
        std::mem::forget(import);

        // The next import says what it found, and the audience is intact.
        let found = store.audience().recover("recipient").unwrap();
        let Some(manifest::Interrupted::Discarded { file, bytes, .. }) = found else {
            panic!("{found:?}")
        };
        assert_eq!(file, "b.csv");
        // The 1000 new records were staged (updates wait for the end).
        assert!(bytes > 1000 * 10, "{bytes}");
        assert_eq!(files(&store), [1]);
        assert_eq!(store.audience().recover("recipient").unwrap(), None);
        assert_eq!(emails(&store.audience(), 5000), before);
    }

    #[test]
    fn a_reader_keeps_its_version_and_files_go_once_nobody_holds_them() {
        let (_dir, store) = five_thousand();
        let reader = store.audience();
        let before = emails(&reader, 5000);

        // Replaces the first blocks; the rest of generation 1's file is
        // moved along (it is mostly replaced), so no manifest names it now.
        store
            .audience()
            .upsert("recipient", &people(0..10, "b.test"))
            .unwrap();
        // The reader still reads its version, from the file it holds.
        assert_eq!(emails(&reader, 5000), before);
        assert_eq!(files(&store), [1, 2]);
        let after = emails(&store.audience(), 5000);
        assert_eq!(after[3].as_deref(), Some("r3@b.test"));
        assert_eq!(after[4999], before[4999]);
        drop(reader);

        // The next import deletes it.
        store
            .audience()
            .upsert("recipient", &people(4999..5001, "c.test"))
            .unwrap();
        let now = emails(&store.audience(), 5001);
        assert_eq!(now[3].as_deref(), Some("r3@b.test"));
        assert_eq!(now[5000].as_deref(), Some("r5000@c.test"));
        assert_eq!(files(&store), [2, 3]);
    }

    #[test]
    fn updates_in_any_order_write_each_block_once() {
        let (_dir, store) = five_thousand();
        let one = store.blocks.size("recipient", 1);
        // Every record updated, last first, 100 rows at a time, with a new
        // record among them.
        let audience = store.audience();
        let mut import = audience.begin("recipient", "b.csv", 5001).unwrap();
        let mut rows = people(0..5001, "b.test");
        rows.reverse();
        for chunk in rows.chunks(100) {
            import.write(chunk.to_vec()).unwrap();
        }
        let upserted = import.publish().unwrap();
        assert_eq!(
            upserted,
            Upserted {
                inserted: 1,
                updated: 5000
            }
        );
        let mails = emails(&store.audience(), 5001);
        assert!(
            mails
                .iter()
                .enumerate()
                .all(|(i, m)| m.as_deref() == Some(format!("r{i}@b.test").as_str()))
        );
        // Applied as they came, each chunk would have written the blocks it
        // touched again: 50 times the data.
        let two = store.blocks.size("recipient", 2);
        assert!(two < one * 2, "{two} bytes written for {one}");
    }

    #[test]
    fn the_layout_before_generations_reads_as_it_was_and_moves_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let tree = store.tree("dim/recipient").unwrap();
        // As stored before generations: 5000 records over two blocks.
        for (block, range) in [(0u64, 0..4096u64), (1, 4096..5000)] {
            let ids: Vec<Option<String>> = range.clone().map(|i| Some(format!("R{i}"))).collect();
            let mails: Vec<Option<String>> =
                range.map(|i| Some(format!("r{i}@old.test"))).collect();
            tree.insert(
                manifest::legacy_key(b'c', "id", block),
                textblock::encode(&ids),
            )
            .unwrap();
            tree.insert(
                manifest::legacy_key(b'c', "email", block),
                textblock::encode(&mails),
            )
            .unwrap();
        }
        tree.insert(b"m:next", &5000u64.to_be_bytes()).unwrap();
        tree.insert(b"m:columns", b"[]".as_slice()).unwrap();
        let mails = emails(&store.audience(), 5000);
        assert_eq!(mails[4999].as_deref(), Some("r4999@old.test"));
        assert_eq!(
            store.audience().lookup("recipient", "R4097").unwrap(),
            Some(4097)
        );

        store
            .audience()
            .upsert("recipient", &people(4000..4001, "new.test"))
            .unwrap();
        let mails = emails(&store.audience(), 5000);
        assert_eq!(mails[4000].as_deref(), Some("r4000@new.test"));
        assert_eq!(mails[4999].as_deref(), Some("r4999@old.test"));
        // Every block moved to generation 1's file; the old keys are gone.
        assert_eq!(files(&store), [1]);
        assert_eq!(tree.scan_prefix(b"c").count(), 0);
        assert!(tree.get(b"m:next").unwrap().is_none());
    }

    #[test]
    fn mobile_numbers_are_normalised_to_e164_or_refused() {
        for (raw, want) in [
            ("+15550001111", Some("+15550001111")),
            ("+1 (555) 000-1111", Some("+15550001111")),
            ("0033 6.12.34.56.78", Some("+33612345678")),
            ("+44\u{a0}7700\u{a0}900123", Some("+447700900123")),
            ("15550001111", None),
            ("+0555000111", None),
            ("+123456", None),
            ("+1234567890123456", None),
            ("+1555000111x", None),
            ("+1555\u{e9}000111", None),
            ("", None),
        ] {
            assert_eq!(normalise_phone(raw).as_deref(), want, "{raw:?}");
        }
    }
}
