//! Reading FHIR Consent JSON (STU3, R4, R4B, R5) into the model.
//!
//! Owns the version-specific element names and the mapping described in `model.rs`.
//! Returns the model with the issues found (lossy but usable input); `Err` names the element
//! at fault when the resource cannot be enforced as written. Leaves out fetching and storing.

use std::sync::Arc;

use assent_fhir::{FhirVersion, Issue, IssueCode, Severity};
use serde_json::{Map, Value};

use crate::model::{
    ActorRule, Coding, Conditions, Consent, ConsentScope, ConsentStatus, DataMeaning, DataRule,
    Effect, Party, Provision,
};
use crate::time::Period;
use crate::vocab::{self, Actions};

/// A Consent that cannot be enforced as written, naming the element at fault
/// (`Consent.provision.actor[0].reference`). The API answers 422 with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    #[error("{element}: {reason}")]
    Invalid { element: String, reason: String },
    #[error("{element}: not supported: {reason}")]
    Unsupported { element: String, reason: String },
}

impl ConsentError {
    /// The FHIRPath-like location of the fault.
    pub fn element(&self) -> &str {
        match self {
            ConsentError::Invalid { element, .. } | ConsentError::Unsupported { element, .. } => {
                element
            }
        }
    }

    /// This error as an `OperationOutcome` issue.
    pub fn to_issue(&self) -> Issue {
        let code = match self {
            ConsentError::Invalid { .. } => IssueCode::Invalid,
            ConsentError::Unsupported { .. } => IssueCode::NotSupported,
        };
        Issue::new(Severity::Error, code, self.to_string()).at(self.element())
    }
}

/// Guesses the FHIR version of a Consent from its shape: R5 has `decision` or `subject`;
/// STU3 has `except`, a string `policyRule`, or root-level `actor`/`purpose`; otherwise R4.
/// (R4B's Consent is R4's; it reads as R4.)
pub fn detect_version(resource: &Value) -> FhirVersion {
    let has = |k: &str| resource.get(k).is_some();
    if has("decision") || has("subject") || has("controller") || has("grantee") {
        FhirVersion::R5
    } else if has("except")
        || resource.get("policyRule").is_some_and(Value::is_string)
        || has("actor")
        || has("purpose")
        || has("consentingParty")
    {
        FhirVersion::Stu3
    } else if resource.get("provision").is_some_and(Value::is_array) {
        FhirVersion::R5
    } else {
        FhirVersion::R4
    }
}

/// [`parse_consent`] with the version guessed by [`detect_version`].
pub fn parse_consent_any(resource: &Value) -> Result<(Consent, Vec<Issue>), ConsentError> {
    parse_consent(resource, detect_version(resource))
}

/// Reads a FHIR Consent of `version` into the model, with the issues found.
pub fn parse_consent(
    resource: &Value,
    version: FhirVersion,
) -> Result<(Consent, Vec<Issue>), ConsentError> {
    let obj = resource
        .as_object()
        .ok_or_else(|| invalid("Consent", "not a JSON object"))?;
    match obj.get("resourceType").and_then(Value::as_str) {
        Some("Consent") => {}
        _ => return Err(invalid("Consent.resourceType", "must be `Consent`")),
    }
    let mut cx = Reader {
        version,
        issues: Vec::new(),
        ordinal: 0,
    };
    let id = opt_str(obj, "id", "Consent.id")?.unwrap_or_default();
    let version_id = match obj.get("meta") {
        Some(meta) => opt_str(
            as_obj(meta, "Consent.meta")?,
            "versionId",
            "Consent.meta.versionId",
        )?
        .unwrap_or_default(),
        None => "",
    };
    let status_code = opt_str(obj, "status", "Consent.status")?
        .ok_or_else(|| invalid("Consent.status", "is required"))?;
    let status = ConsentStatus::from_code(status_code)
        .ok_or_else(|| invalid("Consent.status", format!("unknown status `{status_code}`")))?;
    let patient_key = if version >= FhirVersion::R5 {
        "subject"
    } else {
        "patient"
    };
    let patient = match obj.get(patient_key) {
        Some(r) => Some(cx.reference(r, &format!("Consent.{patient_key}"))?),
        None => None,
    };
    let scope = cx.scope(obj)?;
    if !scope.is_enforced() {
        let element = if obj.contains_key("scope") {
            "Consent.scope"
        } else {
            "Consent.category"
        };
        cx.issues.push(
            Issue::new(
                Severity::Information,
                IssueCode::Informational,
                format!(
                    "a {} consent is kept but not enforced by the gateway",
                    scope.as_str()
                ),
            )
            .at(element),
        );
    }

    let (root, period) = match version {
        FhirVersion::Stu3 => cx.stu3_root(obj)?,
        FhirVersion::R4 | FhirVersion::R4B => cx.r4_root(obj)?,
        FhirVersion::R5 => cx.r5_root(obj)?,
    };
    let consent = Consent {
        id: Arc::from(id),
        version: Arc::from(version_id),
        fhir_version: version,
        status,
        scope,
        patient,
        period,
        root,
    };
    Ok((consent, cx.issues))
}

