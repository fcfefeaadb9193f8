//! A receipt as a FHIR AuditEvent following the IHE Basic Audit Log Patterns (BALP): read,
//! query, create and update (each with or without a patient), denied (BALP's
//! authorization-decision pattern) and break-glass (a security alert for an emergency
//! override), in the shapes of STU3, R4, R4B and R5.
//!
//! Owns which pattern a receipt follows and how its facts land in each version's elements.
//! Leaves out searching and Bundles (the gateway pages receipts and wraps one event per
//! receipt), and BALP's narrative: the facts carry over, BALP's text does not.
//!
//! # Patterns
//!
//! | receipt | pattern | profile claimed (R4, R4B) |
//! |---|---|---|
//! | permit, read / vread / capabilities, an audit receipt read, status < 400 | Read, PatientRead with a patient | `IHE.BasicAudit.Read`, `.PatientRead` |
//! | permit, search / history / operation, a consent search, history or `$check`, an audit search, export or disclosures, status < 400 | Query, PatientQuery with a patient | `IHE.BasicAudit.Query`, `.PatientQuery` |
//! | permit, a consent created, status < 400 | Create, PatientCreate with a patient | `IHE.BasicAudit.Create`, `.PatientCreate` |
//! | permit, a consent updated or revoked (a new version), status < 400 | Update, PatientUpdate with a patient | `IHE.BasicAudit.Update`, `.PatientUpdate` |
//! | deny | AuthZ decision (security alert, `AuthZ-Consent`, failure outcome) | `IHE.BasicAudit.AuthZconsent` |
//! | permit resting on break-glass | security alert, DICOM 110127 emergency override | none (BALP has no profile for it) |
//! | error, or status ≥ 400 | the read or query shape with a failure outcome | none (BALP's profiles fix a success outcome) |
//!
//! BALP's profiles are defined on R4; R4B shares R4's AuditEvent. STU3 and R5 get the same
//! facts in their own elements, without a profile claim: STU3 names agents by `role`, and
//! splits `who`/`what` into `reference` and an identifier; R5 moves the type into `category`
//! and `code`, the outcome into a backbone, purposes into `authorization`, and has no
//! `entity.type` (entities are told apart by `role`).
//!
//! Patients: one patient entity per patient the receipt names (every patient a release
//! reached). BALP's patient patterns have exactly one patient, so a receipt naming several
//! claims no profile (an information issue says so), and R5's `AuditEvent.patient` (0..1) is
//! set only when there is one.
//!
//! Identities: with the clear [`ReceiptSubjects`], the user is a reference (`Practitioner/1`)
//! or an identifier, each patient likewise (`system|value` is an identifier) and the query is
//! the raw text; without them, the keyed hashes stand in as identifiers in the
//! `urn:assent:*-key` systems and the query is left out. Whatever a pattern requires that the
//! receipt cannot give is reported as an [`Issue`] beside the event.

use assent_fhir::{FhirVersion, Interaction, Issue, IssueCode, Severity};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::digest::Digest;
use crate::receipt::{
    AccessDecision, AccessKind, AuditAction, ConsentAction, ConsentRelied, NetworkAction, Receipt,
    ReceiptSubjects,
};
use crate::time::format_instant;

pub const BALP_PROFILE_BASE: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const AUDIT_EVENT_OUTCOME: &str = "http://terminology.hl7.org/CodeSystem/audit-event-outcome";
const AUDIT_ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ROLE_CLASS: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleClass";
const SECURITY_ROLE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
const SECURITY_SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const RESOURCE_TYPES: &str = "http://hl7.org/fhir/resource-types";
const BALP_ENTITY_TYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";
const BALP_AUTHZ_SUBTYPE: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType";

/// Identifier systems of the gateway's own names and of keyed hashes.
pub const GATEWAY_SYSTEM: &str = "urn:assent:gateway";
pub const RECEIPT_SYSTEM: &str = "urn:assent:receipt";
pub const CLIENT_SYSTEM: &str = "urn:assent:client";
pub const ACTOR_KEY_SYSTEM: &str = "urn:assent:actor-key";
pub const PATIENT_KEY_SYSTEM: &str = "urn:assent:patient-key";
pub const SITE_POLICY_SYSTEM: &str = "urn:assent:site-policy";

/// The gateway as the audit source and server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSource {
    /// The gateway's public FHIR base (`https://gw.example.org/fhir`); a site's base is this
    /// with `/{site}` appended.
    pub base_url: String,
}

/// The BALP pattern a receipt is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BalpPattern {
    Read,
    PatientRead,
    Query,
    PatientQuery,
    Create,
    PatientCreate,
    Update,
    PatientUpdate,
    /// A denied request: BALP's authorization-decision pattern with a failure outcome.
    Denied,
    /// Access granted by break-glass.
    BreakGlass,
}

impl BalpPattern {
    /// The pattern of `receipt`, and whether it records a success.
    pub fn of(receipt: &Receipt) -> (BalpPattern, bool) {
        if receipt.decision == AccessDecision::Deny {
            return (BalpPattern::Denied, false);
        }
        let success = receipt.decision == AccessDecision::Permit && receipt.status < 400;
        if receipt.break_glass && receipt.decision == AccessDecision::Permit {
            return (BalpPattern::BreakGlass, success);
        }
        let patient = !receipt.patient_keys.is_empty();
        let pattern = match (Rest::of(receipt), patient) {
            (Rest::Read, false) => BalpPattern::Read,
            (Rest::Read, true) => BalpPattern::PatientRead,
            (Rest::Query, false) => BalpPattern::Query,
            (Rest::Query, true) => BalpPattern::PatientQuery,
            (Rest::Create, false) => BalpPattern::Create,
            (Rest::Create, true) => BalpPattern::PatientCreate,
            (Rest::Update, false) => BalpPattern::Update,
            (Rest::Update, true) => BalpPattern::PatientUpdate,
        };
        (pattern, success)
    }

    /// The BALP profile this pattern claims on success (R4 and R4B).
    pub fn profile(self) -> Option<&'static str> {
        match self {
            BalpPattern::Read => Some("IHE.BasicAudit.Read"),
            BalpPattern::PatientRead => Some("IHE.BasicAudit.PatientRead"),
            BalpPattern::Query => Some("IHE.BasicAudit.Query"),
            BalpPattern::PatientQuery => Some("IHE.BasicAudit.PatientQuery"),
            BalpPattern::Create => Some("IHE.BasicAudit.Create"),
            BalpPattern::PatientCreate => Some("IHE.BasicAudit.PatientCreate"),
            BalpPattern::Update => Some("IHE.BasicAudit.Update"),
            BalpPattern::PatientUpdate => Some("IHE.BasicAudit.PatientUpdate"),
            BalpPattern::Denied => Some("IHE.BasicAudit.AuthZconsent"),
            BalpPattern::BreakGlass => None,
        }
    }
}

