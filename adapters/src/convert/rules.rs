//! The version-to-version rules, as data: renamed elements, remapped codes, code systems for
//! `code` → `CodeableConcept` changes, and the few whole-resource moves that data cannot say
//! (as functions). Facts from the specifications' R3↔R4 and R4↔R5 difference pages.
//!
//! Renames are written once, for the upward step, and reversed for the downward one. Code
//! maps are written per direction (they are not always invertible). Leaves out what the
//! generic walk does by itself: cardinality, datatype changes, elements a version lacks.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use assent_fhir::{FhirVersion, IssueCode, Severity};
use serde_json::{Map, Value};

use super::{Ctx, StepTable, extension, step_tables};
use crate::definitions::{NodeId, definitions};

/// A code remap: (from, to, exact). An inexact pair keeps the original in a carrier.
pub(crate) type CodeMap = [(&'static str, &'static str, bool)];

/// A whole-resource rule: rewrites `obj` into target shape for some keys and lists them.
pub(crate) type ResourceRule = fn(&mut Map<String, Value>, &mut Ctx, &mut Vec<&'static str>);

/// The prepared table of the adjacent step `from` → `to` (identity for non-adjacent pairs).
pub(crate) fn step_table(from: FhirVersion, to: FhirVersion) -> &'static StepTable {
    step_tables().get(&(from, to)).unwrap_or(empty_table())
}

/// A table without rules: the generic walk alone.
pub(crate) fn empty_table() -> &'static StepTable {
    static EMPTY: std::sync::LazyLock<StepTable> = std::sync::LazyLock::new(StepTable::default);
    &EMPTY
}

/// `Condition.clinicalStatus` → its code system, where a `code` became a `CodeableConcept`.
pub(crate) fn code_system(path: &str) -> Option<&'static str> {
    CODE_SYSTEMS
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, system)| *system)
}

const CODE_SYSTEMS: &[(&str, &str)] = &[
    (
        "Condition.clinicalStatus",
        "http://terminology.hl7.org/CodeSystem/condition-clinical",
    ),
    (
        "Condition.verificationStatus",
        "http://terminology.hl7.org/CodeSystem/condition-ver-status",
    ),
    (
        "AllergyIntolerance.clinicalStatus",
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
    ),
    (
        "AllergyIntolerance.verificationStatus",
        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
    ),
    (
        "AllergyIntolerance.type",
        "http://hl7.org/fhir/allergy-intolerance-type",
    ),
    (
        "DocumentReference.relatesTo.code",
        "http://hl7.org/fhir/document-relationship-type",
    ),
    (
        "AuditEvent.agent.network.type",
        "http://hl7.org/fhir/network-type",
    ),
];

/// Renames for the upward steps: (source path of the element, new key). The downward step
/// uses them reversed.
const RENAMES_STU3_R4: &[(&str, &str)] = &[
    ("Claim.item.service", "productOrService"),
    ("Claim.item.detail.service", "productOrService"),
    ("Claim.item.detail.subDetail.service", "productOrService"),
    ("ClaimResponse.item.sequenceLinkId", "itemSequence"),
    ("ClaimResponse.addItem.service", "productOrService"),
    ("ExplanationOfBenefit.item.service", "productOrService"),
    (
        "ExplanationOfBenefit.item.detail.service",
        "productOrService",
    ),
    (
        "ExplanationOfBenefit.item.detail.subDetail.service",
        "productOrService",
    ),
    ("VisionPrescription.dispense", "lensSpecification"),
    ("MessageHeader.event", "eventCoding"),
    ("Binary.content", "data"),
    ("Encounter.reason", "reasonCode"),
    ("Encounter.incomingReferral", "basedOn"),
    ("Encounter.diagnosis.role", "use"),
    ("Observation.context", "encounter"),
    ("Observation.comment", "note"),
    ("Condition.context", "encounter"),
    ("Condition.assertedDate", "recordedDate"),
    ("Procedure.context", "encounter"),
    ("Procedure.notDoneReason", "statusReason"),
    ("Procedure.performer.role", "function"),
    ("MedicationRequest.context", "encounter"),
    ("MedicationRequest.substitution.allowed", "allowedBoolean"),
    ("MedicationStatement.reasonNotTaken", "statusReason"),
    ("Medication.ingredient.amount", "strength"),
    ("AllergyIntolerance.assertedDate", "recordedDate"),
    ("Immunization.date", "occurrenceDateTime"),
    ("MedicationAdministration.reasonNotGiven", "statusReason"),
    ("Communication.notDoneReason", "statusReason"),
    ("Immunization.practitioner", "performer"),
    ("Immunization.practitioner.role", "function"),
    ("DiagnosticReport.context", "encounter"),
    ("DiagnosticReport.image", "media"),
    ("DiagnosticReport.codedDiagnosis", "conclusionCode"),
    ("DocumentReference.class", "category"),
    ("DocumentReference.indexed", "date"),
    ("CarePlan.context", "encounter"),
    ("CarePlan.definition", "instantiatesCanonical"),
    ("CareTeam.context", "encounter"),
    ("Goal.status", "lifecycleStatus"),
    ("ProcedureRequest.context", "encounter"),
    ("ProcedureRequest.definition", "instantiatesCanonical"),
    ("Consent.consentingParty", "performer"),
    ("AuditEvent.agent.reference", "who"),
    ("AuditEvent.entity.reference", "what"),
    ("AuditEvent.source.identifier", "observer"),
    ("Provenance.period", "occurredPeriod"),
    ("Provenance.agent.whoReference", "who"),
    ("Provenance.agent.onBehalfOfReference", "onBehalfOf"),
    ("Provenance.entity.whatReference", "what"),
];

const RENAMES_R4B_R5: &[(&str, &str)] = &[
    ("NutritionOrder.patient", "subject"),
    ("MessageHeader.source.endpoint", "endpointUrl"),
    ("MessageHeader.destination.endpoint", "endpointUrl"),
    ("MedicationAdministration.context", "encounter"),
    (
        "MedicationAdministration.effectiveDateTime",
        "occurenceDateTime",
    ),
    (
        "MedicationAdministration.effectivePeriod",
        "occurencePeriod",
    ),
    ("DeviceUseStatement.subject", "patient"),
    ("DeviceUseStatement.recordedOn", "dateAsserted"),
    ("DeviceUseStatement.source", "informationSource"),
    ("Location.physicalType", "form"),
    ("Encounter.period", "actualPeriod"),
    ("Encounter.participant.individual", "actor"),
    ("Encounter.hospitalization", "admission"),
    ("Encounter.location.physicalType", "form"),
    ("Procedure.performedDateTime", "occurrenceDateTime"),
    ("Procedure.performedPeriod", "occurrencePeriod"),
    ("Procedure.performedString", "occurrenceString"),
    ("Procedure.performedAge", "occurrenceAge"),
    ("Procedure.performedRange", "occurrenceRange"),
    ("MedicationRequest.reportedBoolean", "reported"),
    ("MedicationRequest.reportedReference", "informationSource"),
    ("MedicationRequest.dispenseRequest.performer", "dispenser"),
    ("MedicationStatement.context", "encounter"),
    ("Medication.manufacturer", "marketingAuthorizationHolder"),
    ("Medication.form", "doseForm"),
    ("Medication.ingredient.strength", "strengthRatio"),
    ("Immunization.reportOrigin", "informationSource"),
    ("Immunization.reaction.detail", "manifestation"),
    (
        "Immunization.protocolApplied.doseNumberPositiveInt",
        "doseNumber",
    ),
    (
        "Immunization.protocolApplied.doseNumberString",
        "doseNumber",
    ),
    (
        "Immunization.protocolApplied.seriesDosesPositiveInt",
        "seriesDoses",
    ),
    (
        "Immunization.protocolApplied.seriesDosesString",
        "seriesDoses",
    ),
    ("DiagnosticReport.imagingStudy", "study"),
    ("CarePlan.author", "custodian"),
    ("CarePlan.activity.reference", "plannedActivityReference"),
    ("CareTeam.participant.period", "coveragePeriod"),
    ("Goal.expressedBy", "source"),
    ("Consent.patient", "subject"),
    ("Consent.dateTime", "date"),
    ("Consent.performer", "grantor"),
    ("Consent.organization", "manager"),
    ("Consent.policyRule", "regulatoryBasis"),
    ("AuditEvent.type", "category"),
    ("AuditEvent.subtype", "code"),
    ("AuditEvent.period", "occurredPeriod"),
    ("AuditEvent.purposeOfEvent", "authorization"),
    ("AuditEvent.agent.purposeOfUse", "authorization"),
    ("Provenance.reason", "authorization"),
];

/// Code remaps per direction: (element path in the source version, map).
const CODES_STU3_R4: &[(&str, &CodeMap)] = &[
    (
        "Procedure.status",
        &[("suspended", "on-hold", true), ("aborted", "stopped", true)],
    ),
    (
        "CarePlan.status",
        &[
            ("suspended", "on-hold", true),
            ("cancelled", "revoked", true),
        ],
    ),
    (
        "Goal.status",
        &[
            ("in-progress", "active", false),
            ("on-target", "active", false),
            ("ahead-of-target", "active", false),
            ("behind-target", "active", false),
            ("sustaining", "active", false),
            ("achieved", "completed", false),
        ],
    ),
    ("Condition.verificationStatus", &[("unknown", "", false)]),
];

