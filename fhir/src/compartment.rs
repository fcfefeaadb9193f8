//! Whose data is this: THE rule. For a resource in a given FHIR version, the set of patients
//! it belongs to; for a search, the patients its parameters name.
//!
//! Consent, scopes, receipts and disclosures all ask this module; nothing else answers the
//! question. The rule is the Patient CompartmentDefinition of each version with the reference
//! targets of every element (as data, see `compartment/data.rs` for where it came from) plus
//! a walk of every Reference in the resource. Exactly:
//!
//! - A literal reference to a Patient places its patient wherever it appears: relative
//!   (`Patient/a`), versioned (`…/_history/2`), absolute under a local base (`Local`) or
//!   another known site's (`Site`), `urn:uuid:` / absolute to a Bundle entry's `fullUrl`
//!   (the entry's Patient), a conditional `Patient?identifier=system|value` of a patient
//!   identifier system (`Identifier`).
//! - A reference the rule cannot place counts one *unknown* patient when it names a Patient
//!   (an unknown base, another conditional form) or when its element may refer to a Patient
//!   (its definition targets Patient or any resource, or `Reference.type` says Patient) and it
//!   is identifier-only of an unknown system, `urn:` outside a Bundle, a `#id` not
//!   contained, or unreadable; a known identifier beside it places it instead. A
//!   display-only reference names no resource and reaches no patient (its text is the
//!   holding resource's own). A
//!   `Reference.type` naming another type, or an element that cannot refer to a Patient,
//!   makes such a reference not a patient's.
//! - A Patient resource is its own patient: by `id` where it stands alone or embedded
//!   without a `fullUrl` (`Bundle.entry`, `Parameters.parameter.resource`), by its
//!   `fullUrl` in a Bundle entry, by an identifier of a patient identifier system when
//!   contained or when the `fullUrl` cannot be placed; else unknown.
//! - Embedded resources (contained, Bundle entries, `Parameters` parameters and parts, any
//!   object with a `resourceType` naming a type, wherever it is) are walked with their own
//!   type's definition; extensions everywhere (`extension`, `modifierExtension`, a
//!   primitive's `_name`); `Bundle.entry.request.url` / `response.location` and R5's
//!   `Subscription.filterBy.value` as locations (`Patient/a/…`).
//! - An element the tables do not know (another version's, a custom one) is read as
//!   possibly a reference to a Patient; JSON nested deeper than [`MAX_DEPTH`] counts one
//!   unknown patient per cut.
//!
//! Callers decide an unknown patient as a patient whose consents cannot be read: denied.
//!
//! Leaves out: consent (what a patient permits), and resolving an identifier to a site-local
//! id (that needs the site: the gateway does it and asks again).

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::FhirVersion;
use data::Field;

pub(crate) mod data;
mod search;

pub use search::{RequestPatients, SearchParam, parse_search, request_patients};

/// Where references in one site's answers may point, as the caller knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceContext {
    /// Base URLs (without trailing slash) under which `Patient/{id}` is a patient of the site
    /// answering: its upstream base, the gateway's public base for the site.
    pub local_bases: Vec<String>,
    /// Base URLs of other known sites (without trailing slash), with their site ids.
    pub other_sites: Vec<(String, String)>,
    /// Identifier systems that identify a patient at the site answering.
    pub patient_identifier_systems: Vec<String>,
}

/// A patient a resource or request belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatientRef {
    /// `Patient/{id}` of the site answering.
    Local(String),
    /// `Patient/{id}` of another known site.
    Site { site: String, id: String },
    /// A patient named by an identifier of one of the site's patient identifier systems;
    /// the gateway resolves it to a [`PatientRef::Local`].
    Identifier { system: String, value: String },
}

/// The patients a resource belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patients {
    /// Every patient the rule placed.
    pub known: BTreeSet<PatientRef>,
    /// How many references to a patient could not be placed (counts only: never which).
    pub unknown: usize,
}

impl Patients {
    /// Whether the resource is a patient's data at all.
    pub fn is_patient_data(&self) -> bool {
        !self.known.is_empty() || self.unknown > 0
    }

    /// Whether every patient it belongs to is placed.
    pub fn all_known(&self) -> bool {
        self.unknown == 0
    }

    /// The site-local patient ids placed (`Local`), in order.
    pub fn local_ids(&self) -> impl Iterator<Item = &str> {
        self.known.iter().filter_map(|p| match p {
            PatientRef::Local(id) => Some(id.as_str()),
            _ => None,
        })
    }

    fn add(&mut self, p: PatientRef) {
        self.known.insert(p);
    }
}

/// How deep the walk goes into nested JSON (objects and arrays, embedded resources
/// included) before it stops and counts what lies beyond as one unknown patient. Real
/// resources nest far less; `serde_json` parses at most 128 levels.
pub const MAX_DEPTH: usize = 100;

/// The patients `resource` (of FHIR `version`) belongs to, under `context`.
///
/// Never panics, whatever the input; allocates only for what it finds (and one map of
/// `fullUrl`s per walk that meets a Bundle).
pub fn patients_of(resource: &Value, version: FhirVersion, context: &ReferenceContext) -> Patients {
    let mut walker = Walker {
        tables: data::tables(version),
        context,
        out: Patients::default(),
        full_urls: HashMap::new(),
        container: None,
        depth: 0,
    };
    walker.value(resource, None, Place::Root);
    walker.out
}

/// Reads the tables of every version now instead of on first use (each is parsed once, in
/// a few milliseconds), so that no request pays for it: call it at start.
pub fn preload() {
    for version in FhirVersion::ALL {
        let _ = data::tables(version);
    }
}

/// Whether a resource of `resource_type` can belong to a patient at all in `version`: a
/// Patient, or a type of the Patient compartment.
pub fn in_patient_compartment(version: FhirVersion, resource_type: &str) -> bool {
    resource_type == "Patient" || !data::patient_params(version, resource_type).is_empty()
}

/// The search parameters of `resource_type` that put it in the Patient compartment in
/// `version` (`Observation` → `subject`, `performer`), in the definition's order.
pub fn patient_params(version: FhirVersion, resource_type: &str) -> &'static [&'static str] {
    data::patient_params(version, resource_type)
}

/// Every reference search parameter of `resource_type` whose value may be a Patient in
/// `version` (`Observation` → `focus`, `patient`, `performer`, `subject`), sorted.
pub fn patient_search_params(version: FhirVersion, resource_type: &str) -> &'static [&'static str] {
    data::patient_search_params(version, resource_type)
}

/// The elements each compartment parameter of `resource_type` reads (`Procedure` →
/// `performer` → `Procedure.performer.actor`), as element paths (see
/// [`may_refer_to_patient`]).
pub fn compartment_paths(
    version: FhirVersion,
    resource_type: &str,
) -> &'static [(&'static str, Vec<&'static str>)] {
    data::tables(version)
        .type_entry(resource_type)
        .map(|t| t.compartment_paths.as_slice())
        .unwrap_or(&[])
}

