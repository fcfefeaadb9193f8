//! An issue found while doing lossy or failing work, shaped like an
//! `OperationOutcome.issue` so that it can be returned to the client as one.

use serde_json::{Value, json};

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Information,
    Warning,
    Error,
    Fatal,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Information => "information",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Fatal => "fatal",
        }
    }
}

/// `OperationOutcome.issue.code` (the IssueType value set), the subset Assent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    Security,
    Login,
    Forbidden,
    Suppressed,
    Processing,
    NotSupported,
    NotFound,
    Deleted,
    TooLong,
    CodeInvalid,
    Informational,
    Transient,
    Timeout,
    Exception,
    Throttled,
    Incomplete,
}

impl IssueCode {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::Security => "security",
            IssueCode::Login => "login",
            IssueCode::Forbidden => "forbidden",
            IssueCode::Suppressed => "suppressed",
            IssueCode::Processing => "processing",
            IssueCode::NotSupported => "not-supported",
            IssueCode::NotFound => "not-found",
            IssueCode::Deleted => "deleted",
            IssueCode::TooLong => "too-long",
            IssueCode::CodeInvalid => "code-invalid",
            IssueCode::Informational => "informational",
            IssueCode::Transient => "transient",
            IssueCode::Timeout => "timeout",
            IssueCode::Exception => "exception",
            IssueCode::Throttled => "throttled",
            IssueCode::Incomplete => "incomplete",
        }
    }
}

/// One issue: what happened, where (a FHIRPath-like expression), how bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    pub diagnostics: String,
    /// FHIRPath expressions locating the element at fault, if any.
    pub expression: Vec<String>,
}

impl Issue {
    pub fn new(severity: Severity, code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity,
            code,
            diagnostics: diagnostics.into(),
            expression: Vec::new(),
        }
    }

    /// The same issue located at `expression`.
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression.push(expression.into());
        self
    }

    /// This issue as an `OperationOutcome.issue` element.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "severity": self.severity.as_str(),
            "code": self.code.as_str(),
            "diagnostics": self.diagnostics,
        });
        if !self.expression.is_empty() {
            v["expression"] = json!(self.expression);
        }
        v
    }
}

/// An `OperationOutcome` resource holding `issues`.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": issues.iter().map(Issue::to_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_renders_as_operation_outcome_issue() {
        let i = Issue::new(Severity::Warning, IssueCode::Value, "dropped").at("Patient.animal");
        assert_eq!(
            operation_outcome(&[i]),
            json!({"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"value","diagnostics":"dropped","expression":["Patient.animal"]}]})
        );
    }
}
