//! The custom resources amesh reads, as kube-rs `CustomResource` types: the
//! Istio kinds (whose CRDs we ship, generated from these types) and Gateway
//! API `Gateway`/`HTTPRoute` (watched only: users install the upstream
//! Gateway API CRDs).
//!
//! Specs are kept as JSON (`type: object` with
//! `x-kubernetes-preserve-unknown-fields`), like Istio's own CRDs: the API
//! server stores what users wrote, and the control plane checks fields when it
//! derives state, so both sources report bad fields the same way.
//!
//! Versions: `security.istio.io` serves v1beta1 and v1 (storage v1);
//! `networking.istio.io` serves v1alpha3, v1beta1 and v1 with storage
//! **v1alpha3**, as Istio's own CRDs do: a cluster that already stored objects
//! through Istio's CRDs keeps reading them unchanged when ours replace them,
//! and switching back to Istio's CRDs never leaves objects stored in a version
//! Istio's CRD would not list as storage. All versions of a kind share one
//! schema, so the API server converts between them with no webhook.
//!
//! `manifests/crds/` (a kustomize `Component`, one file per CRD) is generated
//! from these types; the unit test `crds_in_manifests_are_up_to_date` fails
//! when they differ. Regenerate with
//! `AMESH_UPDATE_CRDS=1 cargo test -p amesh-control-plane crd`.

use std::borrow::Cow;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a JSON-object newtype whose CRD schema accepts any object.
macro_rules! json_object {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name(pub serde_json::Value);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(ser)
            }
        }

        // A missing or null field reads as an empty object rather than
        // failing: one odd object must never fail a whole list.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                let value = Option::<serde_json::Value>::deserialize(de)?;
                Ok(Self(value.unwrap_or_else(|| serde_json::Value::Object(Default::default()))))
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true
                })
            }
        }
    };
}

json_object!(
    /// The status every Istio kind carries (conditions, validation messages).
    Status
);

/// A custom resource whose spec is kept as JSON.
pub trait JsonSpec {
    /// The object's metadata and spec.
    fn into_parts(self) -> (kube::api::ObjectMeta, serde_json::Value);
}

/// Implements [`JsonSpec`] for the root type `$root`.
macro_rules! json_spec {
    ($root:ident) => {
        impl crate::crd::JsonSpec for $root {
            fn into_parts(self) -> (kube::api::ObjectMeta, serde_json::Value) {
                (self.metadata, self.spec.0)
            }
        }
    };
}

/// One Istio kind in one version.
// rustfmt re-indents attributes inside macro bodies on every run.
#[rustfmt::skip]
macro_rules! istio_kind {
    ($spec:ident, $root:ident, $group:literal, $version:literal, $kind:literal, $plural:literal,
     $short:literal, $category:literal, $doc:literal) => {
        json_object!(
            #[derive(kube::CustomResource)]
            #[kube(
                group = $group,
                version = $version,
                kind = $kind,
                plural = $plural,
                shortname = $short,
                category = "istio-io",
                category = $category,
                namespaced,
                status = "crate::crd::Status",
                doc = $doc
            )]
            $spec
        );
        json_spec!($root);
    };
}

macro_rules! security_kinds {
    ($version:literal) => {
        istio_kind!(AuthorizationPolicySpec, AuthorizationPolicy, "security.istio.io", $version,
            "AuthorizationPolicy", "authorizationpolicies", "ap", "security-istio-io",
            "Istio AuthorizationPolicy: access control for workloads; the spec is checked by the amesh control plane.");
        istio_kind!(PeerAuthenticationSpec, PeerAuthentication, "security.istio.io", $version,
            "PeerAuthentication", "peerauthentications", "pa", "security-istio-io",
            "Istio PeerAuthentication: mutual TLS mode for workloads; the spec is checked by the amesh control plane.");
        istio_kind!(RequestAuthenticationSpec, RequestAuthentication, "security.istio.io", $version,
            "RequestAuthentication", "requestauthentications", "ra", "security-istio-io",
            "Istio RequestAuthentication: JWT validation for workloads; the spec is checked by the amesh control plane.");
    };
}

