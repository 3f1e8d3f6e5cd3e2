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

/// A worker's credential, derived from the cluster's worker secret and the worker's id:
/// `hex(HMAC-SHA256(secret, "varpulis-worker:" + id))`. Whoever holds the secret (coordinators,
/// the broker, the harness that starts the cluster) can check any worker's token; a worker holds
/// only its own, so it can speak only for its own id. Never replicated.
pub fn worker_token(secret: &str, worker_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"varpulis-worker:");
    mac.update(worker_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// True when `presented` is `worker_id`'s token under `secret`, compared in constant time (both
/// sides have the token's fixed length, so the compare reveals nothing about it).
pub fn worker_token_valid(secret: &str, worker_id: &str, presented: &str) -> bool {
    let expected = worker_token(secret, worker_id);
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_token_is_bound_to_its_id_and_secret() {
        let t = worker_token("secret", "worker-1");
        // Python: hmac.new(b"secret", b"varpulis-worker:worker-1", hashlib.sha256).hexdigest()
        assert_eq!(
            t,
            "fd79cb39f4356ca276f387d9a77e4467bfd78da639174ecdbb4888e62e571cf9"
        );
        assert!(worker_token_valid("secret", "worker-1", &t));
        assert!(!worker_token_valid("secret", "worker-2", &t), "another id");
        assert!(
            !worker_token_valid("other", "worker-1", &t),
            "another secret"
        );
        assert!(!worker_token_valid("secret", "worker-1", &t[..63]));
        assert_eq!(t, worker_token("secret", "worker-1"), "deterministic");
    }

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