const MAX_DEPTH: u8 = 32;

struct Reader {
    version: FhirVersion,
    issues: Vec<Issue>,
    ordinal: u32,
}

impl Reader {
    fn warn(&mut self, code: IssueCode, element: &str, text: impl Into<String>) {
        self.issues
            .push(Issue::new(Severity::Warning, code, text).at(element));
    }

    fn scope(&mut self, obj: &Map<String, Value>) -> Result<ConsentScope, ConsentError> {
        let mut codes: Vec<String> = Vec::new();
        if let Some(scope) = obj.get("scope") {
            for c in codings_of_concept(scope, "Consent.scope")? {
                codes.push(c.code);
            }
        }
        if let Some(cats) = obj.get("category") {
            for (i, cat) in as_array(cats, "Consent.category")?.iter().enumerate() {
                for c in codings_of_concept(cat, &format!("Consent.category[{i}]"))? {
                    codes.push(c.code);
                }
            }
        }
        for code in &codes {
            let scope = match code.as_str() {
                "research" | "RESEARCH" | "rsdid" | "rsreid" => ConsentScope::Research,
                "treatment" => ConsentScope::Treatment,
                "adr" | "acd" | "dnr" | "polst" | "hcd" => ConsentScope::AdvanceDirective,
                _ => continue,
            };
            return Ok(scope);
        }
        Ok(ConsentScope::PatientPrivacy)
    }

    fn policy_effect(&mut self, obj: &Map<String, Value>) -> Result<Option<Effect>, ConsentError> {
        let Some(rule) = obj.get("policyRule") else {
            return Ok(None);
        };
        let codes: Vec<String> = match rule {
            Value::String(s) => vec![s.clone()],
            other => codings_of_concept(other, "Consent.policyRule")?
                .into_iter()
                .map(|c| c.code)
                .collect(),
        };
        for code in codes {
            let lower = code.to_ascii_lowercase();
            if lower.starts_with("optin") || lower.ends_with("opt-in") {
                return Ok(Some(Effect::Permit));
            }
            if lower.starts_with("optout") || lower.ends_with("opt-out") {
                return Ok(Some(Effect::Deny));
            }
        }
        Ok(None)
    }

    fn stu3_root(
        &mut self,
        obj: &Map<String, Value>,
    ) -> Result<(Provision, Option<Period>), ConsentError> {
        let period = opt_period(obj.get("period"), "Consent.period")?;
        let effect = match self.policy_effect(obj)? {
            Some(e) => e,
            None => {
                self.warn(
                    IssueCode::Value,
                    "Consent.policyRule",
                    "no opt-in/opt-out policy rule: the root decision defaults to deny",
                );
                Effect::Deny
            }
        };
        let mut root = self.conditions(obj, "Consent", Effect::Deny, 0, 0, true)?;
        root.effect = effect;
        if let Some(excepts) = obj.get("except") {
            for (i, e) in as_array(excepts, "Consent.except")?.iter().enumerate() {
                let path = format!("Consent.except[{i}]");
                let eo = as_obj(e, &path)?;
                let ty = self.explicit_type(eo, &path)?.ok_or_else(|| {
                    invalid(format!("{path}.type"), "is required on an exception")
                })?;
                if ty == root.effect {
                    self.warn(
                        IssueCode::Value,
                        &format!("{path}.type"),
                        "exception repeats the root decision; kept as written",
                    );
                }
                let p = self.conditions(eo, &path, ty, 1, root.specificity, false)?;
                root.provisions.push(p);
            }
        }
        Ok((root, period))
    }

