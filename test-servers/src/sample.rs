//! A deterministic sample audience: the same seed always gives the same files.
//!
//! The mix covers what the reference workflow distinguishes: email only,
//! mobile only, both, neither; no device, one, several; iOS and Android; the
//! target app and another app.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The app the reference workflow targets.
pub const APP: &str = "com.acme.shop";
/// Another app, whose subscriptions must be left out.
pub const OTHER_APP: &str = "com.acme.news";

/// A small, fast, deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const FIRST: &[&str] = &[
    "Ada", "Bruno", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hugo", "Inès", "Jonas",
];
const LAST: &[&str] = &[
    "Martin", "Nguyen", "Okafor", "Petit", "Quinn", "Rossi", "Schmidt", "Tanaka",
];
const LOCALES: &[(&str, &str)] = &[
    ("en-US", "America/New_York"),
    ("fr-FR", "Europe/Paris"),
    ("de-DE", "Europe/Berlin"),
];

/// Writes `recipients.csv` and `subscriptions.csv` with `n` recipients into
/// `dir`; returns their paths.
pub fn write(dir: &Path, n: usize, seed: u64) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let rpath = dir.join("recipients.csv");
    let spath = dir.join("subscriptions.csv");
    let mut r = std::io::BufWriter::new(std::fs::File::create(&rpath)?);
    let mut s = std::io::BufWriter::new(std::fs::File::create(&spath)?);
    writeln!(
        r,
        "id,email,mobile,first_name,last_name,locale,timezone,loyalty"
    )?;
    writeln!(s, "id,recipient_id,app,platform,token")?;
    let mut rng = Rng(seed);
    let mut sub = 0usize;
    for i in 1..=n {
        let first = FIRST[rng.below(FIRST.len() as u64) as usize];
        let last = LAST[rng.below(LAST.len() as u64) as usize];
        let (locale, tz) = LOCALES[rng.below(LOCALES.len() as u64) as usize];
        // 30% email only, 20% mobile only, 30% both, 20% neither.
        let kind = rng.below(10);
        let email = if kind < 3 || (5..8).contains(&kind) {
            format!("user{i}@example.com")
        } else {
            String::new()
        };
        let mobile = if (3..8).contains(&kind) {
            format!("+1555{:07}", i)
        } else {
            String::new()
        };
        let loyalty = ["bronze", "silver", "gold"][rng.below(3) as usize];
        writeln!(
            r,
            "R{i},{email},{mobile},{first},{last},{locale},{tz},{loyalty}"
        )?;
        // 0 to 3 devices (1.5 on average); mostly the target app.
        let devices = rng.below(4);
        for _ in 0..devices {
            sub += 1;
            let app = if rng.below(5) == 0 { OTHER_APP } else { APP };
            let platform = if rng.below(2) == 0 { "ios" } else { "android" };
            // 32 bytes in hex, the shape of an APNs device token.
            let token = format!(
                "{:016x}{:016x}{:016x}{:016x}",
                rng.next(),
                rng.next(),
                rng.next(),
                rng.next()
            );
            writeln!(s, "S{sub},R{i},{app},{platform},{token}")?;
        }
    }
    r.flush()?;
    s.flush()?;
    Ok((rpath, spath))
}