const CODES_R4_STU3: &[(&str, &CodeMap)] = &[
    (
        "Procedure.status",
        &[("on-hold", "suspended", true), ("stopped", "aborted", true)],
    ),
    (
        "CarePlan.status",
        &[
            ("on-hold", "suspended", true),
            ("revoked", "cancelled", true),
        ],
    ),
    (
        "Goal.lifecycleStatus",
        &[
            ("active", "in-progress", false),
            ("completed", "achieved", false),
        ],
    ),
    (
        "Condition.verificationStatus",
        &[("unconfirmed", "provisional", false)],
    ),
    ("Immunization.status", &[("not-done", "", false)]),
    (
        "MedicationRequest.intent",
        &[
            ("original-order", "order", false),
            ("reflex-order", "order", false),
            ("filler-order", "order", false),
            ("option", "proposal", false),
        ],
    ),
];

const CODES_R4B_R5: &[(&str, &CodeMap)] = &[
    (
        "Encounter.status",
        &[
            ("arrived", "in-progress", false),
            ("triaged", "in-progress", false),
            ("onleave", "on-hold", false),
            ("finished", "completed", true),
        ],
    ),
    (
        "Consent.status",
        &[
            ("proposed", "draft", false),
            ("rejected", "not-done", false),
        ],
    ),
    ("Provenance.entity.role", &[("derivation", "source", false)]),
];

const CODES_R5_R4B: &[(&str, &CodeMap)] = &[
    (
        "Encounter.status",
        &[
            ("on-hold", "onleave", false),
            ("completed", "finished", true),
            ("discharged", "finished", false),
            ("discontinued", "cancelled", false),
        ],
    ),
    (
        "MedicationStatement.status",
        &[("recorded", "active", false), ("draft", "intended", false)],
    ),
    ("MedicationRequest.status", &[("ended", "completed", false)]),
    (
        "Consent.status",
        &[("not-done", "rejected", false), ("unknown", "", false)],
    ),
    ("Provenance.entity.role", &[("instantiates", "", false)]),
];

/// Remap the code(s) in `obj[key]` by `map`. Inexact pairs keep the original in a carrier;
/// a pair to `""` is a code without a counterpart: kept as is and reported.
pub(crate) fn remap_codes(
    obj: &mut Map<String, Value>,
    key: &'static str,
    map: &CodeMap,
    s: NodeId,
    t: NodeId,
    ctx: &mut Ctx,
) {
    let Some(Value::String(code)) = obj.get(key) else {
        return;
    };
    let Some(&(_, to, exact)) = map.iter().find(|(from, _, _)| from == code) else {
        return;
    };
    let path = format!("{}.{}", ctx.source.node(s).path, key);
    let original = code.clone();
    if to.is_empty() {
        let (from_v, to_v) = (ctx.from, ctx.to);
        ctx.issue(
            Severity::Warning,
            IssueCode::CodeInvalid,
            &path,
            format!("{path} code `{original}` ({from_v}) has no counterpart in {to_v}; kept as is"),
        );
        return;
    }
    obj.insert(key.into(), Value::String(to.into()));
    let target_key = ctx
        .table
        .renames
        .get(&s)
        .and_then(|r| r.iter().find(|(old, _)| *old == key))
        .map_or(key, |(_, new)| new);
    if !exact && !extension::restore_pending(obj, t, target_key, ctx) {
        let url = extension::url(ctx, s, key);
        extension::carry_value(obj, url, Value::String(original.clone()), "code", ctx);
        let (from_v, to_v) = (ctx.from, ctx.to);
        // A status (a modifier) said approximately is read differently: a warning.
        let modifier = ctx.source.child(s, key).is_some_and(|c| c.modifier);
        let (severity, code) = if modifier {
            (Severity::Warning, IssueCode::Value)
        } else {
            (Severity::Information, IssueCode::Informational)
        };
        ctx.issue(
            severity,
            code,
            &path,
            format!("{path} code `{original}` ({from_v}) approximated as `{to}` in {to_v}; original kept in a cross-version extension"),
        );
    }
}

/// Build every step's table.
pub(crate) fn build_all() -> HashMap<(FhirVersion, FhirVersion), StepTable> {
    use FhirVersion::*;
    let mut all = HashMap::default();
    all.insert(
        (Stu3, R4),
        build(
            Stu3,
            R4,
            RENAMES_STU3_R4,
            false,
            CODES_STU3_R4,
            RESOURCE_RULES_STU3_R4,
        ),
    );
    all.insert(
        (R4, Stu3),
        build(
            R4,
            Stu3,
            RENAMES_STU3_R4,
            true,
            CODES_R4_STU3,
            RESOURCE_RULES_R4_STU3,
        ),
    );
    all.insert(
        (R4, R4B),
        build(R4, R4B, &[], false, &[], RESOURCE_RULES_R4_R4B),
    );
    all.insert(
        (R4B, R4),
        build(R4B, R4, &[], false, &[], RESOURCE_RULES_R4_R4B),
    );
    all.insert(
        (R4B, R5),
        build(
            R4B,
            R5,
            RENAMES_R4B_R5,
            false,
            CODES_R4B_R5,
            RESOURCE_RULES_R4B_R5,
        ),
    );
    all.insert(
        (R5, R4B),
        build(
            R5,
            R4B,
            RENAMES_R4B_R5,
            true,
            CODES_R5_R4B,
            RESOURCE_RULES_R5_R4B,
        ),
    );
    all
}

fn build(
    from: FhirVersion,
    to: FhirVersion,
    renames: &'static [(&'static str, &'static str)],
    reversed: bool,
    codes: &'static [(&'static str, &'static CodeMap)],
    resource_rules: &'static [(&'static str, ResourceRule)],
) -> StepTable {
    let source = definitions(from);
    let target = definitions(to);
    let mut table = StepTable::default();
    if matches!(
        (from, to),
        (FhirVersion::R4B, FhirVersion::R5) | (FhirVersion::R5, FhirVersion::R4B)
    ) {
        table.merges = super::merges::find(source, target, from, to);
    }
    let mut typed_with_rules: HashSet<&str> = HashSet::default();
    for &(path, new) in renames {
        let Some((parent, old)) = path.rsplit_once('.') else {
            continue;
        };
        typed_with_rules.insert(root_of(parent));
        if reversed {
            // Downward: the parent in the newer version, found by renaming its own segments.
            let parent_new = renamed_parent(parent, renames);
            let parent_new = crate::convert::renamed_type(root_of(&parent_new), to, from)
                .to_owned()
                + &parent_new[root_of(&parent_new).len()..];
            if let Some(node) = source.node_at(&parent_new) {
                table.renames.entry(node).or_default().push((new, old));
            }
        } else if let Some(node) = source.node_at(parent) {
            table.renames.entry(node).or_default().push((old, new));
        }
    }
    for &(path, map) in codes {
        let Some((parent, key)) = path.rsplit_once('.') else {
            continue;
        };
        typed_with_rules.insert(root_of(parent));
        if let Some(node) = source.node_at(parent) {
            table.codes.entry(node).or_default().push((key, map));
        }
    }
    for &(resource_type, rule) in resource_rules {
        typed_with_rules.insert(resource_type);
        table
            .resource_rules
            .entry(resource_type)
            .or_default()
            .push(rule);
    }
    for (resource_type, lines) in &source.tables {
        let Some(root) = source.root(resource_type) else {
            continue;
        };
        let resource_type: &'static str = source.node(root).path.as_ref();
        let target_type = crate::convert::renamed_type(resource_type, from, to);
        if target_type != resource_type || typed_with_rules.contains(resource_type) {
            continue;
        }
        if target.tables.get(target_type) == Some(lines) {
            table.identity.insert(resource_type);
        }
    }
    table
}

