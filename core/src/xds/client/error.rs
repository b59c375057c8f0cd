//! Why the xDS client could not connect, subscribe or deliver a push.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum XdsError {
    #[error("control plane address {address:?} is not usable: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot use root certificate {path}: {reason}")]
    RootCert { path: String, reason: String },
    #[error("cannot read token file {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("control plane {address} refused the xDS stream: {code}: {message}")]
    Refused {
        address: String,
        code: String,
        message: String,
    },
    #[error("xDS stream to {address} failed: {reason}")]
    Stream { address: String, reason: String },
    #[error("no configuration from the control plane within {0:?}")]
    FirstPushTimeout(Duration),
    #[error("the xDS client stopped before the first push")]
    Stopped,
}
