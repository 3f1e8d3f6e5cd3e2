//! Credentials per role. A coordinator holds a peer key (Raft RPCs and the internal
//! coordinator-to-coordinator routes), an operator key (the mutating cluster API, and every
//! protected read), an optional read key (protected reads only) and the worker secret, from
//! which each worker's own token is derived ([`worker_token`]). Keys are kept only as SHA-256
//! digests and compared digest to digest, in constant time: the compare reveals nothing about a
//! key, its length included. A request presents its credential in `x-api-key` or
//! `Authorization: Bearer`; when both are present, either may match. A worker also names itself
//! in `x-worker-id`, and its token must be that id's.

use subtle::ConstantTimeEq;

/// Header carrying the credential (also accepted: `Authorization: Bearer`).
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header a worker names itself in, next to its token.
pub const WORKER_ID_HEADER: &str = "x-worker-id";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Anyone: `/health`, `/ready`, `/metrics`, the `/cluster` page.
    Public,
    /// The read key or the operator key.
    Read,
    /// The operator key.
    Operator,
    /// The peer key: only other coordinators.
    Peer,
    /// A worker's own token (with `x-worker-id`).
    Worker,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Public => "public",
            Role::Read => "read",
            Role::Operator => "operator",
            Role::Peer => "peer",
            Role::Worker => "worker",
        }
    }
}

/// Who a request proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credential needed (a public route, or an insecure coordinator).
    Anyone,
    Reader,
    Operator,
    Peer,
    /// A worker, by the id its token is bound to.
    Worker(String),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credential, or none that this coordinator knows: 401.
    Unauthorized,
    /// A valid credential of a role this route does not admit: 403.
    Forbidden,
}

/// A configured key, kept only as its digest.
#[derive(Clone)]
struct Key([u8; 32]);

impl Key {
    fn new(key: &str) -> Self {
        Key(digest(key))
    }

    fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.ct_eq(&digest(presented)))
    }
}

fn digest(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// The keys a coordinator was started with (`--peer-key`, `--operator-key`, `--read-key`,
/// `--worker-secret`), or none at all (`--insecure`: every route open to anyone).
#[derive(Clone, Default)]
pub struct Keys {
    peer: Option<Key>,
    operator: Option<Key>,
    read: Option<Key>,
    worker_secret: Option<String>,
    /// The peer key in clear: presented on this coordinator's own calls to its peers.
    peer_clear: Option<String>,
    /// The operator key in clear: presented when this coordinator reads a peer's `/raft/metrics`.
    operator_clear: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.write_str(if self.is_insecure() {
            "Keys(insecure)"
        } else {
            "Keys(set)"
        })
    }
}

/// The key flags as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyConfig {
    pub peer_key: Option<String>,
    pub operator_key: Option<String>,
    pub read_key: Option<String>,
    pub worker_secret: Option<String>,
    pub insecure: bool,
}

impl KeyConfig {
    /// The missing flags of a secure coordinator, or the flags contradicting `--insecure`.
    pub fn problem(&self) -> Option<String> {
        let given = |v: &Option<String>| v.as_deref().is_some_and(|k| !k.is_empty());
        let named = [
            ("--peer-key", given(&self.peer_key)),
            ("--operator-key", given(&self.operator_key)),
            ("--worker-secret", given(&self.worker_secret)),
        ];
        if self.insecure {
            let set: Vec<&str> = named
                .iter()
                .filter(|(_, g)| *g)
                .map(|(n, _)| *n)
                .chain(given(&self.read_key).then_some("--read-key"))
                .collect();
            return (!set.is_empty()).then(|| {
                format!(
                    "--insecure runs without keys, but {} given; drop --insecure or the keys",
                    set.join(", ")
                )
            });
        }
        let missing: Vec<&str> = named.iter().filter(|(_, g)| !*g).map(|(n, _)| *n).collect();
        (!missing.is_empty()).then(|| {
            format!(
                "missing {} (or their VARPULIS_* environment variables); a coordinator needs \
                 --peer-key, --operator-key and --worker-secret, or --insecure to run without keys",
                missing.join(", ")
            )
        })
    }

    pub fn keys(&self) -> Keys {
        let clear = |v: &Option<String>| v.clone().filter(|k| !k.is_empty());
        Keys {
            peer: clear(&self.peer_key).map(|k| Key::new(&k)),
            operator: clear(&self.operator_key).map(|k| Key::new(&k)),
            read: clear(&self.read_key).map(|k| Key::new(&k)),
            worker_secret: clear(&self.worker_secret),
            peer_clear: clear(&self.peer_key),
            operator_clear: clear(&self.operator_key),
        }
    }
}

impl Keys {
    /// No keys at all: every route open (`--insecure`).
    pub fn is_insecure(&self) -> bool {
        self.peer.is_none() && self.operator.is_none() && self.worker_secret.is_none()
    }

