//! Where the CA's key material lives: a directory or a Kubernetes Secret,
//! holding the same file names. Created with a new root on first start.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::auth::write_private;
use super::authority::{
    AuthorityError, CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, ROOT_KEY, generate_root,
};

const FILES: [&str; 5] = [ROOT_CERT, ROOT_KEY, CA_CERT, CA_KEY, CERT_CHAIN];

/// Reads the CA files of `dir`, creating a root there if it holds none.
pub fn load_dir(
    dir: &Path,
    trust_domain: &str,
) -> Result<BTreeMap<String, Vec<u8>>, AuthorityError> {
    let io = |what: &Path, e: std::io::Error| AuthorityError::Io {
        what: what.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut files = BTreeMap::new();
    for name in FILES {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                files.insert(name.to_owned(), bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path, e)),
        }
    }
    if files.contains_key(ROOT_CERT) {
        return Ok(files);
    }
    if !files.is_empty() {
        return Err(AuthorityError::File {
            file: ROOT_CERT,
            reason: format!("missing in {} beside other CA files", dir.display()),
        });
    }
    let (cert, key) = generate_root(trust_domain)?;
    let key_path = dir.join(ROOT_KEY);
    write_private(&key_path, key.as_bytes()).map_err(|e| io(&key_path, e))?;
    let cert_path = dir.join(ROOT_CERT);
    std::fs::write(&cert_path, cert.as_bytes()).map_err(|e| io(&cert_path, e))?;
    tracing::info!(dir = %dir.display(), "created a new CA root");
    files.insert(ROOT_CERT.to_owned(), cert.into_bytes());
    files.insert(ROOT_KEY.to_owned(), key.into_bytes());
    Ok(files)
}

/// Reads the CA Secret `namespace/name`, creating it with a new root if absent.
pub async fn load_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> Result<BTreeMap<String, Vec<u8>>, AuthorityError> {
    let secret_err = |reason: String| AuthorityError::Secret {
        secret: format!("{namespace}/{name}"),
        reason,
    };
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| secret_err(e.to_string()))?;
    if let Some(secret) = existing {
        let files: BTreeMap<String, Vec<u8>> = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| FILES.contains(&k.as_str()))
            .map(|(k, v)| (k, v.0))
            .collect();
        return Ok(files);
    }
    let (cert, key) = generate_root(trust_domain)?;
    let mut data = BTreeMap::new();
    data.insert(ROOT_CERT.to_owned(), ByteString(cert.into_bytes()));
    data.insert(ROOT_KEY.to_owned(), ByteString(key.into_bytes()));
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        data: Some(data.clone()),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{name}"), "created a new CA root");
            Ok(data.into_iter().map(|(k, v)| (k, v.0)).collect())
        }
        // Another replica created it first: use theirs.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(name).await.map_err(|e| secret_err(e.to_string()))?;
            Ok(secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect())
        }
        Err(e) => Err(secret_err(e.to_string())),
    }
}