fn root_of(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

/// `Encounter.hospitalization` → `Encounter.admission` when that segment is itself renamed.
fn renamed_parent(parent: &str, renames: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut so_far = String::new();
    for (i, seg) in parent.split('.').enumerate() {
        if i > 0 {
            so_far.push('.');
            out.push('.');
        }
        so_far.push_str(seg);
        let new = renames
            .iter()
            .find(|(p, _)| *p == so_far)
            .map_or(seg, |(_, n)| n);
        out.push_str(if i == 0 { seg } else { new });
    }
    out
}

// ---- whole-resource rules ------------------------------------------------------------------

const RESOURCE_RULES_R4_R4B: &[(&str, ResourceRule)] =
    &[("CapabilityStatement", capability_statement_fhir_version)];

/// `CapabilityStatement.fhirVersion` naming the source version names the target version:
/// the statement now describes the server as the client sees it.
fn capability_statement_fhir_version(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if obj.get("fhirVersion").and_then(Value::as_str) == Some(ctx.from.semver()) {
        obj.insert("fhirVersion".into(), Value::String(ctx.to.semver().into()));
        done.push("fhirVersion");
        if ctx.from == ctx.origin {
            let (from, to) = (ctx.origin.semver(), ctx.goal.semver());
            ctx.issue(
                Severity::Information,
                IssueCode::Value,
                "CapabilityStatement.fhirVersion",
                format!("CapabilityStatement.fhirVersion {from} stated as {to}: the statement describes the server in the version it is read in"),
            );
        }
    }
}

const RESOURCE_RULES_STU3_R4: &[(&str, ResourceRule)] = &[
    ("CapabilityStatement", capability_statement_fhir_version),
    ("MedicationRequest", requester_agent_to_reference),
    ("ProcedureRequest", requester_agent_to_reference),
    ("DiagnosticReport", performer_actor_to_reference),
    ("Procedure", not_done_to_status),
    ("Immunization", immunization_stu3_to_r4),
    ("Consent", consent_stu3_to_r4),
    ("MedicationStatement", medication_statement_stu3_to_r4),
    (
        "MedicationAdministration",
        medication_administration_not_given,
    ),
    ("Communication", communication_not_done),
    ("Goal", goal_status_to_achievement),
];

const RESOURCE_RULES_R4_STU3: &[(&str, ResourceRule)] = &[
    ("CapabilityStatement", capability_statement_fhir_version),
    ("Procedure", status_to_not_done),
    ("MedicationRequest", requester_reference_to_agent),
    ("ServiceRequest", requester_reference_to_agent),
    ("DiagnosticReport", performer_reference_to_actor),
    ("Immunization", immunization_r4_to_stu3),
    ("Consent", consent_r4_to_stu3),
    ("MedicationStatement", medication_statement_r4_to_stu3),
    (
        "MedicationAdministration",
        medication_administration_not_done,
    ),
    ("Communication", communication_status_not_done),
    ("Goal", goal_achievement_to_status),
];

const RESOURCE_RULES_R4B_R5: &[(&str, ResourceRule)] = &[
    ("CapabilityStatement", capability_statement_fhir_version),
    ("Encounter", encounter_r4_to_r5),
    ("Procedure", procedure_r4_to_r5),
    ("MedicationRequest", medication_request_r4_to_r5),
    ("MedicationStatement", medication_statement_r4_to_r5),
    ("Medication", medication_r4_to_r5),
    ("Immunization", reason_r4_to_r5),
    ("CareTeam", reason_r4_to_r5),
    ("ServiceRequest", service_request_r4_to_r5),
    ("Goal", goal_r4_to_r5),
    ("CarePlan", care_plan_r4_to_r5),
    ("Practitioner", practitioner_r4_to_r5),
    ("Consent", consent_r4_to_r5),
    ("Organization", contacts_r4_to_r5),
    ("Location", contacts_r4_to_r5),
    ("DocumentReference", document_reference_r4_to_r5),
    ("AuditEvent", audit_event_outcome_r4_to_r5),
    ("Condition", condition_participants_r4_to_r5),
    ("AllergyIntolerance", allergy_participants_r4_to_r5),
    ("Group", group_actual_to_membership),
];

const RESOURCE_RULES_R5_R4B: &[(&str, ResourceRule)] = &[
    ("CapabilityStatement", capability_statement_fhir_version),
    ("Encounter", encounter_r5_to_r4),
    ("Procedure", procedure_r5_to_r4),
    ("MedicationRequest", medication_request_r5_to_r4),
    ("MedicationStatement", medication_statement_r5_to_r4),
    ("Medication", medication_r5_to_r4),
    ("Immunization", reason_r5_to_r4),
    ("CareTeam", reason_r5_to_r4),
    ("ServiceRequest", service_request_r5_to_r4),
    ("Goal", goal_r5_to_r4),
    ("CarePlan", care_plan_r5_to_r4),
    ("Practitioner", practitioner_r5_to_r4),
    ("Consent", consent_r5_to_r4),
    ("Organization", contacts_r5_to_r4),
    ("Location", contacts_r5_to_r4),
    ("DocumentReference", document_reference_r5_to_r4),
    ("AuditEvent", audit_event_outcome_r5_to_r4),
    ("Condition", condition_participants_r5_to_r4),
    ("AllergyIntolerance", allergy_participants_r5_to_r4),
    ("Group", group_membership_to_actual),
];

/// Report the original of `key` carried because a rule could not place all of it.
fn carry_root(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    key: &str,
    original: Value,
    ty: &str,
    why: &str,
) {
    let Some(root) = ctx.source.root(resource_type_of(obj, ctx)) else {
        return;
    };
    let url = extension::url(ctx, root, key);
    let path = format!("{}.{}", ctx.source.node(root).path, key);
    let many = original.is_array();
    let items = match original {
        Value::Array(items) => items,
        other => vec![other],
    };
    let _ = many;
    for item in items {
        extension::carry_value(obj, url.clone(), item, ty, ctx);
    }
    ctx.carried(&path, why);
}

fn resource_type_of(obj: &Map<String, Value>, ctx: &Ctx) -> &'static str {
    let current = obj
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    // The type was already renamed to the target's name; find the source's.
    let source_name = crate::convert::renamed_type(current, ctx.to, ctx.from);
    ctx.source
        .root(source_name)
        .map_or("", |id| ctx.source.node(id).path.as_ref())
}

/// STU3 `requester {agent, onBehalfOf}` → R4 `requester` (the agent).
fn requester_agent_to_reference(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let Some(Value::Object(requester)) = obj.remove("requester") else {
        return;
    };
    let lossless = requester.keys().all(|k| k == "agent");
    if let Some(agent) = requester.get("agent").cloned() {
        obj.insert("requester".into(), agent);
    }
    if !lossless {
        // The whole backbone goes to the carrier (as nested extensions).
        let Some(root) = ctx.source.root(resource_type_of(obj, ctx)) else {
            return;
        };
        if let Some(sc) = ctx.source.child(root, "requester") {
            extension::carry(obj, sc, root, Value::Object(requester), ctx);
            let path = format!("{}.requester", ctx.source.node(root).path);
            ctx.carried(&path, "(onBehalfOf) has no counterpart");
        }
    }
    done.push("requester");
}

fn requester_reference_to_agent(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if let Some(reference) = obj.remove("requester") {
        let mut requester = Map::new();
        requester.insert("agent".into(), reference);
        obj.insert("requester".into(), Value::Object(requester));
    }
    done.push("requester");
}

/// STU3 `DiagnosticReport.performer {role, actor}` → R4 `performer` (actors).
fn performer_actor_to_reference(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let Some(Value::Array(performers)) = obj.remove("performer") else {
        return;
    };
    let lossless = performers.iter().all(|p| {
        p.as_object()
            .is_some_and(|p| p.keys().all(|k| k == "actor"))
    });
    let actors: Vec<Value> = performers
        .iter()
        .filter_map(|p| p.get("actor").cloned())
        .collect();
    if !actors.is_empty() {
        obj.insert("performer".into(), Value::Array(actors));
    }
    if !lossless
        && let Some(root) = ctx.source.root("DiagnosticReport")
        && let Some(sc) = ctx.source.child(root, "performer")
    {
        extension::carry(obj, sc, root, Value::Array(performers), ctx);
        ctx.carried("DiagnosticReport.performer", "(role) has no counterpart");
    }
    done.push("performer");
}

fn performer_reference_to_actor(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if let Some(Value::Array(actors)) = obj.remove("performer") {
        let performers = actors
            .into_iter()
            .map(|actor| {
                let mut p = Map::new();
                p.insert("actor".into(), actor);
                Value::Object(p)
            })
            .collect();
        obj.insert("performer".into(), Value::Array(performers));
    }
    done.push("performer");
}

/// STU3 `Procedure.notDone = true` → R4 `status = not-done`.
fn not_done_to_status(obj: &mut Map<String, Value>, ctx: &mut Ctx, _done: &mut Vec<&'static str>) {
    if let Some(not_done) = obj.remove("notDone") {
        if not_done == Value::Bool(true) {
            let previous = obj.insert("status".into(), Value::String("not-done".into()));
            // `unknown` is what not-done turns back into; anything else is kept.
            if let Some(previous) = previous.filter(|p| p != "unknown") {
                carry_root(
                    obj,
                    ctx,
                    "status",
                    previous,
                    "code",
                    "is replaced by not-done",
                );
            }
        } else {
            carry_root(
                obj,
                ctx,
                "notDone",
                not_done,
                "boolean",
                "is said by status alone",
            );
        }
    }
}

/// R4 `Procedure.status = not-done` → STU3 `notDone = true` (status `unknown`).
fn status_to_not_done(obj: &mut Map<String, Value>, ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    if obj.get("status").and_then(Value::as_str) == Some("not-done") {
        obj.insert("notDone".into(), Value::Bool(true));
        obj.insert("status".into(), Value::String("unknown".into()));
        done.push("notDone");
        let path = "Procedure.status";
        ctx.issue(
            Severity::Information,
            IssueCode::Value,
            path,
            "Procedure.status `not-done` is notDone = true in STU3, with status `unknown`".into(),
        );
    }
}

fn immunization_stu3_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if let Some(not_given) = obj.remove("notGiven")
        && not_given == Value::Bool(true)
    {
        let previous = obj.insert("status".into(), Value::String("not-done".into()));
        // `completed` is what not-done turns back into; anything else is kept.
        if let Some(previous) = previous.filter(|p| p != "completed") {
            carry_root(
                obj,
                ctx,
                "status",
                previous,
                "code",
                "is replaced by not-done",
            );
        }
    }
    if let Some(Value::Object(mut explanation)) = obj.remove("explanation") {
        if let Some(reason) = explanation.remove("reason") {
            obj.insert("reasonCode".into(), reason);
            done.push("reasonCode");
        }
        if let Some(reason) = explanation.remove("reasonNotGiven") {
            // R4 statusReason is one CodeableConcept.
            match reason {
                Value::Array(mut items) if items.len() == 1 => {
                    obj.insert("statusReason".into(), items.swap_remove(0));
                    done.push("statusReason");
                }
                other => {
                    let mut rest = Map::new();
                    rest.insert("reasonNotGiven".into(), other);
                    explanation.extend(rest);
                }
            }
        }
        if !explanation.is_empty() {
            obj.insert("explanation".into(), Value::Object(explanation));
        }
    }
}

