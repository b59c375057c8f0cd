//! A fake Kubernetes API server for tests (no real one can run here): plain
//! HTTP/1.1 on loopback, implementing the list/watch protocol faithfully for
//! any registered resource type.
//!
//! - One global, increasing `resourceVersion` on every object and list.
//! - Lists with `limit`/`continue` paging over a consistent snapshot;
//!   label and field selectors; `resourceVersionMatch=Exact`.
//! - Watches (`watch=true`) stream `ADDED`/`MODIFIED`/`DELETED` from a
//!   `resourceVersion` on; `allowWatchBookmarks` adds `BOOKMARK`s
//!   (periodic: [`Options::bookmark_interval`], or [`FakeApiServer::send_bookmarks`]);
//!   `timeoutSeconds` ends the stream. A watch from a `resourceVersion` older
//!   than the retained history gets an `ERROR` event with a `410 Expired`
//!   Status, as does a list with an expired `continue` token (HTTP 410).
//!   `sendInitialEvents` is ignored (kube-rs's default ListWatch never sends it).
//! - Objects are stored once per type and served in every version the type
//!   serves (identity conversion, as for Istio's CRDs).
//! - GET/POST/PUT/PATCH (merge, and apply as merge)/DELETE, the `status`
//!   subresource, optimistic concurrency on `metadata.resourceVersion`.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` answers from tokens
//!   set with [`FakeApiServer::set_token`].
//! - Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`).
//!
//! Not modelled: namespaces existing before their objects, finalizers,
//! admission, authentication of the client itself.
//!
//! ```ignore
//! let api = FakeApiServer::start().await;
//! api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}));
//! let client = api.client()?;
//! ```

mod kinds;
mod path;
mod selector;
mod server;
mod state;
mod status;
mod token;
mod watch;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

pub use kinds::ResourceKind;
pub use status::ApiError;
pub use token::{NODE_NAME, POD_NAME, POD_UID, TokenUser};

use kinds::split_api_version;
use state::State;

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Periodic bookmarks on watches that allow them; `None`: only on
    /// [`FakeApiServer::send_bookmarks`]. The API server sends one about
    /// every minute.
    pub bookmark_interval: Option<Duration>,
    /// Changes kept for watches to resume from; older resourceVersions
    /// expire (410) once more changes have happened.
    pub history_limit: usize,
    /// Watch duration when the request has no `timeoutSeconds`.
    pub watch_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bookmark_interval: Some(Duration::from_secs(60)),
            history_limit: 10_000,
            watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// State shared by the handle, the HTTP handlers and the watch streams.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    options: Options,
    /// The latest resourceVersion, bumped after every write.
    changes: signal::Sender<u64>,
    /// Bumped by `drop_watches`: every open watch stream ends.
    drops: signal::Sender<u64>,
    /// Bumped by `send_bookmarks`.
    bookmarks: signal::Sender<u64>,
    shutdown: signal::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, rv: u64) {
        self.changes.send_replace(rv);
    }
}