/// Whether the element at `path` of a `resource_type` may hold a Reference to a Patient in
/// `version`. Paths are JSON names joined by `.`, without array indices, starting with the
/// type (`Procedure.performer.actor`; the type is added when missing), a choice element as
/// spelled in JSON (`Observation.extension.valueReference`), a CodeableReference's
/// reference as `….reference`. An element the tables do not know may: the rule reads it so.
pub fn may_refer_to_patient(version: FhirVersion, resource_type: &str, path: &str) -> bool {
    match path.split_once('.') {
        Some((first, _)) if first == resource_type => data::may_refer_to_patient(version, path),
        _ if path == resource_type => false,
        _ => data::may_refer_to_patient(version, &format!("{resource_type}.{path}")),
    }
}

/// Every element path of `resource_type` in `version` whose Reference may be a Patient (see
/// [`may_refer_to_patient`] for the form): each recursive structure at its first level,
/// extensions only as the resource's own `extension.valueReference`.
pub fn patient_reference_paths(version: FhirVersion, resource_type: &str) -> Vec<String> {
    data::patient_reference_paths(version, resource_type)
}

/// Where a resource sits in the one being walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place<'v> {
    /// The resource asked about, or one embedded without a `fullUrl`: its `id` is its
    /// identity at the site.
    Root,
    /// `contained`: its id is local to its container.
    Contained,
    /// A Bundle entry: its `fullUrl` is its identity.
    Entry(&'v str),
}

/// Where a literal reference points.
enum Placed {
    Patient(PatientRef),
    /// Not a patient.
    NotPatient,
    /// A patient the rule cannot place (an unknown base, a conditional reference).
    PatientUnplaced,
    /// Anything the rule cannot read: a patient when the element may be one.
    Unplaced,
}

/// Whose base a reference is under.
#[derive(Clone, Copy)]
enum Origin<'c> {
    Local,
    Site(&'c str),
}

struct Walker<'v, 'c> {
    tables: &'static data::Tables,
    context: &'c ReferenceContext,
    out: Patients,
    /// `Bundle.entry.fullUrl` → entry resource, for every Bundle met (for `urn:uuid:` and
    /// absolute references inside it).
    full_urls: HashMap<&'v str, &'v Value>,
    /// The resource whose `contained` a `#id` reference points into.
    container: Option<&'v Map<String, Value>>,
    depth: usize,
}

