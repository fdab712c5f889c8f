//! The sending side of one delivery execution: a queue of messages per
//! account, fed a round at a time by the recording thread and emptied by
//! that account's lanes (`lanes.rs`), and what lets a message leave (a
//! place in the wave of messages without a recorded outcome, a place on the
//! wire, the account's concurrency and rate). Every message submitted is
//! answered or, if its lane is gone, abandoned: the recorder never waits
//! for an answer that cannot come.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::inbox::Inbox;
use crate::deliver::failure::Failure;
use crate::deliver::request::AnswerHeaders;
use crate::deliver::routes::Outcome;
use crate::deliver::routes::{Route, Wire};
use crate::runtime::channel::wit;
use crate::store::Store;

/// A message cleared to leave.
pub(crate) struct Send {
    /// Its target id.
    pub id: u64,
    /// What the plugin built.
    pub out: wit::Outgoing,
    /// The target record's stored address: the one suppression lists were
    /// checked for, and an email's envelope recipient.
    pub to: String,
    /// An email's Message-ID, the same on every attempt.
    pub message_id: Option<String>,
}

/// A round's messages.
pub(crate) type Sends = Vec<Send>;

/// One message to send: its round and its place in it.
pub(crate) type Job = (Arc<Sends>, usize);

/// A message's answer with its place in the wave, for the recording thread.
pub(crate) type Answered = (Arc<Sends>, usize, Outcome, OwnedSemaphorePermit);

/// The sending side of one delivery execution: lanes that live as long as
/// it does and take messages from the rounds submitted to them, so the next
/// round is prepared while the wire still carries this one.
pub(crate) struct Session {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    /// A queue, with its lanes, per (account, email or not).
    queues: Mutex<HashMap<(String, bool), Arc<Queue>>>,
}

/// What the lanes of a session share.
pub(crate) struct Shared {
    /// Where answers go.
    inbox: Inbox<Answered>,
    /// Places in the wave of messages sent without a recorded outcome.
    unrecorded: Arc<Semaphore>,
    /// Places on the wire, shared by every route.
    on_wire: Arc<Semaphore>,
    /// Set when the delivery stopped: nothing more is sent.
    stop: AtomicBool,
    /// Messages submitted that no lane has taken yet.
    backlog: AtomicUsize,
    /// The transports.
    pub(crate) wire: Arc<Wire>,
    /// For credentials.
    pub(crate) store: Store,
    /// The response headers the channel reads: all its answers carry.
    pub(crate) answer_headers: AnswerHeaders,
}

