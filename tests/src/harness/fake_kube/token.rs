//! TokenReview: tokens the test declares, checked as the API server would.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The `extra` keys the API server sets for a bound service-account token.
pub const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// Who a token authenticates as.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenUser {
    /// e.g. `system:serviceaccount:<ns>:<sa>`.
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
    /// Audiences the token is valid for; empty: any.
    pub audiences: Vec<String>,
}

impl TokenUser {
    /// A service account's token bound to a pod on a node, as a projected
    /// token is.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: format!("uid-sa-{namespace}-{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            ..Self::default()
        }
    }

    pub fn bound_to_pod(mut self, pod_name: &str, pod_uid: &str, node_name: &str) -> Self {
        self.extra.insert(POD_NAME.into(), vec![pod_name.into()]);
        self.extra.insert(POD_UID.into(), vec![pod_uid.into()]);
        self.extra.insert(NODE_NAME.into(), vec![node_name.into()]);
        self
    }

    pub fn with_audiences(mut self, audiences: &[&str]) -> Self {
        self.audiences = audiences.iter().map(|a| (*a).to_owned()).collect();
        self
    }
}

/// Answers a TokenReview request body.
pub fn review(tokens: &BTreeMap<String, TokenUser>, request: &Value) -> Value {
    let token = request["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = request["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let status = match tokens.get(token) {
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
        Some(user) => {
            let audiences: Vec<String> = if user.audiences.is_empty() {
                wanted.clone()
            } else if wanted.is_empty() {
                user.audiences.clone()
            } else {
                wanted
                    .iter()
                    .filter(|a| user.audiences.contains(a))
                    .cloned()
                    .collect()
            };
            if !wanted.is_empty() && audiences.is_empty() {
                json!({
                    "authenticated": false,
                    "error": "[invalid bearer token, token audiences [..] is invalid for the target audiences]",
                })
            } else {
                json!({
                    "authenticated": true,
                    "user": {
                        "username": user.username,
                        "uid": user.uid,
                        "groups": user.groups,
                        "extra": user.extra,
                    },
                    "audiences": audiences,
                })
            }
        }
    };
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": request["spec"],
        "status": status,
    })
}
