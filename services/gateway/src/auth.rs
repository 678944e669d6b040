//! Who is calling: the API key decides the user; the session id and the harness travel with the
//! request into metering and breakers.
use http::HeaderMap;

use crate::{
    config::Config,
    error::ApiError,
    types::{Harness, Identity},
};

use http::HeaderName;

pub const SESSION_HEADERS: [&str; 2] = ["x-claude-code-session-id", "x-retort-session"];
/// [`SESSION_HEADERS`] as header names: looked up without parsing the name on every request.
const SESSION_HEADER_NAMES: [HeaderName; 2] = [
    HeaderName::from_static(SESSION_HEADERS[0]),
    HeaderName::from_static(SESSION_HEADERS[1]),
];
/// The key from `Authorization: Bearer KEY` or `x-api-key: KEY` (or gRPC metadata of the same names):
/// every service reads it the same way.
pub use retort_server::auth::api_key;

/// Who a request without a key is when `require_auth = false`.
fn anonymous() -> Identity {
    Identity {
        user: "anonymous".into(),
        ..Identity::default()
    }
}

/// Maps the request's key to a user; unknown or missing keys are refused unless auth is off.
pub fn authenticate(cfg: &Config, headers: &HeaderMap) -> Result<Identity, ApiError> {
    match api_key(headers) {
        Some(key) if !key.is_empty() => cfg.identities.users.get(key).cloned().ok_or_else(|| {
            ApiError::Unauthorized("invalid API key: it is not known to this gateway".into())
        }),
        _ if !cfg.server.require_auth => Ok(anonymous()),
        _ => Err(ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`".into(),
        )),
    }
}

/// The gateway's users as the key ring its gRPC port checks before a call is decoded (the same users
/// and answers as [`authenticate`]); with `require_auth = false` a call without a key is `anonymous`.
pub fn key_ring(cfg: &Config) -> retort_server::auth::KeyRing {
    let mut ring = ring_of(&cfg.identities);
    if !cfg.server.require_auth {
        ring.allow_anonymous(retort_hooks::Principal {
            identity: anonymous(),
            role: retort_hooks::Role::User,
        });
    }
    ring
}

/// The one place a key ring is built from a configuration's `[[users]]` and `[[services]]` (each
/// key with its role): the gateway's, and every other service's (which never admit anonymous calls).
pub fn ring_of(ids: &crate::config::Identities) -> retort_server::auth::KeyRing {
    use retort_hooks::{Principal, Role};
    let mut ring = retort_server::auth::KeyRing::new();
    for (key, identity) in &ids.users {
        let principal = Principal {
            identity: identity.clone(),
            role: ids.roles.get(key).copied().unwrap_or(Role::User),
        };
        // The configuration already refused empty and shared keys; a refusal here is only logged.
        if let Err(e) = ring.insert(key, principal) {
            tracing::warn!(error = %e, "a key is left out of the key check");
        }
    }
    ring
}

/// The session id from the headers, falling back to what the request body carried.
pub fn session_id(headers: &HeaderMap, hint: Option<String>) -> Option<String> {
    SESSION_HEADER_NAMES
        .iter()
        .find_map(|h| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_owned)
        .or(hint)
}

/// The harness, from the User-Agent.
pub fn harness(user_agent: Option<&str>) -> Harness {
    let Some(ua) = user_agent else {
        return Harness::Other;
    };
    let ua = ua.to_ascii_lowercase();
    if ua.contains("claude-cli") || ua.contains("claude-code") || ua.contains("claude code") {
        Harness::ClaudeCode
    } else if ua.contains("codex") {
        Harness::Codex
    } else if ua.contains("cursor") {
        Harness::Cursor
    } else if ua.contains("copilot") {
        Harness::Copilot
    } else if ua.starts_with("openai/")
        || ua.starts_with("asyncopenai/")
        || ua.starts_with("anthropic/")
        || ua.starts_with("asyncanthropic/")
        || ua.contains("openai-python")
        || ua.contains("anthropic-sdk")
        || ua.starts_with("grpc-")
        || ua.contains("tonic")
    {
        Harness::Sdk
    } else {
        Harness::Other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn detects_harnesses() {
        assert_eq!(
            harness(Some("claude-cli/2.0.14 (external, cli)")),
            Harness::ClaudeCode
        );
        assert_eq!(
            harness(Some("codex_cli_rs/0.46.0 (Mac OS 15.0; arm64)")),
            Harness::Codex
        );
        assert_eq!(harness(Some("Cursor/1.7")), Harness::Cursor);
        assert_eq!(harness(Some("GitHubCopilotChat/0.31")), Harness::Copilot);
        assert_eq!(harness(Some("OpenAI/Python 1.109.1")), Harness::Sdk);
        assert_eq!(harness(Some("Anthropic/Python 0.69.0")), Harness::Sdk);
        assert_eq!(harness(Some("curl/8.0")), Harness::Other);
        assert_eq!(harness(None), Harness::Other);
    }

    #[test]
    fn reads_keys_and_sessions() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-1".parse().unwrap());
        assert_eq!(api_key(&h), Some("sk-1"));
        let mut h2 = HeaderMap::new();
        h2.insert("x-api-key", "sk-2".parse().unwrap());
        assert_eq!(api_key(&h2), Some("sk-2"));
        h2.insert("x-claude-code-session-id", "abc".parse().unwrap());
        assert_eq!(session_id(&h2, Some("hint".into())).as_deref(), Some("abc"));
        assert_eq!(session_id(&h, Some("hint".into())).as_deref(), Some("hint"));
    }
}
