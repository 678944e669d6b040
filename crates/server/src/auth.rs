//! Who is calling a gRPC service, decided from the request's headers before anything reads its body.
//! A [`KeyRing`] maps API keys (held as SHA-256 digests, never in the clear) to a [`Principal`]; the
//! check runs as a layer in front of every service of a port, except health and reflection, and
//! puts the caller's principal into the request's extensions, where handlers read it with
//! [`principal`]. What a principal may then do is each service's decision (its authorisation table).
use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use http::{HeaderMap, HeaderName};
use retort_hooks::Principal;
use sha2::{Digest, Sha256};

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Paths every caller may reach without a key: health (probes) and reflection (what is served).
const OPEN_PATHS: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The key from `Authorization: Bearer KEY` or `x-api-key: KEY` (HTTP headers or gRPC metadata).
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let key = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        return Some(key.trim());
    }
    headers
        .get(X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Why a caller was not let in. The messages are what the caller reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `authorization: Bearer <key>` or `x-api-key: <key>`")]
    Missing,
    #[error("invalid API key: it is not known to this service")]
    Unknown,
}

/// Why a key ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key of {user} is empty")]
    Empty { user: String },
    #[error("{user} and {other} have the same key")]
    Duplicate { user: String, other: String },
}

/// API keys and whom they belong to.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_digest: HashMap<[u8; 32], Principal>,
    /// Who a request without a key is, when keys are not required (a gateway with auth off).
    anonymous: Option<Principal>,
}

impl KeyRing {
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Adds `key` for `principal`. Keys are unique and non-empty.
    pub fn insert(&mut self, key: &str, principal: Principal) -> Result<(), KeyError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(KeyError::Empty {
                user: principal.identity.user,
            });
        }
        let digest = digest(key);
        if let Some(other) = self.by_digest.get(&digest) {
            return Err(KeyError::Duplicate {
                user: principal.identity.user,
                other: other.identity.user.clone(),
            });
        }
        self.by_digest.insert(digest, principal);
        Ok(())
    }

    /// Lets requests without a key in as `principal` (a key that is sent must still be known).
    pub fn allow_anonymous(&mut self, principal: Principal) {
        self.anonymous = Some(principal);
    }

    /// The principal behind `key` (as sent, `None` or blank when absent).
    pub fn authenticate(&self, key: Option<&str>) -> Result<Principal, AuthError> {
        match key.map(str::trim).filter(|k| !k.is_empty()) {
            Some(key) => self
                .by_digest
                .get(&digest(key))
                .cloned()
                .ok_or(AuthError::Unknown),
            None => self.anonymous.clone().ok_or(AuthError::Missing),
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Who made a call, as a handler sees it: a key's principal, or (a service embedded without a key
/// ring: tests, tools in one process) the process itself, which may do everything.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// No key ring is installed in front of this service: the caller is trusted.
    Open,
    Key(Principal),
}

impl Caller {
    /// The caller of a gRPC request: its principal when the server checks keys (every request then
    /// has one), else [`Caller::Open`].
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        Caller::from_extensions(request.extensions())
    }

    /// The same from a request's extensions (HTTP handlers).
    pub fn from_extensions(ext: &http::Extensions) -> Caller {
        match ext.get::<Principal>() {
            Some(p) => Caller::Key(p.clone()),
            None => Caller::Open,
        }
    }

    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Caller::Open => None,
            Caller::Key(p) => Some(p),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.principal().is_none_or(Principal::is_admin)
    }

    pub fn is_service(&self) -> bool {
        self.principal().is_none_or(Principal::is_service)
    }

    /// An admin or a service identity.
    pub fn is_operator(&self) -> bool {
        self.principal().is_none_or(Principal::is_operator)
    }

    /// May act on (or see) what belongs to `user` of `team`: themself, their team admin, an admin
    /// or a service identity.
    pub fn may_act_for(&self, user: &str, team: &str) -> bool {
        match self.principal() {
            None => true,
            Some(p) => p.is_service() || p.may_act_for(user, team),
        }
    }

    /// The name audit records carry: the authenticated user or service (`internal` for an embedded
    /// caller without keys).
    pub fn name(&self) -> &str {
        match self {
            Caller::Open => "internal",
            Caller::Key(p) => &p.identity.user,
        }
    }
}