impl<'v> Walker<'v, '_> {
    fn value(&mut self, value: &'v Value, field: Option<Field>, place: Place<'v>) {
        if let Value::String(text) = value {
            if field == Some(Field::Location) {
                self.location(text);
            }
            return;
        }
        if !matches!(value, Value::Array(_) | Value::Object(_)) || !self.enter() {
            return;
        }
        match value {
            Value::Array(items) => {
                for item in items {
                    self.value(item, field, place);
                }
            }
            Value::Object(object) => self.object(object, field, place),
            _ => {}
        }
        self.depth -= 1;
    }

    /// One level deeper, or `false` (and one unknown patient) past [`MAX_DEPTH`].
    fn enter(&mut self) -> bool {
        if self.depth >= MAX_DEPTH {
            self.out.unknown += 1;
            return false;
        }
        self.depth += 1;
        true
    }

    fn object(&mut self, object: &'v Map<String, Value>, field: Option<Field>, place: Place<'v>) {
        // Whatever the element, an object with a resourceType naming a type is a resource (a
        // hostile answer may put one anywhere), unless its structure has an element of that
        // name (`ExampleScenario.instance.resourceType`).
        if let Some(Value::String(resource_type)) = object.get("resourceType")
            && is_type_name(resource_type)
            && !self.names_resource_type(field)
        {
            self.resource(object, resource_type, place);
            return;
        }
        match field {
            Some(Field::Reference { may_be_patient }) => {
                self.reference(object, may_be_patient);
                self.fields(object, self.tables.reference, None);
            }
            Some(Field::CodeableReference { may_be_patient }) => {
                // Its `reference` sent as a string instead of a Reference: read all the same.
                if object.get("reference").is_some_and(Value::is_string) {
                    self.reference(object, may_be_patient);
                }
                self.fields(object, self.tables.codeable_reference, Some(may_be_patient));
            }
            Some(Field::Struct(at)) => {
                // A Reference where the definition has none (an upstream may send such JSON:
                // a `reference` on a backbone element, directly under `extension`, in a list
                // in a list; a string where the definition's `reference` element is a
                // Reference, `Consent.provision.actor`; an identifier-only Reference where
                // the structure has no `identifier`): still a Reference to the rule, or an
                // unknown patient.
                let structure = self.tables.struct_at(at);
                if object.get("reference").is_some_and(Value::is_string)
                    || structure.field("identifier").is_none()
                        && !object.contains_key("reference")
                        && is_reference(object)
                {
                    self.reference(object, true);
                }
                self.fields(object, Some(at), None)
            }
            Some(Field::Resource | Field::Location | Field::Plain) | None => {
                if is_reference(object) {
                    self.reference(object, true);
                }
                self.fields(object, None, None);
            }
        }
    }

    /// Whether `field` is a structure with an element named `resourceType`.
    fn names_resource_type(&self, field: Option<Field>) -> bool {
        match field {
            Some(Field::Struct(at)) => {
                self.tables.struct_at(at).field("resourceType") == Some(Field::Plain)
            }
            _ => false,
        }
    }

    /// The fields of an object of structure `at` (`None`: unknown, every object in it read
    /// as possibly a reference); `codeable`: the object is a CodeableReference whose
    /// `reference` may / may not be a Patient.
    fn fields(&mut self, object: &'v Map<String, Value>, at: Option<u32>, codeable: Option<bool>) {
        let structure = at.map(|at| self.tables.struct_at(at));
        let strings = structure.is_some_and(|s| s.has_location);
        let mut full_url: Option<Option<&'v str>> = None;
        for (name, value) in object {
            if !strings && !matches!(value, Value::Object(_) | Value::Array(_)) {
                continue;
            }
            let name = name.as_str();
            let field = match name {
                // An element of that name (STU3 `Claim.payee.resourceType`, a Coding) is read
                // as anything unknown; a resource's own is its type.
                "resourceType" if structure.and_then(|s| s.field(name)) == Some(Field::Plain) => {
                    None
                }
                // A resource's own type; anything else under that name (an object or a list:
                // no FHIR element) is read as anything unknown.
                "resourceType" if !matches!(value, Value::Object(_) | Value::Array(_)) => continue,
                "resourceType" => None,
                "extension" | "modifierExtension" => self.tables.extension.map(Field::Struct),
                "contained" => Some(Field::Resource),
                "reference" if codeable.is_some() => Some(Field::Reference {
                    may_be_patient: codeable == Some(true),
                }),
                _ if name.starts_with('_') => None,
                _ => structure.and_then(|s| s.field(name)),
            };
            let place = if name == "contained" {
                Place::Contained
            } else if matches!(field, None | Some(Field::Resource)) {
                let url =
                    *full_url.get_or_insert_with(|| object.get("fullUrl").and_then(Value::as_str));
                url.map_or(Place::Root, Place::Entry)
            } else {
                Place::Root
            };
            self.value(value, field, place);
        }
    }

    fn resource(&mut self, object: &'v Map<String, Value>, resource_type: &str, place: Place<'v>) {
        let outer = self.container;
        if place != Place::Contained {
            self.container = Some(object);
        }
        if resource_type == "Patient" {
            self.patient_resource(object, place);
        }
        if resource_type == "Bundle" {
            self.bundle_full_urls(object);
        }
        // A `reference` string on the resource itself (a Reference's element, or a uri such
        // as `DetectedIssue.reference`): a patient when it names one.
        if object.get("reference").is_some_and(Value::is_string) {
            self.reference(object, false);
        }
        let root = self.tables.type_entry(resource_type).and_then(|t| t.root);
        self.fields(object, root, None);
        self.container = outer;
    }

    fn patient_resource(&mut self, patient: &'v Map<String, Value>, place: Place<'v>) {
        let id = patient
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| is_id(id));
        match self.patient_placement(patient, place) {
            Some(p) => {
                // An entry whose fullUrl names another id than its own: both (strict).
                if let (PatientRef::Local(url_id), Place::Entry(_), Some(id)) = (&p, place, id)
                    && url_id != id
                {
                    self.out.add(PatientRef::Local(id.to_owned()));
                }
                self.out.add(p);
            }
            None => self.out.unknown += 1,
        }
    }

    /// The identity of a Patient resource at `place`, or `None` when it has none the rule
    /// can place.
    fn patient_placement(
        &self,
        patient: &'v Map<String, Value>,
        place: Place<'v>,
    ) -> Option<PatientRef> {
        let own = match place {
            Place::Root => patient
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| is_id(id))
                .map(|id| PatientRef::Local(id.to_owned())),
            Place::Contained => None,
            Place::Entry(full_url) => match self.place_url(full_url, false) {
                Placed::Patient(p) => Some(p),
                _ => None,
            },
        };
        own.or_else(|| self.identifier_of_patient(patient))
    }

    /// A Patient without an identity at the site: placed by an identifier of a known system.
    fn identifier_of_patient(&self, patient: &Map<String, Value>) -> Option<PatientRef> {
        patient
            .get("identifier")?
            .as_array()?
            .iter()
            .find_map(|i| self.known_identifier(i))
    }

    fn known_identifier(&self, identifier: &Value) -> Option<PatientRef> {
        let system = identifier.get("system")?.as_str()?;
        let value = identifier.get("value")?.as_str()?;
        (!value.is_empty() && self.is_patient_system(system)).then(|| PatientRef::Identifier {
            system: system.to_owned(),
            value: value.to_owned(),
        })
    }

    fn is_patient_system(&self, system: &str) -> bool {
        self.context
            .patient_identifier_systems
            .iter()
            .any(|s| s == system)
    }

    fn bundle_full_urls(&mut self, bundle: &'v Map<String, Value>) {
        let Some(entries) = bundle.get("entry").and_then(Value::as_array) else {
            return;
        };
        for entry in entries {
            if let (Some(url), Some(resource)) = (
                entry.get("fullUrl").and_then(Value::as_str),
                entry.get("resource"),
            ) {
                self.full_urls.insert(url, resource);
            }
        }
    }

    /// A Reference on an element that may (`may_be_patient`) or may not point at a Patient.
    fn reference(&mut self, reference: &'v Map<String, Value>, may_be_patient: bool) {
        // `Reference.type` says what it points at (a type name or a definition's URL).
        let may_be_patient = match reference.get("type").and_then(Value::as_str) {
            Some(t) if is_patient_type(t) => true,
            Some(t) if !t.is_empty() && !is_any_type(t) => false,
            _ => may_be_patient,
        };
        match reference.get("reference") {
            Some(Value::String(text)) => match self.place_reference(text) {
                Placed::Patient(p) => self.out.add(p),
                Placed::NotPatient => {}
                Placed::PatientUnplaced => self.by_identifier(reference),
                Placed::Unplaced if may_be_patient => self.by_identifier(reference),
                Placed::Unplaced => {}
            },
            // Not a string: a malformed reference, unknown where it may be a Patient.
            Some(_) if may_be_patient => self.out.unknown += 1,
            Some(_) => {}
            // Identifier-only: placed by a known identifier, or unknown.
            None if may_be_patient && reference.contains_key("identifier") => {
                self.by_identifier(reference)
            }
            // Display-only (or empty): it names no resource, so no patient is reached through
            // it (a name in `display` is text of the resource that holds it).
            None => {}
        }
    }

    /// A patient reference placed by its identifier, or an unknown patient.
    fn by_identifier(&mut self, reference: &Map<String, Value>) {
        match reference
            .get("identifier")
            .and_then(|i| self.known_identifier(i))
        {
            Some(p) => self.out.add(p),
            None => self.out.unknown += 1,
        }
    }

    /// A uri locating a resource of the server (`Bundle.entry.request.url`).
    fn location(&mut self, text: &str) {
        match self.place_url(text, true) {
            Placed::Patient(p) => self.out.add(p),
            Placed::PatientUnplaced => self.out.unknown += 1,
            Placed::NotPatient | Placed::Unplaced => {}
        }
    }

    /// Where `Reference.reference` points.
    fn place_reference(&self, text: &str) -> Placed {
        if let Some(id) = text.strip_prefix('#') {
            // The container itself, or a contained resource (walked on its own).
            return if id.is_empty() || self.contains(id) {
                Placed::NotPatient
            } else {
                Placed::Unplaced
            };
        }
        let placed = self.place_url(text, false);
        if !matches!(placed, Placed::Unplaced | Placed::PatientUnplaced) {
            // What the reference itself says stands: an entry cannot hide `…/Patient/a`.
            return placed;
        }
        let Some(resource) = self.full_urls.get(text) else {
            return placed;
        };
        match resource.as_object() {
            Some(r) if r.get("resourceType").and_then(Value::as_str) == Some("Patient") => {
                match self.patient_placement(r, Place::Entry(text)) {
                    Some(p) => Placed::Patient(p),
                    None => Placed::PatientUnplaced,
                }
            }
            // `urn:uuid:` of another resource; a Patient URL stays a patient's.
            _ if matches!(placed, Placed::Unplaced) => Placed::NotPatient,
            _ => placed,
        }
    }

    /// Whether the container has a contained resource of id `id`.
    fn contains(&self, id: &str) -> bool {
        self.container
            .and_then(|c| c.get("contained"))
            .and_then(Value::as_array)
            .is_some_and(|all| {
                all.iter()
                    .any(|r| r.get("id").and_then(Value::as_str) == Some(id))
            })
    }

    /// `[base/]Type/id[/_history/v]` (or, `lenient`, anything after the id, as a location
    /// may have), `[base/]Type?query` (a conditional reference), `urn:…`.
    fn place_url(&self, text: &str, lenient: bool) -> Placed {
        for base in &self.context.local_bases {
            if let Some(rest) = under_base(text, base) {
                return self.relative(rest, Origin::Local, lenient);
            }
        }
        for (base, site) in &self.context.other_sites {
            if let Some(rest) = under_base(text, base) {
                return self.relative(rest, Origin::Site(site), lenient);
            }
        }
        if text.contains("://") || text.starts_with("urn:") {
            // Under a base the rule does not know.
            let path = text.split_once('?').map_or(text, |(p, _)| p);
            return if path.split('/').any(|s| s == "Patient") {
                Placed::PatientUnplaced
            } else if last_type(path).is_some() {
                Placed::NotPatient
            } else {
                Placed::Unplaced
            };
        }
        self.relative(text, Origin::Local, lenient)
    }

    /// A path relative to a base.
    fn relative(&self, text: &str, origin: Origin<'_>, lenient: bool) -> Placed {
        let (path, query) = match text.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (text, None),
        };
        let mut segments = path.split('/');
        let resource_type = segments.next().unwrap_or_default();
        if resource_type != "Patient" {
            return if path.split('/').any(|s| s == "Patient") {
                Placed::PatientUnplaced
            } else if is_type_name(resource_type) {
                Placed::NotPatient
            } else {
                Placed::Unplaced
            };
        }
        let Some(id) = segments.next() else {
            // `Patient?identifier=system|value`: a conditional reference.
            return match query {
                Some(query) => self.conditional(query),
                None => Placed::PatientUnplaced,
            };
        };
        if !is_id(id) {
            return Placed::PatientUnplaced;
        }
        let tail_ok = match (segments.next(), segments.next(), segments.next()) {
            (None, _, _) => query.is_none() || lenient,
            (Some("_history"), Some(version), None) => {
                !version.is_empty() && (query.is_none() || lenient)
            }
            _ => lenient,
        };
        if !tail_ok {
            return Placed::PatientUnplaced;
        }
        Placed::Patient(match origin {
            Origin::Local => PatientRef::Local(id.to_owned()),
            Origin::Site(site) => PatientRef::Site {
                site: site.to_owned(),
                id: id.to_owned(),
            },
        })
    }

    /// `Patient?identifier=system|value` with a known system; any other search is a patient
    /// the rule cannot place.
    fn conditional(&self, query: &str) -> Placed {
        let mut found = None;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match (name.as_ref(), value.split_once('|')) {
                ("identifier", Some((system, value)))
                    if found.is_none() && !value.is_empty() && self.is_patient_system(system) =>
                {
                    found = Some(PatientRef::Identifier {
                        system: system.to_owned(),
                        value: value.to_owned(),
                    });
                }
                // Other parameters narrow the search: the identifier still names the patient.
                _ => {}
            }
        }
        found.map_or(Placed::PatientUnplaced, Placed::Patient)
    }
}

