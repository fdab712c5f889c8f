//! Where sending tasks leave answers for the thread that records them.
//!
//! The recording thread wakes once per batch, not once per answer: a
//! sender wakes it only when it sleeps and what it waits for is there (the
//! first answer, when it had nothing to do; a full batch, when gathering).
//! Otherwise it sleeps until the batch's gathering time is up, and while it
//! records nobody signals it at all. Answers come from the runtime's threads
//! and recording is synchronous (wasm and sled), so a per-answer signal
//! costs a futex call (and often a context switch) per message.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A queue of items with batch-sized wake-ups.
pub struct Inbox<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

struct State<T> {
    items: Vec<T>,
    /// Items that make a batch worth waking for.
    want: usize,
    /// Senders still expected to put (or to drop without putting).
    open: usize,
    /// The receiver sleeps, waiting for `want` items.
    waiting: bool,
}

impl<T> Inbox<T> {
    /// An inbox expecting `senders` puts (or [`Inbox::abandon`]s).
    pub fn new(senders: usize) -> Inbox<T> {
        Inbox {
            state: Mutex::new(State {
                items: Vec::new(),
                want: 1,
                open: senders,
                waiting: false,
            }),
            ready: Condvar::new(),
        }
    }

    /// `n` more puts (or abandons) to expect.
    pub fn expect(&self, n: usize) {
        self.lock().open += n;
    }

    /// Leaves one item; wakes the receiver if it waits for this one.
    pub fn put(&self, item: T) {
        let mut s = self.lock();
        s.items.push(item);
        s.open = s.open.saturating_sub(1);
        if s.waiting && (s.items.len() >= s.want || s.open == 0) {
            s.waiting = false;
            self.ready.notify_one();
        }
    }

    /// A sender that will never put (its task stopped).
    pub fn abandon(&self) {
        self.abandon_many(1);
    }

    /// `n` senders that will never put.
    pub fn abandon_many(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut s = self.lock();
        s.open = s.open.saturating_sub(n);
        if s.waiting && (s.open == 0 || s.items.len() >= s.want) {
            s.waiting = false;
            self.ready.notify_one();
        }
    }

    /// Waits for at least one item, then up to `gather` for `batch` of them
    /// (fewer if fewer are still expected); `None` once nothing is left to
    /// come.
    pub fn take(&self, batch: usize, gather: Duration) -> Option<Vec<T>> {
        let mut s = self.lock();
        while s.items.is_empty() {
            if s.open == 0 {
                return None;
            }
            s.want = 1;
            s.waiting = true;
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
            s.waiting = false;
        }
        let until = Instant::now() + gather;
        loop {
            let want = batch.min(s.items.len() + s.open);
            if s.items.len() >= want {
                break;
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            s.want = want;
            s.waiting = true;
            s = self
                .ready
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            s.waiting = false;
        }
        s.want = 1;
        let n = s.items.len().min(batch);
        let rest = s.items.split_off(n);
        Some(std::mem::replace(&mut s.items, rest))
    }

    /// Up to `batch` items already in, without waiting.
    pub fn try_take(&self, batch: usize) -> Vec<T> {
        let mut s = self.lock();
        let n = s.items.len().min(batch);
        let rest = s.items.split_off(n);
        std::mem::replace(&mut s.items, rest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn batches_fill_up_and_the_last_one_is_short() {
        let inbox = Arc::new(Inbox::new(10));
        let senders = {
            let inbox = inbox.clone();
            std::thread::spawn(move || (0..10).for_each(|i| inbox.put(i)))
        };
        let mut got = Vec::new();
        while let Some(batch) = inbox.take(4, Duration::from_secs(5)) {
            assert!(!batch.is_empty() && batch.len() <= 4, "{batch:?}");
            got.extend(batch);
        }
        senders.join().unwrap();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_partial_batch_leaves_when_gathering_time_is_up() {
        let inbox = Inbox::new(3);
        inbox.put(1);
        let start = Instant::now();
        assert_eq!(inbox.take(3, Duration::from_millis(20)), Some(vec![1]));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn abandoned_senders_end_the_wait() {
        let inbox = Inbox::<u32>::new(2);
        inbox.put(7);
        inbox.abandon();
        // Nothing more can come: no waiting for a full batch.
        assert_eq!(inbox.take(2, Duration::from_secs(60)), Some(vec![7]));
        assert_eq!(inbox.take(2, Duration::from_secs(60)), None);
    }

    #[test]
    fn try_take_returns_what_is_in_without_waiting() {
        let inbox = Inbox::new(5);
        assert!(inbox.try_take(4).is_empty());
        (0..3).for_each(|i| inbox.put(i));
        assert_eq!(inbox.try_take(2), vec![0, 1]);
        // Still expecting two more: a blocking take would wait for them.
        assert_eq!(inbox.try_take(4), vec![2]);
        assert!(inbox.try_take(4).is_empty());
    }
}
