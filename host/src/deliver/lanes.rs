//! Lanes: how a round's messages reach their account.
//!
//! A lane is one task holding one connection. An HTTP/1.1 or SMTP lane
//! carries one message at a time; an HTTP/2 lane keeps up to the
//! concurrency's worth of streams open on its connection. A lane takes the
//! next message as soon as it may leave (a place in the wave of messages
//! without a recorded outcome, a place on the wire, the account's
//! concurrency and rate), sends it and leaves the answer in the inbox.
//!
//! One task per connection rather than one per message: nothing is
//! spawned, looked up in a pool or handed between tasks per message, and
//! the streams an HTTP/2 lane opens while it handles a burst of answers
//! leave in one write.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::connections::{Conn, H2};
use super::http::{self, HttpTransport, Target};
use super::inbox::Inbox;
use super::{Route, Way, Wire};
use crate::runtime::channel::wit;
use crate::store::Store;

/// A round's messages: (target id, message).
pub(super) type Sends = Vec<(u64, wit::Outgoing)>;

/// One message to send: its round and its place in it.
type Job = (Arc<Sends>, usize);

/// A message's answer with its place in the wave, for the recording thread.
pub(super) type Answered = (Arc<Sends>, usize, wit::Answer, OwnedSemaphorePermit);

/// The sending side of one delivery execution: lanes that live as long as
/// it does and take messages from the rounds submitted to them, so the next
/// round is prepared while the wire still carries this one.
pub(super) struct Session {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    /// A queue, with its lanes, per (account, email or not).
    queues: HashMap<(String, bool), Arc<Queue>>,
}

/// What the lanes of a session share.
struct Shared {
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
    wire: Arc<Wire>,
    /// For credentials.
    store: Store,
}

impl Shared {
    fn stopped(&self) -> bool {
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
            }),
            runtime,
            queues: HashMap::new(),
        }
    }

    /// Messages submitted that no lane has taken yet.
    pub fn backlog(&self) -> usize {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// Hands a round's messages to the lanes of their accounts (resolved,
    /// and their lanes started, on first use).
    pub fn submit(&mut self, sends: Sends) {
        if sends.is_empty() {
            return;
        }
        let sends = Arc::new(sends);
        self.shared.inbox.expect(sends.len());
        self.shared
            .backlog
            .fetch_add(sends.len(), Ordering::Relaxed);
        let mut by_queue: Vec<(Arc<Queue>, Vec<usize>)> = Vec::new();
        let _runtime = self.runtime.enter();
        for (i, (_, out)) in sends.iter().enumerate() {
            let email = matches!(out.message, wit::Message::Email(_));
            let name = super::account_of(&out.message);
            let queue = match self.queues.get(&(name.to_string(), email)) {
                Some(q) => q.clone(),
                None => {
                    let route = self
                        .shared
                        .wire
                        .route(&self.shared.store, name, email)
                        .map(Arc::new);
                    let q = Arc::new(Queue::new(route));
                    self.runtime.spawn(carry(self.shared.clone(), q.clone()));
                    self.queues.insert((name.to_string(), email), q.clone());
                    q
                }
            };
            match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &queue)) {
                Some((_, jobs)) => jobs.push(i),
                None => by_queue.push((queue, vec![i])),
            }
        }
        for (queue, jobs) in by_queue {
            queue.push(&self.shared, jobs.into_iter().map(|i| (sends.clone(), i)));
        }
    }

    /// Up to `batch` answers, waiting up to `gather` for them once one is
    /// in; `None` when nothing submitted is still to answer.
    pub fn take(&self, batch: usize, gather: std::time::Duration) -> Option<Vec<Answered>> {
        self.shared.inbox.take(batch, gather)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Lanes finish what they hold and end; an early end (an error)
        // sends nothing more.
        if std::thread::panicking() {
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        for q in self.queues.values() {
            q.close();
        }
    }
}

impl Session {
    /// Stops sending: what lanes hold is finished, nothing more leaves.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for q in self.queues.values() {
            q.close();
        }
    }
}

