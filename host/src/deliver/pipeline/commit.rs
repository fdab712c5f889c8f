//! Group commit of the delivery log on a thread of its own.
//!
//! A flush waits on the disk: half a millisecond usually, now and then a
//! hundred times that on a shared machine. Made by the recording thread, it
//! kept that thread from the answers, and the places in the wave it held
//! stopped the lanes. Here the recording thread writes and goes on, and what
//! may only happen once its writes are durable waits for the next flush: a
//! round's messages leave once their intents are on disk, and an answer's
//! place in the wave is given back once its outcome is. Whatever is asked
//! while a flush runs waits for the next one, so flushes never outnumber
//! the recording thread's turns.

use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::OwnedSemaphorePermit;

use super::session::{Sends, Session};
use crate::store::Store;

/// What waits for the writes made before it was asked to be durable.
pub(crate) enum Then {
    /// A round's messages may leave: their intents are on disk.
    Submit(Sends),
    /// Places in the wave are free: their outcomes are on disk.
    Release(Vec<OwnedSemaphorePermit>),
    /// Panics on the flushing thread, as a bug there would.
    #[cfg(test)]
    Crash,
}

/// The flushing thread of one delivery execution.
pub(crate) struct Committer {
    inner: Arc<Inner>,
    session: Arc<Session>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Asked since the running flush (if any) began.
    queued: Vec<Then>,
    /// No more will be asked: flush what is queued and end.
    closing: bool,
    /// The delivery stopped: nothing queued is sent any more.
    aborted: bool,
    /// The first flush that failed.
    error: Option<String>,
    /// Messages of queued rounds: expected by the session, not yet handed
    /// over (or given up).
    unsent: usize,
}

impl State {
    /// The flushing thread failed (a bug).
    fn failed(&mut self) {
        self.error
            .get_or_insert_with(|| "the delivery log's flushing thread failed".into());
    }
}

impl Committer {
    /// Starts the thread flushing `store` and handing rounds to `session`.
    pub fn start(store: Store, session: Arc<Session>) -> Committer {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let thread = {
            let (inner, session) = (inner.clone(), session.clone());
            std::thread::Builder::new()
                .name("crosscast-commit".into())
                .spawn(move || inner.guarded(&store, &session))
                .expect("a thread can be spawned")
        };
        Committer {
            inner,
            session,
            thread: Some(thread),
        }
    }