fn immunization_r4_to_stu3(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let mut explanation = Map::new();
    if let Some(reason) = obj.remove("reasonCode") {
        explanation.insert("reason".into(), reason);
    }
    if let Some(reason) = obj.remove("statusReason") {
        explanation.insert("reasonNotGiven".into(), Value::Array(vec![reason]));
    }
    if obj.get("status").and_then(Value::as_str) == Some("not-done") {
        obj.insert("status".into(), Value::String("completed".into()));
        obj.insert("notGiven".into(), Value::Bool(true));
        done.push("notGiven");
    } else if obj.contains_key("status") {
        obj.insert("notGiven".into(), Value::Bool(false));
        done.push("notGiven");
    }
    if !explanation.is_empty() {
        obj.insert("explanation".into(), Value::Object(explanation));
        done.push("explanation");
    }
}

const CONSENT_STU3_PROVISION: &[&str] = &[
    "period",
    "actor",
    "action",
    "securityLabel",
    "purpose",
    "dataPeriod",
    "data",
];

fn consent_stu3_to_r4(obj: &mut Map<String, Value>, _ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    let mut provision = Map::new();
    for &key in CONSENT_STU3_PROVISION {
        if let Some(v) = obj.remove(key) {
            provision.insert(key.into(), v);
        }
    }
    if let Some(Value::Array(mut except)) = obj.remove("except") {
        // STU3 `except.code` is a Coding, R4 `provision.code` a CodeableConcept.
        for item in &mut except {
            if let Some(Value::Array(codes)) = item.get_mut("code") {
                for code in codes.iter_mut() {
                    let coding = std::mem::take(code);
                    *code = wrap("coding", Value::Array(vec![coding]));
                }
            }
        }
        provision.insert("provision".into(), Value::Array(except));
    }
    if !provision.is_empty() {
        obj.insert("provision".into(), Value::Object(provision));
        done.push("provision");
    }
}

fn consent_r4_to_stu3(obj: &mut Map<String, Value>, ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    let Some(Value::Object(provision)) = obj.remove("provision") else {
        return;
    };
    let original = provision.clone();
    let mut provision = provision;
    for &key in CONSENT_STU3_PROVISION {
        if let Some(v) = provision.remove(key) {
            obj.insert(key.into(), v);
            done.push(key);
        }
    }
    if let Some(Value::Array(mut nested)) = provision.remove("provision") {
        for item in &mut nested {
            let Some(Value::Array(codes)) = item.get_mut("code") else {
                continue;
            };
            let mut inexact = false;
            for code in codes.iter_mut() {
                let codings = code.get("coding").and_then(Value::as_array);
                let one = code.as_object().is_some_and(|c| c.len() == 1)
                    && codings.is_some_and(|c| c.len() == 1);
                inexact |= !one;
                let first = codings.and_then(|c| c.first()).cloned();
                *code = first.unwrap_or(Value::Null);
            }
            codes.retain(|c| !c.is_null());
            if inexact {
                ctx.issue(
                    Severity::Warning,
                    IssueCode::Value,
                    "Consent.provision.provision.code",
                    "Consent.provision.provision.code: a CodeableConcept with other than one coding is one Coding (the first) in STU3 Consent.except.code".into(),
                );
            }
        }
        for item in &nested {
            if item.get("type").is_none() {
                ctx.issue(
                    Severity::Warning,
                    IssueCode::Required,
                    "Consent.except.type",
                    "Consent.except.type is required in STU3 and the nested R4 provision has none"
                        .into(),
                );
            }
        }
        obj.insert("except".into(), Value::Array(nested));
        done.push("except");
    }
    if !provision.is_empty() {
        // The whole provision travels, so that converting back restores it as it was.
        carry_root(
            obj,
            ctx,
            "provision",
            Value::Object(original),
            "BackboneElement",
            "(type, class, code) has no counterpart at the root",
        );
    }
}

/// `xCode` + `xReference` (R4) → `x` CodeableReference (R5), at the root of `obj`.
fn merge_codeable_reference(
    obj: &mut Map<String, Value>,
    code: &str,
    reference: &str,
    to: &'static str,
    done: &mut Vec<&'static str>,
) {
    let mut merged = Vec::new();
    if let Some(Value::Array(codes)) = obj.remove(code) {
        merged.extend(codes.into_iter().map(|c| wrap("concept", c)));
    }
    if let Some(Value::Array(refs)) = obj.remove(reference) {
        merged.extend(refs.into_iter().map(|r| wrap("reference", r)));
    }
    if !merged.is_empty() {
        obj.insert(to.into(), Value::Array(merged));
    }
    done.push(to);
}

/// `x` CodeableReference (R5) → `xCode` + `xReference` (R4). An item with both loses its
/// pairing, which is reported.
fn split_codeable_reference(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    from: &str,
    code: &'static str,
    reference: &'static str,
    done: &mut Vec<&'static str>,
) {
    let Some(Value::Array(items)) = obj.remove(from) else {
        return;
    };
    let (mut codes, mut refs) = (Vec::new(), Vec::new());
    let mut lossy = false;
    for item in &items {
        let Value::Object(m) = item else {
            lossy = true;
            continue;
        };
        if m.keys().any(|k| k != "concept" && k != "reference")
            || (m.contains_key("concept") && m.contains_key("reference"))
        {
            lossy = true;
        }
        if let Some(c) = m.get("concept") {
            codes.push(c.clone());
        }
        if let Some(r) = m.get("reference") {
            refs.push(r.clone());
        }
    }
    if !codes.is_empty() {
        obj.insert(code.into(), Value::Array(codes));
    }
    if !refs.is_empty() {
        obj.insert(reference.into(), Value::Array(refs));
    }
    if lossy {
        carry_root(
            obj,
            ctx,
            from,
            Value::Array(items),
            "CodeableReference",
            "(concept paired with reference) has no counterpart",
        );
    }
    done.push(code);
    done.push(reference);
}

fn wrap(field: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert(field.into(), value);
    Value::Object(m)
}

/// `medicationCodeableConcept` / `medicationReference` → `medication` CodeableReference.
fn choice_to_codeable_reference(
    obj: &mut Map<String, Value>,
    base: &str,
    to: &'static str,
    done: &mut Vec<&'static str>,
) {
    let concept = obj.remove(&format!("{base}CodeableConcept"));
    let reference = obj.remove(&format!("{base}Reference"));
    let value = match (concept, reference) {
        (Some(c), _) => wrap("concept", c),
        (None, Some(r)) => wrap("reference", r),
        (None, None) => return,
    };
    obj.insert(to.into(), value);
    done.push(to);
}

fn codeable_reference_to_choice(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    from: &str,
    base: &'static str,
    done: &mut Vec<&'static str>,
) {
    let Some(value) = obj.remove(from) else {
        return;
    };
    let Value::Object(m) = &value else {
        carry_root(
            obj,
            ctx,
            from,
            value,
            "CodeableReference",
            "is not an object",
        );
        return;
    };
    let lossy = m.len() != 1;
    if let Some(c) = m.get("concept") {
        obj.insert(format!("{base}CodeableConcept"), c.clone());
    } else if let Some(r) = m.get("reference") {
        obj.insert(format!("{base}Reference"), r.clone());
    }
    if lossy {
        carry_root(
            obj,
            ctx,
            from,
            value,
            "CodeableReference",
            "(concept with reference) has no counterpart",
        );
    }
    done.push(match base {
        "medication" => "medicationCodeableConcept",
        _ => "itemCodeableConcept",
    });
    done.push(match base {
        "medication" => "medicationReference",
        _ => "itemReference",
    });
}

fn encounter_r4_to_r5(obj: &mut Map<String, Value>, _ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    let mut reasons = Vec::new();
    if let Some(Value::Array(codes)) = obj.remove("reasonCode") {
        reasons.extend(codes.into_iter().map(|c| wrap("concept", c)));
    }
    if let Some(Value::Array(refs)) = obj.remove("reasonReference") {
        reasons.extend(refs.into_iter().map(|r| wrap("reference", r)));
    }
    if !reasons.is_empty() {
        obj.insert(
            "reason".into(),
            Value::Array(vec![wrap("value", Value::Array(reasons))]),
        );
        done.push("reason");
    }
    if let Some(Value::Object(hospitalization)) = obj.get_mut("hospitalization") {
        let mut moved = Vec::new();
        for key in ["dietPreference", "specialArrangement", "specialCourtesy"] {
            if let Some(v) = hospitalization.remove(key) {
                moved.push((key, v));
            }
        }
        for (key, v) in moved {
            obj.insert(key.into(), v);
            done.push(key);
        }
    }
}

