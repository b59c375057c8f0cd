//! What the derivation skipped or ignores, as [`Report`]s.

use crate::store::{CustomObject, Report, Severity};

#[derive(Debug, Default)]
pub struct Reports {
    pub list: Vec<Report>,
}

impl Reports {
    pub fn push(
        &mut self,
        severity: Severity,
        origin: String,
        object: String,
        field: String,
        message: String,
    ) {
        self.list.push(Report {
            severity,
            origin,
            object,
            field,
            message,
        });
    }

    /// A problem with a custom object, located by its origin.
    pub fn object(
        &mut self,
        severity: Severity,
        object: &CustomObject,
        field: String,
        message: String,
    ) {
        self.push(
            severity,
            object.origin.to_string(),
            label(object),
            field,
            message,
        );
    }
}

/// `AuthorizationPolicy prod/deny`.
pub fn label(object: &CustomObject) -> String {
    format!("{} {}/{}", object.kind, object.namespace, object.name)
}