    /// `"insecure"` or `"keys"`, as `/health` reports it.
    pub fn mode(&self) -> &'static str {
        if self.is_insecure() {
            "insecure"
        } else {
            "keys"
        }
    }

    /// The peer key to present on this coordinator's calls to its peers.
    pub fn peer_key(&self) -> Option<&str> {
        self.peer_clear.as_deref()
    }

    /// The operator key to present when reading a peer's protected reads.
    pub fn operator_key(&self) -> Option<&str> {
        self.operator_clear.as_deref()
    }

    /// Who the request's headers prove the caller to be, if `role` admits them.
    pub fn check(&self, role: Role, headers: &axum::http::HeaderMap) -> Result<Caller, Denied> {
        if role == Role::Public || self.is_insecure() {
            return Ok(Caller::Anyone);
        }
        let callers: Vec<Caller> = presented(headers)
            .into_iter()
            .flat_map(|credential| self.callers(credential, headers))
            .collect();
        let admitted = |c: &Caller| match role {
            Role::Public => true,
            Role::Read => matches!(c, Caller::Reader | Caller::Operator),
            Role::Operator => matches!(c, Caller::Operator),
            Role::Peer => matches!(c, Caller::Peer),
            Role::Worker => matches!(c, Caller::Worker(_)),
        };
        match callers.iter().find(|c| admitted(c)) {
            Some(c) => Ok(c.clone()),
            None if callers.is_empty() => Err(Denied::Unauthorized),
            None => Err(Denied::Forbidden),
        }
    }

    /// Every role `credential` proves (a key may be configured for more than one role).
    fn callers(&self, credential: &str, headers: &axum::http::HeaderMap) -> Vec<Caller> {
        let mut found = Vec::new();
        let is = |k: &Option<Key>| k.as_ref().is_some_and(|k| k.matches(credential));
        if is(&self.peer) {
            found.push(Caller::Peer);
        }
        if is(&self.operator) {
            found.push(Caller::Operator);
        }
        if is(&self.read) {
            found.push(Caller::Reader);
        }
        let worker_id = headers.get(WORKER_ID_HEADER).and_then(|v| v.to_str().ok());
        if let (Some(secret), Some(id)) = (&self.worker_secret, worker_id) {
            if worker_token_valid(secret, id, credential) {
                found.push(Caller::Worker(id.to_string()));
            }
        }
        found
    }
}

/// The credentials presented in request headers: `x-api-key` and the Bearer token, each if any.
pub fn presented(headers: &axum::http::HeaderMap) -> Vec<&str> {
    let key = headers.get(API_KEY_HEADER).and_then(|v| v.to_str().ok());
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    key.into_iter().chain(bearer).collect()
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
    use axum::http::HeaderMap;

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

    fn keys() -> Keys {
        KeyConfig {
            peer_key: Some("peer".into()),
            operator_key: Some("op".into()),
            read_key: Some("read".into()),
            worker_secret: Some("ws".into()),
            insecure: false,
        }
        .keys()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn each_role_admits_its_own_key_and_refuses_the_others_with_403() {
        let k = keys();
        let op = headers(&[("x-api-key", "op")]);
        assert_eq!(k.check(Role::Operator, &op), Ok(Caller::Operator));
        assert_eq!(k.check(Role::Read, &op), Ok(Caller::Operator));
        assert_eq!(k.check(Role::Peer, &op), Err(Denied::Forbidden));
        let read = headers(&[("x-api-key", "read")]);
        assert_eq!(k.check(Role::Operator, &read), Err(Denied::Forbidden));
        assert_eq!(k.check(Role::Read, &read), Ok(Caller::Reader));
        let none = HeaderMap::new();
        assert_eq!(k.check(Role::Read, &none), Err(Denied::Unauthorized));
        assert_eq!(k.check(Role::Public, &none), Ok(Caller::Anyone));
        let wrong = headers(&[("x-api-key", "op!")]);
        assert_eq!(k.check(Role::Operator, &wrong), Err(Denied::Unauthorized));
        let token = worker_token("ws", "w1");
        let w1 = headers(&[("x-api-key", &token), ("x-worker-id", "w1")]);
        assert_eq!(k.check(Role::Worker, &w1), Ok(Caller::Worker("w1".into())));
        assert_eq!(k.check(Role::Peer, &w1), Err(Denied::Forbidden));
        let as_w2 = headers(&[("x-api-key", &token), ("x-worker-id", "w2")]);
        assert_eq!(k.check(Role::Worker, &as_w2), Err(Denied::Unauthorized));
    }

    #[test]
    fn a_wrong_x_api_key_does_not_hide_a_right_bearer_token() {
        let k = keys();
        let both = headers(&[("x-api-key", "nope"), ("authorization", "Bearer peer")]);
        assert_eq!(k.check(Role::Peer, &both), Ok(Caller::Peer));
        let both = headers(&[("x-api-key", "peer"), ("authorization", "Bearer nope")]);
        assert_eq!(k.check(Role::Peer, &both), Ok(Caller::Peer));
    }

    #[test]
    fn an_insecure_coordinator_admits_anyone_and_a_secure_one_needs_three_keys() {
        let insecure = KeyConfig {
            insecure: true,
            ..Default::default()
        };
        assert_eq!(insecure.problem(), None);
        assert_eq!(
            insecure.keys().check(Role::Peer, &HeaderMap::new()),
            Ok(Caller::Anyone)
        );
        assert_eq!(insecure.keys().mode(), "insecure");
        let missing = KeyConfig {
            peer_key: Some("p".into()),
            ..Default::default()
        };
        let text = missing.problem().expect("refused");
        assert!(
            text.contains("--operator-key") && text.contains("--worker-secret"),
            "{text}"
        );
        assert!(!text.starts_with("missing --peer-key"), "{text}");
        let mixed = KeyConfig {
            peer_key: Some("p".into()),
            insecure: true,
            ..Default::default()
        };
        assert!(mixed.problem().expect("refused").contains("--peer-key"));
        assert_eq!(format!("{:?}", keys()), "Keys(set)");
    }
}
