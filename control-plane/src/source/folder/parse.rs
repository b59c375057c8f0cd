//! One file of the folder source → the objects it holds and what was wrong.
//!
//! Documents are split on `---` lines before parsing, so a syntax error
//! costs only its own document; every other document still applies.
//! Kubernetes kinds are read into k8s-openapi types (errors name the field:
//! `spec.ports[0].port`); Istio and Gateway API kinds keep their spec as
//! JSON, checked by the derivation so both sources report alike.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::store::{CustomObject, Kind, Object, ObjectKey, Origin, Report, Severity};

/// Namespaced objects without `metadata.namespace` land here, as with kubectl.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Annotation the folder source puts on the Kubernetes objects it reads:
/// their file and document, so the derivation's reports can say where an
/// object came from (custom objects carry their [`Origin`] instead).
pub const ORIGIN_ANNOTATION: &str = "amesh.io/origin";

/// One object read from a file, with the document it came from.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: ObjectKey,
    pub object: Object,
    pub document: usize,
}

/// What one file holds.
#[derive(Clone, Debug, Default)]
pub struct FileContents {
    pub entries: Vec<Entry>,
    pub reports: Vec<Report>,
}

/// One YAML document of a file: its text and the line it starts on.
struct Chunk<'a> {
    text: &'a str,
    /// 0-based line of the file where `text` starts.
    first_line: usize,
}

/// Splits at lines that start a document (`---`, optionally followed by
/// a space and content or a comment).
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 0;
    let mut offset = 0;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let separator = trimmed == "---"
            || trimmed
                .strip_prefix("---")
                .is_some_and(|rest| rest.starts_with([' ', '\t']));
        if separator && offset > start {
            chunks.push(Chunk {
                text: &text[start..offset],
                first_line: start_line,
            });
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
    }
    if start < text.len() {
        chunks.push(Chunk {
            text: &text[start..],
            first_line: start_line,
        });
    }
    chunks
}

/// A problem with one document.
struct DocError {
    object: String,
    field: String,
    message: String,
    severity: Severity,
}

impl DocError {
    fn error(object: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            object: object.to_owned(),
            field: field.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }
}

/// Reads every document of `text` (the contents of `path`).
pub fn parse_file(path: &Path, text: &str) -> FileContents {
    let mut out = FileContents::default();
    let mut document = 0;
    for chunk in split_documents(text) {
        let value = match serde_yaml::from_str::<Value>(chunk.text) {
            Ok(Value::Null) => continue, // only comments or blank: not a document
            Ok(value) => Ok(value),
            Err(e) => Err(e),
        };
        let origin = Origin::File {
            path: path.to_owned(),
            document,
        };
        document += 1;
        let result = value
            .map_err(|e| DocError::error("", "", yaml_message(&e, chunk.first_line)))
            .and_then(|value| read_document(&chunk, &value, &origin));
        match result {
            Ok(entry) => out.entries.push(entry),
            Err(e) => out.reports.push(Report {
                severity: e.severity,
                origin: origin.to_string(),
                object: e.object,
                field: e.field,
                message: e.message,
            }),
        }
    }
    out
}

/// serde_yaml's message with the line counted from the start of the file
/// (the chunk's own location would count from the document).
fn yaml_message(e: &serde_yaml::Error, first_line: usize) -> String {
    let text = e.to_string();
    match e.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let bare = text.strip_suffix(&suffix).unwrap_or(&text);
            format!(
                "{bare} (line {}, column {})",
                first_line + loc.line(),
                loc.column()
            )
        }
        None => text,
    }
}

/// What every resource document says about itself.
struct Header<'a> {
    api_version: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
    labels: BTreeMap<String, String>,
}