fn encounter_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    if let Some(Value::Array(reasons)) = obj.remove("reason") {
        let (mut codes, mut refs) = (Vec::new(), Vec::new());
        let mut lossy = false;
        for reason in &reasons {
            let Value::Object(r) = reason else {
                lossy = true;
                continue;
            };
            if r.keys().any(|k| k != "value") {
                lossy = true;
            }
            for value in r
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match value.as_object() {
                    Some(v) => {
                        if v.len() != 1 {
                            lossy = true;
                        }
                        if let Some(c) = v.get("concept") {
                            codes.push(c.clone());
                        }
                        if let Some(rf) = v.get("reference") {
                            refs.push(rf.clone());
                        }
                    }
                    None => lossy = true,
                }
            }
        }
        if !codes.is_empty() {
            obj.insert("reasonCode".into(), Value::Array(codes));
        }
        if !refs.is_empty() {
            obj.insert("reasonReference".into(), Value::Array(refs));
        }
        if lossy {
            carry_root(
                obj,
                ctx,
                "reason",
                Value::Array(reasons),
                "BackboneElement",
                "(use) has no counterpart",
            );
        }
        done.push("reasonCode");
        done.push("reasonReference");
    }
    let mut moved = Map::new();
    for key in ["dietPreference", "specialArrangement", "specialCourtesy"] {
        if let Some(v) = obj.remove(key) {
            moved.insert(key.into(), v);
        }
    }
    if !moved.is_empty() {
        match obj
            .entry("admission")
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(admission) => admission.extend(moved),
            _ => {
                for (key, v) in moved {
                    carry_root(
                        obj,
                        ctx,
                        &key,
                        v,
                        "CodeableConcept",
                        "has no place (admission is not an object)",
                    );
                }
            }
        }
    }
}

fn procedure_r4_to_r5(obj: &mut Map<String, Value>, _ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    merge_codeable_reference(obj, "reasonCode", "reasonReference", "reason", done);
    merge_codeable_reference(obj, "usedCode", "usedReference", "used", done);
}

fn procedure_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    split_codeable_reference(obj, ctx, "reason", "reasonCode", "reasonReference", done);
    split_codeable_reference(obj, ctx, "used", "usedCode", "usedReference", done);
}

fn medication_request_r4_to_r5(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    choice_to_codeable_reference(obj, "medication", "medication", done);
    merge_codeable_reference(obj, "reasonCode", "reasonReference", "reason", done);
    // R4 `reportedReference` says "reported, by this source": R5 says both.
    if obj.contains_key("reportedReference") && !obj.contains_key("reportedBoolean") {
        obj.insert("reported".into(), Value::Bool(true));
        done.push("reported");
    }
}

fn medication_request_r5_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    codeable_reference_to_choice(obj, ctx, "medication", "medication", done);
    split_codeable_reference(obj, ctx, "reason", "reasonCode", "reasonReference", done);
    reported_r5_to_r4(obj, ctx);
}

/// R5 `reported` and `informationSource` are one choice in R4, `reported[x]`, which holds
/// one of them: a reported request with one source is R4 `reportedReference` (a reference
/// says "reported, by this source"); any other pair keeps `reported` and carries the sources,
/// so R4 never gets both `reportedBoolean` and `reportedReference`.
fn reported_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx) {
    let Some(sources) = obj.get("informationSource") else {
        return;
    };
    let Some(reported) = obj.get("reported") else {
        // R4 `reportedReference` also says the request is a reported (secondary) record,
        // which R5 did not say.
        let path = "MedicationRequest.informationSource";
        ctx.issue(
            Severity::Information,
            IssueCode::Informational,
            path,
            format!("{path} without `reported` is R4 reportedReference, which also says the request was reported"),
        );
        return;
    };
    let one_source = sources.as_array().is_some_and(|a| a.len() == 1) || sources.is_object();
    if *reported == Value::Bool(true) && one_source {
        obj.remove("reported");
        obj.remove("_reported");
        return;
    }
    if let Some(sources) = obj.remove("informationSource") {
        carry_root(
            obj,
            ctx,
            "informationSource",
            sources,
            "Reference",
            "cannot stand beside `reported` in one `reported[x]`",
        );
    }
}

fn medication_statement_r4_to_r5(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    medication_statement_status_r4_to_r5(obj, ctx, done);
    choice_to_codeable_reference(obj, "medication", "medication", done);
    merge_codeable_reference(obj, "reasonCode", "reasonReference", "reason", done);
}

fn medication_statement_r5_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    medication_statement_status_r5_to_r4(obj, done);
    codeable_reference_to_choice(obj, ctx, "medication", "medication", done);
    split_codeable_reference(obj, ctx, "reason", "reasonCode", "reasonReference", done);
}

fn medication_r4_to_r5(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    _done: &mut Vec<&'static str>,
) {
    if let Some(Value::Array(ingredients)) = obj.get_mut("ingredient") {
        for ingredient in ingredients {
            if let Value::Object(ingredient) = ingredient {
                let mut ignored = Vec::new();
                choice_to_codeable_reference(ingredient, "item", "item", &mut ignored);
            }
        }
    }
}

fn medication_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx, _done: &mut Vec<&'static str>) {
    let Some(Value::Array(mut ingredients)) = obj.remove("ingredient") else {
        return;
    };
    for ingredient in &mut ingredients {
        if let Value::Object(ingredient) = ingredient {
            if let Some(Value::Object(item)) = ingredient.get("item")
                && item.len() != 1
            {
                // Both concept and reference: keep the concept; report the reference.
                let path = "Medication.ingredient.item";
                ctx.issue(
                        Severity::Warning,
                        IssueCode::Value,
                        path,
                        format!("{path}: R4 holds a code or a reference, not both; the reference was dropped"),
                    );
            }
            let item = ingredient.remove("item");
            if let Some(Value::Object(item)) = item {
                if let Some(c) = item.get("concept") {
                    ingredient.insert("itemCodeableConcept".into(), c.clone());
                } else if let Some(r) = item.get("reference") {
                    ingredient.insert("itemReference".into(), r.clone());
                }
            }
        }
    }
    obj.insert("ingredient".into(), Value::Array(ingredients));
}

fn reason_r4_to_r5(obj: &mut Map<String, Value>, _ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    merge_codeable_reference(obj, "reasonCode", "reasonReference", "reason", done);
}

fn reason_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    split_codeable_reference(obj, ctx, "reason", "reasonCode", "reasonReference", done);
}

fn service_request_r4_to_r5(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    merge_codeable_reference(obj, "reasonCode", "reasonReference", "reason", done);
    merge_codeable_reference(obj, "locationCode", "locationReference", "location", done);
}

fn service_request_r5_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    split_codeable_reference(obj, ctx, "reason", "reasonCode", "reasonReference", done);
    split_codeable_reference(
        obj,
        ctx,
        "location",
        "locationCode",
        "locationReference",
        done,
    );
}

fn goal_r4_to_r5(obj: &mut Map<String, Value>, _ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    merge_codeable_reference(obj, "outcomeCode", "outcomeReference", "outcome", done);
}

fn goal_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    split_codeable_reference(obj, ctx, "outcome", "outcomeCode", "outcomeReference", done);
}

fn care_plan_r4_to_r5(obj: &mut Map<String, Value>, _ctx: &mut Ctx, _done: &mut Vec<&'static str>) {
    if let Some(Value::Array(activities)) = obj.get_mut("activity") {
        for activity in activities {
            if let Value::Object(activity) = activity {
                let mut ignored = Vec::new();
                merge_codeable_reference(
                    activity,
                    "outcomeCodeableConcept",
                    "outcomeReference",
                    "performedActivity",
                    &mut ignored,
                );
            }
        }
    }
}

fn care_plan_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx, _done: &mut Vec<&'static str>) {
    let Some(Value::Array(mut activities)) = obj.remove("activity") else {
        return;
    };
    for activity in &mut activities {
        if let Value::Object(activity) = activity {
            let Some(Value::Array(items)) = activity.get("performedActivity") else {
                continue;
            };
            if items
                .iter()
                .any(|i| i.as_object().is_none_or(|m| m.len() != 1))
            {
                let path = "CarePlan.activity.performedActivity";
                ctx.issue(
                    Severity::Warning,
                    IssueCode::Value,
                    path,
                    format!("{path}: a concept paired with a reference loses its pairing in R4"),
                );
            }
            let (mut codes, mut refs) = (Vec::new(), Vec::new());
            if let Some(Value::Array(items)) = activity.remove("performedActivity") {
                for item in items {
                    if let Some(c) = item.get("concept") {
                        codes.push(c.clone());
                    }
                    if let Some(r) = item.get("reference") {
                        refs.push(r.clone());
                    }
                }
            }
            if !codes.is_empty() {
                activity.insert("outcomeCodeableConcept".into(), Value::Array(codes));
            }
            if !refs.is_empty() {
                activity.insert("outcomeReference".into(), Value::Array(refs));
            }
        }
    }
    obj.insert("activity".into(), Value::Array(activities));
}

/// R4 `Practitioner.communication` CodeableConcept → R5 backbone `{language}`.
fn practitioner_r4_to_r5(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if let Some(Value::Array(languages)) = obj.remove("communication") {
        let wrapped = languages.into_iter().map(|l| wrap("language", l)).collect();
        obj.insert("communication".into(), Value::Array(wrapped));
        done.push("communication");
    }
}

fn practitioner_r5_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if let Some(Value::Array(items)) = obj.remove("communication") {
        let lossy = items.iter().any(|i| {
            i.as_object()
                .is_none_or(|m| m.keys().any(|k| k != "language"))
        });
        let languages: Vec<Value> = items
            .iter()
            .filter_map(|i| i.get("language").cloned())
            .collect();
        if !languages.is_empty() {
            obj.insert("communication".into(), Value::Array(languages));
        }
        if lossy {
            carry_root(
                obj,
                ctx,
                "communication",
                Value::Array(items),
                "BackboneElement",
                "(preferred) has no counterpart",
            );
        }
        done.push("communication");
    }
}

