//! One mail transaction on an open session: MAIL, RCPT and DATA (in one
//! write when the relay offers PIPELINING, RFC 2920), then the message and
//! its final reply, each step bounded in time.
//!
//! lettre's own `send` stops at the first refusal without reading the
//! replies still due, so the host drives the commands itself through
//! lettre's public `command` and `read_response`: a pipelined group is
//! one `command` whose text is the three commands, and the two replies
//! after the first are read one by one.

use std::time::Duration;

use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::Built;
use super::Reply as SmtpReply;
use super::connect::{Conn, reply_text, timed};
use crate::deliver::net::error::{Kind, NetError, error_chain};

/// How a transaction ended.
pub(super) enum Ended {
    /// The relay's word on the message: its final reply, or the first
    /// refusal of MAIL, RCPT or DATA. `keep`: the session can carry the
    /// next message.
    Answered { reply: SmtpReply, keep: bool },
    /// The connection was found closed before the relay accepted anything
    /// of the message: it may go again at once on another one.
    Lost(NetError),
    /// No word on the message; the session is given up.
    Failed(NetError),
}

/// A reply as the transaction reads it.
enum Reply {
    Positive(Response),
    /// A 4xx or 5xx reply.
    Negative(SmtpReply),
    /// No reply: the connection broke or the reply was unreadable.
    Broken(NetError),
}

fn read(relay: &str, r: Result<Response, lettre::transport::smtp::Error>) -> Reply {
    match r {
        Ok(response) => Reply::Positive(response),
        Err(e) => match e.status() {
            Some(code) => Reply::Negative(SmtpReply {
                code: u16::from(code),
                message: reply_text(&e),
            }),
            None => Reply::Broken(NetError::transient(
                Kind::Protocol,
                format!("SMTP {relay}: {}", error_chain(&e)),
            )),
        },
    }
}

/// Sends `built` on `conn` to `relay` (as errors name it).
pub(super) async fn send(conn: &mut Conn, relay: &str, built: &Built, limit: Duration) -> Ended {
    let mut options = Vec::new();
    let info = conn.smtp.server_info();
    let non_ascii = built
        .envelope
        .from()
        .into_iter()
        .chain(built.envelope.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            return Ended::Failed(NetError::permanent(
                Kind::Protocol,
                format!(
                    "SMTP {relay}: the addresses need SMTPUTF8, which the relay does not offer"
                ),
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !built.raw.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            return Ended::Failed(NetError::permanent(
                Kind::Protocol,
                format!("SMTP {relay}: the message needs 8BITMIME, which the relay does not offer"),
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mail = Mail::new(built.envelope.from().cloned(), options);
    let rcpts: Vec<Rcpt> = built
        .envelope
        .to()
        .iter()
        .map(|to| Rcpt::new(to.clone(), Vec::new()))
        .collect();
    let replies = match commands(conn, relay, mail, rcpts, limit).await {
        Ok(replies) => replies,
        Err(ended) => return ended,
    };
    let refused = replies.iter().find_map(|r| match r {
        Reply::Negative(reply) => Some(reply.clone()),
        _ => None,
    });
    let data_accepted = matches!(replies.last(), Some(Reply::Positive(_)));
    if let Some(reply) = refused {
        // The relay awaits data it must not get: close without the final
        // dot, so nothing is delivered.
        if data_accepted {
            return Ended::Answered { reply, keep: false };
        }
        let keep = matches!(
            timed(limit, relay, "RSET", conn.smtp.command(Rset)).await,
            Ok(Ok(_))
        );
        return Ended::Answered { reply, keep };
    }
    let sent = timed(limit, relay, "the message", conn.smtp.message(&built.raw)).await;
    match sent.map(|r| read(relay, r)) {
        Ok(Reply::Positive(response)) => Ended::Answered {
            reply: SmtpReply {
                code: u16::from(response.code()),
                message: response.message().collect::<Vec<_>>().join(" "),
            },
            keep: true,
        },
        // The transaction is over either way: the session goes on.
        Ok(Reply::Negative(reply)) => Ended::Answered { reply, keep: true },
        Ok(Reply::Broken(f)) => Ended::Failed(
            f.context("the connection broke after the message left (it may have been delivered)"),
        ),
        Err(f) => Ended::Failed(f),
    }
}

/// MAIL, the RCPTs and DATA, and their replies in order: pipelined in one
/// write when the relay offers it, else one by one, stopping at the first
/// refusal.
async fn commands(
    conn: &mut Conn,
    relay: &str,
    mail: Mail,
    rcpts: Vec<Rcpt>,
    limit: Duration,
) -> Result<Vec<Reply>, Ended> {
    let expected = rcpts.len() + 2;
    let mut replies = Vec::with_capacity(expected);
    if conn.pipelining {
        let mut group = mail.to_string();
        for rcpt in &rcpts {
            group.push_str(&rcpt.to_string());
        }
        group.push_str(&Data.to_string());
        let first = timed(limit, relay, "MAIL FROM", conn.smtp.command(group))
            .await
            .map_err(Ended::Failed)?;
        replies.push(read(relay, first));
        while replies.len() < expected {
            if let Some(Reply::Broken(_)) = replies.last() {
                break;
            }
            let next = timed(limit, relay, "RCPT TO or DATA", conn.smtp.read_response())
                .await
                .map_err(Ended::Failed)?;
            replies.push(read(relay, next));
        }
    } else {
        let mut texts = vec![("MAIL FROM", mail.to_string())];
        texts.extend(rcpts.iter().map(|r| ("RCPT TO", r.to_string())));
        texts.push(("DATA", Data.to_string()));
        for (what, text) in texts {
            let reply = timed(limit, relay, what, conn.smtp.command(text))
                .await
                .map_err(Ended::Failed)?;
            let reply = read(relay, reply);
            let stop = !matches!(reply, Reply::Positive(_));
            replies.push(reply);
            if stop {
                break;
            }
        }
    }
    // A broken first reply: the relay had closed the connection before it
    // read anything; a later one: it broke mid-transaction.
    for (i, reply) in replies.iter().enumerate() {
        if let Reply::Broken(f) = reply {
            return Err(if i == 0 {
                Ended::Lost(f.clone())
            } else {
                Ended::Failed(f.clone())
            });
        }
    }
    Ok(replies)
}
