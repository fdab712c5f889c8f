//! How requests reach a server's handler over time: in bursts, and the
//! pauses between them. Where the handler is quick (FCM's), a pause is the
//! client's turnaround: a client that multiplexes a fixed window of
//! requests is as fast as that, so the delivery benchmark compares the
//! pauses under crosscast and under the load generator.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A pause between two requests longer than this ends a burst.
pub const GAP: Duration = Duration::from_micros(50);

/// Records when each request reached the handler.
#[derive(Default)]
pub struct Pace {
    state: Mutex<Counted>,
}

#[derive(Default)]
struct Counted {
    last: Option<Instant>,
    report: PaceReport,
}

/// Requests and the gaps between bursts since the last [`Pace::take`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaceReport {
    /// Requests handled.
    pub requests: u64,
    /// Pauses longer than [`GAP`] between two requests.
    pub gaps: u64,
    /// Those pauses, added up.
    pub waited: Duration,
}

impl PaceReport {
    /// Requests per burst, on average.
    pub fn per_burst(&self) -> f64 {
        self.requests as f64 / (self.gaps + 1) as f64
    }

    /// The mean pause between bursts.
    pub fn mean_gap(&self) -> Duration {
        self.waited / u32::try_from(self.gaps.max(1)).unwrap_or(u32::MAX)
    }
}

impl Pace {
    /// A request reached the handler now.
    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&self, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pause) = s.last.map(|last| now.saturating_duration_since(last))
            && pause > GAP
        {
            s.report.gaps += 1;
            s.report.waited += pause;
        }
        s.last = Some(now);
        s.report.requests += 1;
    }

    /// What was recorded since the last call, starting afresh (the pause
    /// before the next request is not counted).
    pub fn take(&self) -> PaceReport {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *s).report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_longer_than_the_gap_split_bursts() {
        let pace = Pace::default();
        let t0 = Instant::now();
        let us = Duration::from_micros;
        for t in [us(0), us(10), us(20), us(1_020), us(1_030), us(3_030)] {
            pace.tick_at(t0 + t);
        }
        let r = pace.take();
        assert_eq!(
            r,
            PaceReport {
                requests: 6,
                gaps: 2,
                waited: us(1_000) + us(2_000),
            }
        );
        assert_eq!(r.per_burst(), 2.0);
        assert_eq!(r.mean_gap(), us(1_500));
        // Taken: the next request starts a new count, with no pause before it.
        pace.tick_at(t0 + us(10_000));
        assert_eq!(
            pace.take(),
            PaceReport {
                requests: 1,
                gaps: 0,
                waited: Duration::ZERO
            }
        );
    }
}
