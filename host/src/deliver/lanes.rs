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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connections::{Conn, H2};
use super::http::{self, HttpTransport, Target};
use super::inbox::Inbox;
use super::{Route, Way, Wire};
use crate::runtime::channel::wit;
use crate::store::Store;

/// A message's answer with its place in the wave, for the recording thread.
pub(super) type Answered = (usize, wit::Answer, OwnedSemaphorePermit);

/// What the lanes of one round share.
pub(super) struct Round {
    /// The round's messages, by index.
    pub sends: Arc<Vec<(u64, wit::Outgoing)>>,
    /// Where answers go.
    pub inbox: Arc<Inbox<Answered>>,
    /// Places in the wave of messages sent without a recorded outcome.
    pub unrecorded: Arc<Semaphore>,
    /// Places on the wire, shared by every route of the round.
    pub on_wire: Arc<Semaphore>,
    /// Set when recording failed: nothing more is sent.
    pub stop: AtomicBool,
    /// The transports.
    pub wire: Arc<Wire>,
    /// For credentials.
    pub store: Store,
}

impl Round {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One route's messages (indices into `sends`), taken in order by its lanes.
pub(super) struct Queue {
    route: Result<Arc<Route>, String>,
    jobs: Vec<usize>,
    next: AtomicUsize,
}

impl Queue {
    /// The messages `jobs` through `route` (or the reason it has none).
    pub fn new(route: Result<Arc<Route>, String>, jobs: Vec<usize>) -> Queue {
        Queue {
            route,
            jobs,
            next: AtomicUsize::new(0),
        }
    }

    fn has_more(&self) -> bool {
        self.next.load(Ordering::Relaxed) < self.jobs.len()
    }

    fn take(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.jobs.get(i).copied()
    }

    /// Ends the queue: what was not taken will never be answered.
    fn close(&self, inbox: &Inbox<Answered>) {
        let taken = self.next.swap(self.jobs.len(), Ordering::Relaxed);
        inbox.abandon_many(self.jobs.len().saturating_sub(taken));
    }
}

/// Closes its queue when its lane ends, however it ends.
struct Closer(Arc<Round>, Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.1.close(&self.0.inbox);
    }
}

/// A message allowed to leave: its place in the wave (held until its
/// outcome is recorded), on the wire and in the account's concurrency.
struct Admission {
    index: usize,
    slot: Option<OwnedSemaphorePermit>,
    _wire: OwnedSemaphorePermit,
    _account: Option<OwnedSemaphorePermit>,
    inbox: Arc<Inbox<Answered>>,
    /// Sent again once already (its first connection went away unprocessed).
    again: bool,
}

impl Admission {
    fn answer(mut self, answer: wit::Answer) {
        let slot = self.slot.take().expect("answered once");
        self.inbox.put((self.index, answer, slot));
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Dropped unanswered (its lane stopped): nothing will come for it.
        if self.slot.is_some() {
            self.inbox.abandon();
        }
    }
}

/// Waits until the route's next message may leave; `None` once there is
/// none left or the round stopped.
async fn admit(round: &Round, queue: &Queue) -> Option<Admission> {
    if round.stopped() || !queue.has_more() {
        return None;
    }
    let slot = round.unrecorded.clone().acquire_owned().await.ok()?;
    let wire = round.on_wire.clone().acquire_owned().await.ok()?;
    let account = match &queue.route {
        Ok(route) => route.throttle.admit().await,
        Err(_) => None,
    };
    if round.stopped() {
        return None;
    }
    let index = queue.take()?;
    Some(Admission {
        index,
        slot: Some(slot),
        _wire: wire,
        _account: account,
        inbox: round.inbox.clone(),
        again: false,
    })
}

