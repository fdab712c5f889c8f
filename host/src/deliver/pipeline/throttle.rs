//! Per-account rate limits and concurrency: what a provider allows.
//!
//! An account may set `rate` (messages per second) and `concurrency`
//! (messages in flight at once); every delivery through the account in this
//! process shares them. Sends are spaced evenly (no bursts), so any window
//! of `t` seconds holds at most `rate × t + 1` messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::store::settings::Account;

/// Messages in flight at once when an account sets no concurrency.
pub const DEFAULT_CONCURRENCY: u32 = 32;

/// The most an account may allow in flight: a crash may repeat four times
/// as many messages, and that stays bounded.
pub const MAX_CONCURRENCY: u32 = 1024;

/// The limits of one account.
pub struct Throttle {
    rate: Option<u32>,
    concurrency: u32,
    slots: Arc<Semaphore>,
    next: Mutex<Option<Instant>>,
}

impl Throttle {
    fn new(rate: Option<u32>, concurrency: u32) -> Throttle {
        Throttle {
            rate,
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            next: Mutex::new(None),
        }
    }

    /// Messages this account allows in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency.max(1) as usize
    }

    /// Waits for a free slot and for the message's turn under the rate;
    /// the slot is held until the permit drops (the answer is in).
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.slots.clone().acquire_owned().await.ok();
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let step = Duration::from_secs(1) / rate;
            let at = {
                let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let at = next.map_or(now, |n| n.max(now));
                *next = Some(at + step);
                at
            };
            tokio::time::sleep_until(at).await;
        }
        permit
    }
}

impl Throttle {
    /// True when a message never waits for its turn under a rate (only
    /// for a slot).
    pub fn immediate(&self) -> bool {
        self.rate.is_none_or(|r| r == 0)
    }

    /// A slot if one is free now; only for an [`Throttle::immediate`]
    /// account, since a rate's turn is always waited for.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        debug_assert!(self.immediate());
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// Throttles by account name, built on first use.
#[derive(Default)]
pub struct Throttles {
    by_account: Mutex<HashMap<String, Arc<Throttle>>>,
}

impl Throttles {
    /// The throttle of `account` (rebuilt if its limits changed).
    pub fn of(&self, account: &Account) -> Arc<Throttle> {
        let concurrency = account.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        let mut map = self.by_account.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&account.name) {
            Some(t) if t.rate == account.rate && t.concurrency == concurrency => t.clone(),
            _ => {
                let t = Arc::new(Throttle::new(account.rate, concurrency));
                map.insert(account.name.clone(), t.clone());
                t
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_are_spaced_by_the_rate() {
        let t = Arc::new(Throttle::new(Some(10), 4));
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            let _p = t.admit().await;
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, [0, 100, 200, 300, 400]);
    }

    #[tokio::test]
    async fn concurrency_bounds_permits() {
        let t = Throttle::new(None, 2);
        let a = t.admit().await;
        let b = t.admit().await;
        assert!(a.is_some() && b.is_some());
        assert_eq!(t.slots.available_permits(), 0);
        drop(a);
        assert_eq!(t.slots.available_permits(), 1);
    }
}
