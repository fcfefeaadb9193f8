//! FAKE Fabric for other crates' tests and benchmarks (feature `fake`): the in-process
//! stand-in for a Fabric Gateway peer that drives the real chaincode server ([`fake`]), and
//! the setup around it ([`support`]: throwaway P-256 identities and TLS certificates,
//! starting the chaincode server and the fake). Not Fabric: see [`fake`] for what it checks
//! as a real peer would and what it leaves out.
//!
//! The sources are this crate's own integration-test support (`tests/fabric/`), compiled
//! here as well so that the gateway's end-to-end tests and the benchmarks run the gateway
//! against the same fake. The gateway never enables the feature; a build that selects the
//! tests or benches crates alongside the gateway compiles it in, unused.

#[path = "../tests/fabric/fake.rs"]
pub mod fake;
// Written as test support: `TestCa::new` makes a fresh CA each call, not a default value.
#[allow(clippy::new_without_default)]
#[path = "../tests/fabric/support.rs"]
pub mod support;
