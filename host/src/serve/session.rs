//! The web UI's sign-in: an API token exchanged for a session cookie
//! (HttpOnly, SameSite=Strict, Secure over TLS), so no script of the page
//! ever holds the token. A session lasts while its token is valid and it
//! is used at least every [`IDLE`]; the server forgets all on a restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};

/// The cookie's name.
pub const COOKIE: &str = "crosscast_session";

/// A session unused this long is gone.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);

/// Most sessions kept; the least recently used goes first.
const MOST: usize = 1024;

/// The header a request carrying the cookie must have to change anything:
/// a page on another site cannot send it without a CORS preflight, which
/// the server never grants.
pub const UI_HEADER: &str = "x-crosscast-ui";

/// The sessions open, by the digest of their cookie's value.
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    /// Cookies marked `Secure` (the API speaks TLS).
    secure: bool,
}

/// One signed-in browser.
struct Session {
    /// The API token it signed in with, checked again on every request so
    /// a revoked token ends its sessions.
    token: String,
    last: Instant,
}

impl Sessions {
    /// No session yet; `secure` when the API speaks TLS.
    pub fn new(secure: bool) -> Sessions {
        Sessions {
            open: Mutex::new(HashMap::new()),
            secure,
        }
    }

    /// A new session for `token` (already checked): its cookie's value.
    pub fn open(&self, token: String) -> String {
        let value = crate::store::tokens::random_token();
        let mut open = self.lock();
        open.retain(|_, s| s.last.elapsed() < IDLE);
        if open.len() >= MOST
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(
            crate::store::tokens::digest(&value),
            Session {
                token,
                last: Instant::now(),
            },
        );
        value
    }

    /// The token of the session whose cookie is `value`, if it is open.
    pub fn token(&self, value: &str) -> Option<String> {
        let key = crate::store::tokens::digest(value);
        let mut open = self.lock();
        let session = open.get_mut(&key)?;
        if session.last.elapsed() >= IDLE {
            open.remove(&key);
            return None;
        }
        session.last = Instant::now();
        Some(session.token.clone())
    }

    /// Ends the session whose cookie is `value`.
    pub fn close(&self, value: &str) {
        self.lock().remove(&crate::store::tokens::digest(value));
    }

    /// The `Set-Cookie` header that gives a browser the session `value`
    /// (`None`: removes it).
    pub fn set_cookie(&self, value: Option<&str>) -> HeaderValue {
        let mut c = cookie::Cookie::build((COOKIE, value.unwrap_or("").to_string()))
            .path("/")
            .http_only(true)
            .same_site(cookie::SameSite::Strict)
            .secure(self.secure);
        if value.is_none() {
            c = c.max_age(cookie::time::Duration::ZERO);
        }
        HeaderValue::from_str(&c.build().to_string()).expect("a cookie is a header value")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The session cookie's value among a request's cookies.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_names_its_token_until_closed_and_its_cookie_is_strict() {
        let sessions = Sessions::new(true);
        let value = sessions.open("cct_abc".into());
        assert_eq!(sessions.token(&value).as_deref(), Some("cct_abc"));
        assert_eq!(sessions.token("cct_other"), None);
        let set = sessions.set_cookie(Some(&value));
        let set = set.to_str().unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(set.contains(part), "{part} in {set}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE}={value}")).unwrap(),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some(value.as_str()));
        sessions.close(&value);
        assert_eq!(sessions.token(&value), None);
        let gone = sessions.set_cookie(None);
        assert!(gone.to_str().unwrap().contains("Max-Age=0"), "{gone:?}");
    }
}