/// The rest of `text` after `base/`.
fn under_base<'t>(text: &'t str, base: &str) -> Option<&'t str> {
    text.strip_prefix(base.trim_end_matches('/'))?
        .strip_prefix('/')
}

/// The type of `…/Type/id[/_history/v]`, when the path ends so.
fn last_type(path: &str) -> Option<&str> {
    let path = path.trim_end_matches('/');
    let path = match path.rfind("/_history/") {
        Some(at) => path.get(..at)?,
        None => path,
    };
    let (head, id) = path.rsplit_once('/')?;
    let resource_type = head.rsplit_once('/').map_or(head, |(_, t)| t);
    (is_type_name(resource_type) && !id.is_empty()).then_some(resource_type)
}

/// A resource type name: `[A-Z][A-Za-z]*`.
fn is_type_name(text: &str) -> bool {
    text.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
        && text.bytes().all(|b| b.is_ascii_alphabetic())
}

/// A FHIR id: `[A-Za-z0-9\-\.]{1,64}`.
fn is_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_patient_type(t: &str) -> bool {
    t == "Patient" || t == "http://hl7.org/fhir/StructureDefinition/Patient"
}

fn is_any_type(t: &str) -> bool {
    t == "Resource" || t == "http://hl7.org/fhir/StructureDefinition/Resource"
}

