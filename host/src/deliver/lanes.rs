//! Lanes: how a delivery's messages reach their account.
//!
//! A lane is one task holding one connection for the whole execution. An
//! HTTP/1.1 or SMTP lane carries one message at a time; an HTTP/2 lane
//! keeps up to the concurrency's worth of streams open on its connection.
//! A lane takes the next message from its account's queue as soon as it
//! may leave (`session.rs`), sends it and leaves the answer in the inbox.
//!
//! One task per connection rather than one per message: nothing is
//! spawned, looked up in a pool or handed between tasks per message, and
//! the streams an HTTP/2 lane opens while it handles a burst of answers
//! leave in one write.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::stream::{FuturesUnordered, StreamExt};

use super::connections::{Conn, H2};
use super::failure::Failure;
use super::http::{self, Label, Outcome, Reused, Target};
use super::session::{self, Admission, Lane, Queue, Shared, admit};
use super::{Route, Way};
use crate::runtime::channel::wit;
use crate::store::deliveries::Cause;

/// Runs a route's lanes, as many as its protocol, the delivery and the
/// account allow, until its queue is closed and empty or the delivery
/// stops.
pub(super) async fn carry(shared: Arc<Shared>, queue: Arc<Queue>) {
    // The starting lane: counted since the queue was made.
    let lane = Lane(shared.clone(), queue.clone());
    let lanes = queue
        .route
        .as_ref()
        .map_or(super::CONCURRENCY, |route| route.throttle.concurrency());
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
    let mut reused = Reused::default();
    let mut smtp: Option<super::smtp::Conn> = None;
    loop {
        // At once when nothing needs waiting for.
        let admission = match session::try_admit(shared, queue) {
            Some(admission) => admission,
            None => match admit(shared, queue).await {
                Some(admission) => admission,
                None => break,
            },
        };
        let send = admission.send();
        let answer = match &queue.route {
            Err(e) => Err(e.clone()),
            Ok(route) => match (&route.way, &send.out.message) {
                (Way::Smtp(relay), wit::Message::Email(e)) => {
                    let id = send.message_id.as_deref().unwrap_or_default();
                    relay.send(&mut smtp, e, &send.to, id).await
                }
                (Way::Http(target), wit::Message::Http(h)) => {
                    one_http(shared, route, target, (&mut conn, &mut reused), h).await
                }
                _ => Err(mismatch(route)),
            },
        };
        admission.answer(answer);
    }
    match (&queue.route, conn, smtp) {
        (Ok(route), Some(Conn::H1(h1)), _) => {
            if let Way::Http(target) = &route.way {
                shared.wire.http.connections.put_back(&target.origin, h1);
            }
        }
        (Ok(route), _, Some(kept)) => {
            if let Way::Smtp(relay) = &route.way {
                relay.park(kept);
            }
        }
        _ => {}
    }
}

fn mismatch(route: &Route) -> Failure {
    Failure::permanent(
        Cause::Account,
        format!(
            "account `{}` was resolved for another kind of message",
            route.account.name
        ),
    )
}

/// The account's credential as a header, or the answer that refuses the
/// message.
async fn authorization(
    shared: &Shared,
    route: &Route,
    target: &Target,
) -> Result<Option<::http::HeaderValue>, Failure> {
    shared
        .wire
        .http
        .credential(&shared.store, &route.account, target)
        .await
}

/// Sends one HTTP message on the lane's connection (opening one if it has
/// none or it closed), once more on a new connection if it never left;
/// its head from the lane's last one when it repeats it.
async fn one_http(
    shared: &Shared,
    route: &Route,
    target: &Target,
    (conn, reused): (&mut Option<Conn>, &mut Reused),
    h: &wit::HttpRequest,
) -> Outcome {
    let authorization = authorization(shared, route, target).await?;
    for _ in 0..2 {
        let open = match conn.take() {
            Some(Conn::H1(h1)) if !h1.is_closed() => Conn::H1(h1),
            Some(Conn::H2(h2)) if !h2.is_closed() => Conn::H2(h2),
            _ => match shared.wire.http.connections.get(&target.origin).await {
                Ok(c) => c,
                Err(e) => {
                    return Err(Failure::of_error(http::authority(&target.origin.key), &*e)
                        .context(format!("HTTP {}{}", target.origin.key, h.path)));
                }
            },
        };
        let limit = target.timeout;
        match open {
            Conn::H1(mut h1) => {
                let head = reused.heads.h1(target, h, authorization.as_ref())?;
                let (deadline, keep) = (&mut reused.deadline, &shared.answer_headers);
                // Err: the connection had closed, the request goes on another.
                if let Ok(answer) =
                    http::send_h1(&mut h1, &head, &h.body, (deadline, limit), keep).await
                {
                    *conn = Some(Conn::H1(h1));
                    return answer;
                }
            }
            Conn::H2(h2c) => {
                let out = reused
                    .heads
                    .request(target, h, authorization.as_ref(), true)?;
                let answer = match http::start_h2(&h2c, out.head, out.body) {
                    Ok(response) => {
                        let keep = shared.answer_headers.clone();
                        let finish = http::finish_h2(response, out.url.clone(), keep);
                        (reused.deadline.bound(finish, limit).await)
                            .unwrap_or_else(|| Err(http::no_answer(&out.url, limit)))
                    }
                    Err(e) => Err(http::transport_error(&out.url, &e)),
                };
                if !answer.as_ref().is_err_and(|f| f.unprocessed) {
                    *conn = Some(Conn::H2(h2c));
                    return answer;
                }
            }
        }
    }
    Err(Failure::transient(
        Cause::Protocol,
        format!(
            "HTTP {}{}: the connection closed twice before the request left",
            target.origin.key, h.path
        ),
    ))
}

