//! Why the network gave no answer, by kind: what the delivery layer needs
//! to decide (retry or not, and which cause to log), made from the types
//! in an error's chain, never from its text.

/// What kind of trouble a [`NetError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The egress policy refused the destination.
    Policy,
    /// The destination's settings are unusable (a URL, a TLS name).
    Config,
    /// The server refused our credentials.
    Credentials,
    /// The server's TLS certificate is not trusted.
    Certificate,
    /// No connection could be made.
    Connect,
    /// No answer in time.
    Timeout,
    /// The exchange broke or the server broke the protocol.
    Protocol,
}

/// A connection or exchange that gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError {
    /// Why, by kind.
    pub kind: Kind,
    /// Trying again cannot help until someone changes something.
    pub permanent: bool,
    /// What happened, for people.
    pub message: String,
}

impl NetError {
    /// A failure that trying again later may cure.
    pub fn transient(kind: Kind, message: impl Into<String>) -> NetError {
        NetError {
            kind,
            permanent: false,
            message: message.into(),
        }
    }

    /// A failure only a change of settings can cure.
    pub fn permanent(kind: Kind, message: impl Into<String>) -> NetError {
        NetError {
            kind,
            permanent: true,
            message: message.into(),
        }
    }

    /// The same error, its message prefixed with where it happened.
    pub fn context(mut self, what: impl std::fmt::Display) -> NetError {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// A failed exchange or connection with `host`, classified by the
    /// types in the error's chain: the egress policy, TLS trust, a refused
    /// or timed-out connection; anything else broke the exchange
    /// (transient).
    pub fn of_error(host: &str, e: &(dyn std::error::Error + 'static)) -> NetError {
        let text = error_chain(e);
        let causes = causes(e);
        if let Some(denied) = causes
            .iter()
            .find_map(|c| c.downcast_ref::<super::egress::EgressDenied>())
        {
            return NetError::permanent(Kind::Policy, denied.to_string());
        }
        if causes.iter().any(|c| untrusted_certificate(*c)) {
            return NetError::permanent(Kind::Certificate, untrusted(host, &text));
        }
        // The innermost I/O error says what happened; outer ones wrap it.
        let io_kind = causes
            .iter()
            .rev()
            .find_map(|c| c.downcast_ref::<std::io::Error>().map(|io| io.kind()));
        let kind = match io_kind {
            Some(std::io::ErrorKind::TimedOut) => Kind::Timeout,
            Some(
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
                | std::io::ErrorKind::AddrNotAvailable,
            ) => Kind::Connect,
            _ if causes.iter().any(|c| c.is::<super::egress::Unresolved>()) => Kind::Connect,
            _ => Kind::Protocol,
        };
        NetError::transient(kind, text)
    }
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NetError {}

/// Every error in `e`'s chain, outermost first, with the errors an
/// `io::Error` wraps (its `source` skips them: rustls' refusal sits inside
/// two of them when it comes through reqwest).
fn causes<'a>(
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
        let f = NetError::of_error("api.example", &refused);
        assert_eq!((f.kind, f.permanent), (Kind::Connect, false));
        let slow = std::io::Error::new(std::io::ErrorKind::TimedOut, "egress denied");
        let f = NetError::of_error("api.example", &slow);
        assert_eq!(f.kind, Kind::Timeout, "text says nothing");
        // As reqwest gives it: an I/O error in an I/O error.
        let cert = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        let f = NetError::of_error("api.example:443", &cert);
        assert_eq!((f.kind, f.permanent), (Kind::Certificate, true));
        assert!(
            f.message.contains("api.example:443") && f.message.contains("crosscast ca add"),
            "{}",
            f.message
        );
        let denied = super::super::egress::EgressDenied {
            host: "localhost".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        };
        let f = NetError::of_error("localhost", &denied);
        assert_eq!((f.kind, f.permanent), (Kind::Policy, true));
        let other = std::io::Error::other("the answer ended early");
        assert_eq!(NetError::of_error("h", &other).kind, Kind::Protocol);
    }
}