    fn r4_root(
        &mut self,
        obj: &Map<String, Value>,
    ) -> Result<(Provision, Option<Period>), ConsentError> {
        let policy = self.policy_effect(obj)?;
        let Some(prov) = obj.get("provision") else {
            let effect = policy.unwrap_or_else(|| {
                self.warn(
                    IssueCode::Value,
                    "Consent.provision",
                    "no provision and no opt-in/opt-out policy rule: the root decision defaults to deny",
                );
                Effect::Deny
            });
            return Ok((self.empty_root("Consent.provision", effect), None));
        };
        let po = as_obj(prov, "Consent.provision")?;
        let period = opt_period(po.get("period"), "Consent.provision.period")?;
        let effect = match (self.explicit_type(po, "Consent.provision")?, policy) {
            (Some(t), _) => t,
            (None, Some(p)) => p,
            (None, None) => {
                self.warn(
                    IssueCode::Value,
                    "Consent.provision.type",
                    "no root type and no opt-in/opt-out policy rule: the root decision defaults to deny",
                );
                Effect::Deny
            }
        };
        let root = self.tree(po, "Consent.provision", effect, 0, 0, true)?;
        Ok((root, period))
    }

    fn r5_root(
        &mut self,
        obj: &Map<String, Value>,
    ) -> Result<(Provision, Option<Period>), ConsentError> {
        let period = opt_period(obj.get("period"), "Consent.period")?;
        let effect = match opt_str(obj, "decision", "Consent.decision")? {
            Some(code) => effect_from_code(code, "Consent.decision")?,
            None => {
                self.warn(
                    IssueCode::Value,
                    "Consent.decision",
                    "no decision: the root decision defaults to deny",
                );
                Effect::Deny
            }
        };
        let mut root = self.empty_root("Consent", effect);
        if let Some(list) = obj.get("provision") {
            let list = match list {
                Value::Array(a) => a.as_slice(),
                single @ Value::Object(_) => std::slice::from_ref(single),
                _ => return Err(invalid("Consent.provision", "must be an array")),
            };
            for (i, p) in list.iter().enumerate() {
                let path = format!("Consent.provision[{i}]");
                let po = as_obj(p, &path)?;
                let child = self.tree(po, &path, effect.invert(), 1, 0, false)?;
                root.provisions.push(child);
            }
        }
        Ok((root, period))
    }

    fn empty_root(&mut self, path: &str, effect: Effect) -> Provision {
        let ordinal = self.next_ordinal();
        Provision {
            effect,
            path: Arc::from(path),
            depth: 0,
            ordinal,
            specificity: 0,
            conditions: Conditions::default(),
            actors: Vec::new(),
            purposes: Vec::new(),
            period: None,
            actions: Actions::NONE,
            resource_types: Vec::new(),
            codes: Vec::new(),
            security_labels: Vec::new(),
            data: Vec::new(),
            data_period: None,
            provisions: Vec::new(),
        }
    }

    fn next_ordinal(&mut self) -> u32 {
        let o = self.ordinal;
        self.ordinal += 1;
        o
    }

    fn explicit_type(
        &mut self,
        po: &Map<String, Value>,
        path: &str,
    ) -> Result<Option<Effect>, ConsentError> {
        let element = format!("{path}.type");
        match opt_str(po, "type", &element)? {
            Some(code) => Ok(Some(effect_from_code(code, &element)?)),
            None => Ok(None),
        }
    }

