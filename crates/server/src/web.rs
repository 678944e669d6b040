//! The key check of a service's HTTP routes (metering's dashboard and JSON API, the breaker's
//! confirm pages). An API call sends its key in a header (`Authorization: Bearer KEY` or
//! `x-api-key`); a page accepts the key once, through the login form it answers with, and then keeps
//! a session cookie (HttpOnly, SameSite=Strict, Secure when served over TLS). `/healthz`, `/readyz`
//! and `/metrics` stay open. A refusal is 401 in the routes' JSON shape (`{"error": "..."}`), or the
//! login form for a browser asking for a page.
//!
//! [`LinkSigner`] makes the signed, expiring, single-use tokens that confirm links carry, so a click
//! from chat works without a key and cannot be replayed or used for another session or action.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json,
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{Html, IntoResponse, Response},
};
use hmac::{Hmac, Mac};
use http::{HeaderValue, StatusCode, header};
use retort_hooks::Principal;
use sha2::{Digest, Sha256};

use crate::auth::{AuthError, KeyRing, api_key};

/// The cookie a page session is kept in.
pub const SESSION_COOKIE: &str = "retort_session";
/// The form field a login posts the key in.
pub const LOGIN_FIELD: &str = "retort_key";
/// How long a page session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Page sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
/// The largest login form read.
const MAX_LOGIN_BYTES: usize = 8 << 10;
/// Paths open without a key.
const OPEN: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Keys, page sessions and how cookies are set.
pub struct WebAuth {
    ring: Arc<KeyRing>,
    sessions: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    secure: bool,
    /// Requests carrying a `token=` query parameter go on without a principal: the handler checks
    /// the token (the breaker's signed confirm links).
    token_links: bool,
}

impl WebAuth {
    pub fn new(ring: Arc<KeyRing>) -> WebAuth {
        WebAuth {
            ring,
            sessions: Mutex::new(HashMap::new()),
            secure: false,
            token_links: false,
        }
    }

    /// Cookies only over TLS (`Secure`).
    pub fn secure(mut self, secure: bool) -> WebAuth {
        self.secure = secure;
        self
    }

    /// Lets requests with a `token=` query parameter reach the handler, which verifies the token.
    pub fn token_links(mut self) -> WebAuth {
        self.token_links = true;
        self
    }

    fn session(&self, cookie: &str) -> Option<Principal> {
        let d: [u8; 32] = Sha256::digest(cookie.as_bytes()).into();
        let mut s = self.sessions.lock().ok()?;
        match s.get(&d) {
            Some((p, until)) if *until > Instant::now() => Some(p.clone()),
            Some(_) => {
                s.remove(&d);
                None
            }
            None => None,
        }
    }

    /// A new page session for `p`: the cookie's value.
    fn open_session(&self, p: Principal) -> String {
        let value = crate::auth::random_key("");
        let d: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        if let Ok(mut s) = self.sessions.lock() {
            let now = Instant::now();
            s.retain(|_, (_, until)| *until > now);
            if s.len() >= MAX_SESSIONS
                && let Some(oldest) = s.iter().min_by_key(|(_, (_, u))| *u).map(|(k, _)| *k)
            {
                s.remove(&oldest);
            }
            s.insert(d, (p, now + SESSION_TTL));
        }
        value
    }

    fn cookie(&self, value: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        )
    }
}

fn cookie_value<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn wants_html(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn is_form(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
}

/// 401 in the JSON shape of the routes, or the login form for a browser.
fn unauthorized(e: &AuthError, html: bool) -> Response {
    if html {
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>Retort: sign in</title>\
             <p>{}</p><form method=post><label>API key <input type=password name={LOGIN_FIELD} autofocus></label> \
             <button>Sign in</button></form>",
            match e {
                AuthError::Missing =>
                    "This page needs your Retort API key (asked once; a session cookie keeps it).",
                AuthError::Unknown => "That key is not known to this service.",
            }
        );
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

/// 403 in the JSON shape of the routes.
pub fn forbidden(why: impl std::fmt::Display) -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(serde_json::json!({ "error": format!("permission denied: {why}") })),
    )
        .into_response()
}

/// The key check as an axum middleware (`axum::middleware::from_fn_with_state(Arc<WebAuth>, check)`):
/// the caller's [`Principal`] goes into the request's extensions.
pub async fn check(State(auth): State<Arc<WebAuth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN.contains(&path) {
        return next.run(req).await;
    }
    let html = wants_html(&req);
    if let Some(key) = api_key(req.headers()).filter(|k| !k.is_empty()) {
        return match auth.ring.authenticate(Some(key)) {
            Ok(p) => {
                req.extensions_mut().insert(p);
                next.run(req).await
            }
            Err(e) => unauthorized(&e, html),
        };
    }
    if let Some(p) = cookie_value(&req, SESSION_COOKIE).and_then(|c| auth.session(c)) {
        req.extensions_mut().insert(p);
        return next.run(req).await;
    }
    if req.method() == http::Method::POST && is_form(&req) {
        // A login from the form: the key once, then a session cookie and back to the page.
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_LOGIN_BYTES).await else {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(serde_json::json!({ "error": "form too large" })),
            )
                .into_response();
        };
        let key = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == LOGIN_FIELD)
            .map(|(_, v)| v.into_owned());
        if let Some(key) = key {
            return match auth.ring.authenticate(Some(&key)) {
                Ok(p) => {
                    let value = auth.open_session(p);
                    let mut resp = (
                        StatusCode::SEE_OTHER,
                        [(header::LOCATION, parts.uri.to_string())],
                    )
                        .into_response();
                    if let Ok(v) = HeaderValue::from_str(&auth.cookie(&value)) {
                        resp.headers_mut().insert(header::SET_COOKIE, v);
                    }
                    resp
                }
                Err(e) => unauthorized(&e, true),
            };
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    if auth.token_links
        && req
            .uri()
            .query()
            .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "token"))
    {
        return next.run(req).await;
    }
    unauthorized(&AuthError::Missing, html)
}

