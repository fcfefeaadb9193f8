//! FHIR REST interactions as the gateway classifies requests.

use std::fmt;

/// What a FHIR request asks to do. Only reads are forwarded today; writes are named so that
/// they can be refused with a clear reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interaction {
    /// `GET [type]/[id]`
    Read,
    /// `GET [type]/[id]/_history/[vid]`
    Vread,
    /// `GET [type]?...`, `POST [type]/_search`, or a system-level search.
    Search,
    /// `GET [type]/[id]/_history` or `GET [type]/_history`
    History,
    /// `GET metadata`
    Capabilities,
    /// `GET [type]/[id]/$op`, `GET [type]/$op` or `GET $op`
    Operation,
}

impl Interaction {
    /// The stable lower-case name used in logs, metrics and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Search => "search",
            Interaction::History => "history",
            Interaction::Capabilities => "capabilities",
            Interaction::Operation => "operation",
        }
    }
}

impl fmt::Display for Interaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