impl Shared {
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl Session {
    /// A session sending through `wire` on `runtime`, at most `on_wire`
    /// messages at once and `wave` without a recorded outcome.
    pub fn new(
        runtime: tokio::runtime::Handle,
        wire: Arc<Wire>,
        store: Store,
        on_wire: usize,
        wave: usize,
        answer_headers: AnswerHeaders,
    ) -> Session {
        Session {
            shared: Arc::new(Shared {
                inbox: Inbox::new(0),
                unrecorded: Arc::new(Semaphore::new(wave)),
                on_wire: Arc::new(Semaphore::new(on_wire)),
                stop: AtomicBool::new(false),
                backlog: AtomicUsize::new(0),
                wire,
                store,
                answer_headers,
            }),
            runtime,
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Messages submitted that no lane has taken yet.
    pub fn backlog(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// `n` messages of a round on their way to the lanes: their answers
    /// are awaited from now on, and they count in the backlog.
    pub fn expect(&self, n: usize) {
        self.shared.inbox.expect(n);
        self.shared.backlog.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` messages [`Session::expect`]ed that will never be submitted.
    pub fn unexpect(&self, n: usize) {
        self.shared.backlog.fetch_sub(n, Ordering::Relaxed);
        self.shared.inbox.abandon_many(n);
    }

    /// Hands a round's messages, [`Session::expect`]ed before, to the lanes
    /// of their accounts (resolved, and their lanes started, on first use).
    pub fn submit(&self, sends: Sends) {
        if sends.is_empty() {
            return;
        }
        let sends = Arc::new(sends);
        let mut by_queue: Vec<(Arc<Queue>, Vec<usize>)> = Vec::new();
        let _runtime = self.runtime.enter();
        let mut queues = self.queues();
        for (i, send) in sends.iter().enumerate() {
            let email = matches!(send.out.message, wit::Message::Email(_));
            let name = crate::deliver::account_of(&send.out.message);
            let queue = match queues.get(&(name.to_string(), email)) {
                Some(q) => q.clone(),
                None => {
                    let route = self
                        .shared
                        .wire
                        .route(&self.shared.store, name, email)
                        .map(Arc::new);
                    let q = Arc::new(Queue::new(route));
                    self.runtime
                        .spawn(super::lanes::carry(self.shared.clone(), q.clone()));
                    queues.insert((name.to_string(), email), q.clone());
                    q
                }
            };
            match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &queue)) {
                Some((_, jobs)) => jobs.push(i),
                None => by_queue.push((queue, vec![i])),
            }
        }
        drop(queues);
        for (queue, jobs) in by_queue {
            queue.push(&self.shared, jobs.into_iter().map(|i| (sends.clone(), i)));
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<(String, bool), Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `batch` answers, waiting up to `gather` for them once one is
    /// in; `None` when nothing submitted is still to answer.
    pub fn take(&self, batch: usize, gather: std::time::Duration) -> Option<Vec<Answered>> {
        self.shared.inbox.take(batch, gather)
    }

    /// Up to `batch` answers already in, without waiting.
    pub fn try_take(&self, batch: usize) -> Vec<Answered> {
        self.shared.inbox.try_take(batch)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Lanes finish what they hold and end; an early end (an error)
        // sends nothing more.
        if std::thread::panicking() {
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        for q in self.queues().values() {
            q.close();
        }
    }
}

impl Session {
    /// Stops sending: what lanes hold is finished, nothing more leaves.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for q in self.queues().values() {
            q.close();
        }
    }
}

/// One route's messages, taken in order by its lanes.
pub(crate) struct Queue {
    pub(crate) route: Result<Arc<Route>, Failure>,
    pending: Mutex<Pending>,
    /// Wakes lanes waiting for messages.
    more: Notify,
    /// No more messages will come.
    closed: AtomicBool,
}

struct Pending {
    jobs: VecDeque<Job>,
    /// Lanes alive (the starting task counts as one until it hands over).
    lanes: usize,
}

impl Queue {
    fn new(route: Result<Arc<Route>, Failure>) -> Queue {
        Queue {
            route,
            pending: Mutex::new(Pending {
                jobs: VecDeque::new(),
                lanes: 1,
            }),
            more: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, shared: &Shared, jobs: impl Iterator<Item = Job>) {
        let mut p = self.lock();
        if p.lanes == 0 {
            // Its lanes are gone: nothing will ever answer these.
            let n = jobs.count();
            shared.backlog.fetch_sub(n, Ordering::Relaxed);
            shared.inbox.abandon_many(n);
            return;
        }
        p.jobs.extend(jobs);
        drop(p);
        self.more.notify_waiters();
    }

    /// The next message, waiting for one; `None` once the queue is closed
    /// and empty, or the delivery stopped.
    async fn next(&self, shared: &Shared) -> Option<Job> {
        loop {
            let notified = self.more.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if shared.stopped() {
                return None;
            }
            if let Some(job) = self.lock().jobs.pop_front() {
                shared.backlog.fetch_sub(1, Ordering::Relaxed);
                return Some(job);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.more.notify_waiters();
    }

    /// One more lane for this queue.
    pub(crate) fn join(&self) {
        self.lock().lanes += 1;
    }

    /// A lane ended; the last one leaves what it did not take unanswered.
    fn leave(&self, shared: &Shared) {
        let mut p = self.lock();
        p.lanes -= 1;
        if p.lanes == 0 {
            let n = p.jobs.len();
            p.jobs.clear();
            shared.backlog.fetch_sub(n, Ordering::Relaxed);
            shared.inbox.abandon_many(n);
        }
    }
}

/// Counts a lane as alive while it runs, however it ends.
pub(crate) struct Lane(pub(crate) Arc<Shared>, pub(crate) Arc<Queue>);

impl Drop for Lane {
    fn drop(&mut self) {
        self.1.leave(&self.0);
    }
}

/// A message allowed to leave: its place in the wave (held until its
/// outcome is recorded), on the wire and in the account's concurrency.
pub(crate) struct Admission {
    pub(crate) job: Job,
    slot: Option<OwnedSemaphorePermit>,
    _wire: OwnedSemaphorePermit,
    _account: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
}

impl Admission {
    /// A message cleared to leave, holding its places until answered.
    fn new(
        job: Job,
        (slot, wire, account): (
            OwnedSemaphorePermit,
            OwnedSemaphorePermit,
            Option<OwnedSemaphorePermit>,
        ),
        shared: &Arc<Shared>,
    ) -> Admission {
        Admission {
            job,
            slot: Some(slot),
            _wire: wire,
            _account: account,
            shared: shared.clone(),
        }
    }

    /// The message to send.
    pub(crate) fn send(&self) -> &Send {
        &self.job.0[self.job.1]
    }

    pub(crate) fn answer(mut self, answer: Outcome) {
        let slot = self.slot.take().expect("answered once");
        let (sends, i) = (self.job.0.clone(), self.job.1);
        self.shared.inbox.put((sends, i, answer, slot));
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Dropped unanswered (its lane stopped): nothing will come for it.
        if self.slot.is_some() {
            self.shared.inbox.abandon();
        }
    }
}

/// Takes the route's next message and waits until it may leave; `None`
/// once there is none left or the delivery stopped.
pub(crate) async fn admit(shared: &Arc<Shared>, queue: &Queue) -> Option<Admission> {
    let job = queue.next(shared).await?;
    // From here on the message is this lane's to answer (or abandon).
    let mut taken = Taken(Some(job), shared);
    let slot = shared.unrecorded.clone().acquire_owned().await.ok()?;
    let wire = shared.on_wire.clone().acquire_owned().await.ok()?;
    let account = match &queue.route {
        Ok(route) => route.throttle.admit().await,
        Err(_) => None,
    };
    if shared.stopped() {
        return None;
    }
    let job = taken.0.take().expect("held until here");
    Some(Admission::new(job, (slot, wire, account), shared))
}

/// The route's next message if it may leave at once: one is waiting, and
/// places in the wave, on the wire and in the account's concurrency are
/// free, with no rate to wait for. `None` when anything must be waited for
/// ([`admit`] then waits): the common case costs no future, no waiter
/// registered and nothing boxed per message.
pub(crate) fn try_admit(shared: &Arc<Shared>, queue: &Queue) -> Option<Admission> {
    let Ok(route) = &queue.route else {
        return None;
    };
    if shared.stopped() || !route.throttle.immediate() {
        return None;
    }
    // The message first: an empty queue costs no permit taken and given
    // back. One that cannot leave yet goes back in front.
    let job = queue.lock().jobs.pop_front()?;
    let permits = (|| {
        let slot = shared.unrecorded.clone().try_acquire_owned().ok()?;
        let wire = shared.on_wire.clone().try_acquire_owned().ok()?;
        Some((slot, wire, route.throttle.try_admit()?))
    })();
    let Some((slot, wire, account)) = permits else {
        queue.lock().jobs.push_front(job);
        return None;
    };
    shared.backlog.fetch_sub(1, Ordering::Relaxed);
    Some(Admission::new(job, (slot, wire, Some(account)), shared))
}

/// A message taken from its queue and not yet admitted: abandoned if the
/// wait is given up.
struct Taken<'a>(Option<Job>, &'a Shared);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.1.inbox.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        Queue::new(Err(Failure::permanent(
            crate::store::deliveries::Cause::Account,
            "no route",
        )))
    }

    fn shared() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        Shared {
            inbox: Inbox::new(0),
            unrecorded: Arc::new(Semaphore::new(4)),
            on_wire: Arc::new(Semaphore::new(2)),
            stop: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            wire: Arc::new(Wire::for_tests(&store)),
            store,
            answer_headers: AnswerHeaders::default(),
        }
    }

    fn jobs(n: usize) -> impl Iterator<Item = Job> {
        let sends = Arc::new(Sends::new());
        (0..n).map(move |i| (sends.clone(), i))
    }

    #[tokio::test]
    async fn lanes_take_in_order_until_closed_and_empty() {
        let (s, q) = (shared(), queue());
        s.inbox.expect(3);
        s.backlog.fetch_add(3, Ordering::Relaxed);
        q.push(&s, jobs(3));
        assert_eq!(q.next(&s).await.map(|j| j.1), Some(0));
        q.close();
        assert_eq!(q.next(&s).await.map(|j| j.1), Some(1), "closed, not empty");
        assert_eq!(q.next(&s).await.map(|j| j.1), Some(2));
        assert!(q.next(&s).await.is_none());
        assert_eq!(s.backlog.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_waiting_lane_wakes_for_new_messages() {
        let s = Arc::new(shared());
        let q = Arc::new(queue());
        let waiter = {
            let (s, q) = (s.clone(), q.clone());
            tokio::spawn(async move { q.next(&s).await.map(|j| j.1) })
        };
        tokio::task::yield_now().await;
        s.inbox.expect(1);
        s.backlog.fetch_add(1, Ordering::Relaxed);
        q.push(&s, jobs(1));
        assert_eq!(waiter.await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn a_message_leaves_at_once_only_while_every_place_is_free() {
        let account: crate::store::settings::Account = serde_json::from_value(
            serde_json::json!({ "name": "acct", "url": "https://push.example" }),
        )
        .unwrap();
        let route = crate::deliver::routes::Route {
            throttle: crate::deliver::pipeline::throttle::Throttles::default().of(&account),
            way: crate::deliver::routes::Way::Http(Box::new(
                crate::deliver::request::Target::new(&account).unwrap(),
            )),
            account,
        };
        let s = Arc::new(shared());
        let q = Queue::new(Ok(Arc::new(route)));
        assert!(try_admit(&s, &q).is_none(), "nothing queued");
        assert_eq!(s.on_wire.available_permits(), 2, "no permit taken");
        s.inbox.expect(3);
        s.backlog.fetch_add(3, Ordering::Relaxed);
        q.push(&s, jobs(3));
        let first = try_admit(&s, &q).expect("a place on the wire");
        let second = try_admit(&s, &q).expect("another place on the wire");
        assert_eq!((first.job.1, second.job.1), (0, 1));
        // Two on the wire: the third waits, first in its queue.
        assert!(try_admit(&s, &q).is_none());
        assert_eq!(s.backlog.load(Ordering::Relaxed), 1);
        drop(second);
        let third = try_admit(&s, &q).expect("a place freed");
        assert_eq!(third.job.1, 2);
        assert_eq!(s.backlog.load(Ordering::Relaxed), 0);
        drop(first);
    }

    #[test]
    fn messages_left_when_the_last_lane_ends_are_abandoned() {
        let (s, q) = (shared(), queue());
        s.inbox.expect(5);
        s.backlog.fetch_add(5, Ordering::Relaxed);
        q.push(&s, jobs(5));
        // The starting lane ends without taking anything: all five abandoned,
        // and later ones too, so the recorder never waits for them.
        q.leave(&s);
        s.inbox.expect(2);
        s.backlog.fetch_add(2, Ordering::Relaxed);
        q.push(&s, jobs(2));
        assert_eq!(s.backlog.load(Ordering::Relaxed), 0);
        assert!(
            s.inbox
                .take(10, std::time::Duration::from_millis(1))
                .is_none()
        );
    }
}