    /// A provision and its nested provisions (R4 and R5 shapes).
    fn tree(
        &mut self,
        po: &Map<String, Value>,
        path: &str,
        expected: Effect,
        depth: u8,
        parent_specificity: u32,
        is_root: bool,
    ) -> Result<Provision, ConsentError> {
        if depth > MAX_DEPTH {
            return Err(invalid(path, "provisions nested too deeply"));
        }
        let mut effect = expected;
        if !is_root && let Some(t) = self.explicit_type(po, path)? {
            if t != expected {
                if self.version >= FhirVersion::R5 {
                    self.warn(
                        IssueCode::Value,
                        &format!("{path}.type"),
                        "R5 provisions invert their parent; the explicit type is ignored",
                    );
                } else {
                    self.warn(
                        IssueCode::Value,
                        &format!("{path}.type"),
                        "provision does not invert its parent; kept as written",
                    );
                    effect = t;
                }
            }
        } else if !is_root && self.version < FhirVersion::R5 {
            self.warn(
                IssueCode::Required,
                &format!("{path}.type"),
                "nested provision without a type: read as the inverse of its parent",
            );
        }
        let mut p = self.conditions(po, path, effect, depth, parent_specificity, is_root)?;
        if let Some(children) = po.get("provision") {
            let list = match children {
                Value::Array(a) => a.as_slice(),
                single @ Value::Object(_) => std::slice::from_ref(single),
                _ => return Err(invalid(format!("{path}.provision"), "must be an array")),
            };
            for (i, c) in list.iter().enumerate() {
                let cpath = format!("{path}.provision[{i}]");
                let co = as_obj(c, &cpath)?;
                let child =
                    self.tree(co, &cpath, effect.invert(), depth + 1, p.specificity, false)?;
                p.provisions.push(child);
            }
        }
        Ok(p)
    }

