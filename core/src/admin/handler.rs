//! The operator's admin endpoint (Istio's port 15000): config dump and log level.
//!
//! It can change the process's log level and shows its whole configuration,
//! so callers bind it to localhost only, outside the pods' reach.

use std::sync::Arc;

use http::{Method, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::query;
use super::server::{AdminResponse, is_get, method_not_allowed, not_found, response, serve, text};

/// What the admin endpoint asks of the process serving it.
pub trait AdminHandler: Send + Sync {
    /// The current configuration, as JSON (served pretty-printed).
    fn config_dump(&self) -> serde_json::Value;
    /// The current log filter (e.g. `info` or `ztunnel=debug,info`).
    fn log_level(&self) -> String;
    /// Replaces the log filter; `Err` explains why `filter` was refused.
    fn set_log_level(&self, filter: &str) -> Result<(), String>;
}

const INDEX: &str = "amesh admin\n\
  GET  /config_dump             current configuration (JSON)\n\
  GET  /logging                 current log filter\n\
  POST /logging?level=<filter>  set the log filter (e.g. level=debug, level=ztunnel=debug,info)\n";

/// Serves the admin routes on `listener` until `cancel`:
///
/// - `GET /`: this list of routes;
/// - `GET /config_dump`: `admin.config_dump()`, `application/json`;
/// - `GET /logging`: the current filter;
/// - `POST /logging?level=<filter>` (URL-encoded): sets it; 200 with the new
///   filter, or 400 with the reason;
///
/// anything else is 404, or 405 for a known path with the wrong method.
pub async fn serve_admin(
    listener: TcpListener,
    admin: Arc<dyn AdminHandler>,
    cancel: CancellationToken,
) {
    serve(listener, cancel, "admin", move |req| {
        route(&*admin, req.method(), req.uri().path(), req.uri().query())
    })
    .await;
}

fn route(
    admin: &dyn AdminHandler,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> AdminResponse {
    let get = is_get(method);
    match path {
        "/" if get => text(StatusCode::OK, INDEX),
        "/" => method_not_allowed("GET, HEAD"),
        "/config_dump" if get => match serde_json::to_string_pretty(&admin.config_dump()) {
            Ok(mut json) => {
                json.push('\n');
                response(StatusCode::OK, "application/json", json)
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("config dump failed: {e}\n"),
            ),
        },
        "/config_dump" => method_not_allowed("GET, HEAD"),
        "/logging" if get => text(StatusCode::OK, format!("{}\n", admin.log_level())),
        "/logging" if method == Method::POST => set_level(admin, query),
        "/logging" => method_not_allowed("GET, HEAD, POST"),
        other => not_found(other),
    }
}

fn set_level(admin: &dyn AdminHandler, query: Option<&str>) -> AdminResponse {
    let level = match query::param(query, "level") {
        Ok(Some(level)) if !level.trim().is_empty() => level,
        Ok(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "missing level: POST /logging?level=<filter>\n",
            );
        }
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("bad level parameter: {e}\n"),
            );
        }
    };
    match admin.set_log_level(level.trim()) {
        Ok(()) => {
            let now = admin.log_level();
            tracing::info!(filter = %now, "log filter changed through the admin endpoint");
            text(StatusCode::OK, format!("{now}\n"))
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("invalid log filter: {e}\n"),
        ),
    }
}
