//! Whose data a request names: search parameters parsed once (query string and `_search`
//! form alike), and the patients they name.
//!
//! Owns the reading of parameter names (`code[:modifier][.chain]`) and values (comma lists
//! with `\,` escapes), and the rule that turns them into a [`RequestPatients`]. Leaves out
//! what the gateway does with the answer (decide before forwarding, or per resource).

use std::collections::BTreeSet;

use super::{PatientRef, ReferenceContext, data};
use crate::FhirVersion;

/// One search parameter as sent: `name[:modifier][.chain]=value`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchParam {
    /// The parameter as written before `=`, decoded (`subject:Patient.name`).
    pub raw_name: String,
    /// The search parameter code (`subject`).
    pub code: String,
    /// The modifier after `:` (`Patient`, `missing`, `identifier`), if any.
    pub modifier: Option<String>,
    /// The chain after the first `.` (`name`, `organization.name`), if any.
    pub chain: Option<String>,
    /// The value, decoded.
    pub value: String,
}

impl SearchParam {
    /// The comma-separated values (a `\,` is a comma inside a value).
    pub fn values(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        let mut chars = self.value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&',') => {
                    current.push(',');
                    chars.next();
                }
                ',' => out.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        out.push(current);
        out
    }
}

/// Parses a query string or an `application/x-www-form-urlencoded` body (`+` is a space).
/// Empty pairs are skipped.
pub fn parse_search(raw: &str) -> Vec<SearchParam> {
    form_urlencoded::parse(raw.as_bytes())
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| {
            let name = name.into_owned();
            let (head, chain) = match name.split_once('.') {
                Some((h, c)) => (h.to_owned(), Some(c.to_owned())),
                None => (name.clone(), None),
            };
            let (code, modifier) = match head.split_once(':') {
                Some((c, m)) => (c.to_owned(), Some(m.to_owned())),
                None => (head, None),
            };
            SearchParam {
                raw_name: name,
                code,
                modifier,
                chain,
                value: value.into_owned(),
            }
        })
        .collect()
}

/// Whose data a request reads, as far as the request itself tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestPatients {
    /// Everything the request can return belongs to (at least one of) these patients: the
    /// request is decided on them before it is forwarded.
    Named(BTreeSet<PatientRef>),
    /// The request does not say: each returned resource is decided on its own, and nothing
    /// in the answer may count or reveal what was withheld.
    Unnamed,
}

/// The patients a request names: `Patient/{id}` and anything below it; a Patient search by
/// `_id` or `identifier`; a search whose reference parameters that may be a Patient in
/// `version` (the compartment's and others, such as `Observation.focus`) name patients, by
/// `Patient/id`, an absolute Patient URL under a known base, an identifier of one of the
/// site's patient identifier systems (`:identifier`, `.identifier`), or a bare id (or `._id`
/// chain) where the parameter can only mean a Patient (`Observation.patient` from R4 on;
/// STU3's targets Patient and Group) or carries `:Patient`. Every value of a naming parameter
/// must name a patient, else it names none. Parameters combine with AND, so the patients
/// named by every naming parameter together bound the answer.
pub fn request_patients(
    version: FhirVersion,
    resource_type: Option<&str>,
    id: Option<&str>,
    params: &[SearchParam],
    context: &ReferenceContext,
) -> RequestPatients {
    let Some(resource_type) = resource_type else {
        return RequestPatients::Unnamed;
    };
    if let Some(id) = id {
        return if resource_type == "Patient" {
            RequestPatients::Named(BTreeSet::from([PatientRef::Local(id.to_owned())]))
        } else {
            RequestPatients::Unnamed
        };
    }
    let mut named: Option<BTreeSet<PatientRef>> = None;
    for param in params {
        let set = if resource_type == "Patient" {
            patient_search_names(param, context)
        } else {
            data::patient_search_param(version, resource_type, &param.code)
                .and_then(|p| reference_param_names(param, p.only_patient, context))
        };
        if let Some(set) = set {
            named.get_or_insert_with(BTreeSet::new).extend(set);
        }
    }
    match named {
        Some(set) if !set.is_empty() => RequestPatients::Named(set),
        _ => RequestPatients::Unnamed,
    }
}