/// Carries one route's messages on as many lanes as its protocol, the
/// round and the account allow, until all are answered or the round stops.
pub(super) async fn carry(round: Arc<Round>, queue: Arc<Queue>) {
    let mut lanes = queue.jobs.len().min(super::CONCURRENCY);
    if let Ok(route) = &queue.route {
        lanes = lanes.min(route.throttle.concurrency());
    }
    let mut first = None;
    if let Ok(route) = &queue.route
        && let Way::Http(target) = &route.way
    {
        // The first connection tells the protocol: HTTP/2 multiplexes.
        match round.wire.http.connections.get(&target.origin).await {
            Ok(Conn::H2(h2)) => return multiplexed(round, queue, h2, lanes).await,
            Ok(h1) => first = Some(h1),
            // Each message tries again and reports why it failed.
            Err(_) => {}
        }
    }
    let mut tasks = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        tasks.push(tokio::spawn(sequential(
            round.clone(),
            queue.clone(),
            first.take(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// A lane carrying one message at a time (HTTP/1.1, SMTP).
async fn sequential(round: Arc<Round>, queue: Arc<Queue>, mut conn: Option<Conn>) {
    let _closer = Closer(round.clone(), queue.clone());
    while let Some(admission) = admit(&round, &queue).await {
        let message = &round.sends[admission.index].1.message;
        let answer = match (&queue.route, message) {
            (Err(e), _) => wit::Answer::TransportError(e.clone()),
            (Ok(route), message) => match (&route.way, message) {
                (Way::Smtp(relay), wit::Message::Email(e)) => {
                    super::smtp::SmtpTransports::send(relay, e).await
                }
                (Way::Http(target), wit::Message::Http(h)) => {
                    one_http(&round, route, target, &mut conn, h).await
                }
                _ => mismatch(route),
            },
        };
        admission.answer(answer);
    }
    if let (Some(Conn::H1(h1)), Ok(route)) = (conn, &queue.route)
        && let Way::Http(target) = &route.way
    {
        round.wire.http.connections.put_back(&target.origin, h1);
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
    round: &Round,
    route: &Route,
) -> Result<Option<::http::HeaderValue>, wit::Answer> {
    round
        .wire
        .http
        .credential(&round.store, &route.account)
        .await
        .map_err(|e| wit::Answer::TransportError(format!("{}credentials: {e}", http::REFUSED)))
}

/// Sends one HTTP message on the lane's connection (opening one if it has
/// none or it closed), once more on a new connection if it never left.
async fn one_http(
    round: &Round,
    route: &Route,
    target: &Target,
    conn: &mut Option<Conn>,
    h: &wit::HttpRequest,
) -> wit::Answer {
    let authorization = match authorization(round, route).await {
        Ok(a) => a,
        Err(answer) => return answer,
    };
    let mut unsent = None;
    for _ in 0..2 {
        let open = match conn.take() {
            Some(Conn::H1(h1)) if !h1.is_closed() => Conn::H1(h1),
            Some(Conn::H2(h2)) if !h2.is_closed() => Conn::H2(h2),
            _ => match round.wire.http.connections.get(&target.origin).await {
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
                    Err(e) => http::transport_error(out.url.as_str(), &e),
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
async fn multiplexed(round: Arc<Round>, queue: Arc<Queue>, mut h2: H2, streams: usize) {
    let _closer = Closer(round.clone(), queue.clone());
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
            let (round, queue, route) = (round.clone(), queue.clone(), route.clone());
            next = Some(Box::pin(async move {
                let admission = admit(&round, &queue).await?;
                let authorization = authorization(&round, &route).await;
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
                if !http::unprocessed(&answer) || admission.again || round.stopped() {
                    admission.answer(answer);
                    continue;
                }
                admission.again = true;
                let authorization = authorization(&round, &route).await;
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
        let wit::Message::Http(h) = &round.sends[admission.index].1.message else {
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
            match round.wire.http.connections.get(&target.origin).await {
                Ok(Conn::H2(fresh)) => h2 = fresh,
                // The provider now speaks HTTP/1.1: this message goes
                // alone, the lane goes on trying HTTP/2.
                Ok(h1) => {
                    let mut conn = Some(h1);
                    let answer = one_http(&round, &route, target, &mut conn, h).await;
                    if let Some(Conn::H1(h1)) = conn {
                        round.wire.http.connections.put_back(&target.origin, h1);
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
            Err(e) => admission.answer(http::transport_error(out.url.as_str(), &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_queue_abandons_what_was_not_taken() {
        let inbox = Inbox::<Answered>::new(5);
        let q = Queue::new(Err("none".into()), vec![0, 1, 2, 3, 4]);
        assert_eq!(q.take(), Some(0));
        assert_eq!(q.take(), Some(1));
        q.close(&inbox);
        assert_eq!(q.take(), None, "nothing is taken once closed");
        q.close(&inbox);
        // Two taken are still expected; the three others were abandoned once.
        inbox.abandon_many(2);
        assert!(
            inbox
                .take(10, std::time::Duration::from_millis(1))
                .is_none()
        );
    }
}