/// Signs and checks confirm-link tokens: `EXPIRY_MS.NONCE.HMAC(session|action|expiry|nonce)`, valid
/// until it expires and only once.
pub struct LinkSigner {
    key: [u8; 32],
    used: Mutex<HashMap<String, i64>>,
}

/// Why a link token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is malformed or was altered")]
    Invalid,
    #[error("the link has expired")]
    Expired,
    #[error("the link was already used")]
    Used,
}

type HmacSha256 = Hmac<Sha256>;

impl LinkSigner {
    /// A signer with `secret` (any length), or a random one for this process.
    pub fn new(secret: Option<&[u8]>) -> LinkSigner {
        let key: [u8; 32] = match secret {
            Some(s) => Sha256::digest(s).into(),
            None => Sha256::digest(crate::auth::random_key("").as_bytes()).into(),
        };
        LinkSigner {
            key,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, session: &str, action: &str, expires_ms: i64, nonce: &str) -> HmacSha256 {
        // new_from_slice accepts any key length for HMAC.
        let mut m = match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        for part in [session, action, &expires_ms.to_string(), nonce] {
            m.update(&(part.len() as u64).to_be_bytes());
            m.update(part.as_bytes());
        }
        m
    }

    /// A token for `action` on `session`, valid until `expires_ms` (epoch ms).
    pub fn sign(&self, session: &str, action: &str, expires_ms: i64) -> String {
        let nonce = crate::auth::random_key("");
        let tag = self
            .mac(session, action, expires_ms, &nonce)
            .finalize()
            .into_bytes();
        format!("{expires_ms}.{nonce}.{}", hex(&tag))
    }

    /// Checks without using up the token (to show the page the link opens).
    pub fn check(
        &self,
        token: &str,
        session: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<(), LinkError> {
        let mut parts = token.splitn(3, '.');
        let (Some(exp), Some(nonce), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(LinkError::Invalid);
        };
        let exp: i64 = exp.parse().map_err(|_| LinkError::Invalid)?;
        let tag = unhex(tag).ok_or(LinkError::Invalid)?;
        self.mac(session, action, exp, nonce)
            .verify_slice(&tag)
            .map_err(|_| LinkError::Invalid)?;
        if now_ms >= exp {
            return Err(LinkError::Expired);
        }
        if self
            .used
            .lock()
            .map(|u| u.contains_key(token))
            .unwrap_or(true)
        {
            return Err(LinkError::Used);
        }
        Ok(())
    }

    /// Checks and uses up the token: a second use is refused.
    pub fn redeem(
        &self,
        token: &str,
        session: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<(), LinkError> {
        self.check(token, session, action, now_ms)?;
        let mut used = self.used.lock().map_err(|_| LinkError::Used)?;
        used.retain(|_, exp| *exp > now_ms);
        let exp = token
            .split('.')
            .next()
            .and_then(|e| e.parse().ok())
            .unwrap_or(now_ms);
        if used.insert(token.to_owned(), exp).is_some() {
            return Err(LinkError::Used);
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_link_token_is_good_once_for_its_session_and_action_until_it_expires() {
        let s = LinkSigner::new(Some(b"secret"));
        let t = s.sign("sess-1", "confirm", 2_000);
        assert_eq!(s.check(&t, "sess-1", "confirm", 1_000), Ok(()));
        assert_eq!(
            s.check(&t, "sess-2", "confirm", 1_000),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            s.check(&t, "sess-1", "stop", 1_000),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            s.check(&t, "sess-1", "confirm", 2_000),
            Err(LinkError::Expired)
        );
        let mut tampered = t.clone();
        tampered.replace_range(0..1, "9");
        assert_eq!(
            s.check(&tampered, "sess-1", "confirm", 1_000),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            s.check("nonsense", "sess-1", "confirm", 1_000),
            Err(LinkError::Invalid)
        );
        let other = LinkSigner::new(Some(b"other secret"));
        assert_eq!(
            other.check(&t, "sess-1", "confirm", 1_000),
            Err(LinkError::Invalid)
        );
        assert_eq!(s.redeem(&t, "sess-1", "confirm", 1_000), Ok(()));
        assert_eq!(
            s.redeem(&t, "sess-1", "confirm", 1_001),
            Err(LinkError::Used)
        );
    }
}