    /// The conditions of one provision (no children). `is_root` skips `period`, which bounds
    /// the consent itself at the root.
    fn conditions(
        &mut self,
        po: &Map<String, Value>,
        path: &str,
        effect: Effect,
        depth: u8,
        parent_specificity: u32,
        is_root: bool,
    ) -> Result<Provision, ConsentError> {
        let mut p = self.empty_root(path, effect);
        p.depth = depth;
        if let Some(actors) = po.get("actor") {
            for (i, a) in as_array(actors, &format!("{path}.actor"))?
                .iter()
                .enumerate()
            {
                let apath = format!("{path}.actor[{i}]");
                p.actors.push(self.actor(a, &apath)?);
            }
            if !p.actors.is_empty() {
                p.conditions.insert(Conditions::ACTOR);
            }
        }
        if let Some(purposes) = po.get("purpose") {
            for (i, c) in as_array(purposes, &format!("{path}.purpose"))?
                .iter()
                .enumerate()
            {
                p.purposes.push(coding(c, &format!("{path}.purpose[{i}]"))?);
            }
            if !p.purposes.is_empty() {
                p.conditions.insert(Conditions::PURPOSE);
            }
        }
        if !is_root && let Some(period) = opt_period(po.get("period"), &format!("{path}.period"))? {
            p.period = Some(period);
            p.conditions.insert(Conditions::PERIOD);
        }
        if let Some(actions) = po.get("action") {
            for (i, a) in as_array(actions, &format!("{path}.action"))?
                .iter()
                .enumerate()
            {
                let apath = format!("{path}.action[{i}]");
                let codings = codings_of_concept(a, &apath)?;
                if codings.is_empty() {
                    return Err(invalid(apath, "an action needs a coding"));
                }
                for c in codings {
                    let act =
                        Actions::from_code(&c.code).ok_or_else(|| ConsentError::Unsupported {
                            element: apath.clone(),
                            reason: format!("unknown consent action `{}`", c.code),
                        })?;
                    p.actions = p.actions.union(act);
                }
            }
            if !p.actions.is_empty() {
                p.conditions.insert(Conditions::ACTION);
            }
        }
        // Resource classes: STU3/R4 `class`, R5 `resourceType`. Media types (urn:ietf:bcp:13)
        // and R5 `documentType` are matched as codes of the resource.
        // At the Consent level (STU3 root), `resourceType` is the resource's own type.
        let class_keys: &[&str] = if path == "Consent" {
            &[]
        } else {
            &["class", "resourceType", "documentType"]
        };
        for &key in class_keys {
            let Some(list) = po.get(key) else { continue };
            for (i, c) in as_array(list, &format!("{path}.{key}"))?.iter().enumerate() {
                let cpath = format!("{path}.{key}[{i}]");
                let c = coding(c, &cpath)?;
                let is_type = key != "documentType"
                    && c.system
                        .as_deref()
                        .is_none_or(|s| s == "http://hl7.org/fhir/resource-types")
                    && c.code
                        .chars()
                        .next()
                        .is_some_and(|ch| ch.is_ascii_uppercase())
                    && c.code.chars().all(|ch| ch.is_ascii_alphanumeric());
                if is_type {
                    p.resource_types.push(c.code);
                } else if c.code.starts_with("http") {
                    return Err(ConsentError::Unsupported {
                        element: cpath,
                        reason: "profile-based classes are not enforced".into(),
                    });
                } else {
                    p.codes.push(c);
                }
            }
        }
        if !p.resource_types.is_empty() {
            p.conditions.insert(Conditions::RESOURCE_TYPE);
        }
        if let Some(codes) = po.get("code").filter(|_| path != "Consent") {
            for (i, c) in as_array(codes, &format!("{path}.code"))?.iter().enumerate() {
                let cpath = format!("{path}.code[{i}]");
                if c.get("coding").is_some() || c.get("text").is_some() {
                    let cs = codings_of_concept(c, &cpath)?;
                    if cs.is_empty() {
                        return Err(invalid(cpath, "a code needs a coding"));
                    }
                    p.codes.extend(cs);
                } else {
                    p.codes.push(coding(c, &cpath)?);
                }
            }
        }
        if !p.codes.is_empty() {
            p.conditions.insert(Conditions::CODE);
        }
        if let Some(labels) = po.get("securityLabel") {
            for (i, c) in as_array(labels, &format!("{path}.securityLabel"))?
                .iter()
                .enumerate()
            {
                p.security_labels
                    .push(coding(c, &format!("{path}.securityLabel[{i}]"))?);
            }
            if !p.security_labels.is_empty() {
                p.conditions.insert(Conditions::SECURITY_LABEL);
            }
        }
        if let Some(dp) = opt_period(po.get("dataPeriod"), &format!("{path}.dataPeriod"))? {
            p.data_period = Some(dp);
            p.conditions.insert(Conditions::DATA_PERIOD);
        }
        if let Some(data) = po.get("data") {
            for (i, d) in as_array(data, &format!("{path}.data"))?.iter().enumerate() {
                let dpath = format!("{path}.data[{i}]");
                let dobj = as_obj(d, &dpath)?;
                let meaning_code = opt_str(dobj, "meaning", &format!("{dpath}.meaning"))?
                    .ok_or_else(|| invalid(format!("{dpath}.meaning"), "is required"))?;
                let meaning = DataMeaning::from_code(meaning_code).ok_or_else(|| {
                    invalid(
                        format!("{dpath}.meaning"),
                        format!("unknown meaning `{meaning_code}`"),
                    )
                })?;
                let r = dobj
                    .get("reference")
                    .ok_or_else(|| invalid(format!("{dpath}.reference"), "is required"))?;
                let reference = self.reference(r, &format!("{dpath}.reference"))?;
                p.data.push(DataRule { meaning, reference });
            }
            if !p.data.is_empty() {
                p.conditions.insert(Conditions::DATA);
            }
        }
        if po.get("expression").is_some() {
            return Err(ConsentError::Unsupported {
                element: format!("{path}.expression"),
                reason: "expression-based provisions are not enforced".into(),
            });
        }
        p.specificity = parent_specificity + p.conditions.count();
        Ok(p)
    }

