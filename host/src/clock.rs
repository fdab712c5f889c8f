//! The run's clock: the system clock, or a fixed virtual instant for tests
//! and dry runs (`--now` / `CROSSCAST_NOW`), which never moves by itself.

/// Where "now" comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    System,
    /// A fixed instant, in ms since the Unix epoch.
    Fixed(i64),
}

impl Clock {
    /// Parses an RFC 3339 instant into a fixed clock.
    pub fn fixed(rfc3339: &str) -> anyhow::Result<Clock> {
        let t = chrono::DateTime::parse_from_rfc3339(rfc3339).map_err(|e| {
            anyhow::anyhow!(
                "`{rfc3339}` is not an RFC 3339 instant ({e}); e.g. 2026-01-05T09:00:00Z"
            )
        })?;
        Ok(Clock::Fixed(t.timestamp_millis()))
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => chrono::Utc::now().timestamp_millis(),
            Clock::Fixed(t) => *t,
        }
    }
}

/// Formats ms since the epoch as RFC 3339 (UTC).
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms after 1970 (no date)"))
}