impl Header<'_> {
    fn label(&self) -> String {
        match self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

fn str_field<'a>(value: &'a Value, key: &str, path: &str) -> Result<Option<&'a str>, DocError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(DocError::error(
            "",
            path,
            format!("must be a string, found {}", json_type(other)),
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn read_header(value: &Value) -> Result<Header<'_>, DocError> {
    if !value.is_object() {
        return Err(DocError::error(
            "",
            "",
            format!(
                "a document must be a mapping with apiVersion and kind, found {}",
                json_type(value)
            ),
        ));
    }
    let api_version = str_field(value, "apiVersion", "apiVersion")?
        .ok_or_else(|| DocError::error("", "apiVersion", "missing"))?;
    let kind =
        str_field(value, "kind", "kind")?.ok_or_else(|| DocError::error("", "kind", "missing"))?;
    let metadata = value.get("metadata").unwrap_or(&Value::Null);
    let name = str_field(metadata, "name", "metadata.name")?;
    let namespace = str_field(metadata, "namespace", "metadata.namespace")?;
    let mut labels = BTreeMap::new();
    match metadata.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let v = v.as_str().ok_or_else(|| {
                    DocError::error(
                        "",
                        format!("metadata.labels.{k}"),
                        format!("must be a string, found {}", json_type(v)),
                    )
                })?;
                labels.insert(k.clone(), v.to_owned());
            }
        }
        Some(other) => {
            return Err(DocError::error(
                "",
                "metadata.labels",
                format!("must be a mapping, found {}", json_type(other)),
            ));
        }
    }
    let name = name.ok_or_else(|| DocError::error(kind, "metadata.name", "missing"))?;
    Ok(Header {
        api_version,
        kind,
        name,
        namespace,
        labels,
    })
}

fn read_document(chunk: &Chunk<'_>, value: &Value, origin: &Origin) -> Result<Entry, DocError> {
    let mut header = read_header(value)?;
    let Some(kind) = Kind::from_api(header.api_version, header.kind) else {
        return Err(DocError {
            object: header.label(),
            field: String::new(),
            message: unsupported_message(header.api_version, header.kind),
            severity: Severity::Unsupported,
        });
    };
    let namespace = match kind {
        Kind::Namespace => String::new(),
        _ => header.namespace.unwrap_or(DEFAULT_NAMESPACE).to_owned(),
    };
    if kind != Kind::Namespace {
        header.namespace = Some(&namespace);
    }
    let label = header.label();
    let key = ObjectKey::new(kind, namespace.clone(), header.name);
    let document = match origin {
        Origin::File { document, .. } => *document,
        Origin::Kubernetes => 0,
    };
    let typed = |e: TypedError| DocError::error(&label, e.field, e.message);
    let object = match kind {
        Kind::Namespace => Object::Namespace(Arc::new(
            typed_object::<Namespace>(chunk, None, origin).map_err(typed)?,
        )),
        Kind::Pod => Object::Pod(Arc::new(
            typed_object::<Pod>(chunk, Some(&namespace), origin).map_err(typed)?,
        )),
        Kind::Service => Object::Service(Arc::new(
            typed_object::<Service>(chunk, Some(&namespace), origin).map_err(typed)?,
        )),
        Kind::EndpointSlice => Object::EndpointSlice(Arc::new(
            typed_object::<EndpointSlice>(chunk, Some(&namespace), origin).map_err(typed)?,
        )),
        _ => {
            let spec = match value.get("spec") {
                None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
                Some(spec @ Value::Object(_)) => spec.clone(),
                Some(other) => {
                    return Err(DocError::error(
                        &label,
                        "spec",
                        format!("must be a mapping, found {}", json_type(other)),
                    ));
                }
            };
            Object::Custom(Arc::new(CustomObject {
                kind,
                api_version: header.api_version.to_owned(),
                namespace: namespace.clone(),
                name: header.name.to_owned(),
                labels: header.labels,
                spec,
                origin: origin.clone(),
            }))
        }
    };
    Ok(Entry {
        key,
        object,
        document,
    })
}

/// Istio's kinds amesh leaves to Istio, named so users know they were seen.
const ISTIO_GROUPS: [&str; 4] = [
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "extensions.istio.io",
];

