//! Why a message got no answer from its provider: a typed cause, whether it
//! is worth trying again, and the words for the delivery log.
//!
//! Every failure on the way (the host's own refusals, credentials, the
//! network) is a [`Failure`], made where it happens from the error's type,
//! never from its text. The delivery decides on it without asking the
//! plugin: a permanent one fails the message, a transient one is retried
//! with backoff until the validity period ends. Only the provider's own
//! answers go to the plugin's `classify`.

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
    /// types in the error's chain: the egress policy, TLS trust, a refused
    /// or timed-out connection; anything else broke the exchange
    /// (transient).
    pub fn of_error(host: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
        let text = error_chain(e);
        let causes = causes(e);
        if let Some(denied) = causes
            .iter()
            .find_map(|c| c.downcast_ref::<super::egress::EgressDenied>())
        {
            return Failure::permanent(Cause::Policy, denied.to_string());
        }
        if causes.iter().any(|c| untrusted_certificate(*c)) {
            return Failure::permanent(Cause::Certificate, untrusted(host, &text));
        }
        // The innermost I/O error says what happened; outer ones wrap it.
        let io_kind = causes
            .iter()
            .rev()
            .find_map(|c| c.downcast_ref::<std::io::Error>().map(|io| io.kind()));
        let cause = match io_kind {
            Some(std::io::ErrorKind::TimedOut) => Cause::Timeout,
            Some(
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
                | std::io::ErrorKind::AddrNotAvailable,
            ) => Cause::Connect,
            _ if causes.iter().any(|c| c.is::<super::egress::Unresolved>()) => Cause::Connect,
            _ => Cause::Protocol,
        };
        Failure::transient(cause, text)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every error in `e`'s chain, outermost first, with the errors an
/// `io::Error` wraps (its `source` skips them: rustls' refusal sits inside
/// two of them when it comes through reqwest).
pub fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(c) = cur {
        out.push(c);
        cur = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    out
}

/// True if an error in `e`'s chain is rustls refusing the peer's
/// certificate.
pub fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).iter().any(|c| {
        matches!(
            c.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        )
    })
}

/// The message for a certificate the host does not trust: which host, and
/// how the operator fixes it.
pub fn untrusted(host: &str, detail: &str) -> String {
    format!(
        "the TLS certificate of {host} is not trusted ({detail}); if {host} uses a private CA, \
         trust it with `crosscast ca add NAME CA.pem`"
    )
}

/// An error with its causes: a client's own message often hides the reason.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        // Some errors repeat their source's message in their own.
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_type_not_text() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "nope");
        let f = Failure::of_error("api.example", &refused);
        assert_eq!((f.cause, f.permanent), (Cause::Connect, false));
        let slow = std::io::Error::new(std::io::ErrorKind::TimedOut, "egress denied");
        let f = Failure::of_error("api.example", &slow);
        assert_eq!(f.cause, Cause::Timeout, "text says nothing");
        // As reqwest gives it: an I/O error in an I/O error.
        let cert = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        let f = Failure::of_error("api.example:443", &cert);
        assert_eq!((f.cause, f.permanent), (Cause::Certificate, true));
        assert!(
            f.message.contains("api.example:443") && f.message.contains("crosscast ca add"),
            "{}",
            f.message
        );
        let denied = super::super::egress::EgressDenied {
            host: "localhost".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let f = Failure::of_error("localhost", &denied);
        assert_eq!((f.cause, f.permanent), (Cause::Policy, true));
        let other = std::io::Error::other("the answer ended early");
        assert_eq!(Failure::of_error("h", &other).cause, Cause::Protocol);
    }
}
