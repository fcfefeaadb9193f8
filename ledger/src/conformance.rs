//! The conformance suite (stub).