/// What a parameter of a Patient search names: `_id`, or `identifier` of a known system.
fn patient_search_names(
    param: &SearchParam,
    context: &ReferenceContext,
) -> Option<BTreeSet<PatientRef>> {
    if param.chain.is_some() {
        return None;
    }
    match (param.code.as_str(), param.modifier.as_deref()) {
        ("_id", None) => all(param, |v| local_id(v).map(PatientRef::Local)),
        ("identifier", None) => all(param, |v| identifier(v, context)),
        _ => None,
    }
}

/// What a reference parameter whose value may be a Patient names. A bare id (as a value or
/// through `._id`) names a patient only when the parameter can mean nothing else
/// (`only_patient`, or the `:Patient` modifier); `Patient/id`, an absolute Patient URL and an
/// identifier of a patient identifier system always do.
fn reference_param_names(
    param: &SearchParam,
    only_patient: bool,
    context: &ReferenceContext,
) -> Option<BTreeSet<PatientRef>> {
    let typed = only_patient || param.modifier.as_deref() == Some("Patient");
    match (param.modifier.as_deref(), param.chain.as_deref()) {
        (None | Some("Patient"), None) => all(param, |v| patient_reference(v, typed, context)),
        (None | Some("Patient"), Some("_id")) if typed => {
            all(param, |v| local_id(v).map(PatientRef::Local))
        }
        (None | Some("Patient"), Some("identifier")) => all(param, |v| identifier(v, context)),
        (Some("identifier"), None) => all(param, |v| identifier(v, context)),
        _ => None,
    }
}

/// Every value of `param` mapped by `f`, or `None` when one does not map.
fn all(
    param: &SearchParam,
    f: impl Fn(&str) -> Option<PatientRef>,
) -> Option<BTreeSet<PatientRef>> {
    param.values().iter().map(|v| f(v)).collect()
}

/// A patient reference as a search value: `id` (when the parameter can only mean a Patient:
/// `typed`), `Patient/id`, or an absolute URL of a Patient under a known base.
fn patient_reference(value: &str, typed: bool, context: &ReferenceContext) -> Option<PatientRef> {
    if let Some(id) = local_id(value) {
        return typed.then_some(PatientRef::Local(id));
    }
    if let Some(id) = value.strip_prefix("Patient/") {
        return local_id(id).map(PatientRef::Local);
    }
    let (base, id) = value.trim_end_matches('/').rsplit_once("/Patient/")?;
    let id = local_id(id)?;
    let base = base.trim_end_matches('/');
    if context
        .local_bases
        .iter()
        .any(|b| b.trim_end_matches('/') == base)
    {
        return Some(PatientRef::Local(id));
    }
    context
        .other_sites
        .iter()
        .find(|(b, _)| b.trim_end_matches('/') == base)
        .map(|(_, site)| PatientRef::Site {
            site: site.clone(),
            id,
        })
}

/// A FHIR id (`[A-Za-z0-9\-\.]{1,64}`).
fn local_id(value: &str) -> Option<String> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !value.bytes().all(|b| b == b'.');
    ok.then(|| value.to_owned())
}