/// R4 root `provision.type` → R5 `decision`.
fn consent_r4_to_r5(obj: &mut Map<String, Value>, _ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    let decision = match obj.get_mut("provision") {
        Some(Value::Object(provision)) => provision.remove("type"),
        _ => None,
    };
    if let Some(decision) = decision {
        obj.insert("decision".into(), decision);
        done.push("decision");
    }
}

fn consent_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx, _done: &mut Vec<&'static str>) {
    if let Some(decision) = obj.remove("decision") {
        match obj
            .entry("provision")
            .or_insert_with(|| Value::Array(vec![Value::Object(Map::new())]))
        {
            Value::Array(provisions) if !provisions.is_empty() => {
                if let Value::Object(first) = &mut provisions[0] {
                    first.insert("type".into(), decision);
                }
            }
            _ => carry_root(
                obj,
                ctx,
                "decision",
                decision,
                "code",
                "has no place (provision is empty)",
            ),
        }
    }
}

/// R4 `telecom` (and, for Organization, `address` and the `contact` backbone) → R5
/// `contact` (ExtendedContactDetail). Location keeps its own `address` in R5.
fn contacts_r4_to_r5(obj: &mut Map<String, Value>, _ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    let is_location = obj.get("resourceType").and_then(Value::as_str) == Some("Location");
    let mut contacts = Vec::new();
    if let Some(Value::Array(old)) = obj.remove("contact") {
        for item in old {
            match item {
                Value::Object(mut c) => {
                    if let Some(name) = c.remove("name") {
                        c.insert("name".into(), Value::Array(vec![name]));
                    }
                    contacts.push(Value::Object(c));
                }
                other => contacts.push(other),
            }
        }
    }
    if let Some(telecom) = obj.remove("telecom") {
        contacts.push(wrap("telecom", telecom));
    }
    if !is_location && let Some(Value::Array(addresses)) = obj.remove("address") {
        contacts.extend(addresses.into_iter().map(|a| wrap("address", a)));
    }
    if !contacts.is_empty() {
        obj.insert("contact".into(), Value::Array(contacts));
    }
    done.push("contact");
}

/// R5 `contact` → R4 root `telecom`/`address` (a contact holding only those) or the R4
/// `contact` backbone. What R4 cannot hold is carried.
fn contacts_r5_to_r4(obj: &mut Map<String, Value>, ctx: &mut Ctx, done: &mut Vec<&'static str>) {
    let is_location = obj.get("resourceType").and_then(Value::as_str) == Some("Location");
    let Some(Value::Array(contacts)) = obj.remove("contact") else {
        return;
    };
    let (mut telecom, mut address, mut backbones) = (Vec::new(), Vec::new(), Vec::new());
    let mut lossy = false;
    for item in &contacts {
        let Value::Object(c) = item else {
            lossy = true;
            continue;
        };
        let only = |keys: &[&str]| c.keys().all(|k| keys.contains(&k.as_str()));
        if only(&["telecom"]) {
            telecom.extend(
                c.get("telecom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        } else if only(&["address"]) && !is_location {
            address.extend(c.get("address").cloned());
        } else if is_location {
            lossy = true;
            telecom.extend(
                c.get("telecom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        } else {
            let mut b = c.clone();
            if let Some(Value::Array(mut names)) = b.remove("name") {
                if names.len() > 1 {
                    lossy = true;
                }
                if !names.is_empty() {
                    b.insert("name".into(), names.swap_remove(0));
                }
            }
            if b.keys().any(|k| k == "organization" || k == "period") {
                lossy = true;
                b.remove("organization");
                b.remove("period");
            }
            backbones.push(Value::Object(b));
        }
    }
    if !telecom.is_empty() {
        obj.insert("telecom".into(), Value::Array(telecom));
    }
    if !address.is_empty() {
        obj.insert("address".into(), Value::Array(address));
    }
    if !backbones.is_empty() {
        obj.insert("contact".into(), Value::Array(backbones));
    }
    if !lossy {
        // Order and grouping count too: converting these parts forward must give the input.
        let mut forward = Map::new();
        for key in ["resourceType", "telecom", "address", "contact"] {
            if let Some(v) = obj.get(key) {
                forward.insert(key.into(), v.clone());
            }
        }
        contacts_r4_to_r5(&mut forward, ctx, &mut Vec::new());
        lossy = forward.get("contact") != Some(&Value::Array(contacts.clone()));
    }
    if lossy {
        carry_root(
            obj,
            ctx,
            "contact",
            Value::Array(contacts),
            "ExtendedContactDetail",
            "does not fit the R4 contact elements exactly",
        );
    }
    done.extend(["telecom", "address", "contact"]);
}

/// R4 `DocumentReference.context` backbone → R5 `context` (references), `event`,
/// `period`, `facilityType`, `practiceSetting`; `content.format` → `content.profile`.
fn document_reference_r4_to_r5(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if let Some(Value::Object(context)) = obj.remove("context") {
        let original = context.clone();
        let mut context = context;
        if let Some(encounters) = context.remove("encounter") {
            obj.insert("context".into(), encounters);
            done.push("context");
        }
        if let Some(Value::Array(events)) = context.remove("event") {
            obj.insert(
                "event".into(),
                Value::Array(events.into_iter().map(|e| wrap("concept", e)).collect()),
            );
            done.push("event");
        }
        for key in ["period", "facilityType", "practiceSetting"] {
            if let Some(v) = context.remove(key) {
                obj.insert(key.into(), v);
                done.push(key);
            }
        }
        if !context.is_empty() {
            carry_root(
                obj,
                ctx,
                "context",
                Value::Object(original),
                "BackboneElement",
                "(sourcePatientInfo, related) has no counterpart",
            );
        }
    }
    if let Some(Value::Array(contents)) = obj.get_mut("content") {
        for content in contents {
            if let Value::Object(c) = content
                && let Some(format) = c.remove("format")
            {
                c.insert(
                    "profile".into(),
                    Value::Array(vec![wrap("valueCoding", format)]),
                );
            }
        }
    }
}

fn document_reference_r5_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let mut context = Map::new();
    if let Some(encounters) = obj.remove("context") {
        context.insert("encounter".into(), encounters);
    }
    if let Some(Value::Array(events)) = obj.remove("event") {
        let concept_only = events.iter().all(|e| {
            e.as_object()
                .is_some_and(|m| m.len() == 1 && m.contains_key("concept"))
        });
        let concepts: Vec<Value> = events
            .iter()
            .filter_map(|e| e.get("concept").cloned())
            .collect();
        if !concepts.is_empty() {
            context.insert("event".into(), Value::Array(concepts));
        }
        if !concept_only {
            carry_root(
                obj,
                ctx,
                "event",
                Value::Array(events),
                "CodeableReference",
                "(a reference) has no counterpart",
            );
        }
    }
    for key in ["period", "facilityType", "practiceSetting"] {
        if let Some(v) = obj.remove(key) {
            context.insert(key.into(), v);
        }
    }
    if !context.is_empty() {
        obj.insert("context".into(), Value::Object(context));
    }
    done.push("context");
    // Profiles other than one coding (uri, canonical, several) stay for the walk to carry.
    if let Some(Value::Array(contents)) = obj.get_mut("content") {
        for content in contents.iter_mut() {
            let Value::Object(c) = content else {
                continue;
            };
            let Some(Value::Array(profiles)) = c.get("profile") else {
                continue;
            };
            let single_coding = profiles.len() == 1
                && profiles[0]
                    .as_object()
                    .is_some_and(|p| p.len() == 1 && p.contains_key("valueCoding"));
            if single_coding
                && let Some(Value::Array(mut profiles)) = c.remove("profile")
                && let Some(coding) = profiles.swap_remove(0).get("valueCoding").cloned()
            {
                c.insert("format".into(), coding);
            }
        }
    }
}

const AUDIT_EVENT_OUTCOME: &str = "http://terminology.hl7.org/CodeSystem/audit-event-outcome";

/// R4 `AuditEvent.outcome` (code) + `outcomeDesc` → R5 `outcome {code: Coding, detail}`.
fn audit_event_outcome_r4_to_r5(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let code = obj.remove("outcome");
    let description = obj.remove("outcomeDesc");
    if code.is_none() && description.is_none() {
        return;
    }
    let mut outcome = Map::new();
    if let Some(code) = code {
        let mut coding = Map::new();
        coding.insert("system".into(), Value::String(AUDIT_EVENT_OUTCOME.into()));
        coding.insert("code".into(), code);
        outcome.insert("code".into(), Value::Object(coding));
    }
    if let Some(description) = description {
        outcome.insert(
            "detail".into(),
            Value::Array(vec![wrap("text", description)]),
        );
    }
    obj.insert("outcome".into(), Value::Object(outcome));
    done.push("outcome");
}

fn audit_event_outcome_r5_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let Some(outcome) = obj.remove("outcome") else {
        return;
    };
    let code = outcome.get("code");
    let code_fits = code.is_none_or(|c| {
        c.as_object().is_some_and(|c| {
            c.keys().all(|k| k == "system" || k == "code")
                && c.get("system").and_then(Value::as_str) == Some(AUDIT_EVENT_OUTCOME)
        })
    });
    let details = outcome.get("detail").and_then(Value::as_array);
    let detail_fits = details.is_none_or(|d| {
        d.len() == 1
            && d[0]
                .as_object()
                .is_some_and(|t| t.len() == 1 && t.contains_key("text"))
    });
    let fits = code_fits
        && detail_fits
        && outcome
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "code" || k == "detail"));
    // R5 binds issue-severity (preferred); R4 requires audit-event-outcome.
    let system = code.and_then(|c| c.get("system")).and_then(Value::as_str);
    let value = code.and_then(|c| c.get("code")).and_then(Value::as_str);
    let r4_code = match (system, value) {
        (Some(AUDIT_EVENT_OUTCOME) | None, Some(v)) => Some(v),
        (Some("http://hl7.org/fhir/issue-severity"), Some(v)) => match v {
            "success" | "information" => Some("0"),
            "warning" => Some("4"),
            "error" => Some("8"),
            "fatal" => Some("12"),
            _ => None,
        },
        _ => None,
    };
    if let Some(r4_code) = r4_code {
        obj.insert("outcome".into(), Value::String(r4_code.into()));
    }
    if let Some(text) = details.and_then(|d| d.first()).and_then(|t| t.get("text")) {
        obj.insert("outcomeDesc".into(), text.clone());
    }
    if !fits {
        carry_root(
            obj,
            ctx,
            "outcome",
            outcome,
            "BackboneElement",
            "does not fit outcome and outcomeDesc exactly",
        );
    }
    done.push("outcome");
    done.push("outcomeDesc");
}