    fn actor(&mut self, a: &Value, path: &str) -> Result<ActorRule, ConsentError> {
        let ao = as_obj(a, path)?;
        let mut rule = ActorRule {
            roles: Vec::new(),
            participation: None,
            party: None,
        };
        if let Some(role) = ao.get("role") {
            for c in codings_of_concept(role, &format!("{path}.role"))? {
                if c.system.as_deref() == Some(vocab::PARTICIPATION_TYPE) {
                    rule.participation = Some(c.code);
                } else {
                    rule.roles.push(c);
                }
            }
        }
        if let Some(r) = ao.get("reference") {
            let rpath = format!("{path}.reference");
            let ro = as_obj(r, &rpath)?;
            if ro.contains_key("reference") {
                let reference = self.reference(r, &rpath)?;
                let ty = reference.split('/').next().unwrap_or_default();
                if !matches!(
                    ty,
                    "Practitioner"
                        | "PractitionerRole"
                        | "Organization"
                        | "CareTeam"
                        | "RelatedPerson"
                        | "Device"
                        | "Patient"
                ) {
                    return Err(ConsentError::Unsupported {
                        element: format!("{rpath}.reference"),
                        reason: format!("actors of type `{ty}` are not matched"),
                    });
                }
                rule.party = Some(Party::Reference(reference));
            } else if let Some(ident) = ro.get("identifier") {
                let ipath = format!("{rpath}.identifier");
                let io = as_obj(ident, &ipath)?;
                let value = opt_str(io, "value", &format!("{ipath}.value"))?
                    .ok_or_else(|| invalid(format!("{ipath}.value"), "is required"))?;
                let system = opt_str(io, "system", &format!("{ipath}.system"))?;
                rule.party = Some(Party::Identifier {
                    system: system.map(str::to_owned),
                    value: value.to_owned(),
                });
            } else {
                return Err(invalid(
                    rpath,
                    "an actor reference needs `reference` or `identifier`",
                ));
            }
        }
        if rule.party.is_none() && rule.roles.is_empty() {
            return Err(invalid(
                format!("{path}.reference"),
                "an actor needs a reference, an identifier or a role",
            ));
        }
        Ok(rule)
    }

    /// A `Reference` value normalised to `Type/id`.
    fn reference(&mut self, r: &Value, path: &str) -> Result<String, ConsentError> {
        let ro = as_obj(r, path)?;
        let text = opt_str(ro, "reference", &format!("{path}.reference"))?.ok_or_else(|| {
            invalid(
                format!("{path}.reference"),
                "a literal reference is required",
            )
        })?;
        normalize_reference(text).ok_or_else(|| {
            invalid(
                format!("{path}.reference"),
                format!("`{text}` is not a `Type/id` reference"),
            )
        })
    }
}

/// `Type/id` from a relative or absolute reference, dropping any `_history/...` tail.
pub(crate) fn normalize_reference(text: &str) -> Option<String> {
    let text = text.split('#').next().unwrap_or_default();
    let text = match text.find("/_history/") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut parts = text.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    let type_ok = ty.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphanumeric());
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    (type_ok && id_ok).then(|| format!("{ty}/{id}"))
}

fn invalid(element: impl Into<String>, reason: impl Into<String>) -> ConsentError {
    ConsentError::Invalid {
        element: element.into(),
        reason: reason.into(),
    }
}

fn effect_from_code(code: &str, element: &str) -> Result<Effect, ConsentError> {
    match code {
        "permit" => Ok(Effect::Permit),
        "deny" => Ok(Effect::Deny),
        other => Err(invalid(
            element,
            format!("`{other}` is neither `permit` nor `deny`"),
        )),
    }
}

fn as_obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ConsentError> {
    v.as_object()
        .ok_or_else(|| invalid(path, "must be an object"))
}

fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a [Value], ConsentError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| invalid(path, "must be an array"))
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ConsentError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(path, "must be a string")),
    }
}

fn coding(v: &Value, path: &str) -> Result<Coding, ConsentError> {
    let o = as_obj(v, path)?;
    let code = opt_str(o, "code", &format!("{path}.code"))?
        .ok_or_else(|| invalid(format!("{path}.code"), "is required"))?;
    let system = opt_str(o, "system", &format!("{path}.system"))?;
    Ok(Coding::new(system, code))
}

fn codings_of_concept(v: &Value, path: &str) -> Result<Vec<Coding>, ConsentError> {
    let o = as_obj(v, path)?;
    let mut out = Vec::new();
    if let Some(list) = o.get("coding") {
        for (i, c) in as_array(list, &format!("{path}.coding"))?
            .iter()
            .enumerate()
        {
            out.push(coding(c, &format!("{path}.coding[{i}]"))?);
        }
    }
    Ok(out)
}

