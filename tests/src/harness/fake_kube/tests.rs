//! The fake's protocol, checked through kube-rs's own client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{FakeApiServer, Options, TokenUser};

const TIMEOUT: Duration = Duration::from_secs(10);

fn config_map(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "a"}, "data": {"k": name}})
}

/// The next watch event, bounded in time.
async fn next<S: futures_util::Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("a watch event in time")
        .expect("the watch stream is open")
}

#[tokio::test]
async fn lists_page_over_one_snapshot_and_expire_after_compaction() {
    let api = FakeApiServer::start().await;
    for i in 0..5 {
        api.apply(config_map(&format!("cm-{i}")));
    }
    let cms: Api<ConfigMap> = Api::namespaced(api.client().unwrap(), "a");
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().unwrap();
    // A change after the first page does not show in the next pages.
    api.apply(config_map("cm-9"));
    let second = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = second
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["cm-2", "cm-3", "cm-4"]);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    api.compact();
    let err = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 410),
        "{err}"
    );
}

#[tokio::test]
async fn watches_stream_events_bookmarks_and_410_when_expired() {
    let api = FakeApiServer::start_with(Options {
        bookmark_interval: None,
        ..Options::default()
    })
    .await;
    let stored = api.apply(config_map("one"));
    let rv = stored["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let cms: Api<ConfigMap> = Api::namespaced(api.client().unwrap(), "a");
    let mut watch = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    api.apply(config_map("two"));
    assert!(
        matches!(next(&mut watch).await.unwrap(), WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("two"))
    );
    api.apply(config_map("one"));
    assert!(matches!(
        next(&mut watch).await.unwrap(),
        WatchEvent::Modified(_)
    ));
    api.delete("v1", "ConfigMap", "a", "one");
    assert!(matches!(
        next(&mut watch).await.unwrap(),
        WatchEvent::Deleted(_)
    ));
    api.send_bookmarks();
    let WatchEvent::Bookmark(bookmark) = next(&mut watch).await.unwrap() else {
        panic!("expected a bookmark");
    };
    assert_eq!(
        bookmark.metadata.resource_version,
        api.resource_version().to_string()
    );

    // Open watches survive compaction; a new watch from an old version does not.
    api.compact();
    api.apply(config_map("three"));
    assert!(matches!(
        next(&mut watch).await.unwrap(),
        WatchEvent::Added(_)
    ));
    let mut old = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let WatchEvent::Error(status) = next(&mut old).await.unwrap() else {
        panic!("expected an ERROR event");
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));

    // drop_watches ends open streams.
    api.drop_watches();
    let end = tokio::time::timeout(TIMEOUT, watch.next()).await.unwrap();
    assert!(end.is_none());
}

#[tokio::test]
async fn custom_kinds_are_served_in_every_version_and_can_be_unregistered() {
    let api = FakeApiServer::start().await;
    api.apply(json!({
        "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
        "metadata": {"name": "vs", "namespace": "a"}, "spec": {"hosts": ["h"]},
    }));
    let client = api.client().unwrap();
    let gvk = GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "virtualservices");
    let vs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "a", &resource);
    let got = vs.get("vs").await.unwrap();
    assert_eq!(got.types.unwrap().api_version, "networking.istio.io/v1");
    assert_eq!(got.data["spec"]["hosts"], json!(["h"]));

    let kind = api
        .unregister_kind("networking.istio.io", "VirtualService")
        .unwrap();
    let err = vs.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "{err}"
    );
    api.register_kind(kind);
    assert!(
        vs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn secrets_use_optimistic_concurrency() {
    let api = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(api.client().unwrap(), "istio-system");
    let mut secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "root"}, "data": {"key": "YQ=="},
    }))
    .unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let again = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_err();
    assert!(
        matches!(&again, kube::Error::Api(s) if s.code == 409),
        "{again}"
    );
    secret.metadata.resource_version = created.metadata.resource_version.clone();
    let replaced = secrets
        .replace("root", &PostParams::default(), &secret)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        created.metadata.resource_version
    );
    // A stale resourceVersion conflicts.
    let stale = secrets
        .replace("root", &PostParams::default(), &secret)
        .await
        .unwrap_err();
    assert!(
        matches!(&stale, kube::Error::Api(s) if s.code == 409),
        "{stale}"
    );
}

#[tokio::test]
async fn token_reviews_answer_from_set_tokens() {
    let api = FakeApiServer::start().await;
    api.set_token(
        "good",
        TokenUser::service_account("prod", "web").bound_to_pod("web-1", "uid-1", "node-1"),
    );
    let reviews: Api<TokenReview> = Api::all(api.client().unwrap());
    let review = |token: &str| TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: Some(vec!["istio-ca".into()]),
        },
        ..TokenReview::default()
    };
    let ok = reviews
        .create(&PostParams::default(), &review("good"))
        .await
        .unwrap();
    let status = ok.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:prod:web")
    );
    assert_eq!(user.extra.unwrap()[super::NODE_NAME], ["node-1"]);
    assert_eq!(status.audiences.unwrap(), ["istio-ca"]);

    let bad = reviews
        .create(&PostParams::default(), &review("bad"))
        .await
        .unwrap();
    let status = bad.status.unwrap();
    assert_eq!(status.authenticated, Some(false));
    assert!(status.error.unwrap().contains("invalid"));
}