/// A running fake API server; dropping it stops it (open watches end).
#[derive(Debug)]
pub struct FakeApiServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeApiServer {
    /// Starts with [`Options::default`].
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        // Binding an ephemeral loopback port fails only when the machine is
        // out of ports or has no loopback: nothing a test can go on without.
        #[allow(clippy::expect_used)]
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake API server binds 127.0.0.1:0");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("bound socket has an address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(options.history_limit)),
            options,
            changes: signal::channel(0).0,
            drops: signal::channel(0).0,
            bookmarks: signal::channel(0).0,
            shutdown: signal::channel(false).0,
        });
        tokio::spawn(server::serve(listener, shared.clone()));
        Self {
            url: format!("http://{addr}"),
            shared,
        }
    }

    /// A kube client for this server.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::Config::new(self.url.parse()?);
        Ok(kube::Client::try_from(config)?)
    }

    /// Creates or replaces an object (`apiVersion`, `kind`, `metadata.name`;
    /// namespaced kinds default to namespace `default`). Returns it as
    /// stored, with its new `resourceVersion`.
    ///
    /// Panics on an unknown kind or a malformed object: a bug in the test.
    pub fn apply(&self, object: Value) -> Value {
        match self.try_apply(object) {
            Ok(stored) => stored,
            Err(error) => panic!("fake API server: apply: {error}"),
        }
    }

    pub fn try_apply(&self, mut object: Value) -> Result<Value, ApiError> {
        let mut state = self.shared.lock();
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind_name = object["kind"].as_str().unwrap_or_default().to_owned();
        let (group, version) = split_api_version(&api_version);
        let kind = state
            .kind_by_name(group, &kind_name)
            .filter(|k| k.serves(version))
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no kind {kind_name:?} is registered for version {api_version:?}"
                ))
            })?;
        let namespace = match object["metadata"]["namespace"].as_str() {
            _ if !kind.namespaced => String::new(),
            Some(ns) if !ns.is_empty() => ns.to_owned(),
            _ => "default".to_owned(),
        };
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| {
                ApiError::invalid(format!("{kind_name}: metadata.name: Required value"))
            })?
            .to_owned();
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        let ty = (kind.group.clone(), kind.plural.clone());
        let key = (namespace.clone(), name);
        let stored = if state.get(&ty, &key).is_some() {
            state.update(&ty, &key, object, false)?
        } else {
            state.create(&ty, &namespace, object)?
        };
        self.shared.notify(state.rv);
        Ok(stored)
    }

    /// The object as stored, if it exists.
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.shared.lock();
        let (group, _) = split_api_version(api_version);
        let kind = state.kind_by_name(group, kind)?;
        let ns = if kind.namespaced { namespace } else { "" };
        let ty = (kind.group.clone(), kind.plural.clone());
        state.get(&ty, &(ns.to_owned(), name.to_owned())).cloned()
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let mut state = self.shared.lock();
        let (group, _) = split_api_version(api_version);
        let Some(kind) = state.kind_by_name(group, kind).cloned() else {
            return false;
        };
        let ns = if kind.namespaced { namespace } else { "" };
        let ty = (kind.group.clone(), kind.plural.clone());
        let deleted = state.delete(&ty, &(ns.to_owned(), name.to_owned())).is_ok();
        self.shared.notify(state.rv);
        deleted
    }

    /// Forgets the change history (an etcd compaction): every
    /// resourceVersion handed out so far is expired, so a client whose watch
    /// ends must relist. Open watches keep streaming.
    pub fn compact(&self) {
        let mut state = self.shared.lock();
        state.compact();
        self.shared.notify(state.rv);
    }

    /// Ends every open watch stream (as an API server restart does):
    /// clients must watch again.
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|n| *n += 1);
    }

    /// Simulates an API server outage around `f`: every open watch ends and
    /// every request gets `503 ServiceUnavailable` until `f` returns, so
    /// what `f` changes (through this handle) reaches clients only when they
    /// watch again or relist.
    pub fn while_down(&self, f: impl FnOnce(&Self)) {
        self.shared.lock().down = true;
        self.drop_watches();
        f(self);
        self.shared.lock().down = false;
    }

    /// Sends a BOOKMARK on every open watch that allows bookmarks.
    pub fn send_bookmarks(&self) {
        self.shared.bookmarks.send_modify(|n| *n += 1);
    }

    /// Every request so far, as `METHOD /path?query` (query as sent).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Serves a resource type (a CRD being installed).
    pub fn register_kind(&self, kind: ResourceKind) {
        self.shared.lock().register(kind);
    }

    /// Stops serving a resource type (404, as for a CRD not installed) and
    /// deletes its objects. Returns it, to register again later.
    pub fn unregister_kind(&self, group: &str, kind: &str) -> Option<ResourceKind> {
        let mut state = self.shared.lock();
        let removed = state.unregister(group, kind);
        self.shared.notify(state.rv);
        removed
    }

    /// Makes TokenReview authenticate `token` as `user`.
    pub fn set_token(&self, token: &str, user: TokenUser) {
        self.shared.lock().tokens.insert(token.to_owned(), user);
    }

    pub fn remove_token(&self, token: &str) {
        self.shared.lock().tokens.remove(token);
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

#[cfg(test)]
mod tests;
