//! HTTP/1.1 routing: the REST verbs on any registered resource type,
//! discovery documents and TokenReview.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Shared;
use super::kinds::ResourceKind;
use super::path::{self, ResourcePath, decode_continue, encode_continue};
use super::selector::Selectors;
use super::state::{State, TypeKey};
use super::status::ApiError;
use super::token;
use super::watch::{self, Signals, WatchRequest, served};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let shared = shared.clone();
        let mut shutdown = shared.shutdown.subscribe();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

enum Reply {
    Json(StatusCode, Value),
    Watch(Box<(WatchRequest, watch::Start, Signals)>),
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    shared.lock().requests.push(format!(
        "{method} {}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    ));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(json_response(StatusCode::BAD_REQUEST, &json!({}))),
    };
    let query = path::query(uri.query());
    let reply = {
        let mut state = shared.lock();
        let reply = route(
            &shared,
            &mut state,
            &method,
            uri.path(),
            &query,
            &body,
            &content_type,
        );
        if matches!(
            method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            shared.changes.send_replace(state.rv);
        }
        reply
    };
    Ok(match reply {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Watch(watch)) => {
            let (request, start, signals) = *watch;
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(watch::run(shared.clone(), request, start, signals, tx));
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
            });
            let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => json_response(
            StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &error.to_status(),
        ),
    })
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn ok(value: Value) -> Result<Reply, ApiError> {
    Ok(Reply::Json(StatusCode::OK, value))
}