/// One route's messages, taken in order by its lanes.
struct Queue {
    route: Result<Arc<Route>, String>,
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
    fn new(route: Result<Arc<Route>, String>) -> Queue {
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
    fn join(&self) {
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
struct Lane(Arc<Shared>, Arc<Queue>);

impl Drop for Lane {
    fn drop(&mut self) {
        self.1.leave(&self.0);
    }
}

/// A message allowed to leave: its place in the wave (held until its
/// outcome is recorded), on the wire and in the account's concurrency.
struct Admission {
    job: Job,
    slot: Option<OwnedSemaphorePermit>,
    _wire: OwnedSemaphorePermit,
    _account: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
    /// Sent again once already (its first connection went away unprocessed).
    again: bool,
}

impl Admission {
    fn message(&self) -> &wit::Message {
        &self.job.0[self.job.1].1.message
    }

    fn answer(mut self, answer: wit::Answer) {
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
async fn admit(shared: &Arc<Shared>, queue: &Queue) -> Option<Admission> {
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
    Some(Admission {
        job: taken.0.take().expect("held until here"),
        slot: Some(slot),
        _wire: wire,
        _account: account,
        shared: shared.clone(),
        again: false,
    })
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

/// Runs a route's lanes, as many as its protocol, the delivery and the
/// account allow, until its queue is closed and empty or the delivery
/// stops.
async fn carry(shared: Arc<Shared>, queue: Arc<Queue>) {
    // The starting lane: counted since the queue was made.
    let lane = Lane(shared.clone(), queue.clone());
    let mut lanes = super::CONCURRENCY;
    if let Ok(route) = &queue.route {
        lanes = lanes.min(route.throttle.concurrency());
    }
    let mut first = None;
    if let Ok(route) = &queue.route
        && let Way::Http(target) = &route.way
    {
        // The first connection tells the protocol: HTTP/2 multiplexes.
        match shared.wire.http.connections.get(&target.origin).await {
            Ok(Conn::H2(h2)) => return multiplexed(lane, h2, lanes).await,
            Ok(h1) => first = Some(h1),
            // Each message tries again and reports why it failed.
            Err(_) => {}
        }
    }
    for _ in 0..lanes {
        queue.join();
        let lane = Lane(shared.clone(), queue.clone());
        tokio::spawn(sequential(lane, first.take()));
    }
    drop(lane);
}

/// A lane carrying one message at a time (HTTP/1.1, SMTP).
async fn sequential(lane: Lane, mut conn: Option<Conn>) {
    let Lane(shared, queue) = &lane;
    while let Some(admission) = admit(shared, queue).await {
        let answer = match (&queue.route, admission.message()) {
            (Err(e), _) => wit::Answer::TransportError(e.clone()),
            (Ok(route), message) => match (&route.way, message) {
                (Way::Smtp(relay), wit::Message::Email(e)) => {
                    super::smtp::SmtpTransports::send(relay, e).await
                }
                (Way::Http(target), wit::Message::Http(h)) => {
                    one_http(shared, route, target, &mut conn, h).await
                }
                _ => mismatch(route),
            },
        };
        admission.answer(answer);
    }
    if let (Some(Conn::H1(h1)), Ok(route)) = (conn, &queue.route)
        && let Way::Http(target) = &route.way
    {
        shared.wire.http.connections.put_back(&target.origin, h1);
    }
}

fn mismatch(route: &Route) -> wit::Answer {
    wit::Answer::TransportError(format!(
        "{}account `{}` was resolved for another kind of message",
        http::REFUSED,
        route.account.name
    ))
}

/// The account's credential as a header, or the answer that refuses the
/// message.
async fn authorization(
    shared: &Shared,
    route: &Route,
) -> Result<Option<::http::HeaderValue>, wit::Answer> {
    shared
        .wire
        .http
        .credential(&shared.store, &route.account)
        .await
        .map_err(|e| wit::Answer::TransportError(format!("{}credentials: {e}", http::REFUSED)))
}

/// Sends one HTTP message on the lane's connection (opening one if it has
/// none or it closed), once more on a new connection if it never left.
async fn one_http(
    shared: &Shared,
    route: &Route,
    target: &Target,
    conn: &mut Option<Conn>,
    h: &wit::HttpRequest,
) -> wit::Answer {
    let authorization = match authorization(shared, route).await {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let mut unsent = None;
    for _ in 0..2 {
        let open = match conn.take() {
            Some(Conn::H1(h1)) if !h1.is_closed() => Conn::H1(h1),
            Some(Conn::H2(h2)) if !h2.is_closed() => Conn::H2(h2),
            _ => match shared.wire.http.connections.get(&target.origin).await {
                Ok(c) => c,
                Err(e) => {
                    let url = format!("{}{}", target.origin.key, h.path);
                    return http::transport_error(&url, &*e);
                }
            },
        };
        let h2 = matches!(open, Conn::H2(_));
        let out = match HttpTransport::request(target, h, authorization.as_ref(), h2) {
            Ok(out) => out,
            Err(answer) => return answer,
        };
        match open {
            Conn::H1(mut h1) => {
                let request = unsent
                    .take()
                    .unwrap_or_else(|| http::h1_request(out.head, out.body));
                match http::send_h1(&mut h1, request, &out.url).await {
                    Ok(answer) => {
                        *conn = Some(Conn::H1(h1));
                        return answer;
                    }
                    // The connection had closed: the request goes on another.
                    Err(request) => unsent = Some(request),
                }
            }
            Conn::H2(h2c) => {
                let answer = match http::start_h2(&h2c, out.head, out.body) {
                    Ok(response) => http::finish_h2(response, out.url).await,
                    Err(e) => http::transport_error(&out.url, &e),
                };
                if !http::unprocessed(&answer) {
                    *conn = Some(Conn::H2(h2c));
                    return answer;
                }
            }
        }
    }
    wit::Answer::TransportError(format!(
        "HTTP {}{}: the connection closed twice before the request left",
        target.origin.key, h.path
    ))
}

/// A message admitted with the credential it goes out with.
type Ready = (Admission, Result<Option<::http::HeaderValue>, wit::Answer>);

/// What an HTTP/2 lane waits for next.
enum Event {
    /// A stream answered.
    Answered(Admission, wit::Answer),
    /// The next message may leave (`None`: no more will).
    Admitted(Option<Ready>),
}

/// A lane keeping up to `streams` streams open on one HTTP/2 connection.
async fn multiplexed(lane: Lane, mut h2: H2, streams: usize) {
    let Lane(shared, queue) = &lane;
    let Ok(route) = queue.route.clone() else {
        return;
    };
    let Way::Http(target) = &route.way else {
        return;
    };
    let mut inflight = FuturesUnordered::new();
    type Next = Pin<Box<dyn Future<Output = Option<Ready>> + Send>>;
    let mut next: Option<Next> = None;
    let mut exhausted = false;
    loop {
        if next.is_none() && !exhausted && inflight.len() < streams {
            let (shared, queue, route) = (shared.clone(), queue.clone(), route.clone());
            next = Some(Box::pin(async move {
                let admission = admit(&shared, &queue).await?;
                let authorization = authorization(&shared, &route).await;
                Some((admission, authorization))
            }));
        }
        if next.is_none() && inflight.is_empty() {
            break;
        }
        // Answers first: each frees a stream for the next message.
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(Some((admission, answer))) = inflight.poll_next_unpin(cx) {
                return Poll::Ready(Event::Answered(admission, answer));
            }
            if let Some(n) = next.as_mut()
                && let Poll::Ready(ready) = n.as_mut().poll(cx)
            {
                return Poll::Ready(Event::Admitted(ready));
            }
            Poll::Pending
        })
        .await;
        let (admission, authorization) = match event {
            Event::Answered(mut admission, answer) => {
                // Streams the provider never processed (its connection went
                // away first) go again, once, on a new connection.
                if !http::unprocessed(&answer) || admission.again || shared.stopped() {
                    admission.answer(answer);
                    continue;
                }
                admission.again = true;
                let authorization = authorization(shared, &route).await;
                (admission, authorization)
            }
            Event::Admitted(None) => {
                next = None;
                exhausted = true;
                continue;
            }
            Event::Admitted(Some(ready)) => {
                next = None;
                ready
            }
        };
        let job = admission.job.clone();
        let wit::Message::Http(h) = &job.0[job.1].1.message else {
            admission.answer(mismatch(&route));
            continue;
        };
        let authorization = match authorization {
            Ok(a) => a,
            Err(answer) => {
                admission.answer(answer);
                continue;
            }
        };
        if h2.is_closed() {
            match shared.wire.http.connections.get(&target.origin).await {
                Ok(Conn::H2(fresh)) => h2 = fresh,
                // The provider now speaks HTTP/1.1: this message goes
                // alone, the lane goes on trying HTTP/2.
                Ok(h1) => {
                    let mut conn = Some(h1);
                    let answer = one_http(shared, &route, target, &mut conn, h).await;
                    if let Some(Conn::H1(h1)) = conn {
                        shared.wire.http.connections.put_back(&target.origin, h1);
                    }
                    admission.answer(answer);
                    continue;
                }
                Err(e) => {
                    let url = format!("{}{}", target.origin.key, h.path);
                    admission.answer(http::transport_error(&url, &*e));
                    continue;
                }
            }
        }
        let out = match HttpTransport::request(target, h, authorization.as_ref(), true) {
            Ok(out) => out,
            Err(answer) => {
                admission.answer(answer);
                continue;
            }
        };
        match http::start_h2(&h2, out.head, out.body) {
            Ok(response) => {
                let url = out.url;
                inflight.push(async move { (admission, http::finish_h2(response, url).await) });
            }
            Err(e) => admission.answer(http::transport_error(&out.url, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        Queue::new(Err("no route".into()))
    }

    fn shared() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Shared {
            inbox: Inbox::new(0),
            unrecorded: Arc::new(Semaphore::new(4)),
            on_wire: Arc::new(Semaphore::new(2)),
            stop: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            wire: Arc::new(Wire::for_tests(&store)),
            store,
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