const PARTICIPANT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";

/// R4 elements that became an R5 `participant` with a function: (R4 key, code, display).
/// Codes as the R5 examples of each resource use them.
const CONDITION_PARTICIPANTS: &[(&str, &str, &str)] = &[
    ("recorder", "enterer", "Enterer"),
    ("asserter", "informant", "Informant"),
];
const ALLERGY_PARTICIPANTS: &[(&str, &str, &str)] = &[
    ("recorder", "author", "Author"),
    ("asserter", "informant", "Informant"),
];

fn condition_participants_r4_to_r5(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    participants_in(obj, CONDITION_PARTICIPANTS, done);
}

fn condition_participants_r5_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    participants_out(obj, CONDITION_PARTICIPANTS, ctx, done);
}

fn allergy_participants_r4_to_r5(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    participants_in(obj, ALLERGY_PARTICIPANTS, done);
}

fn allergy_participants_r5_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    participants_out(obj, ALLERGY_PARTICIPANTS, ctx, done);
}

fn participants_in(
    obj: &mut Map<String, Value>,
    roles: &[(&str, &str, &str)],
    done: &mut Vec<&'static str>,
) {
    let mut participants = Vec::new();
    for &(key, code, display) in roles {
        if let Some(actor) = obj.remove(key) {
            let mut coding = Map::new();
            coding.insert("system".into(), Value::String(PARTICIPANT_TYPE.into()));
            coding.insert("code".into(), Value::String(code.into()));
            coding.insert("display".into(), Value::String(display.into()));
            let mut participant = Map::new();
            participant.insert(
                "function".into(),
                wrap("coding", Value::Array(vec![Value::Object(coding)])),
            );
            participant.insert("actor".into(), actor);
            participants.push(Value::Object(participant));
        }
    }
    if !participants.is_empty() {
        obj.insert("participant".into(), Value::Array(participants));
        done.push("participant");
    }
}