fn route(
    shared: &Shared,
    state: &mut State,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &Bytes,
    content_type: &str,
) -> Result<Reply, ApiError> {
    if state.down {
        return Err(ApiError::unavailable());
    }
    let parse_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))
    };
    match (method, path.trim_end_matches('/')) {
        (&Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews") => {
            return Ok(Reply::Json(
                StatusCode::CREATED,
                token::review(&state.tokens, &parse_body()?),
            ));
        }
        (&Method::GET, "/version") => {
            return ok(
                json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-amesh-fake", "platform": "linux/amd64"}),
            );
        }
        (&Method::GET, "/api") => {
            return ok(
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            );
        }
        (&Method::GET, "/apis") => return ok(group_list(state)),
        _ => {}
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["api", version]) => return ok(resource_list(state, "", version)),
        (&Method::GET, ["apis", group, version]) => {
            return ok(resource_list(state, group, version));
        }
        _ => {}
    }
    let rp = path::parse(path, |g, p| state.kind_by_plural(g, p).is_some())
        .ok_or_else(ApiError::no_resource)?;
    let kind = state
        .kind_by_plural(&rp.group, &rp.plural)
        .filter(|k| k.serves(&rp.version) && (k.namespaced || rp.namespace.is_none()))
        .cloned()
        .ok_or_else(ApiError::no_resource)?;
    let ty: TypeKey = (kind.group.clone(), kind.plural.clone());
    let namespace = rp.namespace.clone().unwrap_or_default();
    let status_only = match rp.subresource.as_deref() {
        None => false,
        Some("status") => true,
        Some(_) => return Err(ApiError::no_resource()),
    };
    let show = |o: &Value| served(&kind, &rp.version, o);
    match (method, &rp.name) {
        (&Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            let request = WatchRequest {
                selectors: selectors(query)?,
                bookmarks: query
                    .get("allowWatchBookmarks")
                    .is_some_and(|v| v == "true" || v == "1"),
                timeout: Duration::from_secs(
                    query
                        .get("timeoutSeconds")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(shared.options.watch_timeout.as_secs()),
                ),
                kind: kind.clone(),
                version: rp.version.clone(),
                namespace: rp.namespace.clone(),
            };
            let start = watch::start(
                state,
                &request,
                query.get("resourceVersion").map(String::as_str),
            )?;
            let signals = Signals {
                changes: shared.changes.subscribe(),
                drops: shared.drops.subscribe(),
                bookmarks: shared.bookmarks.subscribe(),
                shutdown: shared.shutdown.subscribe(),
            };
            Ok(Reply::Watch(Box::new((request, start, signals))))
        }
        (&Method::GET, None) => ok(list(state, &kind, &rp, query)?),
        (&Method::GET, Some(name)) => {
            let key = (namespace, name.clone());
            state
                .get(&ty, &key)
                .map(|o| Reply::Json(StatusCode::OK, show(o)))
                .ok_or_else(|| ApiError::not_found(&kind.plural, name))
        }
        (&Method::POST, None) if !kind.namespaced || rp.namespace.is_some() => {
            let object = parse_body()?;
            check_namespace(&object, &namespace)?;
            let created = state.create(&ty, &namespace, object)?;
            Ok(Reply::Json(StatusCode::CREATED, show(&created)))
        }
        (&Method::PUT, Some(name)) => {
            let object = parse_body()?;
            check_namespace(&object, &namespace)?;
            let updated = state.update(&ty, &(namespace, name.clone()), object, status_only)?;
            ok(show(&updated))
        }
        (&Method::PATCH, Some(name)) => {
            let patch = parse_body()?;
            let key = (namespace.clone(), name.clone());
            let current = state.get(&ty, &key).cloned();
            let apply = content_type.starts_with("application/apply-patch");
            match current {
                // Server-side apply creates what does not exist.
                None if apply => {
                    let created = state.create(&ty, &namespace, patch)?;
                    Ok(Reply::Json(StatusCode::CREATED, show(&created)))
                }
                None => Err(ApiError::not_found(&kind.plural, name)),
                Some(mut object) => {
                    // JSON merge patch; strategic merge and apply patches are
                    // approximated by it (enough for the objects tests use).
                    merge_patch(&mut object, &patch);
                    if let Some(meta) = object["metadata"].as_object_mut() {
                        meta.remove("resourceVersion");
                    }
                    let updated = state.update(&ty, &key, object, status_only)?;
                    ok(show(&updated))
                }
            }
        }
        (&Method::DELETE, Some(name)) if !status_only => {
            let deleted = state.delete(&ty, &(namespace, name.clone()))?;
            ok(show(&deleted))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn selectors(query: &BTreeMap<String, String>) -> Result<Selectors, ApiError> {
    Selectors::parse(
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
    )
    .map_err(ApiError::bad_request)
}

fn check_namespace(object: &Value, namespace: &str) -> Result<(), ApiError> {
    match object["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

/// RFC 7386.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in patch {
        if value.is_null() {
            if let Some(t) = target.as_object_mut() {
                t.remove(key);
            }
        } else {
            merge_patch(&mut target[key], value);
        }
    }
}

fn list(
    state: &State,
    kind: &ResourceKind,
    rp: &ResourcePath,
    query: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let selectors = selectors(query)?;
    let limit: Option<usize> = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let (rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, ns, name) = decode_continue(token)
                .ok_or_else(|| ApiError::bad_request("continue token is not valid"))?;
            (rv, Some((ns, name)))
        }
        None => match (
            query
                .get("resourceVersion")
                .filter(|v| !v.is_empty() && *v != "0"),
            query.get("resourceVersionMatch").map(String::as_str),
        ) {
            (Some(rv), Some("Exact")) => (
                rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("resourceVersion {rv:?} is not valid"))
                })?,
                None,
            ),
            _ => (state.rv, None),
        },
    };
    let ty = (kind.group.clone(), kind.plural.clone());
    let objects = state.snapshot_at(&ty, rv).ok_or_else(|| {
        ApiError::expired(format!(
            "resourceVersion {rv} is too old to display a consistent list result: start a new list without the continue parameter"
        ))
    })?;
    let mut matching = objects.into_iter().filter(|(key, o)| {
        rp.namespace.as_deref().is_none_or(|want| want == key.0)
            && selectors.matches(o)
            && after.as_ref().is_none_or(|a| key > a)
    });
    let page: Vec<((String, String), Value)> = matching
        .by_ref()
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if remaining > 0
        && let Some(((ns, name), _)) = page.last()
    {
        metadata["continue"] = json!(encode_continue(rv, ns, name));
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(&rp.version),
        "metadata": metadata,
        "items": page.iter().map(|(_, o)| served(kind, &rp.version, o)).collect::<Vec<_>>(),
    }))
}

fn resource_list(state: &State, group: &str, version: &str) -> Value {
    let resources: Vec<Value> = state
        .kinds
        .values()
        .filter(|k| k.group == group && k.serves(version))
        .map(|k| {
            json!({
                "name": k.plural,
                "singularName": k.kind.to_lowercase(),
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
        "resources": resources,
    })
}

fn group_list(state: &State) -> Value {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for kind in state.kinds.values().filter(|k| !k.group.is_empty()) {
        let versions = groups.entry(&kind.group).or_default();
        for v in &kind.versions {
            if !versions.contains(&v.as_str()) {
                versions.push(v);
            }
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .filter_map(|(group, versions)| {
            let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
            Some(json!({
                "name": group,
                "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
                "preferredVersion": gv(versions.first()?),
            }))
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}