fn unsupported_message(api_version: &str, kind: &str) -> String {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let served_elsewhere = ["v1", "v1beta1", "v1alpha3"].iter().find_map(|v| {
        let api = if group.is_empty() {
            (*v).to_owned()
        } else {
            format!("{group}/{v}")
        };
        Kind::from_api(&api, kind).map(|_| api)
    });
    match served_elsewhere {
        Some(api) => {
            format!("apiVersion {api_version} of {kind} is not served (use {api}): ignored")
        }
        None if ISTIO_GROUPS.contains(&group) => {
            format!("kind {kind} ({api_version}) is not supported by amesh: ignored")
        }
        None => format!("kind {kind} is not supported by amesh: ignored"),
    }
}

struct TypedError {
    field: String,
    message: String,
}

/// Reads the document into `T`, from its text so errors carry the line,
/// and through serde_path_to_error so they name the field.
fn typed_object<T>(
    chunk: &Chunk<'_>,
    namespace: Option<&str>,
    origin: &Origin,
) -> Result<T, TypedError>
where
    T: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let de = serde_yaml::Deserializer::from_str(chunk.text);
    let mut object: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        TypedError {
            field,
            message: yaml_message(e.inner(), chunk.first_line),
        }
    })?;
    let meta = object.metadata_mut();
    if let Some(ns) = namespace {
        meta.namespace = Some(ns.to_owned());
    }
    meta.annotations
        .get_or_insert_default()
        .insert(ORIGIN_ANNOTATION.to_owned(), origin.to_string());
    Ok(object)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn splits_on_separator_lines_only() {
        let text = "a: 1\n---\nb: '---'\n--- # c\nc: 3\n";
        let chunks = split_documents(text);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].first_line, 1);
        assert_eq!(chunks[2].first_line, 3);
    }

    #[test]
    fn a_bad_field_is_named_and_the_rest_applies() {
        let text = "\
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  ports:
    - port: eighty
---
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: prod}
---
key: [unclosed
";
        let got = parse_file(Path::new("/cfg/a.yaml"), text);
        assert_eq!(got.entries.len(), 1);
        assert_eq!(
            got.entries[0].key,
            ObjectKey::new(Kind::Namespace, "", "prod")
        );
        assert_eq!(got.entries[0].document, 1);
        assert_eq!(got.reports.len(), 3, "{:#?}", got.reports);
        let bad = &got.reports[0];
        assert_eq!(bad.severity, Severity::Error);
        assert_eq!(bad.origin, "/cfg/a.yaml (document 0)");
        assert_eq!(bad.object, "Service default/a");
        assert_eq!(bad.field, "spec.ports[0].port");
        assert!(bad.message.contains("line 6"), "{}", bad.message);
        let unsupported = &got.reports[1];
        assert_eq!(unsupported.severity, Severity::Unsupported);
        assert_eq!(unsupported.origin, "/cfg/a.yaml (document 2)");
        assert!(unsupported.message.contains("ServiceEntry"));
        let syntax = &got.reports[2];
        assert_eq!(syntax.severity, Severity::Error);
        assert!(syntax.message.contains("line 1"), "{}", syntax.message);
    }

    #[test]
    fn custom_objects_keep_their_spec_and_default_namespace() {
        let text = "\
# leading comment
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: deny, labels: {a: b}}
spec: {action: DENY}
";
        let got = parse_file(Path::new("p.yaml"), text);
        assert!(got.reports.is_empty(), "{:?}", got.reports);
        let Object::Custom(c) = &got.entries[0].object else {
            panic!("not custom");
        };
        assert_eq!(c.namespace, "default");
        assert_eq!(c.spec["action"], "DENY");
        assert_eq!(c.labels["a"], "b");
        assert_eq!(
            c.origin,
            Origin::File {
                path: "p.yaml".into(),
                document: 0
            }
        );
    }

    #[test]
    fn an_old_version_of_a_known_kind_says_which_is_served() {
        let msg = unsupported_message("security.istio.io/v1alpha1", "AuthorizationPolicy");
        assert!(msg.contains("use security.istio.io/v1"), "{msg}");
        let msg = unsupported_message("apps/v1", "Deployment");
        assert_eq!(msg, "kind Deployment is not supported by amesh: ignored");
    }
}