/// The RESTful shape of what a receipt records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rest {
    Read,
    Query,
    Create,
    Update,
}

impl Rest {
    fn of(r: &Receipt) -> Rest {
        match r.kind {
            AccessKind::Fhir => match r.interaction {
                Some(Interaction::Read | Interaction::Vread | Interaction::Capabilities) => {
                    Rest::Read
                }
                _ => Rest::Query,
            },
            AccessKind::Consent(ConsentAction::Create) => Rest::Create,
            AccessKind::Consent(ConsentAction::Update | ConsentAction::Revoke) => Rest::Update,
            AccessKind::Consent(ConsentAction::Read) => Rest::Read,
            AccessKind::Consent(
                ConsentAction::Search | ConsentAction::History | ConsentAction::Check,
            ) => Rest::Query,
            AccessKind::Audit(AuditAction::Read) => Rest::Read,
            AccessKind::Audit(
                AuditAction::Search | AuditAction::Export | AuditAction::Disclosures,
            ) => Rest::Query,
            AccessKind::Network(NetworkAction::Link | NetworkAction::Confirm) => Rest::Create,
            AccessKind::Network(NetworkAction::Reject | NetworkAction::Unlink) => Rest::Update,
            AccessKind::Network(NetworkAction::Read) => Rest::Query,
        }
    }

    /// `AuditEvent.action`.
    fn action(self) -> &'static str {
        match self {
            Rest::Read => "R",
            Rest::Query => "E",
            Rest::Create => "C",
            Rest::Update => "U",
        }
    }
}

/// `receipt` as an AuditEvent of `version`, with the issues of anything the pattern asks for
/// that the receipt could not give. `hash` is the receipt's hash, carried as a detail of the
/// transaction entity.
pub fn audit_event(
    receipt: &Receipt,
    hash: &Digest,
    subjects: Option<&ReceiptSubjects>,
    source: &AuditSource,
    version: FhirVersion,
) -> (Value, Vec<Issue>) {
    let (event, issues) = Event::build(receipt, hash, subjects, source);
    let value = match version {
        FhirVersion::Stu3 => event.stu3(),
        FhirVersion::R4 | FhirVersion::R4B => event.r4(),
        FhirVersion::R5 => event.r5(),
    };
    (value, issues)
}

// ---------------------------------------------------------------------------------------
// The version-neutral event: the facts, placed as BALP places them.

#[derive(Debug, Clone)]
struct Coding {
    system: &'static str,
    code: String,
    display: Option<&'static str>,
}

fn coding(system: &'static str, code: &str, display: &'static str) -> Coding {
    Coding {
        system,
        code: code.to_owned(),
        display: Some(display),
    }
}

impl Coding {
    fn json(&self) -> Value {
        let mut v = json!({"system": self.system, "code": self.code});
        if let Some(d) = self.display {
            v["display"] = json!(d);
        }
        v
    }

    fn concept(&self) -> Value {
        object([("coding", Value::Array(vec![self.json()]))])
    }
}

/// A reference to a person, thing or resource.
#[derive(Debug, Clone)]
enum Who {
    Reference(String),
    Identifier {
        system: Option<String>,
        value: String,
    },
}

impl Who {
    /// `Type/id` is a reference; `system|value` (or a bare value) an identifier.
    fn parse(text: &str) -> Who {
        let looks_like_reference = text.split_once('/').is_some_and(|(t, id)| {
            t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && t.chars().all(|c| c.is_ascii_alphanumeric())
                && !id.is_empty()
        });
        if looks_like_reference && !text.contains('|') {
            return Who::Reference(text.to_owned());
        }
        match text.split_once('|') {
            Some((system, value)) => Who::Identifier {
                system: (!system.is_empty()).then(|| system.to_owned()),
                value: value.to_owned(),
            },
            None => Who::Identifier {
                system: None,
                value: text.to_owned(),
            },
        }
    }

    fn id(system: &str, value: &str) -> Who {
        Who::Identifier {
            system: Some(system.to_owned()),
            value: value.to_owned(),
        }
    }

    fn identifier_json(system: &Option<String>, value: &str) -> Value {
        let mut v = json!({"value": value});
        if let Some(s) = system {
            v["system"] = json!(s);
        }
        v
    }

    /// A `Reference` (R4, R5).
    fn reference(&self) -> Value {
        match self {
            Who::Reference(r) => json!({"reference": r}),
            Who::Identifier { system, value } => {
                object([("identifier", Who::identifier_json(system, value))])
            }
        }
    }

    /// STU3 splits a reference and an identifier into two elements.
    fn stu3(&self, reference_key: &str, identifier_key: &str) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            Who::Reference(r) => {
                m.insert(reference_key.into(), json!({"reference": r}));
            }
            Who::Identifier { system, value } => {
                m.insert(identifier_key.into(), Who::identifier_json(system, value));
            }
        }
        m
    }
}