fn opt_period(v: Option<&Value>, path: &str) -> Result<Option<Period>, ConsentError> {
    let Some(v) = v else { return Ok(None) };
    let o = as_obj(v, path)?;
    let start = opt_str(o, "start", &format!("{path}.start"))?;
    let end = opt_str(o, "end", &format!("{path}.end"))?;
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    if let Some(s) = start
        && crate::time::parse_interval(s).is_none()
    {
        return Err(invalid(
            format!("{path}.start"),
            format!("`{s}` is not a FHIR dateTime"),
        ));
    }
    if let Some(e) = end
        && crate::time::parse_interval(e).is_none()
    {
        return Err(invalid(
            format!("{path}.end"),
            format!("`{e}` is not a FHIR dateTime"),
        ));
    }
    let period = Period::from_fhir(start, end).ok_or_else(|| invalid(path, "unreadable period"))?;
    if period.end <= period.start {
        return Err(invalid(path, "ends before it starts"));
    }
    Ok(Some(period))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConsentScope;
    use serde_json::json;

    #[test]
    fn references_normalise_to_type_and_id() {
        assert_eq!(
            normalize_reference("https://h.example/fhir/Practitioner/p1/_history/3").as_deref(),
            Some("Practitioner/p1")
        );
        assert_eq!(normalize_reference("urn:uuid:1234"), None);
        assert_eq!(normalize_reference("#contained"), None);
    }

    #[test]
    fn errors_name_the_element() {
        let c = json!({"resourceType":"Consent","status":"active",
            "patient":{"reference":"Patient/1"},
            "provision":{"type":"permit","actor":[{"reference":{"display":"x"}}]}});
        let e = parse_consent(&c, FhirVersion::R4).unwrap_err();
        assert_eq!(e.element(), "Consent.provision.actor[0].reference");
        let c = json!({"resourceType":"Consent","status":"on"});
        assert_eq!(
            parse_consent(&c, FhirVersion::R5).unwrap_err().element(),
            "Consent.status"
        );
    }

    #[test]
    fn lossy_input_is_reported_as_issues() {
        let c = json!({"resourceType":"Consent","id":"c","status":"active",
            "provision":[{"type":"deny","actor":[{"reference":{"reference":"Practitioner/a"}}]}]});
        let (consent, issues) = parse_consent(&c, FhirVersion::R5).unwrap();
        assert_eq!(consent.decision(), Effect::Deny);
        let at: Vec<&str> = issues.iter().map(|i| i.expression[0].as_str()).collect();
        assert_eq!(at, vec!["Consent.decision", "Consent.provision[0].type"]);
        // R5: the explicit type is ignored, the provision inverts the root.
        assert_eq!(consent.root.provisions[0].effect, Effect::Permit);

        let c = json!({"resourceType":"Consent","id":"c","status":"active",
            "patient":{"reference":"Patient/1"},
            "scope":{"coding":[{"code":"research"}]},
            "provision":{"type":"permit","provision":[{"type":"permit"}]}});
        let (consent, issues) = parse_consent(&c, FhirVersion::R4).unwrap();
        assert_eq!(consent.scope, ConsentScope::Research);
        // R4: a nested provision that does not invert its parent is kept as written.
        assert_eq!(consent.root.provisions[0].effect, Effect::Permit);
        let at: Vec<&str> = issues.iter().map(|i| i.expression[0].as_str()).collect();
        assert_eq!(
            at,
            vec!["Consent.scope", "Consent.provision.provision[0].type"]
        );
        assert_eq!(consent.patient.as_deref(), Some("Patient/1"));
    }

    #[test]
    fn specificity_accumulates_down_the_tree() {
        let c = json!({"resourceType":"Consent","id":"c","status":"active","decision":"deny",
            "provision":[{"actor":[{"reference":{"reference":"Practitioner/a"}}],
                "purpose":[{"code":"TREAT"}],
                "provision":[{"securityLabel":[{"code":"PSY"}]}]}]});
        let (consent, _) = parse_consent(&c, FhirVersion::R5).unwrap();
        let specs: Vec<(u32, u8, u32)> = consent
            .provisions()
            .iter()
            .map(|p| (p.specificity, p.depth, p.ordinal))
            .collect();
        assert_eq!(specs, vec![(0, 0, 0), (2, 1, 1), (3, 2, 2)]);
    }

    #[test]
    fn versions_are_detected_from_shape() {
        assert_eq!(detect_version(&json!({"decision":"deny"})), FhirVersion::R5);
        assert_eq!(detect_version(&json!({"except":[]})), FhirVersion::Stu3);
        assert_eq!(
            detect_version(&json!({"provision":{"type":"deny"}})),
            FhirVersion::R4
        );
    }
}