/// A message admitted with the credential it goes out with.
type Ready = (Admission, Result<Option<::http::HeaderValue>, Failure>);

/// What an HTTP/2 lane waits for next.
enum Event {
    /// A stream answered.
    Answered(Admission, Outcome),
    /// The next message may leave (`None`: no more will).
    Admitted(Option<Ready>),
    /// The earliest deadline of the streams open came.
    Due,
}

pin_project_lite::pin_project! {
    /// A stream in flight on an HTTP/2 lane: its answer, or no answer once
    /// the lane found it past its deadline. One lane-wide timer watches
    /// every stream's deadline instead of a timer per stream (inserted
    /// into and removed from the runtime's timer wheel per message).
    struct InFlight<F, A> {
        #[pin]
        answer: F,
        // What the answer goes back with (its admission).
        admission: Option<A>,
        url: Label,
        deadline: tokio::time::Instant,
        // The account's timeout, for the message when it expires.
        limit: std::time::Duration,
        expired: bool,
        // Wakes the stream's task when the lane expires it.
        waker: Option<Waker>,
    }
}

impl<F: Future<Output = Outcome>, A> Future for InFlight<F, A> {
    type Output = (A, Outcome);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = if *this.expired {
            Err(http::no_answer(this.url, *this.limit))
        } else {
            match this.answer.poll(cx) {
                Poll::Ready(answer) => answer,
                Poll::Pending => {
                    if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *this.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        };
        let admission = this.admission.take().expect("polled after its answer");
        Poll::Ready((admission, answer))
    }
}

impl<F, A> InFlight<F, A> {
    /// Expires the stream if its deadline is past `now` (its answer is
    /// then no answer); otherwise its deadline.
    fn expire(self: Pin<&mut Self>, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let this = self.project();
        if *this.expired {
            return None;
        }
        if *this.deadline > now {
            return Some(*this.deadline);
        }
        *this.expired = true;
        if let Some(w) = this.waker.take() {
            w.wake();
        }
        None
    }
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
    let mut reused = Reused::default();
    let mut inflight = FuturesUnordered::new();
    // Fires at the earliest deadline of the streams open, if any.
    let mut due: Option<Pin<Box<tokio::time::Sleep>>> = None;
    type Next = Pin<Box<dyn Future<Output = Option<Ready>> + Send>>;
    let mut next: Option<Next> = None;
    let mut exhausted = false;
    loop {
        let mut ready = None;
        if next.is_none() && !exhausted && inflight.len() < streams {
            // At once when nothing needs waiting for, else as a future
            // polled beside the answers.
            let at_once = target
                .fresh_credential()
                .and_then(|c| Some((session::try_admit(shared, queue)?, Ok(c))));
            if at_once.is_some() {
                ready = at_once;
            } else {
                let (shared, queue, route) = (shared.clone(), queue.clone(), route.clone());
                next = Some(Box::pin(async move {
                    let admission = admit(&shared, &queue).await?;
                    let Way::Http(target) = &route.way else {
                        return Some((admission, Ok(None)));
                    };
                    let authorization = authorization(&shared, &route, target).await;
                    Some((admission, authorization))
                }));
            }
        }
        if ready.is_none() && next.is_none() && inflight.is_empty() {
            break;
        }
        // A message admitted at once goes first; else answers first, each
        // freeing a stream for the next message.
        let event = match ready {
            Some(ready) => Event::Admitted(Some(ready)),
            None => {
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(Some((admission, answer))) = inflight.poll_next_unpin(cx) {
                        return Poll::Ready(Event::Answered(admission, answer));
                    }
                    if let Some(n) = next.as_mut()
                        && let Poll::Ready(ready) = n.as_mut().poll(cx)
                    {
                        return Poll::Ready(Event::Admitted(ready));
                    }
                    if let Some(d) = due.as_mut()
                        && d.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Event::Due);
                    }
                    Poll::Pending
                })
                .await
            }
        };
        let (admission, authorization) = match event {
            Event::Answered(mut admission, answer) => {
                // Streams the provider never processed (its connection went
                // away first) go again, once, on a new connection.
                let unprocessed = answer.as_ref().is_err_and(|f| f.unprocessed);
                if !unprocessed || admission.again || shared.stopped() {
                    admission.answer(answer);
                    continue;
                }
                admission.again = true;
                let authorization = authorization(shared, &route, target).await;
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
            Event::Due => {
                // Streams past their deadline answer now; the timer waits
                // for the earliest of the others.
                let now = tokio::time::Instant::now();
                due = Pin::new(&mut inflight)
                    .iter_pin_mut()
                    .filter_map(|stream| InFlight::expire(stream, now))
                    .min()
                    .map(|at| Box::pin(tokio::time::sleep_until(at)));
                continue;
            }
        };
        let job = admission.job.clone();
        let wit::Message::Http(h) = &job.0[job.1].out.message else {
            admission.answer(Err(mismatch(&route)));
            continue;
        };
        let authorization = match authorization {
            Ok(a) => a,
            Err(failure) => {
                admission.answer(Err(failure));
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
                    let answer =
                        one_http(shared, &route, target, (&mut conn, &mut reused), h).await;
                    if let Some(Conn::H1(h1)) = conn {
                        shared.wire.http.connections.put_back(&target.origin, h1);
                    }
                    admission.answer(answer);
                    continue;
                }
                Err(e) => {
                    admission.answer(Err(Failure::of_error(
                        http::authority(&target.origin.key),
                        &*e,
                    )
                    .context(format!("HTTP {}{}", target.origin.key, h.path))));
                    continue;
                }
            }
        }
        let out = match reused
            .heads
            .request(target, h, authorization.as_ref(), true)
        {
            Ok(out) => out,
            Err(failure) => {
                admission.answer(Err(failure));
                continue;
            }
        };
        match http::start_h2(&h2, out.head, out.body) {
            Ok(response) => {
                let keep = shared.answer_headers.clone();
                let deadline = tokio::time::Instant::now() + target.timeout;
                if due.is_none() {
                    due = Some(Box::pin(tokio::time::sleep_until(deadline)));
                }
                inflight.push(InFlight {
                    answer: http::finish_h2(response, out.url.clone(), keep),
                    admission: Some(admission),
                    url: out.url,
                    deadline,
                    limit: target.timeout,
                    expired: false,
                    waker: None,
                });
            }
            Err(e) => admission.answer(Err(http::transport_error(&out.url, &e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label() -> Label {
        let account = serde_json::from_value(serde_json::json!({
            "name": "acct",
            "url": "https://push.example",
        }))
        .unwrap();
        let target = http::HttpTransport::target(&account).unwrap();
        let message = wit::HttpRequest {
            account: "acct".into(),
            method: "POST".into(),
            recipient: "r".into(),
            path: "/send".into(),
            headers: vec![],
            body: vec![],
        };
        let out = http::Heads::default()
            .request(&target, &message, None, true)
            .ok()
            .unwrap();
        out.url
    }

    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

    fn stream<F>(answer: F, n: u32, deadline: tokio::time::Instant) -> InFlight<F, u32> {
        InFlight {
            answer,
            admission: Some(n),
            url: label(),
            deadline,
            limit: TIMEOUT,
            expired: false,
            waker: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_past_its_deadline_answers_no_answer_and_the_others_wait() {
        type Answering = Pin<Box<dyn Future<Output = Outcome> + Send>>;
        let start = tokio::time::Instant::now();
        let mut inflight = FuturesUnordered::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        inflight.push(stream(
            Box::pin(std::future::pending()) as Answering,
            1,
            start + TIMEOUT,
        ));
        inflight.push(stream(
            Box::pin(async move {
                let _ = rx.await;
                Err(Failure::transient(Cause::Protocol, "answered"))
            }),
            2,
            start + 2 * TIMEOUT,
        ));
        // Both are polled once, so each has a waker to be woken by.
        assert!(futures::poll!(inflight.next()).is_pending());
        tokio::time::advance(TIMEOUT).await;
        let now = tokio::time::Instant::now();
        let next_due: Vec<_> = Pin::new(&mut inflight)
            .iter_pin_mut()
            .filter_map(|s| InFlight::expire(s, now))
            .collect();
        assert_eq!(next_due, [start + 2 * TIMEOUT], "the other waits");
        let (n, answer) = inflight.next().await.unwrap();
        assert_eq!(n, 1);
        let failure = answer.unwrap_err();
        assert_eq!(
            (failure.cause, failure.permanent, failure.message.as_str()),
            (
                Cause::Timeout,
                false,
                "HTTP https://push.example/send: no answer within 30 s"
            )
        );
        assert!(futures::poll!(inflight.next()).is_pending());
        let _ = tx.send(());
        let (n, answer) = inflight.next().await.unwrap();
        assert_eq!(n, 2);
        assert_eq!(answer.unwrap_err().message, "answered");
        assert!(inflight.is_empty());
    }

    #[tokio::test]
    async fn a_stream_answered_in_time_gives_its_answer() {
        let far = tokio::time::Instant::now() + TIMEOUT;
        let mut inflight = FuturesUnordered::new();
        inflight.push(stream(
            std::future::ready(Err(Failure::transient(Cause::Protocol, "on time"))),
            7,
            far,
        ));
        let (n, answer) = inflight.next().await.unwrap();
        assert_eq!(n, 7);
        assert_eq!(answer.unwrap_err().message, "on time");
    }
}