#[derive(Debug, Clone)]
struct Agent {
    kind: Coding,
    who: Who,
    requestor: bool,
    /// Network address and its `network-type` code (`2` IP address, `5` URI).
    network: Option<(String, &'static str)>,
    purpose: Option<Coding>,
}

#[derive(Debug, Clone, Default)]
struct Entity {
    what: Option<Who>,
    kind: Option<Coding>,
    role: Option<Coding>,
    /// The raw query text (base64-encoded on output).
    query: Option<String>,
    details: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
struct Event {
    id: String,
    profile: Option<&'static str>,
    kind: Coding,
    subtypes: Vec<Coding>,
    action: &'static str,
    recorded: String,
    /// `audit-event-outcome` code: 0, 4, 8.
    outcome: &'static str,
    outcome_desc: Option<String>,
    purpose: Option<Coding>,
    agents: Vec<Agent>,
    observer: Who,
    site: Option<String>,
    /// Every patient the receipt names.
    patients: Vec<Who>,
    entities: Vec<Entity>,
}

impl Event {
    fn build(
        r: &Receipt,
        hash: &Digest,
        subjects: Option<&ReceiptSubjects>,
        source: &AuditSource,
    ) -> (Event, Vec<Issue>) {
        let mut issues = Vec::new();
        let (pattern, success) = BalpPattern::of(r);
        let rest = Rest::of(r);
        let read = rest == Rest::Read;
        let purpose = r.purpose.as_deref().map(|p| Coding {
            system: ACT_REASON,
            code: p.to_owned(),
            display: None,
        });
        let outcome = if success {
            "0"
        } else if pattern == BalpPattern::Denied || r.status >= 500 || r.status < 400 {
            "8"
        } else {
            "4"
        };

        // Type and subtypes.
        let interaction = interaction_coding(r);
        let (kind, mut subtypes) = match pattern {
            BalpPattern::Denied => (
                coding(DCM, "110113", "Security Alert"),
                vec![coding(
                    BALP_AUTHZ_SUBTYPE,
                    "AuthZ-Consent",
                    "Authorization Decision using Roles and Consent",
                )],
            ),
            BalpPattern::BreakGlass => (
                coding(DCM, "110113", "Security Alert"),
                vec![coding(DCM, "110127", "Emergency Override Started")],
            ),
            _ => (
                coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
                Vec::new(),
            ),
        };
        subtypes.extend(interaction);
        let action = if pattern == BalpPattern::Denied {
            "E"
        } else {
            rest.action()
        };

        // Agents.
        let server_base = match &r.site {
            Some(site) => format!("{}/{site}", source.base_url.trim_end_matches('/')),
            None => source.base_url.clone(),
        };
        let client_who = subjects.and_then(|s| s.client_id.as_deref());
        let client_address = subjects.and_then(|s| s.client_address.as_deref());
        if client_who.is_none() || client_address.is_none() {
            issues.push(
                Issue::new(
                    Severity::Warning,
                    IssueCode::Incomplete,
                    "the client application or its network address is not known to the receipt",
                )
                .at("AuditEvent.agent"),
            );
        }
        let client = Agent {
            kind: match (pattern, read) {
                (BalpPattern::Denied, _) => coding(DCM, "110150", "Application"),
                (_, true) => coding(DCM, "110152", "Destination Role ID"),
                (_, false) => coding(DCM, "110153", "Source Role ID"),
            },
            who: Who::id(CLIENT_SYSTEM, client_who.unwrap_or("unknown")),
            requestor: false,
            network: client_address.map(|a| (a.to_owned(), "2")),
            purpose: None,
        };
        let server = Agent {
            kind: match (pattern, read) {
                (BalpPattern::Denied, _) => {
                    coding(SECURITY_ROLE_TYPE, "authserver", "authorization server")
                }
                (_, true) => coding(DCM, "110153", "Source Role ID"),
                (_, false) => coding(DCM, "110152", "Destination Role ID"),
            },
            who: Who::id(GATEWAY_SYSTEM, &r.gateway_id),
            requestor: false,
            network: (pattern != BalpPattern::Denied).then(|| (server_base.clone(), "5")),
            purpose: None,
        };
        let user = Agent {
            kind: match rest {
                Rest::Create | Rest::Update if pattern != BalpPattern::Denied => {
                    coding(PARTICIPATION_TYPE, "AUT", "author (originator)")
                }
                _ => coding(PARTICIPATION_TYPE, "IRCP", "information recipient"),
            },
            who: match subjects {
                Some(s) => Who::parse(&s.actor),
                None => Who::id(ACTOR_KEY_SYSTEM, &r.actor_key),
            },
            requestor: true,
            network: None,
            purpose: purpose.clone(),
        };
        let mut agents = vec![client, server, user];
        match &r.organization {
            Some(org) => agents.push(Agent {
                kind: coding(ROLE_CLASS, "PROV", "healthcare provider"),
                who: Who::parse(org),
                requestor: false,
                network: None,
                purpose: None,
            }),
            None if pattern == BalpPattern::Denied => issues.push(
                Issue::new(
                    Severity::Warning,
                    IssueCode::Incomplete,
                    "the caller's organization is not known to the receipt",
                )
                .at("AuditEvent.agent"),
            ),
            None => {}
        }

        // Entities. The clear patients stand for the keys when they are as many (they are
        // listed in the keys' order); otherwise the keyed hashes do.
        let clear = subjects
            .map(|s| s.patients.as_slice())
            .filter(|p| p.len() == r.patient_keys.len());
        let patients: Vec<Who> = match clear {
            Some(clear) => clear.iter().map(|p| Who::parse(p)).collect(),
            None => r
                .patient_keys
                .iter()
                .map(|key| Who::id(PATIENT_KEY_SYSTEM, key))
                .collect(),
        };
        if patients.len() > 1 {
            issues.push(
                Issue::new(
                    Severity::Information,
                    IssueCode::Informational,
                    "the access reached several patients: one patient entity each, and no BALP profile (its patient patterns name one patient)",
                )
                .at("AuditEvent.entity"),
            );
        }
        let mut entities = Vec::new();
        if pattern != BalpPattern::Denied {
            entities.push(Entity {
                what: Some(Who::id(RECEIPT_SYSTEM, &r.id)),
                kind: Some(coding(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id")),
                details: vec![("receipt-hash", hash.to_hex())],
                ..Entity::default()
            });
        }
        for p in &patients {
            entities.push(Entity {
                what: Some(p.clone()),
                kind: Some(coding(AUDIT_ENTITY_TYPE, "1", "Person")),
                role: Some(coding(OBJECT_ROLE, "1", "Patient")),
                ..Entity::default()
            });
        }
        if patients.is_empty() && pattern == BalpPattern::Denied {
            issues.push(
                Issue::new(
                    Severity::Warning,
                    IssueCode::Incomplete,
                    "a denied request without a patient has no patient entity",
                )
                .at("AuditEvent.entity"),
            );
        }
        match &r.consent {
            ConsentRelied::Consent { id, version } => {
                let reference = if version.is_empty() {
                    format!("Consent/{id}")
                } else {
                    format!("Consent/{id}/_history/{version}")
                };
                entities.push(Entity {
                    what: Some(Who::Reference(reference)),
                    kind: Some(coding(RESOURCE_TYPES, "Consent", "Consent")),
                    ..Entity::default()
                });
            }
            ConsentRelied::SiteDefault(policy) => entities.push(Entity {
                what: Some(Who::id(SITE_POLICY_SYSTEM, policy)),
                kind: Some(coding(RESOURCE_TYPES, "Consent", "Consent")),
                ..Entity::default()
            }),
            ConsentRelied::None if pattern == BalpPattern::Denied => issues.push(
                Issue::new(
                    Severity::Warning,
                    IssueCode::Incomplete,
                    "the deny relied on no consent or site policy",
                )
                .at("AuditEvent.entity"),
            ),
            ConsentRelied::None => {}
        }
        let data_entity = |res: &crate::receipt::ResourceEntry, typed: bool| Entity {
            what: Some(Who::Reference(res.reference())),
            kind: typed.then(|| coding(AUDIT_ENTITY_TYPE, "2", "System Object")),
            role: Some(coding(OBJECT_ROLE, "4", "Domain Resource")),
            details: vec![("sha256", res.content_hash.to_hex())],
            ..Entity::default()
        };
        if pattern != BalpPattern::Denied {
            if matches!(rest, Rest::Create | Rest::Update) {
                // The resource written (a Consent version): one data entity.
                match r.resources.first() {
                    Some(first) => entities.push(data_entity(first, true)),
                    None => issues.push(
                        Issue::new(
                            Severity::Information,
                            IssueCode::Incomplete,
                            "nothing was written, so the change has no data entity",
                        )
                        .at("AuditEvent.entity"),
                    ),
                }
                for extra in r.resources.iter().skip(1) {
                    entities.push(data_entity(extra, false));
                }
            } else if read {
                // BALP's read has exactly one data entity: the resource read.
                match r.resources.first() {
                    Some(first) => entities.push(data_entity(first, true)),
                    None if r.interaction == Some(Interaction::Capabilities) => {
                        entities.push(Entity {
                            what: Some(Who::Reference("CapabilityStatement".into())),
                            kind: Some(coding(AUDIT_ENTITY_TYPE, "2", "System Object")),
                            role: Some(coding(OBJECT_ROLE, "4", "Domain Resource")),
                            ..Entity::default()
                        })
                    }
                    None => issues.push(
                        Issue::new(
                            Severity::Information,
                            IssueCode::Incomplete,
                            "nothing was returned, so the read has no data entity",
                        )
                        .at("AuditEvent.entity"),
                    ),
                }
                for extra in r.resources.iter().skip(1) {
                    entities.push(data_entity(extra, false));
                }
            } else {
                let query = subjects.and_then(|s| s.query.clone());
                if query.is_none() {
                    issues.push(
                        Issue::new(
                            Severity::Warning,
                            IssueCode::Incomplete,
                            "the query text is kept by the gateway only; the query entity has none",
                        )
                        .at("AuditEvent.entity.query"),
                    );
                }
                entities.push(Entity {
                    kind: Some(coding(AUDIT_ENTITY_TYPE, "2", "System Object")),
                    role: Some(coding(OBJECT_ROLE, "24", "Query")),
                    query,
                    ..Entity::default()
                });
                // Results are listed without an entity type, outside BALP's slices: the
                // facts (references and content hashes) carry over.
                for res in &r.resources {
                    entities.push(data_entity(res, false));
                }
            }
        }

        let outcome_desc = match pattern {
            BalpPattern::Denied => Some(format!("deny: {}", r.consent.header_value())),
            BalpPattern::BreakGlass => r
                .break_glass_justification
                .as_ref()
                .map(|j| format!("break-glass: {j}")),
            _ if !success => Some(match r.upstream_status {
                Some(u) => format!("status {} (upstream {u})", r.status),
                None => format!("status {}", r.status),
            }),
            _ => None,
        };
        let profile = if (success || pattern == BalpPattern::Denied) && patients.len() <= 1 {
            pattern.profile()
        } else {
            None
        };
        let event = Event {
            id: r.id.clone(),
            profile,
            kind,
            subtypes,
            action,
            recorded: format_instant(r.time_ms),
            outcome,
            outcome_desc,
            purpose,
            agents,
            observer: Who::id(GATEWAY_SYSTEM, &r.gateway_id),
            site: r.site.clone(),
            patients,
            entities,
        };
        (event, issues)
    }

    fn r4(&self) -> Value {
        let mut m = Map::new();
        m.insert("resourceType".into(), json!("AuditEvent"));
        m.insert("id".into(), json!(self.id));
        if let Some(p) = self.profile {
            m.insert(
                "meta".into(),
                json!({"profile": [format!("{BALP_PROFILE_BASE}{p}")]}),
            );
        }
        m.insert("type".into(), self.kind.json());
        if !self.subtypes.is_empty() {
            m.insert(
                "subtype".into(),
                self.subtypes.iter().map(Coding::json).collect(),
            );
        }
        m.insert("action".into(), json!(self.action));
        m.insert("recorded".into(), json!(self.recorded));
        m.insert("outcome".into(), json!(self.outcome));
        if let Some(d) = &self.outcome_desc {
            m.insert("outcomeDesc".into(), json!(d));
        }
        if let Some(p) = &self.purpose {
            m.insert("purposeOfEvent".into(), Value::Array(vec![p.concept()]));
        }
        let agents: Vec<Value> = self
            .agents
            .iter()
            .map(|a| {
                let mut v = Value::Object(Map::from_iter([
                    ("type".to_owned(), a.kind.concept()),
                    ("who".to_owned(), a.who.reference()),
                    ("requestor".to_owned(), Value::Bool(a.requestor)),
                ]));
                if let Some((address, kind)) = &a.network {
                    v["network"] = json!({"address": address, "type": kind});
                }
                if let Some(p) = &a.purpose {
                    v["purposeOfUse"] = Value::Array(vec![p.concept()]);
                }
                v
            })
            .collect();
        m.insert("agent".into(), Value::Array(agents));
        let mut src = json!({
            "observer": self.observer.reference(),
            "type": [coding(SECURITY_SOURCE_TYPE, "4", "Application Server").json()],
        });
        if let Some(site) = &self.site {
            src["site"] = json!(site);
        }
        m.insert("source".into(), src);
        let entities: Vec<Value> = self
            .entities
            .iter()
            .map(|e| {
                let mut v = Map::new();
                if let Some(w) = &e.what {
                    v.insert("what".into(), w.reference());
                }
                if let Some(k) = &e.kind {
                    v.insert("type".into(), k.json());
                }
                if let Some(r) = &e.role {
                    v.insert("role".into(), r.json());
                }
                if let Some(q) = &e.query {
                    v.insert("query".into(), json!(base64(q)));
                }
                if !e.details.is_empty() {
                    v.insert(
                        "detail".into(),
                        e.details
                            .iter()
                            .map(|(t, val)| json!({"type": t, "valueString": val}))
                            .collect(),
                    );
                }
                Value::Object(v)
            })
            .collect();
        if !entities.is_empty() {
            m.insert("entity".into(), Value::Array(entities));
        }
        Value::Object(m)
    }

    fn r5(&self) -> Value {
        let mut m = Map::new();
        m.insert("resourceType".into(), json!("AuditEvent"));
        m.insert("id".into(), json!(self.id));
        m.insert("category".into(), Value::Array(vec![self.kind.concept()]));
        let code = if self.subtypes.is_empty() {
            json!({"text": self.kind.code})
        } else {
            json!({"coding": self.subtypes.iter().map(Coding::json).collect::<Vec<_>>()})
        };
        m.insert("code".into(), code);
        m.insert("action".into(), json!(self.action));
        m.insert("recorded".into(), json!(self.recorded));
        let mut outcome = json!({"code": {"system": AUDIT_EVENT_OUTCOME, "code": self.outcome}});
        if let Some(d) = &self.outcome_desc {
            outcome["detail"] = json!([{"text": d}]);
        }
        m.insert("outcome".into(), outcome);
        if let Some(p) = &self.purpose {
            m.insert("authorization".into(), Value::Array(vec![p.concept()]));
        }
        if let [p] = self.patients.as_slice() {
            m.insert("patient".into(), p.reference());
        }
        let agents: Vec<Value> = self
            .agents
            .iter()
            .map(|a| {
                let mut v = Value::Object(Map::from_iter([
                    ("type".to_owned(), a.kind.concept()),
                    ("who".to_owned(), a.who.reference()),
                    ("requestor".to_owned(), Value::Bool(a.requestor)),
                ]));
                match &a.network {
                    Some((address, "5")) => v["networkUri"] = json!(address),
                    Some((address, _)) => v["networkString"] = json!(address),
                    None => {}
                }
                if let Some(p) = &a.purpose {
                    v["authorization"] = Value::Array(vec![p.concept()]);
                }
                v
            })
            .collect();
        m.insert("agent".into(), Value::Array(agents));
        m.insert(
            "source".into(),
            json!({
                "observer": self.observer.reference(),
                "type": [coding(SECURITY_SOURCE_TYPE, "4", "Application Server").concept()],
            }),
        );
        let entities: Vec<Value> = self
            .entities
            .iter()
            .map(|e| {
                let mut v = Map::new();
                if let Some(w) = &e.what {
                    v.insert("what".into(), w.reference());
                }
                // R5 has no entity type: the role tells entities apart; a typed entity
                // without a role takes its type as role.
                if let Some(r) = e.role.as_ref().or(e.kind.as_ref()) {
                    v.insert("role".into(), r.concept());
                }
                if let Some(q) = &e.query {
                    v.insert("query".into(), json!(base64(q)));
                }
                if !e.details.is_empty() {
                    v.insert(
                        "detail".into(),
                        e.details
                            .iter()
                            .map(|(t, val)| json!({"type": {"text": t}, "valueString": val}))
                            .collect(),
                    );
                }
                Value::Object(v)
            })
            .collect();
        if !entities.is_empty() {
            m.insert("entity".into(), Value::Array(entities));
        }
        Value::Object(m)
    }

    fn stu3(&self) -> Value {
        let mut m = Map::new();
        m.insert("resourceType".into(), json!("AuditEvent"));
        m.insert("id".into(), json!(self.id));
        m.insert("type".into(), self.kind.json());
        if !self.subtypes.is_empty() {
            m.insert(
                "subtype".into(),
                self.subtypes.iter().map(Coding::json).collect(),
            );
        }
        m.insert("action".into(), json!(self.action));
        m.insert("recorded".into(), json!(self.recorded));
        m.insert("outcome".into(), json!(self.outcome));
        if let Some(d) = &self.outcome_desc {
            m.insert("outcomeDesc".into(), json!(d));
        }
        if let Some(p) = &self.purpose {
            m.insert("purposeOfEvent".into(), Value::Array(vec![p.concept()]));
        }
        let agents: Vec<Value> = self
            .agents
            .iter()
            .map(|a| {
                let mut v = a.who.stu3("reference", "userId");
                v.insert("role".into(), Value::Array(vec![a.kind.concept()]));
                v.insert("requestor".into(), json!(a.requestor));
                if let Some((address, kind)) = &a.network {
                    v.insert("network".into(), json!({"address": address, "type": kind}));
                }
                if let Some(p) = &a.purpose {
                    v.insert("purposeOfUse".into(), Value::Array(vec![p.concept()]));
                }
                Value::Object(v)
            })
            .collect();
        m.insert("agent".into(), Value::Array(agents));
        let identifier = match &self.observer {
            Who::Identifier { system, value } => Who::identifier_json(system, value),
            Who::Reference(r) => json!({"value": r}),
        };
        let mut src = json!({
            "identifier": identifier,
            "type": [coding(SECURITY_SOURCE_TYPE, "4", "Application Server").json()],
        });
        if let Some(site) = &self.site {
            src["site"] = json!(site);
        }
        m.insert("source".into(), src);
        let entities: Vec<Value> = self
            .entities
            .iter()
            .map(|e| {
                let mut v = match &e.what {
                    Some(w) => w.stu3("reference", "identifier"),
                    None => Map::new(),
                };
                if let Some(k) = &e.kind {
                    v.insert("type".into(), k.json());
                }
                if let Some(r) = &e.role {
                    v.insert("role".into(), r.json());
                }
                if let Some(q) = &e.query {
                    v.insert("query".into(), json!(base64(q)));
                }
                if !e.details.is_empty() {
                    v.insert(
                        "detail".into(),
                        e.details
                            .iter()
                            .map(|(t, val)| json!({"type": t, "value": base64(val)}))
                            .collect(),
                    );
                }
                Value::Object(v)
            })
            .collect();
        if !entities.is_empty() {
            m.insert("entity".into(), Value::Array(entities));
        }
        Value::Object(m)
    }
}

/// A JSON object from owned values (`json!` would copy nested values by serialising them).
fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn interaction_coding(r: &Receipt) -> Option<Coding> {
    let code = match r.kind {
        AccessKind::Fhir => match r.interaction? {
            Interaction::Read => "read",
            Interaction::Vread => "vread",
            Interaction::Search if r.resource_type.is_some() => "search-type",
            Interaction::Search => "search-system",
            Interaction::History => "history",
            Interaction::Capabilities => "capabilities",
            Interaction::Operation => "operation",
        },
        AccessKind::Consent(ConsentAction::Create) => "create",
        // A revocation stores a new, inactive version of the Consent.
        AccessKind::Consent(ConsentAction::Update | ConsentAction::Revoke) => "update",
        AccessKind::Consent(ConsentAction::Search) => "search-type",
        AccessKind::Consent(ConsentAction::History) => "history-instance",
        AccessKind::Consent(ConsentAction::Read) => "read",
        AccessKind::Consent(ConsentAction::Check) => "operation",
        AccessKind::Audit(AuditAction::Search) => "search-type",
        AccessKind::Audit(AuditAction::Read) => "read",
        AccessKind::Audit(AuditAction::Export | AuditAction::Disclosures) => "operation",
        AccessKind::Network(NetworkAction::Link | NetworkAction::Confirm) => "create",
        AccessKind::Network(NetworkAction::Reject) => "update",
        AccessKind::Network(NetworkAction::Unlink) => "delete",
        AccessKind::Network(NetworkAction::Read) => "search-type",
    };
    Some(Coding {
        system: RESTFUL_INTERACTION,
        code: code.to_owned(),
        display: None,
    })
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::receipt::tests::{sample, subjects};

    fn source() -> AuditSource {
        AuditSource {
            base_url: "https://gw.example.org/fhir".into(),
        }
    }

    fn render(r: &Receipt, with_subjects: bool, v: FhirVersion) -> (Value, Vec<Issue>) {
        let chained = Chain::genesis("gw-1").append(r.clone()).unwrap();
        let s = subjects();
        audit_event(
            &chained.receipt,
            &chained.hash,
            with_subjects.then_some(&s),
            &source(),
            v,
        )
    }

    fn search() -> Receipt {
        let mut r = sample("s1");
        r.interaction = Some(Interaction::Search);
        r
    }

    fn denied() -> Receipt {
        let mut r = sample("d1");
        r.decision = AccessDecision::Deny;
        r.status = 403;
        r.resources.clear();
        r.upstream_status = None;
        r
    }

    fn break_glass() -> Receipt {
        let mut r = sample("b1");
        r.break_glass = true;
        r.purpose = Some("ETREAT".into());
        r.break_glass_justification = Some("unconscious in ER".into());
        r
    }

    fn codes(v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        collect_codes(v, &mut out);
        out
    }

    fn collect_codes(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let (Some(s), Some(c)) = (m.get("system"), m.get("code")) {
                    out.push(format!(
                        "{}#{}",
                        s.as_str().unwrap_or(""),
                        c.as_str().unwrap_or("")
                    ));
                }
                m.values().for_each(|x| collect_codes(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| collect_codes(x, out)),
            _ => {}
        }
    }

    fn agent_of<'a>(v: &'a Value, system: &str, code: &str) -> &'a Value {
        v["agent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| {
                a["type"]["coding"][0]["system"] == system && a["type"]["coding"][0]["code"] == code
            })
            .unwrap_or_else(|| panic!("no agent {system}#{code} in {v:#}"))
    }

