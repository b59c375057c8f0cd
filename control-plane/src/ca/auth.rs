//! Who is calling: bearer tokens checked against the tokens this control
//! plane issued to its local nodes (folder mode) or by Kubernetes TokenReview.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amesh_core::identity::Identity;
use futures_util::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::derive::Derived;

/// What a caller is allowed to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerRole {
    /// A node's ztunnel: may obtain identities of pods on its node.
    NodeProxy,
    /// A node's agent: reads enrollment, obtains no certificates.
    NodeAgent,
    /// Any other pod (a waypoint): only its own identity.
    Workload,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub node: Option<String>,
    /// The caller's own service-account identity (kube mode).
    pub identity: Option<Identity>,
    pub role: CallerRole,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.role)?;
        if let Some(identity) = &self.identity {
            write!(f, " {identity}")?;
        }
        if let Some(node) = &self.node {
            write!(f, " on node {node}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <token>` metadata")]
    Missing,
    #[error("token is not valid: {0}")]
    Invalid(String),
    #[error("cannot review the token: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into a [`Caller`].
pub trait Authenticator: Send + Sync + fmt::Debug {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>>;
}

/// The token of `authorization: Bearer <token>` gRPC metadata.
pub fn bearer_token(metadata: &tonic::metadata::MetadataMap) -> Result<&str, AuthError> {
    let value = metadata
        .get("authorization")
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Invalid("authorization metadata is not ASCII".into()))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| AuthError::Invalid("authorization metadata is not `Bearer <token>`".into()))?
        .trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

/// Folder mode: one random token per local node, written to
/// `<dir>/<node>.token` (0600) for that node's ztunnel and node agent.
pub struct LocalTokens {
    by_token: HashMap<String, String>,
}

impl LocalTokens {
    /// Reuses a node's existing token file so restarts do not lock nodes
    /// out; writes a fresh token otherwise.
    pub fn load_or_create(dir: &Path, nodes: &[String]) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut by_token = HashMap::new();
        for node in nodes {
            let path = dir.join(format!("{node}.token"));
            let existing = std::fs::read_to_string(&path)
                .ok()
                .map(|t| t.trim().to_owned());
            let token = match existing {
                Some(t) if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) => t,
                _ => {
                    let bytes: [u8; 32] = rand::random();
                    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    write_private(&path, token.as_bytes())?;
                    token
                }
            };
            by_token.insert(token, node.clone());
        }
        Ok(Self { by_token })
    }

    /// Tokens given directly (tests).
    pub fn from_tokens(tokens: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            by_token: tokens
                .into_iter()
                .map(|(node, token)| (token, node))
                .collect(),
        }
    }
}

impl fmt::Debug for LocalTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTokens")
            .field("nodes", &self.by_token.len())
            .finish()
    }
}

impl Authenticator for LocalTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>> {
        let result = self
            .by_token
            .get(token)
            .map(|node| Caller {
                node: Some(node.clone()),
                identity: None,
                role: CallerRole::NodeProxy,
            })
            .ok_or_else(|| AuthError::Invalid("unknown token".into()));
        Box::pin(std::future::ready(result))
    }
}

/// Service accounts with node-wide roles, as `namespace/name`.
#[derive(Clone, Debug)]
pub struct RoleAccounts {
    pub ztunnel: (String, String),
    pub node_agent: (String, String),
}

const REVIEW_CACHE_TTL: Duration = Duration::from_secs(60);
const REVIEW_CACHE_MAX: usize = 4096;
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Kubernetes mode: TokenReview with audience `istio-ca`; positive reviews
/// are cached briefly so a node renewing many certificates costs one review.
pub struct TokenReviewer {
    client: kube::Client,
    accounts: RoleAccounts,
    trust_domain: String,
    derived: watch::Receiver<Arc<Derived>>,
    cache: Mutex<HashMap<blake3::Hash, (Caller, Instant)>>,
}

impl TokenReviewer {
    pub fn new(
        client: kube::Client,
        accounts: RoleAccounts,
        trust_domain: String,
        derived: watch::Receiver<Arc<Derived>>,
    ) -> Self {
        Self {
            client,
            accounts,
            trust_domain,
            derived,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, key: &blake3::Hash) -> Option<Caller> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < REVIEW_CACHE_TTL)
            .map(|(caller, _)| caller.clone())
    }

    fn remember(&self, key: blake3::Hash, caller: &Caller) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= REVIEW_CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < REVIEW_CACHE_TTL);
            if cache.len() >= REVIEW_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (caller.clone(), Instant::now()));
    }

    async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec!["istio-ca".to_owned()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = reviewed
            .status
            .ok_or_else(|| AuthError::Unavailable("TokenReview has no status".into()))?;
        if status.authenticated != Some(true) {
            let reason = status
                .error
                .unwrap_or_else(|| "not authenticated".to_owned());
            return Err(AuthError::Invalid(reason));
        }
        let user = status
            .user
            .ok_or_else(|| AuthError::Invalid("TokenReview names no user".into()))?;
        let username = user.username.unwrap_or_default();
        let (namespace, account) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| AuthError::Invalid(format!("{username:?} is not a service account")))?;
        let extra = user.extra.unwrap_or_default();
        let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
        let node = first(NODE_NAME_EXTRA).or_else(|| {
            let pod = first(POD_NAME_EXTRA)?;
            // Cloned first: building the model must not hold the watch.
            let derived = self.derived.borrow().clone();
            derived
                .model()
                .workload_by_name(namespace, &pod)
                .map(|w| w.node.clone())
        });
        let role = if (namespace, account) == pair(&self.accounts.ztunnel) {
            CallerRole::NodeProxy
        } else if (namespace, account) == pair(&self.accounts.node_agent) {
            CallerRole::NodeAgent
        } else {
            CallerRole::Workload
        };
        let identity = Identity::new(&self.trust_domain, namespace, account)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok(Caller {
            node,
            identity: Some(identity),
            role,
        })
    }
}

fn pair(account: &(String, String)) -> (&str, &str) {
    (&account.0, &account.1)
}

impl fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("accounts", &self.accounts)
            .finish_non_exhaustive()
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let key = blake3::hash(token.as_bytes());
            if let Some(caller) = self.cached(&key) {
                return Ok(caller);
            }
            let caller = self.review(token).await?;
            self.remember(key, &caller);
            Ok(caller)
        })
    }
}

/// Parses `namespace/name`.
pub fn parse_account(value: &str) -> Result<(String, String), String> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{value:?} is not <namespace>/<name>")),
    }
}

pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(data)
}
