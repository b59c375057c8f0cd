//! Where ztunnel's configuration comes from and how the last reloads or
//! pushes went, for `/config_dump`: an operator asking "is this node on
//! the control plane, and did it take the last change?" gets the answer
//! without reading logs.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

#[derive(Debug, Default)]
struct Status {
    /// `file` or `xds`.
    kind: &'static str,
    /// The file, or the control plane's address.
    from: String,
    applied: u64,
    refused: u64,
    /// Unix seconds.
    last_applied_at: Option<u64>,
    last_refused: Option<Refused>,
}

#[derive(Debug)]
struct Refused {
    at: u64,
    /// Why (what the NACK told the control plane); empty for a file.
    reason: String,
}

#[derive(Debug, Default)]
pub struct ConfigStatus {
    status: Mutex<Status>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ConfigStatus {
    pub fn file(path: &std::path::Path) -> Self {
        Self::new("file", path.display().to_string())
    }

    pub fn xds(address: &str) -> Self {
        Self::new("xds", address.to_owned())
    }

    fn new(kind: &'static str, from: String) -> Self {
        Self {
            status: Mutex::new(Status {
                kind,
                from,
                ..Status::default()
            }),
        }
    }

    pub fn applied(&self) {
        let mut s = self.lock();
        s.applied += 1;
        s.last_applied_at = Some(now());
    }

    pub fn refused(&self, reason: &str) {
        let mut s = self.lock();
        s.refused += 1;
        s.last_refused = Some(Refused {
            at: now(),
            reason: reason.to_owned(),
        });
    }

    pub fn json(&self) -> Value {
        let s = self.lock();
        json!({
            "kind": s.kind,
            "from": s.from,
            "applied": s.applied,
            "refused": s.refused,
            "lastAppliedAt": s.last_applied_at,
            "lastRefused": s.last_refused.as_ref().map(|r| json!({
                "at": r.at,
                "reason": r.reason,
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pushes_and_keeps_the_last_refusal() {
        let status = ConfigStatus::xds("https://10.0.0.250:15012");
        status.applied();
        status.refused("address a is invalid");
        status.applied();
        let json = status.json();
        assert_eq!(json["kind"], "xds");
        assert_eq!(json["from"], "https://10.0.0.250:15012");
        assert_eq!(json["applied"], 2);
        assert_eq!(json["refused"], 1);
        assert_eq!(json["lastRefused"]["reason"], "address a is invalid");
        assert!(json["lastAppliedAt"].as_u64().is_some_and(|t| t > 0));
    }
}