    fn entity_of<'a>(v: &'a Value, system: &str, code: &str) -> Vec<&'a Value> {
        v["entity"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"]["system"] == system && e["type"]["code"] == code)
            .collect()
    }

    /// The required elements of BALP's read and query profiles (R4).
    fn check_rest_pattern(v: &Value, read: bool, patient: bool) {
        let profile = match (read, patient) {
            (true, false) => "IHE.BasicAudit.Read",
            (true, true) => "IHE.BasicAudit.PatientRead",
            (false, false) => "IHE.BasicAudit.Query",
            (false, true) => "IHE.BasicAudit.PatientQuery",
        };
        assert_eq!(
            v["meta"]["profile"][0],
            format!("{BALP_PROFILE_BASE}{profile}")
        );
        assert_eq!(v["type"]["system"], AUDIT_EVENT_TYPE);
        assert_eq!(v["type"]["code"], "rest");
        assert!(!v["subtype"].as_array().unwrap().is_empty());
        assert_eq!(v["action"], if read { "R" } else { "E" });
        assert!(v["recorded"].is_string());
        assert_eq!(v["outcome"], "0");
        let (client, server) = if read {
            ("110152", "110153")
        } else {
            ("110153", "110152")
        };
        for code in [client, server] {
            let a = agent_of(v, DCM, code);
            assert!(a["who"].is_object());
            assert!(a["network"]["address"].is_string());
            assert!(a.get("media").is_none());
        }
        let user = agent_of(v, PARTICIPATION_TYPE, "IRCP");
        assert_eq!(user["requestor"], true);
        assert!(user["who"].is_object() && user.get("network").is_none());
        assert!(v["source"]["observer"].is_object());
        let system_objects = entity_of(v, AUDIT_ENTITY_TYPE, "2");
        assert_eq!(system_objects.len(), 1, "one data or query entity");
        if read {
            assert!(system_objects[0]["what"].is_object());
            assert_eq!(system_objects[0]["role"]["code"], "4");
        } else {
            assert_eq!(system_objects[0]["role"]["code"], "24");
            assert!(system_objects[0]["query"].is_string());
            assert!(system_objects[0].get("what").is_none());
        }
        let persons = entity_of(v, AUDIT_ENTITY_TYPE, "1");
        if patient {
            assert_eq!(persons.len(), 1);
            assert_eq!(persons[0]["role"]["system"], OBJECT_ROLE);
            assert_eq!(persons[0]["role"]["code"], "1");
            assert!(persons[0]["what"].is_object());
        } else {
            assert!(persons.is_empty());
        }
        let tx = entity_of(v, BALP_ENTITY_TYPE, "XrequestId");
        assert!(tx.len() <= 1 && tx[0]["what"]["identifier"]["value"].is_string());
    }

