//! The run's clock: the system clock; a fixed virtual instant for tests and
//! dry runs (`--now` / `CROSSCAST_NOW`), which never moves by itself; or,
//! under `crosscast serve --now`, a virtual instant that only `crosscast
//! clock advance` moves, so a long-running process can cross week-long
//! waits in a test.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Where "now" comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    System,
    /// A fixed instant, in ms since the Unix epoch.
    Fixed(i64),
    /// A virtual instant shared by everything a server runs, moved forward
    /// on request.
    Virtual(Arc<Moving>),
}

/// A virtual instant that moves forward only when told to.
#[derive(Debug)]
pub struct Moving(AtomicI64);

impl PartialEq for Moving {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Moving {}

/// Why the clock cannot be moved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdvanceError {
    /// The system clock moves by itself.
    #[error(
        "the server runs on the system clock, which only time moves: start it with \
         `crosscast serve --now INSTANT` to move a virtual clock"
    )]
    NotVirtual,
    /// A fixed clock belongs to one command.
    #[error("a fixed clock (--now without a server) does not move: give a later --now")]
    Fixed,
    /// Backwards, or past the end of time.
    #[error("a clock moves forward only, by a positive duration within reach")]
    Backwards,
}

impl Clock {
    /// Parses an RFC 3339 instant into a fixed clock.
    pub fn fixed(rfc3339: &str) -> anyhow::Result<Clock> {
        Ok(Clock::Fixed(parse(rfc3339)?))
    }

    /// A virtual clock starting at an RFC 3339 instant.
    pub fn moving(rfc3339: &str) -> anyhow::Result<Clock> {
        Ok(Clock::Virtual(Arc::new(Moving(AtomicI64::new(parse(
            rfc3339,
        )?)))))
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => chrono::Utc::now().timestamp_millis(),
            Clock::Fixed(t) => *t,
            Clock::Virtual(m) => m.0.load(Ordering::SeqCst),
        }
    }

    /// Moves a virtual clock forward by `ms`; returns the new instant.
    pub fn advance(&self, ms: i64) -> Result<i64, AdvanceError> {
        let Clock::Virtual(m) = self else {
            return Err(match self {
                Clock::Fixed(_) => AdvanceError::Fixed,
                _ => AdvanceError::NotVirtual,
            });
        };
        if ms <= 0 {
            return Err(AdvanceError::Backwards);
        }
        let now = m.0.load(Ordering::SeqCst);
        let later = now.checked_add(ms).ok_or(AdvanceError::Backwards)?;
        if chrono::DateTime::from_timestamp_millis(later).is_none() {
            return Err(AdvanceError::Backwards);
        }
        // Only one advance at a time reaches here in practice (one server);
        // fetch_add keeps two from losing one another's step anyway.
        Ok(m.0.fetch_add(ms, Ordering::SeqCst) + ms)
    }

    /// True for the system clock.
    pub fn is_system(&self) -> bool {
        matches!(self, Clock::System)
    }
}

fn parse(rfc3339: &str) -> anyhow::Result<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).map_err(|e| {
        anyhow::anyhow!("`{rfc3339}` is not an RFC 3339 instant ({e}); e.g. 2026-01-05T09:00:00Z")
    })?;
    Ok(t.timestamp_millis())
}

/// Formats ms since the epoch as RFC 3339 (UTC).
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms after 1970 (no date)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_virtual_clock_moves_and_only_forward() {
        let c = Clock::moving("2026-01-05T09:00:00Z").unwrap();
        let shared = c.clone();
        let t0 = c.now_ms();
        assert_eq!(c.advance(7 * 86_400_000), Ok(t0 + 7 * 86_400_000));
        assert_eq!(
            shared.now_ms(),
            t0 + 7 * 86_400_000,
            "clones share one instant"
        );
        assert_eq!(c.advance(0), Err(AdvanceError::Backwards));
        assert_eq!(c.advance(-1), Err(AdvanceError::Backwards));
        assert_eq!(c.advance(i64::MAX), Err(AdvanceError::Backwards));
        assert_eq!(Clock::System.advance(1), Err(AdvanceError::NotVirtual));
        assert_eq!(Clock::Fixed(0).advance(1), Err(AdvanceError::Fixed));
    }
}