macro_rules! networking_kinds {
    ($version:literal) => {
        istio_kind!(VirtualServiceSpec, VirtualService, "networking.istio.io", $version,
            "VirtualService", "virtualservices", "vs", "networking-istio-io",
            "Istio VirtualService: HTTP routing rules; the spec is checked by the amesh control plane.");
        istio_kind!(DestinationRuleSpec, DestinationRule, "networking.istio.io", $version,
            "DestinationRule", "destinationrules", "dr", "networking-istio-io",
            "Istio DestinationRule: policies applied after routing; the spec is checked by the amesh control plane.");
    };
}

/// `security.istio.io`.
pub mod security {
    pub mod v1 {
        use super::super::*;
        security_kinds!("v1");
    }
    pub mod v1beta1 {
        use super::super::*;
        security_kinds!("v1beta1");
    }
    /// The version stored in etcd.
    pub const STORAGE_VERSION: &str = "v1";
}

/// `networking.istio.io`.
pub mod networking {
    pub mod v1 {
        use super::super::*;
        networking_kinds!("v1");
    }
    pub mod v1beta1 {
        use super::super::*;
        networking_kinds!("v1beta1");
    }
    pub mod v1alpha3 {
        use super::super::*;
        networking_kinds!("v1alpha3");
    }
    /// The version stored in etcd (Istio's choice too; see the module doc).
    pub const STORAGE_VERSION: &str = "v1alpha3";
}

/// Gateway API, for watching only (never emitted to manifests).
pub mod gateway {
    pub mod v1 {
        use super::super::*;
        json_object!(
            #[derive(kube::CustomResource)]
            #[kube(
                group = "gateway.networking.k8s.io",
                version = "v1",
                kind = "Gateway",
                plural = "gateways",
                namespaced,
                status = "crate::crd::Status"
            )]
            GatewaySpec
        );
        json_object!(
            #[derive(kube::CustomResource)]
            #[kube(
                group = "gateway.networking.k8s.io",
                version = "v1",
                kind = "HTTPRoute",
                plural = "httproutes",
                namespaced,
                status = "crate::crd::Status"
            )]
            HTTPRouteSpec
        );
        json_spec!(Gateway);
        json_spec!(HTTPRoute);
    }
}

/// The Istio CRDs amesh ships, every served version merged into one CRD per
/// kind.
pub fn istio_crds() -> Vec<CustomResourceDefinition> {
    let security = |v1: CustomResourceDefinition, v1beta1: CustomResourceDefinition| {
        merge(vec![v1, v1beta1], security::STORAGE_VERSION)
    };
    let networking = |crds: Vec<CustomResourceDefinition>| merge(crds, networking::STORAGE_VERSION);
    vec![
        security(
            security::v1::AuthorizationPolicy::crd(),
            security::v1beta1::AuthorizationPolicy::crd(),
        ),
        security(
            security::v1::PeerAuthentication::crd(),
            security::v1beta1::PeerAuthentication::crd(),
        ),
        security(
            security::v1::RequestAuthentication::crd(),
            security::v1beta1::RequestAuthentication::crd(),
        ),
        networking(vec![
            networking::v1::VirtualService::crd(),
            networking::v1beta1::VirtualService::crd(),
            networking::v1alpha3::VirtualService::crd(),
        ]),
        networking(vec![
            networking::v1::DestinationRule::crd(),
            networking::v1beta1::DestinationRule::crd(),
            networking::v1alpha3::DestinationRule::crd(),
        ]),
    ]
}

fn merge(crds: Vec<CustomResourceDefinition>, storage: &str) -> CustomResourceDefinition {
    // The inputs come from the derives above: same group, kind and scope,
    // one version each, so merging cannot fail.
    #[allow(clippy::expect_used)]
    merge_crds(crds, storage).expect("versions of one derived kind merge")
}

/// The header of every generated manifest.
const GENERATED_HEADER: &str = "# Generated from control-plane/src/crd.rs: do not edit.\n\
     # Regenerate with `AMESH_UPDATE_CRDS=1 cargo test -p amesh-control-plane crd`.\n";

/// One CRD as a YAML document (with the generated-file header).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    // A derived CRD is plain data: serialising it cannot fail.
    #[allow(clippy::expect_used)]
    let body = serde_yaml::to_string(crd).expect("a CRD serialises to YAML");
    format!("{GENERATED_HEADER}{body}")
}

