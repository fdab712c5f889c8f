//! Why a message got no answer from its provider: a typed cause, whether it
//! is worth trying again, and the words for the delivery log.
//!
//! Every failure on the way (the host's own refusals, credentials, the
//! network's [`NetError`]s) becomes a [`Failure`], made where it happens
//! from the error's type, never from its text. The delivery decides on it
//! without asking the plugin: a permanent one fails the message, a
//! transient one is retried with backoff until the validity period ends.
//! Only the provider's own answers go to the plugin's `classify`.

use super::net::error::{Kind, NetError};
use crate::store::deliveries::Cause;

/// A message that did not reach its provider, or got no whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why, by kind.
    pub cause: Cause,
    /// Trying again cannot help until the operator changes something.
    pub permanent: bool,
    /// What happened, for the delivery log.
    pub message: String,
}

impl Failure {
    /// A failure that trying again later may cure.
    pub fn transient(cause: Cause, message: impl Into<String>) -> Failure {
        Failure {
            cause,
            permanent: false,
            message: message.into(),
        }
    }

    /// A failure only the operator (or the plugin's author) can cure.
    pub fn permanent(cause: Cause, message: impl Into<String>) -> Failure {
        Failure {
            cause,
            permanent: true,
            message: message.into(),
        }
    }

    /// The same failure, its message prefixed with where it happened.
    pub fn context(mut self, what: impl std::fmt::Display) -> Failure {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// A failed exchange or connection with `host`, classified by the
    /// types in the error's chain ([`NetError::of_error`]).
    pub fn of_error(host: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
        NetError::of_error(host, e).into()
    }
}

impl From<NetError> for Failure {
    fn from(e: NetError) -> Failure {
        let cause = match e.kind {
            Kind::Policy => Cause::Policy,
            Kind::Config => Cause::Account,
            Kind::Credentials => Cause::Credentials,
            Kind::Certificate => Cause::Certificate,
            Kind::Connect => Cause::Connect,
            Kind::Timeout => Cause::Timeout,
            Kind::Protocol => Cause::Protocol,
        };
        Failure {
            cause,
            permanent: e.permanent,
            message: e.message,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_errors_keep_their_kind_and_verdict() {
        let f = Failure::from(NetError::permanent(Kind::Certificate, "untrusted"));
        assert_eq!((f.cause, f.permanent), (Cause::Certificate, true));
        let f = Failure::from(NetError::transient(Kind::Timeout, "slow"));
        assert_eq!((f.cause, f.permanent), (Cause::Timeout, false));
        let f = Failure::from(NetError::permanent(Kind::Config, "bad URL"));
        assert_eq!((f.cause, f.message.as_str()), (Cause::Account, "bad URL"));
    }
}
