//! What went wrong while building a table, and where.

use std::fmt;

/// How serious a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The resource or field is invalid: it (or the part named) is skipped.
    Error,
    /// The field is valid but amesh does not act on it.
    Unsupported,
    /// Valid, but another resource takes precedence for the same host.
    Conflict,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Unsupported => "unsupported",
            Self::Conflict => "conflict",
        })
    }
}

/// One problem: `VirtualService ns/name: spec.http[0].match[1].uri.regex: ...`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{resource_kind} {namespace}/{name}: {field}: {message}")]
pub struct BuildProblem {
    /// How serious.
    pub kind: ProblemKind,
    /// Kubernetes kind of the resource (`VirtualService`, `HTTPRoute`, ...).
    pub resource_kind: String,
    /// Namespace of the resource.
    pub namespace: String,
    /// Name of the resource.
    pub name: String,
    /// Dotted field path, e.g. `spec.http[0].mirror`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The resource problems are reported against, plus the list they go to.
#[derive(Debug)]
pub(crate) struct Reporter<'a> {
    pub(crate) resource_kind: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) problems: &'a mut Vec<BuildProblem>,
}

impl Reporter<'_> {
    pub(crate) fn report(
        &mut self,
        kind: ProblemKind,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let problem = BuildProblem {
            kind,
            resource_kind: self.resource_kind.to_owned(),
            namespace: self.namespace.to_owned(),
            name: self.name.to_owned(),
            field: field.into(),
            message: message.into(),
        };
        tracing::warn!(%problem, kind = %kind, "route table");
        self.problems.push(problem);
    }

    pub(crate) fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.report(ProblemKind::Error, field, message);
    }

    pub(crate) fn unsupported(&mut self, field: impl Into<String>) {
        self.report(
            ProblemKind::Unsupported,
            field,
            "not supported by the waypoint: ignored",
        );
    }
}
