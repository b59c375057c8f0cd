//! What discovery serves: every resource of every type, encoded once and
//! versioned by content, so the xDS server diffs by comparing versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

/// One xDS resource, encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct XdsResource {
    pub name: String,
    /// Content hash: equal versions mean equal bytes.
    pub version: String,
    pub body: prost_types::Any,
    /// Sent only to subscribers on this node (node agents' pod
    /// enrollments); `None`: to every subscriber of the type.
    pub node: Option<String>,
}

impl XdsResource {
    pub fn new(type_url: &str, name: impl Into<String>, message: &impl Message) -> Self {
        let value = message.encode_to_vec();
        let version = blake3::hash(&value).to_hex()[..16].to_owned();
        Self {
            name: name.into(),
            version,
            body: prost_types::Any {
                type_url: type_url.to_owned(),
                value,
            },
            node: None,
        }
    }

    pub fn for_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
}

/// One type's resources by name. A persistent map: each derivation starts
/// from the last one's and changes what changed, and the server diffs two
/// derivations by walking only the parts that differ.
pub type Resources = imbl::OrdMap<String, Arc<XdsResource>>;

/// Resources by type URL, then by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    pub by_type: BTreeMap<&'static str, Resources>,
}

impl ResourceSet {
    pub fn insert(&mut self, type_url: &'static str, resource: XdsResource) {
        self.by_type
            .entry(type_url)
            .or_default()
            .insert(resource.name.clone(), Arc::new(resource));
    }

    pub fn of_type(&self, type_url: &str) -> Option<&Resources> {
        self.by_type.get(type_url)
    }

    pub fn len(&self) -> usize {
        self.by_type.values().map(Resources::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