/// Every Istio CRD as one multi-document YAML stream.
pub fn istio_crds_yaml() -> String {
    istio_crds()
        .iter()
        .map(crd_yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The file name of a CRD in `manifests/crds/`: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

/// `manifests/crds/kustomization.yaml`: a Component listing every CRD file,
/// so users who already have Istio's CRDs leave it out.
pub fn kustomization_yaml() -> String {
    let mut out = format!(
        "{GENERATED_HEADER}apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n"
    );
    for crd in istio_crds() {
        out.push_str(&format!("- {}\n", crd_file_name(&crd)));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::PathBuf;

    use super::*;

    fn manifests_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds")
    }

    #[test]
    fn crds_in_manifests_are_up_to_date() {
        let dir = manifests_dir();
        let mut expected = vec![("kustomization.yaml".to_owned(), kustomization_yaml())];
        for crd in istio_crds() {
            expected.push((crd_file_name(&crd), crd_yaml(&crd)));
        }
        if std::env::var("AMESH_UPDATE_CRDS").as_deref() == Ok("1") {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &expected {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        for (name, text) in &expected {
            let path = dir.join(name);
            let found = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                found == *text,
                "{} is stale: regenerate with `AMESH_UPDATE_CRDS=1 cargo test -p amesh-control-plane crd`",
                path.display()
            );
        }
    }

    #[test]
    fn checked_in_crds_are_valid() {
        let dir = manifests_dir();
        let kustomization: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
                .unwrap();
        assert_eq!(kustomization["kind"], "Component");
        assert_eq!(
            kustomization["apiVersion"],
            "kustomize.config.k8s.io/v1alpha1"
        );
        let files = kustomization["resources"].as_sequence().unwrap();
        assert_eq!(files.len(), 5);
        for file in files {
            let file = file.as_str().unwrap();
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let crd: CustomResourceDefinition = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} is not a CustomResourceDefinition: {e}"));
            let name = crd.metadata.name.clone().unwrap();
            assert_eq!(
                name,
                format!("{}.{}", crd.spec.names.plural, crd.spec.group)
            );
            assert_eq!(file, format!("{name}.yaml"));
            assert_eq!(crd.spec.scope, "Namespaced");
            let versions = &crd.spec.versions;
            assert_eq!(
                versions.iter().filter(|v| v.storage).count(),
                1,
                "{file}: exactly one storage version"
            );
            assert!(versions.iter().all(|v| v.served), "{file}: all served");
            for v in versions {
                let schema = v
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .unwrap();
                let spec = &schema.properties.as_ref().unwrap()["spec"];
                assert_eq!(spec.type_.as_deref(), Some("object"));
                assert_eq!(spec.x_kubernetes_preserve_unknown_fields, Some(true));
                assert!(v.subresources.as_ref().unwrap().status.is_some());
            }
            assert!(
                crd.spec
                    .names
                    .short_names
                    .as_ref()
                    .is_some_and(|s| s.len() == 1)
            );
        }
    }

    #[test]
    fn storage_versions_follow_istio_for_networking() {
        for crd in istio_crds() {
            let storage: Vec<_> = crd
                .spec
                .versions
                .iter()
                .filter(|v| v.storage)
                .map(|v| v.name.as_str())
                .collect();
            let want = match crd.spec.group.as_str() {
                "networking.istio.io" => "v1alpha3",
                _ => "v1",
            };
            assert_eq!(storage, [want], "{:?}", crd.metadata.name);
        }
        let vs = istio_crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "VirtualService")
            .unwrap();
        let mut served: Vec<_> = vs.spec.versions.iter().map(|v| v.name.clone()).collect();
        served.sort();
        assert_eq!(served, ["v1", "v1alpha3", "v1beta1"]);
    }

    #[test]
    fn specs_of_any_shape_deserialise() {
        let vs: networking::v1alpha3::VirtualService = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "VirtualService",
            "metadata": {"name": "a", "namespace": "b"},
        }))
        .unwrap();
        assert_eq!(vs.spec.0, serde_json::json!({}));
        let ap: security::v1::AuthorizationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "a", "namespace": "b"},
            "spec": {"action": "DENY", "rules": [{}], "unknown": 1},
        }))
        .unwrap();
        assert_eq!(ap.spec.0["unknown"], 1);
    }
}