/// Whether an object of an element the tables do not know is shaped like a Reference:
/// `reference` (a string), or `identifier` (an object) without anything a Reference does
/// not have.
fn is_reference(object: &Map<String, Value>) -> bool {
    if object.get("reference").is_some_and(Value::is_string) {
        return true;
    }
    object.get("identifier").is_some_and(Value::is_object)
        && object.keys().all(|k| {
            matches!(
                k.as_str(),
                "identifier" | "type" | "display" | "extension" | "id"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> ReferenceContext {
        ReferenceContext {
            local_bases: vec![
                "http://upstream.test/fhir".into(),
                "https://gw.test/fhir/st-mary".into(),
            ],
            other_sites: vec![("https://gw.test/fhir/north".into(), "north".into())],
            patient_identifier_systems: vec!["urn:mrn".into()],
        }
    }

    fn of(resource: Value) -> Patients {
        patients_of(&resource, FhirVersion::R4, &context())
    }

    fn local(ids: &[&str]) -> BTreeSet<PatientRef> {
        ids.iter().map(|i| PatientRef::Local((*i).into())).collect()
    }

    /// The patients in short form: `id` (local), `site:id`, `system|value`.
    fn short(p: &Patients) -> Vec<String> {
        p.known
            .iter()
            .map(|p| match p {
                PatientRef::Local(id) => id.clone(),
                PatientRef::Site { site, id } => format!("{site}:{id}"),
                PatientRef::Identifier { system, value } => format!("{system}|{value}"),
            })
            .collect()
    }

    #[test]
    fn tables_are_read_once_and_quickly() {
        let started = std::time::Instant::now();
        preload();
        let first = started.elapsed();
        let started = std::time::Instant::now();
        preload();
        let again = started.elapsed();
        println!("tables read in {first:?}, then {again:?}");
        assert!(again < std::time::Duration::from_millis(5), "{again:?}");
    }

    #[test]
    fn references_in_every_form_are_placed() {
        let p = of(json!({"resourceType": "Observation",
            "subject": {"reference": "Patient/a"},
            "focus": [{"reference": "http://upstream.test/fhir/Patient/b/_history/2"}],
            "performer": [{"reference": "https://gw.test/fhir/st-mary/Patient/c"}],
            "derivedFrom": [{"reference": "Observation/o2"}]}));
        assert_eq!(p.known, local(&["a", "b", "c"]));
        assert_eq!(p.unknown, 0);
        let p = of(
            json!({"resourceType": "Task", "for": {"reference": "https://gw.test/fhir/north/Patient/z"}}),
        );
        assert_eq!(
            p.known.into_iter().collect::<Vec<_>>(),
            [PatientRef::Site {
                site: "north".into(),
                id: "z".into()
            }]
        );
    }

    #[test]
    fn what_cannot_be_placed_is_unknown() {
        let p = of(
            json!({"resourceType": "Observation", "subject": {"reference": "https://elsewhere.test/Patient/x"}}),
        );
        assert!(p.known.is_empty());
        assert_eq!(p.unknown, 1);
        let p = of(
            json!({"resourceType": "Observation", "subject": {"identifier": {"system": "urn:other", "value": "1"}}}),
        );
        assert_eq!(p.unknown, 1);
        let p = of(
            json!({"resourceType": "Observation", "subject": {"identifier": {"system": "urn:mrn", "value": "1"}}}),
        );
        assert_eq!(
            p.known.into_iter().collect::<Vec<_>>(),
            [PatientRef::Identifier {
                system: "urn:mrn".into(),
                value: "1".into()
            }]
        );
        let p = of(json!({"resourceType": "Observation",
            "contained": [{"resourceType": "Patient", "id": "cp"}],
            "subject": {"reference": "#cp"}}));
        assert_eq!(p.unknown, 1);
    }

    #[test]
    fn bundles_and_patients_are_walked() {
        let p = of(
            json!({"resourceType": "Bundle", "type": "document", "entry": [
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "a",
                    "identifier": [{"system": "urn:mrn", "value": "7"}]}},
                {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Composition", "subject": {"reference": "urn:uuid:1"}}},
                {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/b"}}},
            ]}),
        );
        assert_eq!(short(&p), ["b", "urn:mrn|7"]);
        assert_eq!(p.unknown, 0);
        let p = of(
            json!({"resourceType": "Patient", "id": "a", "link": [{"other": {"reference": "Patient/b"}}]}),
        );
        assert_eq!(p.known, local(&["a", "b"]));
        let p = of(json!({"resourceType": "Practitioner", "id": "d"}));
        assert!(!p.is_patient_data());
    }

    /// A resource of `resource_type` whose only reference is `reference` at `path`
    /// (`Type.a.b`), as nested objects, or (`arrays`) every level in an array.
    fn through(resource_type: &str, path: &str, reference: &Value, arrays: bool) -> Value {
        let steps: Vec<&str> = path.split('.').skip(1).collect();
        let mut value = reference.clone();
        for step in steps.iter().rev() {
            let inner = if arrays { json!([value]) } else { value };
            value = json!({ *step: inner });
        }
        if let Some(object) = value.as_object_mut() {
            object.insert("resourceType".into(), json!(resource_type));
            object.insert("id".into(), json!("r1"));
        }
        value
    }

    #[test]
    fn every_element_that_may_refer_to_a_patient_is_read_in_every_version() {
        let context = context();
        let mut checked = 0;
        for version in FhirVersion::ALL {
            let tables = data::tables(version);
            for t in &tables.types {
                let mut paths = patient_reference_paths(version, t.name);
                for (param, param_paths) in compartment_paths(version, t.name) {
                    assert!(
                        *param == "{def}" || !param_paths.is_empty(),
                        "{version:?} {}.{param}: no element",
                        t.name
                    );
                    for path in param_paths {
                        assert!(
                            may_refer_to_patient(version, t.name, path),
                            "{version:?}: compartment element {path} cannot be a Patient"
                        );
                        paths.push((*path).to_owned());
                    }
                }
                // The Patient itself is placed by its id.
                let own: Vec<&str> = if t.name == "Patient" {
                    vec!["r1"]
                } else {
                    vec![]
                };
                for path in &paths {
                    for arrays in [false, true] {
                        let case = |reference: Value| {
                            patients_of(
                                &through(t.name, path, &reference, arrays),
                                version,
                                &context,
                            )
                        };
                        let p = case(json!({"reference": "Patient/x"}));
                        let mut expected = own.clone();
                        expected.push("x");
                        assert_eq!(p.known, local(&expected), "{version:?} {path}");
                        assert_eq!(p.unknown, 0, "{version:?} {path}");
                        let p = case(json!({"identifier": {"system": "urn:other", "value": "1"}}));
                        assert!(
                            p.unknown > 0,
                            "{version:?} {path}: identifier of unknown system"
                        );
                        assert_eq!(p.known, local(&own), "{version:?} {path}");
                        let p = case(json!({"identifier": {"system": "urn:mrn", "value": "42"}}));
                        assert_eq!(p.unknown, 0, "{version:?} {path}");
                        assert!(p.known.contains(&PatientRef::Identifier {
                            system: "urn:mrn".into(),
                            value: "42".into()
                        }));
                        let p = case(json!({"reference": "https://elsewhere.test/fhir/Patient/x"}));
                        assert!(p.unknown > 0, "{version:?} {path}: unknown base");
                        let p = case(json!({"reference": "urn:uuid:9d7f3f8a-1"}));
                        assert!(p.unknown > 0, "{version:?} {path}: urn outside a Bundle");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 2000, "only {checked} elements checked");
    }

    #[test]
    fn elements_that_cannot_be_a_patient_do_not_count_what_they_cannot_place() {
        for (path, version) in [
            ("Observation.derivedFrom", FhirVersion::R4),
            ("Observation.identifier.assigner", FhirVersion::R4),
            ("Encounter.serviceProvider", FhirVersion::R4),
            ("Procedure.reason.reference", FhirVersion::R5),
        ] {
            let resource_type = path.split('.').next().unwrap_or_default();
            assert!(
                !may_refer_to_patient(version, resource_type, path),
                "{path}"
            );
            let r = through(
                resource_type,
                path,
                &json!({"identifier": {"system": "urn:other", "value": "1"}}),
                false,
            );
            let p = patients_of(&r, version, &context());
            assert!(!p.is_patient_data(), "{path}: {p:?}");
            // A literal Patient reference counts wherever it is.
            let r = through(
                resource_type,
                path,
                &json!({"reference": "Patient/x"}),
                true,
            );
            assert_eq!(patients_of(&r, version, &context()).known, local(&["x"]));
        }
    }

    /// (what, version, resource, known in short form, unknown count).
    type Case = (
        &'static str,
        FhirVersion,
        Value,
        &'static [&'static str],
        usize,
    );

    #[test]
    fn tricky_forms() {
        use FhirVersion::*;
        let deep = (0..MAX_DEPTH + 20).fold(
            json!({"url": "u", "valueReference": {"reference": "Patient/deep"}}),
            |v, _| json!({"url": "u", "extension": [v]}),
        );
        let cases: Vec<Case> = vec![
            (
                "versioned relative",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "Patient/a/_history/2"}}),
                &["a"],
                0,
            ),
            (
                "absolute under a known base, versioned",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "https://gw.test/fhir/st-mary/Patient/a/_history/3"}}),
                &["a"],
                0,
            ),
            (
                "absolute under another site",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "https://gw.test/fhir/north/Patient/z"}}),
                &["north:z"],
                0,
            ),
            (
                "absolute under an unknown base",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "https://elsewhere.test/fhir/Patient/a"}}),
                &[],
                1,
            ),
            (
                "unknown base, a known identifier beside it",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "https://elsewhere.test/fhir/Patient/a",
                    "identifier": {"system": "urn:mrn", "value": "5"}}}),
                &["urn:mrn|5"],
                0,
            ),
            (
                "unknown base, not a patient",
                R4,
                json!({"resourceType": "Observation",
                "performer": [{"reference": "https://elsewhere.test/fhir/Practitioner/p"}]}),
                &[],
                0,
            ),
            (
                "a local base is not a prefix of another",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "http://upstream.test/fhirx/Patient/a"}}),
                &[],
                1,
            ),
            (
                "urn:uuid inside a Bundle",
                R4,
                json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient",
                    "identifier": [{"system": "urn:mrn", "value": "9"}]}},
                {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Observation",
                    "subject": {"reference": "urn:uuid:p1"}}}]}),
                &["urn:mrn|9"],
                0,
            ),
            (
                "urn:uuid of a Patient the rule cannot place",
                R4,
                json!({"resourceType": "Bundle", "entry": [
                {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "a"}},
                {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Observation",
                    "subject": {"reference": "urn:uuid:p1"}}}]}),
                &[],
                2,
            ),
            (
                "urn:uuid of a Group",
                R4,
                json!({"resourceType": "Bundle", "entry": [
                {"fullUrl": "urn:uuid:g1", "resource": {"resourceType": "Group", "type": "person", "actual": true}},
                {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Observation",
                    "subject": {"reference": "urn:uuid:g1"}}}]}),
                &[],
                0,
            ),
            (
                "urn:uuid outside a Bundle",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "urn:uuid:p1"}}),
                &[],
                1,
            ),
            (
                "search Bundle with fullUrls under the local base",
                R4,
                json!({"resourceType": "Bundle", "type": "searchset", "entry": [
                {"fullUrl": "http://upstream.test/fhir/Patient/a", "resource": {"resourceType": "Patient", "id": "a"}},
                {"fullUrl": "http://upstream.test/fhir/Observation/o", "resource": {"resourceType": "Observation",
                    "subject": {"reference": "http://upstream.test/fhir/Patient/a"}}}]}),
                &["a"],
                0,
            ),
            (
                "an entry's fullUrl names another id than its own",
                R4,
                json!({"resourceType": "Bundle", "entry": [
                {"fullUrl": "http://upstream.test/fhir/Patient/a", "resource": {"resourceType": "Patient", "id": "b"}}]}),
                &["a", "b"],
                0,
            ),
            (
                "a Patient entry under an unknown base",
                R4,
                json!({"resourceType": "Bundle", "entry": [
                {"fullUrl": "https://elsewhere.test/Patient/a", "resource": {"resourceType": "Patient", "id": "a"}}]}),
                &[],
                1,
            ),
            (
                "contained Patient with a known identifier",
                R4,
                json!({"resourceType": "Observation",
                "contained": [{"resourceType": "Patient", "id": "p", "identifier": [
                    {"system": "urn:other", "value": "1"}, {"system": "urn:mrn", "value": "3"}]}],
                "subject": {"reference": "#p"}}),
                &["urn:mrn|3"],
                0,
            ),
            (
                "contained Patient without one",
                R4,
                json!({"resourceType": "Observation",
                "contained": [{"resourceType": "Patient", "id": "p"}],
                "subject": {"reference": "#p"}}),
                &[],
                1,
            ),
            (
                "a contained id that is not there",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "#nowhere"}}),
                &[],
                1,
            ),
            (
                "a contained Practitioner",
                R4,
                json!({"resourceType": "Observation",
                "contained": [{"resourceType": "Practitioner", "id": "d"}],
                "performer": [{"reference": "#d"}]}),
                &[],
                0,
            ),
            (
                "a contained resource referring to its container's patient",
                R4,
                json!({"resourceType": "Observation",
                "contained": [{"resourceType": "Specimen", "id": "s", "subject": {"reference": "Patient/a"}}],
                "specimen": {"reference": "#s"}}),
                &["a"],
                0,
            ),
            (
                "extension valueReference",
                R4,
                json!({"resourceType": "Observation",
                "extension": [{"url": "urn:x", "valueReference": {"reference": "Patient/a"}}]}),
                &["a"],
                0,
            ),
            (
                "nested extension on a data type",
                R4,
                json!({"resourceType": "Observation",
                "code": {"coding": [{"system": "urn:c", "code": "1", "extension": [{"url": "urn:x",
                    "extension": [{"url": "urn:y", "valueReference": {"reference": "Patient/a"}}]}]}]}}),
                &["a"],
                0,
            ),
            (
                "modifierExtension with an identifier of unknown system",
                R4,
                json!({"resourceType": "Observation",
                "modifierExtension": [{"url": "urn:x", "valueReference": {"identifier": {"system": "urn:other", "value": "1"}}}]}),
                &[],
                1,
            ),
            (
                "extension of a primitive",
                R4,
                json!({"resourceType": "Observation", "status": "final",
                "_status": {"extension": [{"url": "urn:x", "valueReference": {"reference": "Patient/a"}}]}}),
                &["a"],
                0,
            ),
            (
                "Group.member.entity",
                R4,
                json!({"resourceType": "Group", "type": "person", "actual": true,
                "member": [{"entity": {"reference": "Patient/a"}}, {"entity": {"reference": "Patient/b"}}]}),
                &["a", "b"],
                0,
            ),
            (
                "Provenance.target",
                R4,
                json!({"resourceType": "Provenance",
                "target": [{"reference": "Patient/a/_history/1"}], "agent": [{"who": {"reference": "Practitioner/d"}}]}),
                &["a"],
                0,
            ),
            (
                "Appointment.participant.actor",
                R4,
                json!({"resourceType": "Appointment",
                "participant": [{"actor": {"reference": "Patient/a"}}, {"actor": {"reference": "Location/l"}}]}),
                &["a"],
                0,
            ),
            (
                "ResearchSubject.individual",
                R4,
                json!({"resourceType": "ResearchSubject",
                "individual": {"reference": "Patient/a"}, "study": {"reference": "ResearchStudy/s"}}),
                &["a"],
                0,
            ),
            (
                "ResearchSubject.subject (R5)",
                R5,
                json!({"resourceType": "ResearchSubject",
                "subject": {"identifier": {"system": "urn:other", "value": "1"}}}),
                &[],
                1,
            ),
            (
                "Account.subject",
                R4,
                json!({"resourceType": "Account", "subject": [{"reference": "Patient/a"}]}),
                &["a"],
                0,
            ),
            (
                "Task.for",
                R4,
                json!({"resourceType": "Task", "for": {"reference": "Patient/a"}}),
                &["a"],
                0,
            ),
            (
                "Observation.focus",
                R4,
                json!({"resourceType": "Observation", "focus": [{"reference": "Patient/a"}]}),
                &["a"],
                0,
            ),
            (
                "Observation.focus by identifier of unknown system",
                R4,
                json!({"resourceType": "Observation",
                "focus": [{"identifier": {"system": "urn:other", "value": "1"}}]}),
                &[],
                1,
            ),
            (
                "identifier-only typed as a Practitioner",
                R4,
                json!({"resourceType": "Observation",
                "performer": [{"type": "Practitioner", "identifier": {"system": "urn:npi", "value": "1"}}]}),
                &[],
                0,
            ),
            (
                "identifier-only typed as a Patient where no Patient may be",
                R4,
                json!({"resourceType": "Observation",
                "derivedFrom": [{"type": "Patient", "identifier": {"system": "urn:other", "value": "1"}}]}),
                &[],
                1,
            ),
            (
                "display only: names no resource",
                R4,
                json!({"resourceType": "Observation", "subject": {"display": "Jane Doe"}}),
                &[],
                0,
            ),
            (
                "a reference that is not a string",
                R4,
                json!({"resourceType": "Observation", "subject": {"reference": 7}}),
                &[],
                1,
            ),
            (
                "a reference that is not a string",
                R4,
                json!({"resourceType": "Observation", "subject": {"reference": 7}}),
                &[],
                1,
            ),
            (
                "conditional reference by a known identifier",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "Patient?identifier=urn:mrn|42"}}),
                &["urn:mrn|42"],
                0,
            ),
            (
                "conditional reference by name",
                R4,
                json!({"resourceType": "Observation",
                "derivedFrom": [{"reference": "Patient?name=smith"}]}),
                &[],
                1,
            ),
            (
                "conditional reference to a Practitioner",
                R4,
                json!({"resourceType": "Observation",
                "performer": [{"reference": "Practitioner?identifier=urn:npi|1"}]}),
                &[],
                0,
            ),
            (
                "Parameters: resource, part, valueReference",
                R4,
                json!({"resourceType": "Parameters", "parameter": [
                {"name": "p", "resource": {"resourceType": "Patient", "id": "a"}},
                {"name": "q", "part": [{"name": "r", "resource": {"resourceType": "Observation", "subject": {"reference": "Patient/b"}}},
                    {"name": "s", "part": [{"name": "t", "valueReference": {"reference": "Patient/c"}}]}]}]}),
                &["a", "b", "c"],
                0,
            ),
            (
                "Bundle request and response locations",
                R4,
                json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
                {"request": {"method": "DELETE", "url": "Patient/d"}},
                {"response": {"status": "201", "location": "Patient/e/_history/1"}},
                {"response": {"status": "200", "location": "http://upstream.test/fhir/Patient/f/_history/2"}},
                {"request": {"method": "GET", "url": "Observation?code=x"}}]}),
                &["d", "e", "f"],
                0,
            ),
            (
                "an element named resourceType (R4 ExampleScenario)",
                R4,
                json!({"resourceType": "ExampleScenario",
                "instance": [{"resourceId": "p", "resourceType": "Patient", "name": "a patient"}]}),
                &[],
                0,
            ),
            (
                "a Subscription filter naming a patient (R5)",
                R5,
                json!({"resourceType": "Subscription",
                "filterBy": [{"resourceType": "http://hl7.org/fhir/StructureDefinition/Encounter",
                    "filterParameter": "patient", "value": "Patient/123"}]}),
                &["123"],
                0,
            ),
            (
                "an entry cannot hide a patient URL",
                R4,
                json!({"resourceType": "Bundle", "entry": [
                {"fullUrl": "http://upstream.test/fhir/Patient/a", "resource": {"resourceType": "Observation"}},
                {"resource": {"resourceType": "Observation",
                    "subject": {"reference": "http://upstream.test/fhir/Patient/a"}}}]}),
                &["a"],
                0,
            ),
            (
                "nor an unknown one",
                R4,
                json!({"resourceType": "Bundle", "entry": [
                {"fullUrl": "https://elsewhere.test/Patient/a", "resource": {"resourceType": "Observation"}},
                {"resource": {"resourceType": "Observation",
                    "subject": {"reference": "https://elsewhere.test/Patient/a"}}}]}),
                &[],
                1,
            ),
            (
                "a batch search on Patients",
                R4,
                json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": "Patient?name=smith"}}]}),
                &[],
                1,
            ),
            (
                "a Patient without an id",
                R4,
                json!({"resourceType": "Patient", "name": [{"family": "Doe"}]}),
                &[],
                1,
            ),
            (
                "a Patient where a CodeableConcept should be",
                R4,
                json!({"resourceType": "Observation",
                "code": {"resourceType": "Patient", "id": "hidden"}}),
                &["hidden"],
                0,
            ),
            (
                "a Bundle inside a Bundle",
                R4,
                json!({"resourceType": "Bundle", "entry": [{"resource":
                {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Condition",
                    "subject": {"reference": "Patient/a"}}}]}}]}),
                &["a"],
                0,
            ),
            (
                "an unknown type is read as anything unknown",
                R4,
                json!({"resourceType": "NotAType",
                "who": {"identifier": {"system": "urn:other", "value": "1"}},
                "what": {"reference": "Patient/a"}}),
                &["a"],
                1,
            ),
            (
                "a CodeableReference that may be a Patient (R5)",
                R5,
                json!({"resourceType": "Condition",
                "evidence": [{"reference": {"identifier": {"system": "urn:other", "value": "1"}}}]}),
                &[],
                1,
            ),
            (
                "a CodeableReference that may not (R5)",
                R5,
                json!({"resourceType": "Procedure",
                "reason": [{"reference": {"identifier": {"system": "urn:other", "value": "1"}}}]}),
                &[],
                0,
            ),
            (
                "STU3 AuditEvent.agent.reference",
                Stu3,
                json!({"resourceType": "AuditEvent",
                "agent": [{"reference": {"reference": "Patient/a"}, "requestor": true}]}),
                &["a"],
                0,
            ),
            (
                "an id that is not one",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "Patient/ä b"}}),
                &[],
                1,
            ),
            (
                "a type that is not one",
                R4,
                json!({"resourceType": "Observation",
                "subject": {"reference": "Pätient/x"}}),
                &[],
                1,
            ),
            (
                "too deep",
                R4,
                json!({"resourceType": "Observation", "extension": [deep]}),
                &[],
                1,
            ),
        ];
        for (what, version, resource, known, unknown) in cases {
            let p = patients_of(&resource, version, &context());
            assert_eq!(short(&p), known, "{what}");
            if what == "too deep" {
                assert!(p.unknown >= unknown, "{what}: {}", p.unknown);
            } else {
                assert_eq!(p.unknown, unknown, "{what}");
            }
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        let context = context();
        let mut inputs = vec![
            json!(null),
            json!([]),
            json!("Patient/a"),
            json!({"resourceType": 5}),
            json!({"resourceType": "Bundle", "entry": "x"}),
            json!({"resourceType": "Bundle", "entry": [{"fullUrl": 3, "resource": []}]}),
            json!({"resourceType": "Observation", "subject": [[[{"reference": "Patient/é/_history/"}]]]}),
            json!({"resourceType": "Observation", "subject": {"reference": "/Patient/x"}}),
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/"}}),
            json!({"resourceType": "Observation", "subject": {"reference": "Patient?"}}),
            json!({"resourceType": "Observation", "subject": {"reference": "http://upstream.test/fhir/"}}),
            json!({"resourceType": "Observation", "subject": {"reference": "http://upstream.test/fhir"}}),
            json!({"resourceType": "Observation", "subject": {"reference": "€/_history/€"}}),
        ];
        let mut nested = json!({"resourceType": "Bundle"});
        for _ in 0..300 {
            nested = json!({"resourceType": "Bundle", "entry": [{"resource": nested}]});
        }
        inputs.push(nested);
        for input in inputs {
            for version in FhirVersion::ALL {
                let _ = patients_of(&input, version, &context);
            }
        }
    }
}

