//! API-key checks: one shared secret per cluster, compared in constant time.

use subtle::ConstantTimeEq;

/// Header carrying the key on every protected request (also accepted: `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "x-api-key";

/// The configured key, or none (every request allowed).
#[derive(Clone, Default)]
pub struct ApiKey(Option<String>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str(if self.0.is_some() {
            "ApiKey(set)"
        } else {
            "ApiKey(none)"
        })
    }
}

impl ApiKey {
    pub fn new(key: Option<String>) -> Self {
        ApiKey(key.filter(|k| !k.is_empty()))
    }

    pub fn value(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// True when no key is configured or `presented` equals it.
    pub fn allows(&self, presented: Option<&str>) -> bool {
        match (&self.0, presented) {
            (None, _) => true,
            (Some(expected), Some(got)) => bool::from(expected.as_bytes().ct_eq(got.as_bytes())),
            (Some(_), None) => false,
        }
    }

    /// The key presented in request headers, if any.
    pub fn presented(headers: &axum::http::HeaderMap) -> Option<&str> {
        if let Some(v) = headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok()) {
            return Some(v);
        }
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_only_the_configured_key() {
        let key = ApiKey::new(Some("s3cret".into()));
        assert!(key.allows(Some("s3cret")));
        assert!(!key.allows(Some("s3cre")));
        assert!(!key.allows(Some("s3cret!")));
        assert!(!key.allows(None));
        assert!(ApiKey::new(None).allows(None));
        assert!(
            ApiKey::new(Some(String::new())).allows(None),
            "empty key means no key"
        );
        assert_eq!(format!("{key:?}"), "ApiKey(set)");
    }
}