/// A fresh random key (a service identity's key when none is configured: it lives as long as the
/// process that made it).
pub fn random_key(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// `PERMISSION_DENIED` with `why` (what the caller may not do and who may).
pub fn denied(why: impl Into<String>) -> tonic::Status {
    tonic::Status::permission_denied(why.into())
}

/// Allows the call when `allowed`, else `PERMISSION_DENIED` saying who may make it.
pub fn require(allowed: bool, who_may: &str) -> Result<(), tonic::Status> {
    if allowed {
        Ok(())
    } else {
        Err(denied(format!(
            "permission denied: only {who_may} may do this"
        )))
    }
}

/// A gRPC client interceptor that sends `authorization: Bearer KEY` with every call (a service's
/// internal clients). Without a key it sends nothing.
#[derive(Clone, Default)]
pub struct WithKey(Option<tonic::metadata::AsciiMetadataValue>);

impl WithKey {
    pub fn new(key: Option<&str>) -> WithKey {
        WithKey(key.and_then(|k| format!("Bearer {}", k.trim()).parse().ok()))
    }
}

impl tonic::service::Interceptor for WithKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Adds `authorization: Bearer KEY` to one request (a client that is not built with [`WithKey`]).
pub fn with_key<T>(mut req: tonic::Request<T>, key: Option<&str>) -> tonic::Request<T> {
    if let Some(v) = key.and_then(|k| format!("Bearer {}", k.trim()).parse().ok()) {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// The caller of a gRPC request, as the server's key check found it. A service served without a key
/// check has none: the request is refused rather than served as nobody.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| tonic::Status::unauthenticated(AuthError::Missing.to_string()))
}

/// The key check as an axum middleware (what [`crate::Grpc::authenticate`] installs): lets health and
/// reflection through, checks the key of everything else before the body is read (a gRPC
/// `UNAUTHENTICATED` when it fails), and hands the principal to the handler in the extensions.
pub async fn check(State(ring): State<Arc<KeyRing>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN_PATHS.iter().any(|p| path.starts_with(p)) {
        return next.run(req).await;
    }
    match ring.authenticate(api_key(req.headers())) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => tonic::Status::unauthenticated(e.to_string()).into_http(),
    }
}

/// Rewrites tonic's status for a body it could not decode: a malformed message is the caller's
/// (`INVALID_ARGUMENT`, tonic says `INTERNAL`), one over the size limit is `RESOURCE_EXHAUSTED`
/// (tonic says `OUT_OF_RANGE`). Only trailers-only answers (a unary call refused before its handler
/// ran) carry the status in the headers, which is where a decode failure lands.
pub async fn map_decode_errors(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers();
    let code = h.get("grpc-status").and_then(|v| v.to_str().ok());
    let msg = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let new = match code {
        Some("13") if msg.contains("decode") => Some("3"),
        Some("11") if msg.contains("too large") || msg.contains("length") => Some("8"),
        _ => None,
    };
    if let Some(new) = new {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(new));
    }
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use retort_hooks::{Identity, Role};

    use super::*;

    fn user(name: &str, role: Role) -> Principal {
        Principal {
            identity: Identity {
                user: name.into(),
                ..Identity::default()
            },
            role,
        }
    }

    #[test]
    fn keys_map_to_their_principal_and_nothing_else_gets_in() {
        let mut ring = KeyRing::new();
        ring.insert("sk-alice", user("alice", Role::User)).unwrap();
        ring.insert("sk-root", user("root", Role::Admin)).unwrap();
        assert_eq!(
            ring.authenticate(Some("sk-alice")).unwrap().identity.user,
            "alice"
        );
        assert_eq!(
            ring.authenticate(Some(" sk-root ")).unwrap().role,
            Role::Admin
        );
        assert_eq!(ring.authenticate(Some("sk-bob")), Err(AuthError::Unknown));
        assert_eq!(ring.authenticate(None), Err(AuthError::Missing));
        assert_eq!(ring.authenticate(Some("  ")), Err(AuthError::Missing));
        ring.allow_anonymous(user("anonymous", Role::User));
        assert_eq!(ring.authenticate(None).unwrap().identity.user, "anonymous");
        assert_eq!(
            ring.authenticate(Some("sk-bob")),
            Err(AuthError::Unknown),
            "a wrong key is never anonymous"
        );
    }

    #[test]
    fn empty_and_shared_keys_are_refused() {
        let mut ring = KeyRing::new();
        assert!(matches!(
            ring.insert(" ", user("a", Role::User)),
            Err(KeyError::Empty { .. })
        ));
        ring.insert("k", user("a", Role::User)).unwrap();
        assert_eq!(
            ring.insert("k", user("b", Role::User)),
            Err(KeyError::Duplicate {
                user: "b".into(),
                other: "a".into()
            })
        );
    }

    #[test]
    fn the_key_comes_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k1".parse().unwrap());
        assert_eq!(api_key(&h), Some("k1"));
        h.insert("authorization", "Bearer k2".parse().unwrap());
        assert_eq!(api_key(&h), Some("k2"));
    }
}
