//! Time as a guest sees it: `crosscast:plugin/clock`, the WASI wall clock
//! and the WASI monotonic clock all read the run's clock, which stands still
//! during an execution except that sleeping moves it forward. A guest that
//! sleeps (`std::thread::sleep`: a pollable on the monotonic clock) never
//! blocks the host: its pollable is ready at once and the clock has moved
//! by the time asked for, so a loop waiting for a later instant ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use crate::runtime::HostState;
use crate::runtime::bindings::activity::crosscast::plugin::clock::Host;

impl Host for HostState {
    fn now(&mut self) -> wasmtime::Result<i64> {
        self.host_calls += 1;
        Ok(self.time.now_ms())
    }
}

/// The run's instant for one execution, plus what the guest slept.
#[derive(Clone, Debug)]
pub struct GuestTime {
    start_ms: i64,
    slept_ns: Arc<AtomicU64>,
}

impl GuestTime {
    /// Time starting at the run's instant `start_ms`.
    pub fn new(start_ms: i64) -> GuestTime {
        GuestTime {
            start_ms,
            slept_ns: Arc::default(),
        }
    }

    /// The run's clock as the guest reads it (ms).
    pub fn now_ms(&self) -> i64 {
        let slept_ms = (self.slept() / 1_000_000).min(i64::MAX as u64) as i64;
        self.start_ms.saturating_add(slept_ms)
    }

    /// Nanoseconds slept since the execution began: the monotonic clock.
    pub fn slept(&self) -> u64 {
        self.slept_ns.load(Ordering::Relaxed)
    }

    /// Moves the clock forward by `ns`.
    fn advance(&self, ns: u64) {
        let _ = self
            .slept_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_add(ns))
            });
    }
}

impl wasmtime_wasi::HostWallClock for GuestTime {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms().max(0) as u64)
    }
}

impl wasmtime_wasi::HostMonotonicClock for GuestTime {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.slept()
    }
}

/// The WASI monotonic clock of a guest, in place of wasmtime-wasi's own
/// (whose pollables sleep in real time, whatever clock is configured).
pub struct GuestClock;

impl HasData for GuestClock {
    type Data<'a> = GuestClockView<'a>;
}

/// What the guest's monotonic clock reaches in its store.
pub struct GuestClockView<'a> {
    /// The guest's time.
    pub time: &'a GuestTime,
    /// Where pollables go.
    pub table: &'a mut ResourceTable,
}

/// A pollable that is ready at once: the sleep it stands for is over.
struct Slept;

#[wasmtime_wasi::async_trait]
impl Pollable for Slept {
    async fn ready(&mut self) {}
}

impl GuestClockView<'_> {
    fn slept(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let r = self.table.push(Slept)?;
        subscribe(self.table, r)
    }
}

impl monotonic_clock::Host for GuestClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.time.slept())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(1)
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.time.advance(when.saturating_sub(self.time.slept()));
        self.slept()
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.time.advance(duration);
        self.slept()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeping_moves_the_guest_s_clocks_not_the_host() {
        use wasmtime_wasi::{HostMonotonicClock, HostWallClock};
        let time = GuestTime::new(1_000);
        let mut table = ResourceTable::new();
        let mut view = GuestClockView {
            time: &time,
            table: &mut table,
        };
        let start = std::time::Instant::now();
        // An hour's sleep is over at once.
        monotonic_clock::Host::subscribe_duration(&mut view, 3_600 * 1_000_000_000).unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(time.now_ms(), 1_000 + 3_600_000);
        assert_eq!(HostWallClock::now(&time), Duration::from_millis(3_601_000));
        // An instant already past moves nothing; a later one moves to it.
        monotonic_clock::Host::subscribe_instant(&mut view, 5).unwrap();
        assert_eq!(HostMonotonicClock::now(&time), 3_600 * 1_000_000_000);
        monotonic_clock::Host::subscribe_instant(&mut view, 3_601 * 1_000_000_000).unwrap();
        assert_eq!(time.now_ms(), 1_000 + 3_601_000);
        // No overflow, whatever is asked.
        monotonic_clock::Host::subscribe_duration(&mut view, u64::MAX).unwrap();
        assert_eq!(time.slept(), u64::MAX);
        assert!(time.now_ms() > 0);
    }
}