/// Inputs no one wrote by hand: random resources and queries from a fixed seed, checked for
/// what must hold whatever the input (no panic, the same answer twice, nothing lost when a
/// resource is wrapped in a Bundle, named patients taken from the query itself).
#[cfg(test)]
mod random_inputs {
    use super::*;
    use serde_json::json;

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const STRINGS: &[&str] = &[
        "Patient/a",
        "Patient/b/_history/1",
        "http://upstream.test/fhir/Patient/c",
        "https://gw.test/fhir/north/Patient/n",
        "https://elsewhere.test/Patient/d",
        "urn:uuid:1",
        "#p",
        "#",
        "Pätient/€",
        "",
        "Patient",
        "Patient/",
        "Patient?identifier=urn:mrn|1",
        "Observation/o",
        "urn:mrn",
        "p",
        "42",
    ];
    const KEYS: &[&str] = &[
        "resourceType",
        "id",
        "reference",
        "identifier",
        "system",
        "value",
        "type",
        "entry",
        "fullUrl",
        "resource",
        "contained",
        "extension",
        "valueReference",
        "subject",
        "performer",
        "focus",
        "parameter",
        "part",
        "request",
        "url",
        "location",
        "_status",
        "member",
        "entity",
        "reason",
        "concept",
    ];
    const TYPES: &[&str] = &[
        "Patient",
        "Observation",
        "Bundle",
        "Parameters",
        "Group",
        "Condition",
        "NotAType",
        "patient",
    ];