/// R5 participants back to the R4 elements. Exact only when converting them forward gives
/// the same list again; otherwise the list is also carried.
fn participants_out(
    obj: &mut Map<String, Value>,
    roles: &[(&'static str, &str, &str)],
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let Some(participants) = obj.remove("participant") else {
        return;
    };
    for item in participants.as_array().into_iter().flatten() {
        let code = item
            .get("function")
            .and_then(|f| f.get("coding"))
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .filter(|c| c.get("system").and_then(Value::as_str) == Some(PARTICIPANT_TYPE))
            .and_then(|c| c.get("code"))
            .and_then(Value::as_str);
        let role = roles.iter().find(|(_, c, _)| Some(*c) == code);
        if let (Some(&(key, _, _)), Some(actor)) = (role, item.get("actor"))
            && !obj.contains_key(key)
        {
            obj.insert(key.into(), actor.clone());
        }
    }
    let mut forward = Map::new();
    for &(key, _, _) in roles {
        if let Some(v) = obj.get(key) {
            forward.insert(key.into(), v.clone());
        }
    }
    participants_in(&mut forward, roles, &mut Vec::new());
    if forward.get("participant") != Some(&participants) {
        carry_root(
            obj,
            ctx,
            "participant",
            participants,
            "BackboneElement",
            "does not fit the R4 recorder and asserter exactly",
        );
    }
    for &(key, _, _) in roles {
        done.push(key);
    }
}

// ---- MedicationStatement: whether the medication is taken --------------------------------

/// STU3 `taken` (y | n | unk | na) is said by the R4 status: `n` is `not-taken`, `unk` is
/// `unknown` (the R3→R4 map). The STU3 status they replace is kept in a carrier unless it is
/// the one the way back gives (`completed` for `n`, `active` for `unk`).
fn medication_statement_stu3_to_r4(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    _done: &mut Vec<&'static str>,
) {
    let Some(taken) = obj.remove("taken") else {
        return;
    };
    let status = obj.get("status").and_then(Value::as_str).map(str::to_owned);
    let (replacement, usual) = match taken.as_str() {
        Some("y") => return,
        Some("n") => ("not-taken", "completed"),
        Some("unk") => ("unknown", "active"),
        Some("na") if status.as_deref() == Some("entered-in-error") => return,
        _ => {
            // `na` (not applicable) or a code outside the value set: no R4 counterpart.
            carry_root(
                obj,
                ctx,
                "taken",
                taken,
                "code",
                "has no counterpart besides the status",
            );
            return;
        }
    };
    obj.insert("status".into(), Value::String(replacement.into()));
    let code = taken.as_str().unwrap_or_default().to_owned();
    match status {
        Some(previous) if previous != usual => carry_root(
            obj,
            ctx,
            "status",
            Value::String(previous),
            "code",
            &format!("is said by status `{replacement}` (taken = {code})"),
        ),
        _ => {}
    }
}

/// R4 status `not-taken` is STU3 `taken = n` with status `completed` ("not taken", as the
/// STU3 definition of `taken` reads it), `unknown` is `taken = unk` with status `active`,
/// `entered-in-error` is `taken = na`, every other status `taken = y`. A status restored from
/// a carrier of STU3 replaces the one chosen here.
fn medication_statement_r4_to_stu3(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let Some(status) = obj.get("status").and_then(Value::as_str).map(str::to_owned) else {
        return;
    };
    let (taken, stu3_status) = match status.as_str() {
        "not-taken" => ("n", Some("completed")),
        "unknown" => ("unk", Some("active")),
        "entered-in-error" => ("na", None),
        _ => ("y", None),
    };
    obj.insert("taken".into(), Value::String(taken.into()));
    done.push("taken");
    if let Some(stu3_status) = stu3_status {
        obj.insert("status".into(), Value::String(stu3_status.into()));
        let restored = ctx
            .target
            .root("MedicationStatement")
            .is_some_and(|t| extension::restore_pending(obj, t, "status", ctx));
        if !restored {
            ctx.issue(
                Severity::Information,
                IssueCode::Value,
                "MedicationStatement.status",
                format!("MedicationStatement.status `{status}` is said in STU3 by taken = {taken} with status `{stu3_status}`"),
            );
        }
    }
}

const ADHERENCE: &str = "http://hl7.org/fhir/CodeSystem/medication-statement-adherence";

/// R4 statuses that R5 says with `adherence.code` (status `recorded`): (R4 status, code).
const STATUS_ADHERENCE: &[(&str, &str)] = &[
    ("active", "taking"),
    ("not-taken", "not-taking"),
    ("on-hold", "on-hold"),
    ("stopped", "stopped"),
    ("unknown", "unknown"),
];

fn adherence(code: &str) -> Value {
    let mut coding = Map::new();
    coding.insert("system".into(), Value::String(ADHERENCE.into()));
    coding.insert("code".into(), Value::String(code.into()));
    let mut concept = Map::new();
    concept.insert("coding".into(), Value::Array(vec![Value::Object(coding)]));
    wrap("code", Value::Object(concept))
}

/// R4 `status` → R5 `status` (`recorded` | `entered-in-error`) with whether the patient takes
/// it in `adherence.code` (not-taken → not-taking, active → taking, …). The R4 status is kept
/// in a carrier. `completed` (a statement of past use) needs no adherence; `intended` has no
/// counterpart at all (R5 reads the statement as use): a warning.
fn medication_statement_status_r4_to_r5(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let Some(status) = obj.get("status").and_then(Value::as_str).map(str::to_owned) else {
        return;
    };
    let Some(target_root) = ctx.target.root("MedicationStatement") else {
        return;
    };
    if status == "entered-in-error" || extension::restore_pending(obj, target_root, "status", ctx) {
        // The same code, or an R5 status carried on the way down that the restore puts back.
        return;
    }
    obj.insert("status".into(), Value::String("recorded".into()));
    let code = STATUS_ADHERENCE
        .iter()
        .find(|(s, _)| *s == status)
        .map(|(_, c)| *c);
    let path = "MedicationStatement.status";
    let (from, to) = (ctx.from, ctx.to);
    if let Some(code) = code {
        // Said exactly: the way back reads the status from the adherence code.
        obj.insert("adherence".into(), adherence(code));
        done.push("adherence");
        ctx.issue(
            Severity::Information,
            IssueCode::Value,
            path,
            format!(
                "{path} `{status}` ({from}) is status `recorded` with adherence `{code}` in {to}"
            ),
        );
        return;
    }
    let Some(root) = ctx.source.root("MedicationStatement") else {
        return;
    };
    let url = extension::url(ctx, root, "status");
    extension::carry_value(obj, url, Value::String(status.clone()), "code", ctx);
    match code {
        Some(_) => {}
        None if status == "completed" => ctx.issue(
            Severity::Information,
            IssueCode::Value,
            path,
            format!("{path} `completed` ({from}) is status `recorded` in {to} (a statement of use; effective says when); the original kept in a cross-version extension"),
        ),
        None => ctx.issue(
            Severity::Warning,
            IssueCode::Value,
            path,
            format!("{path} `{status}` ({from}) has no counterpart in {to}: status `recorded` reads as use; the original kept in a cross-version extension"),
        ),
    }
}

/// R5 `recorded` with an adherence code of R4's statuses → that R4 status; the adherence goes
/// when it said nothing else. Otherwise the status remap (`recorded` → `active`, reported)
/// and the walk (adherence carried) do the rest.
fn medication_statement_status_r5_to_r4(
    obj: &mut Map<String, Value>,
    done: &mut Vec<&'static str>,
) {
    if obj.get("status").and_then(Value::as_str) != Some("recorded") {
        return;
    }
    let Some(adherence_value) = obj.get("adherence") else {
        return;
    };
    let coding = adherence_value
        .get("code")
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let code = coding
        .filter(|c| c.get("system").and_then(Value::as_str) == Some(ADHERENCE))
        .and_then(|c| c.get("code"))
        .and_then(Value::as_str);
    let Some(&(status, code)) = STATUS_ADHERENCE.iter().find(|(_, c)| Some(*c) == code) else {
        return;
    };
    let only_the_code = *adherence_value == adherence(code);
    obj.insert("status".into(), Value::String(status.into()));
    if only_the_code {
        obj.remove("adherence");
        done.push("adherence");
    }
}

// ---- negation flags of STU3 that R4 says with the status ---------------------------------

/// STU3 `flag = true` → R4 `status = not-done` (the R3→R4 maps). The STU3 status it replaces
/// is kept in a carrier unless it is `usual`, the one the way back gives.
fn flag_to_not_done(obj: &mut Map<String, Value>, ctx: &mut Ctx, flag: &str, usual: &str) {
    let Some(value) = obj.remove(flag) else {
        return;
    };
    if value == Value::Bool(true) {
        let previous = obj.insert("status".into(), Value::String("not-done".into()));
        if let Some(previous) = previous.filter(|p| p != usual) {
            carry_root(
                obj,
                ctx,
                "status",
                previous,
                "code",
                "is replaced by not-done",
            );
        }
    } else if value == Value::Bool(false) {
        let path = format!("{}.{flag}", resource_type_of(obj, ctx));
        ctx.issue(
            Severity::Information,
            IssueCode::Value,
            &path,
            format!("{path} = false is said in R4 by any status but not-done"),
        );
    } else {
        carry_root(obj, ctx, flag, value, "boolean", "is not a boolean");
    }
}

/// R4 `status = not-done` → STU3 `flag = true` with status `usual` (any other status: the
/// flag's default, false, left out).
fn not_done_to_flag(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
    flag: &'static str,
    usual: &str,
) {
    let Some(status) = obj.get("status").and_then(Value::as_str) else {
        return;
    };
    if status == "not-done" {
        obj.insert(flag.into(), Value::Bool(true));
        done.push(flag);
        obj.insert("status".into(), Value::String(usual.into()));
        let resource_type = resource_type_of(obj, ctx);
        let restored = ctx
            .target
            .root(resource_type)
            .is_some_and(|t| extension::restore_pending(obj, t, "status", ctx));
        if !restored {
            let path = format!("{resource_type}.status");
            ctx.issue(
                Severity::Information,
                IssueCode::Value,
                &path,
                format!("{path} `not-done` is {flag} = true in STU3, with status `{usual}`"),
            );
        }
    }
}

fn medication_administration_not_given(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    _done: &mut Vec<&'static str>,
) {
    flag_to_not_done(obj, ctx, "notGiven", "unknown");
}

fn medication_administration_not_done(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    not_done_to_flag(obj, ctx, done, "notGiven", "unknown");
}

fn communication_not_done(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    _done: &mut Vec<&'static str>,
) {
    flag_to_not_done(obj, ctx, "notDone", "completed");
}

fn communication_status_not_done(
    obj: &mut Map<String, Value>,
    ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    not_done_to_flag(obj, ctx, done, "notDone", "completed");
}

// ---- Goal: lifecycle and achievement ------------------------------------------------------

const GOAL_ACHIEVEMENT: &str = "http://terminology.hl7.org/CodeSystem/goal-achievement";

/// STU3 `Goal.status` codes that R4 says exactly with its two elements: (STU3 status, R4
/// `lifecycleStatus`, R4 `achievementStatus` code). The definitions read alike ("being
/// sought but not yet reached", "met, but ongoing activity is needed", "met"); the other
/// STU3 progress codes (`on-target`, `ahead-of-target`, `behind-target`) have no
/// achievement code of the same meaning and stay approximations (the code map).
const GOAL_STATUS_EXACT: &[(&str, &str, &str)] = &[
    ("in-progress", "active", "in-progress"),
    ("sustaining", "active", "sustaining"),
    ("achieved", "completed", "achieved"),
];

/// STU3 `status` → R4 `lifecycleStatus` + `achievementStatus`, where R4 says it exactly
/// (unless an earlier conversion carried the R4 elements: those are restored instead).
fn goal_status_to_achievement(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if carries(
        obj,
        &[
            "/extension-Goal.lifecycleStatus",
            "/extension-Goal.achievementStatus",
        ],
    ) {
        return;
    }
    let Some(status) = obj.get("status").and_then(Value::as_str) else {
        return;
    };
    let Some(&(_, lifecycle, achievement)) = GOAL_STATUS_EXACT
        .iter()
        .find(|(code, _, _)| *code == status)
    else {
        return;
    };
    obj.remove("status");
    obj.insert("lifecycleStatus".into(), Value::String(lifecycle.into()));
    obj.insert(
        "achievementStatus".into(),
        serde_json::json!({"coding": [{"system": GOAL_ACHIEVEMENT, "code": achievement}]}),
    );
    done.push("lifecycleStatus");
    done.push("achievementStatus");
}

/// R4 `lifecycleStatus` + `achievementStatus` (one coding of the achievement code system,
/// nothing else) → the STU3 `status` that says both. Anything else (another pair, a text, a
/// status carried from STU3) is left to the code map and the walk.
fn goal_achievement_to_status(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    if carries(obj, &["/extension-Goal.status"]) {
        return;
    }
    let lifecycle = obj.get("lifecycleStatus").and_then(Value::as_str);
    let achievement = obj
        .get("achievementStatus")
        .and_then(Value::as_object)
        .filter(|a| a.len() == 1)
        .and_then(|a| a.get("coding"))
        .and_then(Value::as_array)
        .filter(|c| c.len() == 1)
        .and_then(|c| c[0].as_object())
        .filter(|c| {
            c.len() == 2 && c.get("system").and_then(Value::as_str) == Some(GOAL_ACHIEVEMENT)
        })
        .and_then(|c| c.get("code"))
        .and_then(Value::as_str);
    let (Some(lifecycle), Some(achievement)) = (lifecycle, achievement) else {
        return;
    };
    let Some(&(status, _, _)) = GOAL_STATUS_EXACT
        .iter()
        .find(|(_, l, a)| *l == lifecycle && *a == achievement)
    else {
        return;
    };
    obj.remove("lifecycleStatus");
    obj.remove("achievementStatus");
    obj.insert("status".into(), Value::String(status.into()));
    done.push("status");
}

/// Whether `obj` has a (cross-version) extension whose URL ends with one of `suffixes`.
fn carries(obj: &Map<String, Value>, suffixes: &[&str]) -> bool {
    obj.get("extension")
        .and_then(Value::as_array)
        .is_some_and(|e| {
            e.iter().any(|x| {
                x.get("url")
                    .and_then(Value::as_str)
                    .is_some_and(|u| suffixes.iter().any(|s| u.ends_with(s)))
            })
        })
}

// ---- Group: actual members or a definition ------------------------------------------------

/// R4 `Group.actual` (boolean) is R5 `membership`: true `enumerated`, false `definitional`.
fn group_actual_to_membership(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let membership = match obj.get("actual") {
        Some(Value::Bool(true)) => "enumerated",
        Some(Value::Bool(false)) => "definitional",
        _ => return,
    };
    obj.remove("actual");
    obj.insert("membership".into(), Value::String(membership.into()));
    done.push("membership");
}

fn group_membership_to_actual(
    obj: &mut Map<String, Value>,
    _ctx: &mut Ctx,
    done: &mut Vec<&'static str>,
) {
    let actual = match obj.get("membership").and_then(Value::as_str) {
        Some("enumerated") => true,
        Some("definitional") => false,
        _ => return,
    };
    obj.remove("membership");
    obj.insert("actual".into(), Value::Bool(actual));
    done.push("actual");
}