    #[test]
    fn permitted_reads_and_queries_follow_balp() {
        let mut no_patient_read = sample("r0");
        no_patient_read.patient_keys.clear();
        let mut no_patient_search = search();
        no_patient_search.patient_keys.clear();
        for (r, read, patient) in [
            (sample("r1"), true, true),
            (no_patient_read, true, false),
            (search(), false, true),
            (no_patient_search, false, false),
        ] {
            let (v, issues) = render(&r, true, FhirVersion::R4);
            check_rest_pattern(&v, read, patient);
            assert!(issues.is_empty(), "{issues:?}");
        }
    }

    #[test]
    fn facts_carry_over() {
        let (v, _) = render(&sample("r1"), true, FhirVersion::R4);
        assert_eq!(v["id"], "r1");
        assert_eq!(v["recorded"], "2026-11-25T01:07:24.123Z");
        assert_eq!(v["subtype"][0]["code"], "read");
        assert_eq!(v["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
        let user = agent_of(&v, PARTICIPATION_TYPE, "IRCP");
        assert_eq!(user["who"]["reference"], "Practitioner/dr-who");
        assert_eq!(user["purposeOfUse"][0]["coding"][0]["code"], "TREAT");
        let patient = &entity_of(&v, AUDIT_ENTITY_TYPE, "1")[0]["what"]["identifier"];
        assert_eq!(patient["system"], "urn:oid:1.2.3");
        assert_eq!(patient["value"], "p-42");
        let data = &entity_of(&v, AUDIT_ENTITY_TYPE, "2")[0];
        assert_eq!(data["what"]["reference"], "Observation/o1/_history/3");
        assert_eq!(data["detail"][0]["type"], "sha256");
        let consent = &entity_of(&v, RESOURCE_TYPES, "Consent")[0];
        assert_eq!(consent["what"]["reference"], "Consent/c1/_history/2");
        assert_eq!(
            agent_of(&v, ROLE_CLASS, "PROV")["who"]["reference"],
            "Organization/st-elsewhere"
        );
        let server = agent_of(&v, DCM, "110153");
        assert_eq!(
            server["network"]["address"],
            "https://gw.example.org/fhir/north"
        );
        // The query travels base64-encoded.
        let (q, _) = render(&search(), true, FhirVersion::R4);
        let query = entity_of(&q, AUDIT_ENTITY_TYPE, "2")[0]["query"]
            .as_str()
            .unwrap();
        assert_eq!(query, base64("code=http://loinc.org|1234-5"));
    }

    #[test]
    fn denied_follows_balp_authz_consent() {
        let (v, issues) = render(&denied(), true, FhirVersion::R4);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(
            v["meta"]["profile"][0],
            format!("{BALP_PROFILE_BASE}IHE.BasicAudit.AuthZconsent")
        );
        assert_eq!(v["type"]["system"], DCM);
        assert_eq!(v["type"]["code"], "110113");
        assert_eq!(v["subtype"][0]["code"], "AuthZ-Consent");
        assert_eq!(v["action"], "E");
        assert_ne!(v["outcome"], "0");
        assert_eq!(v["outcomeDesc"], "deny: c1@2");
        assert!(v["purposeOfEvent"].is_array());
        assert!(agent_of(&v, DCM, "110150")["network"].is_object());
        assert_eq!(agent_of(&v, PARTICIPATION_TYPE, "IRCP")["requestor"], true);
        assert_eq!(agent_of(&v, ROLE_CLASS, "PROV")["requestor"], false);
        assert_eq!(
            agent_of(&v, SECURITY_ROLE_TYPE, "authserver")["requestor"],
            false
        );
        // Entity slicing is closed: patient and consent only.
        let entities = v["entity"].as_array().unwrap();
        assert_eq!(entities.len(), 2);
        assert_eq!(entity_of(&v, AUDIT_ENTITY_TYPE, "1").len(), 1);
        assert_eq!(entity_of(&v, RESOURCE_TYPES, "Consent").len(), 1);
        // A deny by the site default names the policy.
        let mut by_default = denied();
        by_default.consent = ConsentRelied::SiteDefault("opt-in".into());
        let (v, _) = render(&by_default, true, FhirVersion::R4);
        let consent = &entity_of(&v, RESOURCE_TYPES, "Consent")[0];
        assert_eq!(consent["what"]["identifier"]["value"], "opt-in");
    }

    #[test]
    fn break_glass_is_its_own_pattern() {
        let (v, _) = render(&break_glass(), true, FhirVersion::R4);
        assert!(v.get("meta").is_none());
        assert_eq!(v["type"]["code"], "110113");
        assert_eq!(v["subtype"][0]["system"], DCM);
        assert_eq!(v["subtype"][0]["code"], "110127");
        assert_eq!(v["subtype"][1]["code"], "read");
        assert_eq!(v["outcome"], "0");
        assert_eq!(v["purposeOfEvent"][0]["coding"][0]["code"], "ETREAT");
        assert_eq!(v["outcomeDesc"], "break-glass: unconscious in ER");
        assert_eq!(entity_of(&v, AUDIT_ENTITY_TYPE, "1").len(), 1);
        assert_eq!(
            BalpPattern::of(&break_glass()),
            (BalpPattern::BreakGlass, true)
        );
    }

    #[test]
    fn failures_keep_the_shape_without_the_profile() {
        let mut r = sample("f1");
        r.decision = AccessDecision::Error;
        r.status = 502;
        r.upstream_status = Some(500);
        r.resources.clear();
        let (v, _) = render(&r, true, FhirVersion::R4);
        assert!(v.get("meta").is_none());
        assert_eq!(v["type"]["code"], "rest");
        assert_eq!(v["outcome"], "8");
        assert_eq!(v["outcomeDesc"], "status 502 (upstream 500)");
        let mut not_found = sample("f2");
        not_found.status = 404;
        let (v, _) = render(&not_found, true, FhirVersion::R4);
        assert_eq!(v["outcome"], "4");
    }

    #[test]
    fn without_subjects_keyed_hashes_stand_in() {
        let r = search();
        let (v, issues) = render(&r, false, FhirVersion::R4);
        let user = agent_of(&v, PARTICIPATION_TYPE, "IRCP");
        assert_eq!(user["who"]["identifier"]["system"], ACTOR_KEY_SYSTEM);
        assert_eq!(user["who"]["identifier"]["value"], r.actor_key.as_str());
        let patient = &entity_of(&v, AUDIT_ENTITY_TYPE, "1")[0];
        assert_eq!(patient["what"]["identifier"]["system"], PATIENT_KEY_SYSTEM);
        let text = v.to_string();
        assert!(!text.contains("dr-who") && !text.contains("p-42"));
        assert!(
            issues
                .iter()
                .any(|i| i.expression == ["AuditEvent.entity.query"])
        );
        assert!(issues.iter().any(|i| i.expression == ["AuditEvent.agent"]));
    }

    #[test]
    fn every_version_carries_the_same_facts() {
        for r in [sample("r1"), search(), denied(), break_glass()] {
            let (r4, _) = render(&r, true, FhirVersion::R4);
            let (r4b, _) = render(&r, true, FhirVersion::R4B);
            assert_eq!(r4, r4b);
            let mut expected = codes(&r4);
            expected.sort();
            for version in [FhirVersion::Stu3, FhirVersion::R5] {
                let (v, _) = render(&r, true, version);
                assert_eq!(v["resourceType"], "AuditEvent");
                assert!(v.get("meta").is_none(), "{version}: BALP profiles are R4");
                let mut found = codes(&v);
                found.sort();
                // Entity types (absent in R5) and the outcome (a Coding in R5 only) aside.
                let facts = |c: &String| {
                    [
                        DCM,
                        AUDIT_EVENT_TYPE,
                        RESTFUL_INTERACTION,
                        ACT_REASON,
                        PARTICIPATION_TYPE,
                    ]
                    .iter()
                    .chain(&[
                        ROLE_CLASS,
                        OBJECT_ROLE,
                        BALP_AUTHZ_SUBTYPE,
                        SECURITY_ROLE_TYPE,
                    ])
                    .any(|s| c.starts_with(&format!("{s}#")))
                };
                found.retain(facts);
                let mut wanted = expected.clone();
                wanted.retain(facts);
                assert_eq!(found, wanted, "{version}");
            }
        }
    }

    #[test]
    fn r5_and_stu3_shapes() {
        let (v, _) = render(&sample("r1"), true, FhirVersion::R5);
        assert_eq!(v["category"][0]["coding"][0]["code"], "rest");
        assert_eq!(v["code"]["coding"][0]["code"], "read");
        assert_eq!(v["outcome"]["code"]["code"], "0");
        assert_eq!(v["authorization"][0]["coding"][0]["code"], "TREAT");
        assert_eq!(v["patient"]["identifier"]["value"], "p-42");
        assert!(
            v["agent"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["who"].is_object())
        );
        assert!(
            v["entity"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e.get("type").is_none())
        );
        assert!(v["source"]["observer"].is_object());
        let (s, _) = render(&sample("r1"), true, FhirVersion::Stu3);
        assert!(
            s["agent"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["role"].is_array() && a.get("type").is_none())
        );
        assert_eq!(
            s["agent"][2]["reference"]["reference"],
            "Practitioner/dr-who"
        );
        assert_eq!(s["source"]["identifier"]["value"], "gw-1");
        assert!(
            s["entity"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e.get("what").is_none())
        );
    }

    #[test]
    fn every_patient_reached_is_an_entity() {
        let mut r = search();
        let mut s = subjects();
        s.add_patient("north/Patient/p2");
        s.add_patient("north/Patient/p3");
        r.patient_keys = s.keys(&crate::receipt::tests::key()).patient_keys;
        let chained = Chain::genesis("gw-1").append(r).unwrap();
        for version in [FhirVersion::R4, FhirVersion::R5, FhirVersion::Stu3] {
            let (v, issues) = audit_event(
                &chained.receipt,
                &chained.hash,
                Some(&s),
                &source(),
                version,
            );
            let patients: Vec<&Value> = v["entity"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["role"]["code"] == "1" || e["role"]["coding"][0]["code"] == "1")
                .collect();
            assert_eq!(patients.len(), 3, "{version}: {v:#}");
            assert!(v.get("meta").is_none(), "{version}: no one-patient profile");
            assert!(
                v.get("patient").is_none(),
                "{version}: R5's patient is 0..1"
            );
            assert!(
                issues
                    .iter()
                    .any(|i| i.diagnostics.contains("several patients")),
                "{issues:?}"
            );
        }
        let (v, _) = audit_event(
            &chained.receipt,
            &chained.hash,
            None,
            &source(),
            FhirVersion::R4,
        );
        let keyed = entity_of(&v, AUDIT_ENTITY_TYPE, "1");
        assert_eq!(keyed.len(), 3);
        assert!(
            keyed
                .iter()
                .all(|e| e["what"]["identifier"]["system"] == PATIENT_KEY_SYSTEM)
        );
        // Without a patient, the plain pattern; with one, the patient pattern.
        let mut none = search();
        none.patient_keys.clear();
        assert_eq!(BalpPattern::of(&none).0, BalpPattern::Query);
        assert_eq!(BalpPattern::of(&search()).0, BalpPattern::PatientQuery);
    }

    #[test]
    fn network_index_changes_have_their_patterns() {
        let expect = [
            (
                NetworkAction::Link,
                "C",
                "create",
                "IHE.BasicAudit.PatientCreate",
            ),
            (
                NetworkAction::Confirm,
                "C",
                "create",
                "IHE.BasicAudit.PatientCreate",
            ),
            (
                NetworkAction::Reject,
                "U",
                "update",
                "IHE.BasicAudit.PatientUpdate",
            ),
            (
                NetworkAction::Unlink,
                "U",
                "delete",
                "IHE.BasicAudit.PatientUpdate",
            ),
            (
                NetworkAction::Read,
                "E",
                "search-type",
                "IHE.BasicAudit.PatientQuery",
            ),
        ];
        for (action, letter, subtype, profile) in expect {
            let mut r = sample("n1");
            r.kind = AccessKind::Network(action);
            r.interaction = None;
            r.resource_type = Some("Patient".into());
            r.resources.clear();
            r.consent = ConsentRelied::None;
            let (v, _) = render(&r, true, FhirVersion::R4);
            assert_eq!(
                (v["action"].as_str(), v["subtype"][0]["code"].as_str()),
                (Some(letter), Some(subtype)),
                "{action:?}"
            );
            assert_eq!(
                v["meta"]["profile"][0],
                format!("{BALP_PROFILE_BASE}{profile}"),
                "{action:?}"
            );
            assert_eq!(AccessKind::parse(r.kind.as_str()), Some(r.kind));
        }
    }

    #[test]
    fn consent_changes_and_audit_reads_have_their_patterns() {
        let consent_doc = serde_json::json!({
            "resourceType": "Consent", "id": "c1", "meta": {"versionId": "1"}
        });
        let mut created = sample("k1");
        created.kind = AccessKind::Consent(ConsentAction::Create);
        created.interaction = None;
        created.resource_type = Some("Consent".into());
        created.resources =
            vec![crate::receipt::ResourceEntry::from_resource(&consent_doc).unwrap()];
        created.consent = ConsentRelied::None;
        let (v, issues) = render(&created, true, FhirVersion::R4);
        assert_eq!(
            v["meta"]["profile"][0],
            format!("{BALP_PROFILE_BASE}IHE.BasicAudit.PatientCreate")
        );
        assert_eq!(
            (v["action"].as_str(), v["subtype"][0]["code"].as_str()),
            (Some("C"), Some("create"))
        );
        assert_eq!(agent_of(&v, PARTICIPATION_TYPE, "AUT")["requestor"], true);
        let data = entity_of(&v, AUDIT_ENTITY_TYPE, "2");
        assert_eq!(data[0]["what"]["reference"], "Consent/c1/_history/1");
        assert!(issues.is_empty(), "{issues:?}");

        let mut revoked = created.clone();
        revoked.kind = AccessKind::Consent(ConsentAction::Revoke);
        let (v, _) = render(&revoked, true, FhirVersion::R4);
        assert_eq!(v["action"], "U");
        assert_eq!(
            v["meta"]["profile"][0],
            format!("{BALP_PROFILE_BASE}IHE.BasicAudit.PatientUpdate")
        );

        let mut refused = created.clone();
        refused.decision = AccessDecision::Deny;
        refused.status = 403;
        refused.resources.clear();
        assert_eq!(BalpPattern::of(&refused).0, BalpPattern::Denied);

        let mut audit_read = sample("a1");
        audit_read.kind = AccessKind::Audit(AuditAction::Read);
        audit_read.interaction = None;
        audit_read.patient_keys.clear();
        audit_read.resources.clear();
        let (v, _) = render(&audit_read, true, FhirVersion::R4);
        assert_eq!(
            (v["action"].as_str(), v["subtype"][0]["code"].as_str()),
            (Some("R"), Some("read"))
        );
        let mut disclosures = sample("a2");
        disclosures.kind = AccessKind::Audit(AuditAction::Disclosures);
        disclosures.interaction = None;
        let (v, _) = render(&disclosures, true, FhirVersion::R4);
        assert_eq!(
            v["meta"]["profile"][0],
            format!("{BALP_PROFILE_BASE}IHE.BasicAudit.PatientQuery")
        );
        assert_eq!(v["subtype"][0]["code"], "operation");
    }

    #[test]
    fn who_parsing() {
        assert!(matches!(Who::parse("Practitioner/1"), Who::Reference(_)));
        assert!(matches!(
            Who::parse("urn:oid:1|x"),
            Who::Identifier {
                system: Some(_),
                ..
            }
        ));
        assert!(matches!(
            Who::parse("alice"),
            Who::Identifier { system: None, .. }
        ));
        assert!(matches!(
            Who::parse("https://idp/x"),
            Who::Identifier { .. }
        ));
    }
}