    fn value(rng: &mut Rng, depth: usize) -> Value {
        match rng.below(if depth == 0 { 2 } else { 6 }) {
            0 => json!(rng.pick(STRINGS)),
            1 => match rng.below(3) {
                0 => json!(null),
                1 => json!(rng.below(3)),
                _ => json!(true),
            },
            2 => Value::Array((0..rng.below(3)).map(|_| value(rng, depth - 1)).collect()),
            3 => match rng.below(3) {
                0 => json!({"reference": rng.pick(STRINGS)}),
                1 => json!({"identifier": {"system": rng.pick(&["urn:mrn", "urn:x"]),
                    "value": rng.pick(STRINGS)}}),
                _ => json!({"resourceType": "Patient", "id": rng.pick(STRINGS)}),
            },
            _ => {
                let mut object = Map::new();
                if rng.below(2) == 0 {
                    object.insert("resourceType".into(), json!(rng.pick(TYPES)));
                }
                for _ in 0..rng.below(5) {
                    let key = rng.pick(KEYS);
                    object.insert(key.into(), value(rng, depth - 1));
                }
                Value::Object(object)
            }
        }
    }

    fn context() -> ReferenceContext {
        ReferenceContext {
            local_bases: vec!["http://upstream.test/fhir".into()],
            other_sites: vec![("https://gw.test/fhir/north".into(), "north".into())],
            patient_identifier_systems: vec!["urn:mrn".into()],
        }
    }

