//! Rows of an import that update existing records, put in id order before
//! they are applied.
//!
//! New records get ids in the order of the file, so their blocks are
//! written once each. Updates arrive in whatever order the file has: applied
//! as they come, a chunk of random ids touches most blocks of a column, and
//! every chunk would write them all again (a 100k-row random update of 1M
//! recipients wrote 144 MB for 22 MB of changed blocks). So they are kept,
//! sorted, in runs of at most [`BUDGET`] bytes on disk, and merged back in
//! id order when the import publishes: each block is then written once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read as _, Write as _};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Result, StoreError, decode, encode};

/// Bytes of rows kept in memory before a sorted run goes to disk.
pub const BUDGET: usize = 64 << 20;

/// A row as kept: its internal id, external id, values and links (by
/// their index in the dimension's links).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spilled {
    /// Internal id.
    pub id: u64,
    /// External id.
    pub key: String,
    /// Values by column name.
    pub values: Vec<(String, Option<String>)>,
    /// (index of the link in the dimension, target's internal id).
    pub links: Vec<(u16, u64)>,
}

impl Spilled {
    /// About how much memory it takes.
    fn size(&self) -> usize {
        64 + self.key.len()
            + self
                .values
                .iter()
                .map(|(k, v)| 56 + k.len() + v.as_ref().map_or(0, String::len))
                .sum::<usize>()
            + 16 * self.links.len()
    }
}

/// Rows kept until they are applied in id order.
#[derive(Debug)]
pub struct Spill {
    /// Where runs go (created with the first).
    dir: PathBuf,
    /// Bytes kept in memory before a run goes to disk.
    budget: usize,
    pending: Vec<Spilled>,
    bytes: usize,
    runs: Vec<PathBuf>,
}

impl Spill {
    /// Keeps rows, its runs (if any) under `dir`.
    pub fn new(dir: PathBuf) -> Spill {
        Spill::with_budget(dir, BUDGET)
    }

    /// Keeps rows, `budget` bytes in memory at most.
    pub fn with_budget(dir: PathBuf, budget: usize) -> Spill {
        Spill {
            dir,
            budget,
            pending: Vec::new(),
            bytes: 0,
            runs: Vec::new(),
        }
    }

    /// Whether it holds no row.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.runs.is_empty()
    }

    /// How many runs went to disk.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Keeps a row; past the budget, the rows kept so far go to disk.
    pub fn push(&mut self, row: Spilled) -> Result<()> {
        self.bytes += row.size();
        self.pending.push(row);
        if self.bytes >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the rows kept in memory as one sorted run.
    fn spill(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.pending.sort_unstable_by_key(|r| r.id);
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}.run", self.runs.len()));
        let mut w = BufWriter::new(File::create(&path)?);
        for row in self.pending.drain(..) {
            let bytes = encode(&row);
            w.write_all(&(bytes.len() as u32).to_le_bytes())?;
            w.write_all(&bytes)?;
        }
        w.flush()?;
        self.runs.push(path);
        self.bytes = 0;
        Ok(())
    }

    /// Every row kept, in id order.
    pub fn drain(mut self) -> Result<Sorted> {
        if self.runs.is_empty() {
            self.pending.sort_unstable_by_key(|r| r.id);
            let rows = std::mem::take(&mut self.pending);
            return Ok(Sorted(Inner::Memory(rows.into_iter())));
        }
        self.spill()?;
        let mut runs = Vec::with_capacity(self.runs.len());
        let mut heap = BinaryHeap::new();
        for path in &self.runs {
            let mut run = Run(BufReader::with_capacity(1 << 16, File::open(path)?));
            if let Some(row) = run.next()? {
                heap.push(Reverse((row.id, runs.len())));
                runs.push((run, Some(row)));
            }
        }
        Ok(Sorted(Inner::Merge { runs, heap }))
    }
}

/// One sorted run, read back a row at a time.
#[derive(Debug)]
struct Run(BufReader<File>);

impl Run {
    fn next(&mut self) -> Result<Option<Spilled>> {
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut bytes = vec![0; u32::from_le_bytes(len) as usize];
        self.0
            .read_exact(&mut bytes)
            .map_err(|e| StoreError::Corrupt {
                tree: "audience",
                message: format!("an import's sorted run is cut short: {e}"),
            })?;
        decode("audience", &bytes).map(Some)
    }
}

/// The rows of a [`Spill`], in id order.
#[derive(Debug)]
pub struct Sorted(Inner);

#[derive(Debug)]
enum Inner {
    /// All were in memory.
    Memory(std::vec::IntoIter<Spilled>),
    /// Merged from runs on disk.
    Merge {
        /// Each run, and its next row.
        runs: Vec<(Run, Option<Spilled>)>,
        /// (next id, run) of every run not at its end.
        heap: BinaryHeap<Reverse<(u64, usize)>>,
    },
}

impl Iterator for Sorted {
    type Item = Result<Spilled>;

    fn next(&mut self) -> Option<Result<Spilled>> {
        match &mut self.0 {
            Inner::Memory(rows) => rows.next().map(Ok),
            Inner::Merge { runs, heap } => {
                let Reverse((_, i)) = heap.pop()?;
                let (run, next) = &mut runs[i];
                let row = next.take()?;
                match run.next() {
                    Ok(Some(following)) => {
                        heap.push(Reverse((following.id, i)));
                        *next = Some(following);
                    }
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                Some(Ok(row))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64) -> Spilled {
        Spilled {
            id,
            key: format!("R{id}"),
            values: vec![("tier".into(), Some("x".repeat(1000)))],
            links: vec![(0, id * 2)],
        }
    }

    #[test]
    fn rows_come_back_in_id_order_from_memory_and_from_runs() {
        let dir = tempfile::tempdir().unwrap();
        // Few: all in memory.
        let mut small = Spill::new(dir.path().join("small"));
        for id in [5, 1, 9, 3] {
            small.push(row(id)).unwrap();
        }
        assert_eq!(small.runs(), 0);
        let ids: Vec<u64> = small.drain().unwrap().map(|r| r.unwrap().id).collect();
        assert_eq!(ids, [1, 3, 5, 9]);

        // Past the budget several times: merged from runs.
        let mut large = Spill::with_budget(dir.path().join("large"), 1 << 20);
        let n = 3 * (1 << 20) / 1100;
        let mut shuffled: Vec<u64> = (0..n as u64).map(|i| (i * 7919) % n as u64).collect();
        shuffled.dedup();
        for &id in &shuffled {
            large.push(row(id)).unwrap();
        }
        assert!(large.runs() >= 2, "{} runs", large.runs());
        let back: Vec<Spilled> = large.drain().unwrap().map(Result::unwrap).collect();
        assert_eq!(back.len(), shuffled.len());
        assert!(back.windows(2).all(|w| w[0].id < w[1].id));
        let last = back.last().unwrap();
        assert_eq!(last.key, format!("R{}", last.id));
        assert_eq!(last.links, [(0, last.id * 2)]);
    }
}
