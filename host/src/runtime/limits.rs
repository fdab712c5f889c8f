//! What one execution of a plugin may cost the host, and how the host
//! knows which limit a guest hit: memory and tables through the store's
//! resource limiter (which records its own refusals), time through the
//! epoch deadline (time in wasm) and a call hook that times every host call
//! (time blocked in the host), each a typed record, never an error's text.

use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, StoreLimits};

use crate::caps::log::ChatterLimits;

/// Resource limits for one execution.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most linear memory a guest may use, in bytes.
    pub memory_bytes: usize,
    /// Most wall-clock time one guest call may take, time in host calls
    /// included.
    pub timeout: Duration,
    /// What the guest may say (log, stdout, stderr).
    pub chatter: ChatterLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(300),
            chatter: ChatterLimits::default(),
        }
    }
}

/// A limit a guest hit, as the host recorded it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hit {
    /// Its memory could not grow past the limit.
    Memory,
    /// A table could not grow past the limit.
    Table,
    /// A host call returned after the call's time was up.
    BlockedInHost {
        /// How long that host call took.
        call: Duration,
        /// Time in host calls during the guest call, that one included.
        in_host: Duration,
    },
}

/// The store's resource limiter: [`StoreLimits`], with a record of what it
/// refused.
pub struct Limiter {
    inner: StoreLimits,
    /// The first limit refused.
    pub hit: Option<Hit>,
}

impl Limiter {
    /// A limiter enforcing `inner`.
    pub fn new(inner: StoreLimits) -> Limiter {
        Limiter { inner, hit: None }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.hit.get_or_insert(Hit::Memory);
        }
        allowed
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.table_growing(current, desired, maximum);
        if !matches!(allowed, Ok(true)) {
            self.hit.get_or_insert(Hit::Table);
        }
        allowed
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A host call taking this long blocked: anything shorter is the host's
/// ordinary work (two epoch ticks).
pub const BLOCKING: Duration = Duration::from_millis(20);

/// The wall-clock time of the guest call under way: when it began, its
/// limit, and the time spent in host calls.
#[derive(Debug, Clone, Copy)]
pub struct CallTime {
    started: Instant,
    limit: Duration,
    in_host: Duration,
    /// When the host call under way began.
    entered: Option<Instant>,
}

impl CallTime {
    /// A call beginning now, allowed `limit`.
    pub fn start(limit: Duration) -> CallTime {
        CallTime {
            started: Instant::now(),
            limit,
            in_host: Duration::ZERO,
            entered: None,
        }
    }

    /// The guest calls into the host.
    pub fn entering_host(&mut self) {
        self.entered = Some(Instant::now());
    }

    /// The host call returns: a hit if it blocked (took longer than
    /// [`BLOCKING`]) and the guest call's time is up. Quick calls past the
    /// limit are left to the epoch deadline, which stops the guest at its
    /// next check (the deadline's own trap passes through the host too).
    pub fn leaving_host(&mut self) -> Option<Hit> {
        let call = self.entered.take()?.elapsed();
        self.in_host += call;
        (call >= BLOCKING && self.started.elapsed() > self.limit).then_some(Hit::BlockedInHost {
            call,
            in_host: self.in_host,
        })
    }

    /// Time in host calls so far, and in all.
    pub fn spent(&self) -> (Duration, Duration) {
        (self.in_host, self.started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_call_that_ends_past_the_limit_is_a_hit_timed_by_the_host() {
        let mut t = CallTime::start(Duration::from_millis(50));
        t.entering_host();
        assert_eq!(t.leaving_host(), None, "quick, within the limit");
        std::thread::sleep(Duration::from_millis(60));
        t.entering_host();
        assert_eq!(t.leaving_host(), None, "quick, past the limit: the epoch's");
        t.entering_host();
        std::thread::sleep(Duration::from_millis(80));
        match t.leaving_host() {
            Some(Hit::BlockedInHost { call, in_host }) => {
                assert!(call >= Duration::from_millis(80), "{call:?}");
                assert!(in_host >= call);
            }
            other => panic!("{other:?}"),
        }
        assert!(t.leaving_host().is_none(), "no host call under way");
    }

    #[test]
    fn the_limiter_records_what_it_refused() {
        let mut l = Limiter::new(
            wasmtime::StoreLimitsBuilder::new()
                .memory_size(1 << 20)
                .trap_on_grow_failure(true)
                .build(),
        );
        assert!(matches!(l.memory_growing(0, 1 << 16, None), Ok(true)));
        assert_eq!(l.hit, None);
        assert!(l.memory_growing(1 << 16, 2 << 20, None).is_err());
        assert_eq!(l.hit, Some(Hit::Memory));
    }
}