    /// Does `then` once everything written so far is durable (a round's
    /// answers are awaited by the session from now on); the error of a
    /// flush that failed, which stops the delivery.
    pub fn then(&self, then: Then) -> Result<(), String> {
        let mut s = self.inner.lock();
        if let Some(e) = &s.error {
            return Err(e.clone());
        }
        if let Then::Submit(sends) = &then {
            self.session.expect(sends.len());
            s.unsent += sends.len();
        }
        s.queued.push(then);
        drop(s);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// The error of a flush that failed, if one did.
    pub fn check(&self) -> Result<(), String> {
        match &self.inner.lock().error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Waits until everything written is durable (or a flush failed).
    pub fn finish(mut self) -> Result<(), String> {
        self.close(false);
        self.check()
    }

    /// Stops at once: rounds not yet handed over never leave.
    pub fn abort(mut self) {
        self.close(true);
    }

    fn close(&mut self, abort: bool) {
        {
            let mut s = self.inner.lock();
            s.closing = true;
            s.aborted |= abort;
        }
        self.inner.wake.notify_one();
        if let Some(t) = self.thread.take() {
            // Its panic (a bug) must not pass for durability.
            if t.join().is_err() {
                self.inner.lock().failed();
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Dropped without finishing (the delivery failed): send nothing more.
        if self.thread.is_some() {
            self.close(true);
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the thread; a panic (a bug) fails the delivery, and the
    /// recording thread stops waiting for rounds that never left.
    fn guarded(&self, store: &Store, session: &Session) {
        let run = std::panic::AssertUnwindSafe(|| self.run(store, session));
        if std::panic::catch_unwind(run).is_err() {
            let unsent = {
                let mut s = self.lock();
                s.failed();
                std::mem::take(&mut s.unsent)
            };
            session.unexpect(unsent);
        }
    }

    fn run(&self, store: &Store, session: &Session) {
        loop {
            let (batch, aborted) = {
                let mut s = self.lock();
                while s.queued.is_empty() && !s.closing {
                    s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if s.queued.is_empty() {
                    return;
                }
                (
                    std::mem::take(&mut s.queued),
                    s.aborted || s.error.is_some(),
                )
            };
            // Taken before flushing: everything written before it was
            // asked is covered by this flush.
            let flushed = if aborted {
                Err(None)
            } else {
                store.flush().map_err(|e| Some(e.to_string()))
            };
            if let Err(Some(e)) = &flushed {
                self.lock()
                    .error
                    .get_or_insert_with(|| format!("the delivery log could not be flushed: {e}"));
            }
            for then in batch {
                match then {
                    Then::Submit(sends) => {
                        let n = sends.len();
                        if flushed.is_ok() && !self.lock().aborted {
                            session.submit(sends);
                        } else {
                            // Never sent: the recording thread expects no
                            // answer for them.
                            session.unexpect(n);
                        }
                        self.lock().unsent -= n;
                    }
                    Then::Release(slots) => drop(slots),
                    #[cfg(test)]
                    Then::Crash => panic!("a bug on the flushing thread"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::channel::wit;
    use tokio::sync::Semaphore;

    fn sends(n: u64) -> Sends {
        (0..n)
            .map(|id| {
                let message = wit::Message::Http(wit::HttpRequest {
                    account: "sms".into(),
                    method: "POST".into(),
                    path: "/".into(),
                    recipient: format!("+1555000{id:04}"),
                    headers: Vec::new(),
                    body: Vec::new(),
                });
                let out = wit::Outgoing {
                    message,
                    parts: 1,
                    note: None,
                };
                super::super::session::Send {
                    id,
                    to: format!("+1555000{id:04}"),
                    out,
                    message_id: None,
                }
            })
            .collect()
    }

    fn session(store: &Store, rt: &tokio::runtime::Runtime) -> Arc<Session> {
        let wire = Arc::new(crate::deliver::routes::Wire::for_tests(store));
        Arc::new(Session::new(
            rt.handle().clone(),
            wire,
            store.clone(),
            2,
            4,
            Default::default(),
        ))
    }

    /// The recording thread's `take` ends at once: no answer is awaited
    /// (asked on a thread of its own, so that a wrong wait fails, not hangs).
    fn awaits_nothing(session: &Arc<Session>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let session = session.clone();
        std::thread::spawn(move || {
            let taken = session.take(10, std::time::Duration::from_millis(10));
            let _ = tx.send(taken.map(|t| t.len()));
        });
        let taken = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(taken, Ok(None), "nothing awaited");
    }

    #[test]
    fn places_in_the_wave_come_back_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let wave = Arc::new(Semaphore::new(4));
        let held: Vec<_> = (0..3)
            .map(|_| wave.clone().try_acquire_owned().unwrap())
            .collect();
        let commit = Committer::start(store.clone(), session(&store, &rt));
        commit.then(Then::Release(held)).unwrap();
        commit.finish().unwrap();
        assert_eq!(wave.available_permits(), 4);
    }

    /// A store, and a session expecting a round of three messages.
    fn expecting_three() -> (
        tempfile::TempDir,
        Store,
        tokio::runtime::Runtime,
        Arc<Session>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let session = session(&store, &rt);
        session.expect(3);
        (dir, store, rt, session)
    }

    /// A committer's state, run by hand: closing, with `queued` (rounds of
    /// three messages the session expects).
    fn closing(queued: Vec<Then>, aborted: bool) -> Inner {
        Inner {
            state: Mutex::new(State {
                queued,
                closing: true,
                aborted,
                unsent: 3,
                ..State::default()
            }),
            wake: Condvar::new(),
        }
    }

    #[test]
    fn rounds_queued_when_the_delivery_stops_never_leave() {
        let (_dir, store, _rt, session) = expecting_three();
        assert_eq!(session.backlog(), 3);
        // Already stopped, so that the round is still queued.
        let inner = closing(vec![Then::Submit(sends(3))], true);
        inner.run(&store, &session);
        // Not sent, and not awaited: the recording thread ends at once.
        assert_eq!(session.backlog(), 0);
        awaits_nothing(&session);
    }

    #[test]
    fn a_bug_on_the_flushing_thread_fails_the_delivery_without_a_hang() {
        let (_dir, store, _rt, session) = expecting_three();
        let inner = closing(vec![Then::Crash, Then::Submit(sends(3))], false);
        inner.guarded(&store, &session);
        assert!(
            inner.lock().error.as_deref().unwrap().contains("failed"),
            "the delivery fails"
        );
        // The round never left, and the recording thread waits for nothing.
        assert_eq!(session.backlog(), 0);
        awaits_nothing(&session);
    }
}
