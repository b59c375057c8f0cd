//! libcni's result cache: `<cache dir>/results/<network>-<container>-<ifname>`,
//! one `cniCacheV1` JSON per attachment, holding the final ADD result (the
//! `prevResult` of CHECK and DEL) and what GC needs to DEL it later.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::NetworkConfigList;
use super::runtime::Attachment;

const KIND: &str = "cniCacheV1";

/// libcni's `cachedInfo`, field for field.
#[derive(Debug, Serialize, Deserialize)]
struct CachedInfo {
    kind: String,
    #[serde(rename = "containerId")]
    container_id: String,
    /// The network config list; a Go `[]byte`, so base64.
    #[serde(default)]
    config: String,
    #[serde(rename = "ifName")]
    if_name: String,
    #[serde(rename = "networkName")]
    network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    cni_args: Vec<(String, String)>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    result: Value,
}

pub(super) fn path(cache_dir: &Path, network: &str, att: &Attachment) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}-{}-{}", att.container_id, att.ifname))
}

/// Records a successful ADD (private to root, as libcni writes it).
pub(super) fn write(
    cache_dir: &Path,
    list: &NetworkConfigList,
    att: &Attachment,
    result: &Value,
) -> Result<()> {
    let info = CachedInfo {
        kind: KIND.into(),
        container_id: att.container_id.clone(),
        config: base64(&list.bytes),
        if_name: att.ifname.clone(),
        network_name: list.name.clone(),
        netns: att.netns.clone(),
        cni_args: att.args.clone(),
        capability_args: att.capability_args.clone(),
        result: result.clone(),
    };
    let file = path(cache_dir, &list.name, att);
    let dir = file.parent().context("cache path has no parent")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .with_context(|| format!("open {}", file.display()))?;
    serde_json::to_writer(&mut out, &info).with_context(|| format!("write {}", file.display()))
}

/// The cached final result; `None` if nothing is cached. A pre-cniCacheV1
/// file holds the bare result.
pub(super) fn read_result(
    cache_dir: &Path,
    network: &str,
    att: &Attachment,
) -> Result<Option<Value>> {
    let file = path(cache_dir, network, att);
    let Ok(bytes) = std::fs::read(&file) else {
        return Ok(None);
    };
    let value: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("cached result {} is not JSON", file.display()))?;
    if value.get("kind").and_then(Value::as_str) == Some(KIND) {
        return Ok(value.get("result").cloned().filter(|r| !r.is_null()));
    }
    Ok(Some(value))
}

pub(super) fn remove(cache_dir: &Path, network: &str, att: &Attachment) {
    // Absent is fine: DEL is idempotent.
    let _ = std::fs::remove_file(path(cache_dir, network, att));
}

/// Every cached attachment of `network` (libcni `GetCachedAttachments`);
/// unreadable or foreign files are skipped.
pub(super) fn attachments(cache_dir: &Path, network: &str) -> Vec<Attachment> {
    let Ok(dir) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files
        .iter()
        .filter_map(|file| {
            let info: CachedInfo = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
            (info.kind == KIND
                && info.network_name == network
                && !info.if_name.is_empty()
                && !info.container_id.is_empty())
            .then_some(Attachment {
                container_id: info.container_id,
                netns: info.netns,
                ifname: info.if_name,
                args: info.cni_args,
                capability_args: info.capability_args,
            })
        })
        .collect()
}

/// Standard base64 with padding, as Go's encoding/json writes a `[]byte`.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"{\"a\":1}"), "eyJhIjoxfQ==");
    }
}
