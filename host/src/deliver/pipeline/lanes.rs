//! Lanes: how a delivery's messages reach their account.
//!
//! A lane is one task carrying one message at a time, as many lanes as the
//! account's concurrency. An SMTP lane holds one session with the relay
//! for the whole execution (and parks it with the relay when it ends); an
//! HTTP lane holds its own HTTP/1.1 connection, or a handle on the origin's
//! one HTTP/2 connection, and leaves it to the transport when it ends.
//! A lane takes the next message from its account's queue as soon as it
//! may leave (`session.rs`), sends it and leaves the answer in the inbox.

use std::sync::Arc;

use super::session::{self, Lane, Queue, Shared, admit};
use crate::deliver::failure::Failure;
use crate::deliver::net::http::conn;
use crate::deliver::net::smtp;
use crate::deliver::routes::{Route, Way};
use crate::runtime::channel::wit;
use crate::store::deliveries::Cause;

/// Runs a route's lanes, as many as the account allows messages in flight,
/// until its queue is closed and empty or the delivery stops.
pub(crate) async fn carry(shared: Arc<Shared>, queue: Arc<Queue>) {
    // The starting lane: counted since the queue was made.
    let first = Lane(shared.clone(), queue.clone());
    let lanes = queue
        .route
        .as_ref()
        .map_or(crate::deliver::CONCURRENCY, |route| {
            route.throttle.concurrency()
        });
    for _ in 1..lanes {
        queue.join();
        tokio::spawn(sequential(Lane(shared.clone(), queue.clone())));
    }
    sequential(first).await;
}

/// A lane carrying one message at a time.
async fn sequential(lane: Lane) {
    let Lane(shared, queue) = &lane;
    let mut smtp: Option<smtp::Conn> = None;
    let mut http: Option<conn::Conn> = None;
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
                (Way::Smtp(mailer), wit::Message::Email(e)) => {
                    let id = send.message_id.as_deref().unwrap_or_default();
                    mailer.send(&mut smtp, e, &send.to, id).await
                }
                (Way::Http(target), wit::Message::Http(h)) => {
                    let keep = &shared.answer_headers;
                    let wire = &shared.wire;
                    wire.send_http(&shared.store, route, target, &mut http, h, keep)
                        .await
                }
                _ => Err(mismatch(route)),
            },
        };
        admission.answer(answer);
    }
    if let Ok(route) = &queue.route {
        match (&route.way, smtp, http) {
            (Way::Smtp(mailer), Some(kept), _) => mailer.park(kept),
            (Way::Http(target), _, Some(kept)) => shared.wire.http.park(&target.origin, kept),
            _ => {}
        }
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