/// `system|value` of one of the site's patient identifier systems.
fn identifier(value: &str, context: &ReferenceContext) -> Option<PatientRef> {
    let (system, value) = value.split_once('|')?;
    (!value.is_empty()
        && context
            .patient_identifier_systems
            .iter()
            .any(|s| s == system))
    .then(|| PatientRef::Identifier {
        system: system.to_owned(),
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ReferenceContext {
        ReferenceContext {
            local_bases: vec!["https://gw.test/fhir/st-mary".into()],
            other_sites: Vec::new(),
            patient_identifier_systems: vec!["urn:mrn".into()],
        }
    }

    fn named(resource_type: &str, id: Option<&str>, query: &str) -> Option<Vec<PatientRef>> {
        match request_patients(
            FhirVersion::R4,
            Some(resource_type),
            id,
            &parse_search(query),
            &context(),
        ) {
            RequestPatients::Named(set) => Some(set.into_iter().collect()),
            RequestPatients::Unnamed => None,
        }
    }

    fn local(ids: &[&str]) -> Option<Vec<PatientRef>> {
        Some(ids.iter().map(|i| PatientRef::Local((*i).into())).collect())
    }

    #[test]
    fn requests_name_their_patients_in_every_form() {
        assert_eq!(named("Patient", Some("a"), ""), local(&["a"]));
        assert_eq!(named("Observation", Some("o"), ""), None);
        assert_eq!(
            named("Observation", None, "patient=a&code=x"),
            local(&["a"])
        );
        assert_eq!(
            named("Observation", None, "subject=Patient%2Fa"),
            local(&["a"])
        );
        assert_eq!(
            named("Observation", None, "subject:Patient=a"),
            local(&["a"])
        );
        assert_eq!(
            named("Observation", None, "patient=a,b"),
            local(&["a", "b"])
        );
        assert_eq!(
            named("Observation", None, "patient=a&patient=b"),
            local(&["a", "b"])
        );
        assert_eq!(named("Observation", None, "patient._id=a"), local(&["a"]));
        assert_eq!(
            named("Observation", None, "subject:Patient._id=a"),
            local(&["a"])
        );
        assert_eq!(
            named(
                "Observation",
                None,
                "subject=https%3A%2F%2Fgw.test%2Ffhir%2Fst-mary%2FPatient%2Fa"
            ),
            local(&["a"])
        );
        assert_eq!(named("Patient", None, "_id=a,b"), local(&["a", "b"]));
        assert_eq!(
            named("Observation", None, "patient.identifier=urn:mrn%7C42"),
            Some(vec![PatientRef::Identifier {
                system: "urn:mrn".into(),
                value: "42".into()
            }])
        );
    }

    #[test]
    fn forms_that_do_not_name_patients_are_unnamed() {
        for (t, q) in [
            ("Observation", "code=x"),
            ("Observation", "patient.name=smith"),
            ("Observation", "subject:Patient.name=smith"),
            ("Observation", "patient.identifier=urn:other%7C1"),
            ("Observation", "subject=Group/g"),
            ("Observation", "patient:missing=true"),
            ("Observation", "patient=a,Group/g"),
            ("Patient", "name=smith"),
            ("Patient", "_has:Condition:patient:code=x"),
            (
                "Observation",
                "subject=https%3A%2F%2Felsewhere%2FPatient%2Fa",
            ),
        ] {
            assert_eq!(named(t, None, q), None, "{t}?{q}");
        }
    }

    fn named_in(version: FhirVersion, resource_type: &str, query: &str) -> Option<Vec<PatientRef>> {
        match request_patients(
            version,
            Some(resource_type),
            None,
            &parse_search(query),
            &context(),
        ) {
            RequestPatients::Named(set) => Some(set.into_iter().collect()),
            RequestPatients::Unnamed => None,
        }
    }

    #[test]
    fn every_parameter_that_may_be_a_patient_names_one_in_every_version() {
        let mrn = Some(vec![PatientRef::Identifier {
            system: "urn:mrn".into(),
            value: "42".into(),
        }]);
        let mut checked = 0;
        for version in FhirVersion::ALL {
            // A Patient search names patients by `_id` and `identifier` only (tested above).
            for t in data::tables(version)
                .types
                .iter()
                .filter(|t| t.name != "Patient")
            {
                for code in data::patient_search_params(version, t.name) {
                    let q = format!("{code}=Patient%2Fx");
                    assert_eq!(
                        named_in(version, t.name, &q),
                        local(&["x"]),
                        "{t:?}?{q}",
                        t = t.name
                    );
                    let q = format!("{code}:Patient=x");
                    assert_eq!(
                        named_in(version, t.name, &q),
                        local(&["x"]),
                        "{}?{q}",
                        t.name
                    );
                    let q = format!("{code}:identifier=urn:mrn%7C42");
                    assert_eq!(named_in(version, t.name, &q), mrn, "{}?{q}", t.name);
                    let q = format!("{code}=Patient%2Fx,Patient%2Fy");
                    assert_eq!(
                        named_in(version, t.name, &q),
                        local(&["x", "y"]),
                        "{}?{q}",
                        t.name
                    );
                    let q = format!("{code}=Group%2Fg");
                    assert_eq!(named_in(version, t.name, &q), None, "{}?{q}", t.name);
                    checked += 1;
                }
            }
        }
        assert!(checked > 700, "only {checked} parameters checked");
    }

    #[test]
    fn a_bare_id_names_a_patient_only_where_nothing_else_is_meant() {
        for version in FhirVersion::ALL {
            let v = |t: &str, q: &str| named_in(version, t, q);
            // STU3's `patient` of clinical resources targets Patient and Group (R4 filters it
            // to Patient): a bare id there is not a patient.
            let bare = if version == FhirVersion::Stu3 {
                None
            } else {
                local(&["a"])
            };
            assert_eq!(v("Observation", "patient=a"), bare, "{version:?}");
            assert_eq!(v("Observation", "patient._id=a"), bare, "{version:?}");
            assert_eq!(v("Observation", "patient=Patient%2Fa"), local(&["a"]));
            assert_eq!(v("Observation", "subject=a"), None, "{version:?}");
            assert_eq!(v("Observation", "subject._id=a"), None, "{version:?}");
            assert_eq!(v("Observation", "subject:Patient=a"), local(&["a"]));
            assert_eq!(v("Observation", "subject:Patient._id=a"), local(&["a"]));
            assert_eq!(v("Observation", "performer=Patient%2Fa"), local(&["a"]));
            assert_eq!(v("Observation", "performer=a"), None, "{version:?}");
            assert_eq!(v("Group", "member=Patient%2Fa"), local(&["a"]));
            assert_eq!(v("Account", "patient=a"), local(&["a"]), "{version:?}");
            assert_eq!(v("Observation", "code=a"), None);
            assert_eq!(v("Observation", "derived-from=Patient%2Fa"), None);
        }
        use FhirVersion::*;
        assert_eq!(
            named_in(R4, "Observation", "focus=Patient%2Fa"),
            local(&["a"])
        );
        assert_eq!(named_in(Stu3, "Observation", "focus=Patient%2Fa"), None);
        assert_eq!(named_in(R4, "Task", "patient=a"), local(&["a"]));
        assert_eq!(
            named_in(R4, "ResearchSubject", "individual=a"),
            local(&["a"])
        );
        assert_eq!(
            named_in(R5, "ResearchSubject", "subject=Patient%2Fa"),
            local(&["a"])
        );
        assert_eq!(named_in(R4, "Provenance", "patient=a"), local(&["a"]));
        assert_eq!(named_in(R4, "Provenance", "target=a"), None);
        assert_eq!(
            named_in(R4, "AuditEvent", "entity=Patient%2Fa"),
            local(&["a"])
        );
    }

    #[test]
    fn hostile_queries_never_panic() {
        for raw in [
            "",
            "&&&=&=",
            "%",
            "%ZZ=%C3",
            "%FF%FE=%80",
            "patient=%E2%82",
            ".=.",
            ":=:",
            "patient:=",
            "patient.=,",
            "subject:Patient._id=\\,\\",
            "_summary=%00&_elements=%F0%9F%98%80",
            "patient=Patient%2F%C3%A9&subject=https%3A%2F%2Fgw.test%2Ffhir%2Fst-mary%2FPatient%2F",
        ] {
            let params = parse_search(raw);
            for p in &params {
                let _ = p.values();
            }
            for version in FhirVersion::ALL {
                for t in [Some("Observation"), Some("Patient"), Some("X"), None] {
                    let _ = request_patients(version, t, None, &params, &context());
                }
            }
            let _ = crate::shaping::Shape::from_params(&params);
        }
    }

    #[test]
    fn values_split_on_unescaped_commas() {
        let p = &parse_search("code=a%5C%2Cb,c")[0];
        assert_eq!(p.values(), ["a,b", "c"]);
        let p = &parse_search("subject:Patient.name=x")[0];
        assert_eq!(
            (p.code.as_str(), p.modifier.as_deref(), p.chain.as_deref()),
            ("subject", Some("Patient"), Some("name"))
        );
    }
}
