//! `crosscast:plugin/clock` and the WASI wall clock: both read the run's
//! clock, so a plugin sees the same virtual instant whichever it uses.

use std::time::Duration;

use crate::runtime::HostState;
use crate::runtime::bindings::activity::crosscast::plugin::clock::Host;

impl Host for HostState {
    fn now(&mut self) -> wasmtime::Result<i64> {
        self.host_calls += 1;
        Ok(self.ctx.now_ms)
    }
}

/// The WASI wall clock of a guest: the run's instant, fixed for the execution.
pub struct RunClock(pub i64);

impl wasmtime_wasi::HostWallClock for RunClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.max(0) as u64)
    }
}