    #[test]
    fn random_resources() {
        let mut rng = Rng(0x5EED_CAFE_F00D_0001);
        let context = context();
        let mut placed = 0;
        for _ in 0..20_000 {
            let resource = value(&mut rng, 7);
            let version = FhirVersion::ALL[rng.below(4)];
            let p = patients_of(&resource, version, &context);
            assert_eq!(p, patients_of(&resource, version, &context), "{resource}");
            let wrapped = json!({"resourceType": "Bundle", "entry": [{"resource": resource}]});
            let w = patients_of(&wrapped, version, &context);
            assert!(p.known.is_subset(&w.known), "{resource}: {p:?} {w:?}");
            assert!(p.unknown <= w.unknown, "{resource}: {p:?} {w:?}");
            placed += p.known.len();
        }
        assert!(
            placed > 1000,
            "only {placed} patients placed: the generator is too weak"
        );
    }

    #[test]
    fn random_queries() {
        const PIECES: &[&str] = &[
            "patient",
            "subject",
            "performer",
            "_id",
            "identifier",
            "_summary",
            "_elements",
            "_count",
            "code",
            ":",
            ".",
            "=",
            "&",
            ",",
            "\\",
            "%",
            "%2C",
            "%5C",
            "%7C",
            "|",
            "Patient",
            "/",
            "a",
            "b",
            "urn:mrn",
            "%C3%A9",
            "%E2%82",
            "%FF",
            "true",
            "0",
            "+",
            "Patient%2Fa",
            "http%3A%2F%2Fupstream.test%2Ffhir%2FPatient%2Fc",
        ];
        let mut rng = Rng(0x5EED_CAFE_F00D_0002);
        let context = context();
        let mut named = 0;
        for _ in 0..20_000 {
            // Mostly well-formed `code[:modifier][.chain]=value,value`, with junk between.
            let mut raw = String::new();
            for _ in 0..rng.below(4) {
                if rng.below(3) == 0 {
                    raw.extend((0..rng.below(6)).map(|_| rng.pick(PIECES)));
                    continue;
                }
                raw.push_str(rng.pick(&["patient", "subject", "_id", "identifier", "focus"]));
                raw.push_str(rng.pick(&["", "", ":Patient", ":identifier", "._id", ".identifier"]));
                raw.push('=');
                for i in 0..=rng.below(2) {
                    if i > 0 {
                        raw.push(',');
                    }
                    raw.push_str(rng.pick(&["a", "Patient%2Fb", "urn:mrn%7C7", "%C3%A9", "c"]));
                }
                raw.push('&');
            }
            let params = parse_search(&raw);
            let values: String = params.iter().flat_map(|p| p.values()).collect();
            let _ = crate::shaping::Shape::from_params(&params);
            for resource_type in [Some("Observation"), Some("Patient"), None] {
                let version = FhirVersion::ALL[rng.below(4)];
                let answer = request_patients(version, resource_type, None, &params, &context);
                if let RequestPatients::Named(set) = answer {
                    assert!(!set.is_empty(), "{raw}");
                    for p in &set {
                        let id = match p {
                            PatientRef::Local(id) | PatientRef::Site { id, .. } => id,
                            PatientRef::Identifier { value, .. } => value,
                        };
                        assert!(
                            values.contains(id.as_str()),
                            "{raw}: {p:?} not in the query"
                        );
                    }
                    named += 1;
                }
            }
        }
        assert!(named > 100, "only {named} queries named patients");
    }
}
