//! Site adapters: one hospital's dialect of FHIR (its identifier systems, local codes,
//! extension URLs, reference bases, profiles, elements it needs or must not see) rewritten to
//! the network's and back, from a TOML adapter file and the FHIR ConceptMaps it names.
//!
//! Owns: loading and validating an adapter (every error names the file, the line and the key),
//! the rules precomputed for each direction, and applying them to resources and to search
//! values. Leaves out: reading files (the caller passes a reader, so this crate does no I/O),
//! FHIR version conversion (`translate`), holding and reloading adapters (the gateway).
//!
//! # Semantics of code translation
//!
//! A ConceptMap maps codes of its `group.source` system to codes of `group.target`. The
//! adapter file says whose codes the source system holds (`source = "site"` or `"network"`);
//! the map is used forward in that direction and, with `reverse = true` (the default),
//! backward in the other. A coding is replaced only when the replacement does not assert
//! more than the original:
//!
//! - forward: `equivalent`/`equal` (R4), `equivalent` (R5): exact; `wider`/`subsumes` (R4),
//!   `source-is-narrower-than-target` (R5): the target is broader, used as an approximation.
//! - backward: `equivalent`/`equal`: exact; `narrower`/`specializes` (R4),
//!   `source-is-broader-than-target` (R5) read backward say the same (the new code is
//!   broader), used as an approximation.
//! - never: `relatedto`, `inexact`, `related-to` (meaning unstated), a target narrower than
//!   the source (it would say more than the data), `unmatched`, `disjoint`,
//!   `not-related-to`, `noMap`.
//!
//! An exact mapping beats an approximation of the same code; two different exact (or two
//! approximate) mappings of one code in one direction are a load error when written, and
//! make the code ambiguous (kept, reported) when derived by reading maps backward. A code of
//! a system that a map covers but with no usable mapping is kept and reported (warning,
//! `code-invalid`), unless the group's `unmapped` mode is `provided`/`use-source-code` (kept
//! silently) or `fixed` (forward only: replaced by the fixed code). Search values are only
//! rewritten through exact mappings: an approximation would change what the search means.
//!
//! Issues: a code replaced by a broader one is a warning (precision lost) unless the
//! original coding is kept beside it in its CodeableConcept (`keep_original`: information);
//! configured defaults and drops are information (the adapter's author declared them);
//! identifier systems, extension URLs, references and profiles are exact and report nothing.

mod concept_map;
mod file;

use std::fmt::{self, Write as _};

use assent_fhir::{FhirVersion, Issue, IssueCode, Severity};
use rustc_hash::FxHashMap as HashMap;
use serde_json::{Map, Value};
use toml::Spanned;

use crate::definitions::definitions;
use concept_map::{Relationship, Unmapped};
use file::{AdapterFile, MapSource, RuleDirection};

/// Deepest nesting walked; deeper JSON is left as it is.
const MAX_DEPTH: usize = 128;

/// Which way an adapter rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the hospital's dialect to the network's (responses).
    ToNetwork,
    /// From the network's dialect to the hospital's (request bodies, search values).
    ToSite,
}

impl Direction {
    /// `to-network` or `to-site`, as in adapter files, the admin API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToNetwork => "to-network",
            Direction::ToSite => "to-site",
        }
    }

    /// Reads `to-network` or `to-site`.
    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "to-network" => Some(Direction::ToNetwork),
            "to-site" => Some(Direction::ToSite),
            _ => None,
        }
    }
}

/// An adapter that could not be loaded: the adapter file, the line and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterError {
    /// The adapter file as the caller named it.
    pub file: String,
    /// 1-based line in the adapter file.
    pub line: Option<usize>,
    /// Dotted key in the adapter file (`concept_maps[0].file`).
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for AdapterError {}

/// What an adapter holds, for summaries (`assent check-config`, `/admin/sites/{site}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdapterSummary {
    pub identifier_systems: usize,
    pub concept_maps: usize,
    /// Codes with a usable mapping site → network.
    pub mapped_codes: usize,
    pub extensions: usize,
    pub reference_bases: usize,
    pub profiles: usize,
    pub defaults: usize,
    pub drops: usize,
}

/// A loaded, validated site adapter; its rules are precomputed for both directions.
#[derive(Debug)]
pub struct SiteAdapter {
    file: String,
    description: Option<String>,
    version: FhirVersion,
    summary: AdapterSummary,
    to_network: Rules,
    to_site: Rules,
}

#[derive(Debug, Default)]
struct Rules {
    identifier_systems: HashMap<Box<str>, Box<str>>,
    /// Code tables by source system.
    codes: HashMap<Box<str>, SystemCodes>,
    extensions: HashMap<Box<str>, Box<str>>,
    /// (from prefix, to prefix), first match wins.
    reference_bases: Vec<(Box<str>, Box<str>)>,
    /// By resource type; `*` for every type.
    profiles: HashMap<Box<str>, ProfileStamp>,
    defaults: HashMap<Box<str>, Vec<(ElementPath, Value)>>,
    drops: HashMap<Box<str>, Vec<ElementPath>>,
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.identifier_systems.is_empty()
            && self.codes.is_empty()
            && self.extensions.is_empty()
            && self.reference_bases.is_empty()
            && self.profiles.is_empty()
            && self.defaults.is_empty()
            && self.drops.is_empty()
    }
}

/// An element path below its resource type (`name`, `use`).
type ElementPath = Vec<Box<str>>;

/// Per source system: what to do with unlisted codes, and the codes explicitly not mapped.
type UnmappedTable = HashMap<String, (UnmappedRule, HashMap<String, Relationship>)>;

#[derive(Debug, Default)]
struct ProfileStamp {
    remove: Vec<Box<str>>,
    add: Vec<Box<str>>,
}

#[derive(Debug)]
struct SystemCodes {
    /// The ConceptMap(s) covering this system, for messages.
    map: Box<str>,
    codes: HashMap<Box<str>, Mapping>,
    unmapped: UnmappedRule,
}

#[derive(Debug)]
enum UnmappedRule {
    Report,
    Keep,
    Fixed(Target),
}

#[derive(Debug, Clone)]
enum Mapping {
    To(Target),
    /// No usable mapping; the relationship found, if any, for the message.
    None(Option<Relationship>),
    /// Several equally good mappings derived backward.
    Ambiguous,
}

#[derive(Debug, Clone, PartialEq)]
struct Target {
    system: Box<str>,
    code: Box<str>,
    display: Option<Box<str>>,
    exact: bool,
    keep_original: bool,
}

/// A code mapping while tables are built: where it came from, for duplicate errors.
struct Candidate {
    target: Target,
    key: String,
    line: usize,
    location: String,
}

impl SiteAdapter {
    /// Loads the adapter file `file` (its text `text`) for a site speaking `version`.
    /// `read` reads a ConceptMap file named in it (a path relative to the adapter file, as
    /// written); its error message is reported at the `file` key.
    pub fn load(
        file: &str,
        text: &str,
        version: FhirVersion,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<SiteAdapter, AdapterError> {
        let error = |span: Option<std::ops::Range<usize>>, key: Option<String>, message: String| {
            AdapterError {
                file: file.to_owned(),
                line: span.map(|s| file::line_of(text, s.start)),
                key,
                message,
            }
        };
        let parsed: AdapterFile = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let key = span.as_ref().and_then(|s| file::key_at(text, s));
            error(span, key, e.message().trim().to_owned())
        })?;
        let mut b = Builder {
            file,
            text,
            version,
            to_network: Rules::default(),
            to_site: Rules::default(),
            written: [HashMap::default(), HashMap::default()],
            derived: [HashMap::default(), HashMap::default()],
            unmapped: [HashMap::default(), HashMap::default()],
            map_names: [HashMap::default(), HashMap::default()],
        };
        let mut summary = AdapterSummary::default();

        // identifier systems and extension URLs: one-to-one both ways
        for (section, pairs) in [
            ("identifier_systems", &parsed.identifier_systems),
            ("extensions", &parsed.extensions),
        ] {
            for (i, pair) in pairs.iter().enumerate() {
                let key = |side: &str| format!("{section}[{i}].{side}");
                b.uri(&pair.site, &key("site"))?;
                b.uri(&pair.network, &key("network"))?;
                if pair.site.get_ref() == pair.network.get_ref() {
                    return Err(b.at(
                        &pair.network,
                        &key("network"),
                        "equals `site`: nothing to rewrite",
                    ));
                }
                let (forward, backward) = if section == "identifier_systems" {
                    (
                        &mut b.to_network.identifier_systems,
                        &mut b.to_site.identifier_systems,
                    )
                } else {
                    (&mut b.to_network.extensions, &mut b.to_site.extensions)
                };
                if forward.contains_key(pair.site.get_ref().as_str()) {
                    return Err(b.at(&pair.site, &key("site"), "is listed twice"));
                }
                if backward.contains_key(pair.network.get_ref().as_str()) {
                    return Err(b.at(
                        &pair.network,
                        &key("network"),
                        "is listed twice (the way back would be ambiguous)",
                    ));
                }
                forward.insert(
                    pair.site.get_ref().as_str().into(),
                    pair.network.get_ref().as_str().into(),
                );
                backward.insert(
                    pair.network.get_ref().as_str().into(),
                    pair.site.get_ref().as_str().into(),
                );
            }
        }
        summary.identifier_systems = parsed.identifier_systems.len();
        summary.extensions = parsed.extensions.len();

        // reference bases: site prefix → network prefix (empty: relative references)
        for (i, pair) in parsed.reference_bases.iter().enumerate() {
            let key = |side: &str| format!("reference_bases[{i}].{side}");
            b.uri(&pair.site, &key("site"))?;
            if !pair.network.get_ref().is_empty() {
                b.uri(&pair.network, &key("network"))?;
            }
            let site = with_slash(pair.site.get_ref());
            let network = if pair.network.get_ref().is_empty() {
                String::new()
            } else {
                with_slash(pair.network.get_ref())
            };
            if b.to_network
                .reference_bases
                .iter()
                .any(|(from, _)| **from == *site)
            {
                return Err(b.at(&pair.site, &key("site"), "is listed twice"));
            }
            b.to_network
                .reference_bases
                .push((site.as_str().into(), network.as_str().into()));
            if !network.is_empty()
                && !b
                    .to_site
                    .reference_bases
                    .iter()
                    .any(|(from, _)| **from == *network)
            {
                b.to_site
                    .reference_bases
                    .push((network.into(), site.into()));
            }
        }
        summary.reference_bases = parsed.reference_bases.len();

        // profiles: stamped on the way out of one dialect, removed on the way into the other
        for (i, rule) in parsed.profiles.iter().enumerate() {
            let key = |k: &str| format!("profiles[{i}].{k}");
            let resource = rule.resource.get_ref();
            if resource != "*" && !is_type_name(resource) {
                return Err(b.at(
                    &rule.resource,
                    &key("resource"),
                    "must be a resource type (`Patient`) or `*`",
                ));
            }
            if rule.site.is_empty() && rule.network.is_empty() {
                return Err(b.at(
                    &rule.resource,
                    &key("resource"),
                    "names no profile (`site` or `network`)",
                ));
            }
            for (side, list) in [("site", &rule.site), ("network", &rule.network)] {
                for (j, url) in list.iter().enumerate() {
                    b.uri(url, &format!("profiles[{i}].{side}[{j}]"))?;
                }
            }
            let urls = |list: &Vec<Spanned<String>>| -> Vec<Box<str>> {
                list.iter().map(|u| u.get_ref().as_str().into()).collect()
            };
            for (rules, remove, add) in [
                (&mut b.to_network, &rule.site, &rule.network),
                (&mut b.to_site, &rule.network, &rule.site),
            ] {
                let stamp = rules.profiles.entry(resource.as_str().into()).or_default();
                stamp.remove.extend(urls(remove));
                stamp.add.extend(urls(add));
            }
        }
        summary.profiles = parsed.profiles.len();

        // defaults and drops: element paths checked against the site version's definitions
        for (i, rule) in parsed.defaults.iter().enumerate() {
            let key = format!("defaults[{i}].path");
            let (ty, segments) = b.element_path(&rule.path, &key)?;
            let value =
                b.default_value(&rule.value, &format!("defaults[{i}].value"), &ty, &segments)?;
            let rules = b.rules(rule.direction);
            rules
                .defaults
                .entry(ty.into())
                .or_default()
                .push((segments, value));
        }
        for (i, rule) in parsed.drops.iter().enumerate() {
            let key = format!("drops[{i}].path");
            let (ty, segments) = b.element_path(&rule.path, &key)?;
            if segments.len() == 1 && matches!(&*segments[0], "resourceType" | "id") {
                return Err(b.at(&rule.path, &key, "resourceType and id cannot be dropped"));
            }
            let rules = b.rules(rule.direction);
            let list = rules.drops.entry(ty.into()).or_default();
            if list.contains(&segments) {
                return Err(b.at(&rule.path, &key, "is listed twice"));
            }
            list.push(segments);
        }
        summary.defaults = parsed.defaults.len();
        summary.drops = parsed.drops.len();

        // concept maps
        for (i, map_ref) in parsed.concept_maps.iter().enumerate() {
            b.concept_map(i, map_ref, read)?;
        }
        summary.concept_maps = parsed.concept_maps.len();
        b.finish_codes();
        summary.mapped_codes = b
            .to_network
            .codes
            .values()
            .map(|s| {
                s.codes
                    .values()
                    .filter(|m| matches!(m, Mapping::To(_)))
                    .count()
            })
            .sum();

        Ok(SiteAdapter {
            file: file.to_owned(),
            description: parsed.description,
            version,
            summary,
            to_network: b.to_network,
            to_site: b.to_site,
        })
    }

    /// The adapter file as named when loaded.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The FHIR version the adapter was checked against (the site's).
    pub fn version(&self) -> FhirVersion {
        self.version
    }

    pub fn summary(&self) -> AdapterSummary {
        self.summary
    }

    fn rules(&self, direction: Direction) -> &Rules {
        match direction {
            Direction::ToNetwork => &self.to_network,
            Direction::ToSite => &self.to_site,
        }
    }

    /// Rewrites `resource` (any resource; Bundle entries and contained resources too) in
    /// `direction`, and says what could not be rewritten exactly.
    pub fn apply(&self, resource: &mut Value, direction: Direction) -> Vec<Issue> {
        let rules = self.rules(direction);
        if rules.is_empty() {
            return Vec::new();
        }
        let root = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("Resource")
            .to_owned();
        let mut walk = Walk {
            rules,
            issues: Vec::new(),
            path: root,
        };
        walk.value(resource, 0, Context::Plain);
        walk.issues
    }

    /// A search parameter value (decoded) going to the site: identifier systems and codes of
    /// `system|value` tokens rewritten (`,`-separated alternatives each). `None` when
    /// unchanged. `name` is the parameter name with its modifier.
    pub fn search_value(&self, name: &str, value: &str) -> (Option<String>, Vec<Issue>) {
        let rules = &self.to_site;
        let mut issues = Vec::new();
        if (rules.identifier_systems.is_empty() && rules.codes.is_empty()) || !value.contains('|') {
            return (None, issues);
        }
        let modifier = name.split_once(':').map(|(_, m)| m).unwrap_or_default();
        if matches!(modifier, "of-type" | "text" | "missing" | "code-text") {
            return (None, issues);
        }
        let mut changed = false;
        let mut out = String::with_capacity(value.len() + 16);
        for (n, item) in split_unescaped(value, ',').enumerate() {
            if n > 0 {
                out.push(',');
            }
            let Some((system, rest)) = item.split_once('|') else {
                out.push_str(item);
                continue;
            };
            if let Some(site) = rules.identifier_systems.get(system) {
                out.push_str(site);
                out.push('|');
                out.push_str(rest);
                changed = true;
                continue;
            }
            let Some(table) = rules.codes.get(system) else {
                out.push_str(item);
                continue;
            };
            let (code, tail) = rest.split_at(rest.find('$').unwrap_or(rest.len()));
            match table.codes.get(code) {
                Some(Mapping::To(target)) if target.exact => {
                    out.push_str(&target.system);
                    out.push('|');
                    out.push_str(&target.code);
                    out.push_str(tail);
                    changed = true;
                }
                _ => {
                    out.push_str(item);
                    issues.push(
                        Issue::new(
                            Severity::Warning,
                            IssueCode::CodeInvalid,
                            format!(
                                "search value `{system}|{code}` has no exact mapping to the site's codes ({}); sent as it is",
                                table.map
                            ),
                        )
                        .at(name),
                    );
                }
            }
        }
        (changed.then_some(out), issues)
    }
}

/// Splits on `sep` not escaped with a backslash (FHIR search escaping).
fn split_unescaped(value: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut escaped = false;
    let mut parts = Vec::new();
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&value[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&value[start..]);
    parts.into_iter()
}

fn with_slash(base: &str) -> String {
    if base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    }
}

fn is_type_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

fn is_element_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Index of the tables being built: 0 to the network, 1 to the site.
fn slot(direction: Direction) -> usize {
    match direction {
        Direction::ToNetwork => 0,
        Direction::ToSite => 1,
    }
}

struct Builder<'a> {
    file: &'a str,
    text: &'a str,
    version: FhirVersion,
    to_network: Rules,
    to_site: Rules,
    /// (source system, code) → candidates written in maps used forward.
    written: [HashMap<(String, String), Candidate>; 2],
    /// … and derived by reading maps backward (a list: ambiguity is kept, not an error).
    derived: [HashMap<(String, String), Vec<Target>>; 2],
    /// Source system → what to do with codes no entry lists, and explicit no-maps.
    unmapped: [UnmappedTable; 2],
    map_names: [HashMap<String, Vec<String>>; 2],
}

impl Builder<'_> {
    fn at<T>(&self, spanned: &Spanned<T>, key: &str, message: &str) -> AdapterError {
        AdapterError {
            file: self.file.to_owned(),
            line: Some(file::line_of(self.text, spanned.span().start)),
            key: Some(key.to_owned()),
            message: message.to_owned(),
        }
    }

    fn rules(&mut self, direction: RuleDirection) -> &mut Rules {
        match direction {
            RuleDirection::ToNetwork => &mut self.to_network,
            RuleDirection::ToSite => &mut self.to_site,
        }
    }

    /// An absolute URI (a scheme, then something), without spaces.
    fn uri(&self, value: &Spanned<String>, key: &str) -> Result<(), AdapterError> {
        let v = value.get_ref();
        if v.trim().is_empty() {
            return Err(self.at(value, key, "must not be empty"));
        }
        let scheme_ok = v.split_once(':').is_some_and(|(scheme, rest)| {
            !rest.is_empty()
                && scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
        if !scheme_ok || v.chars().any(char::is_whitespace) {
            return Err(self.at(
                value,
                key,
                &format!("`{v}` is not an absolute URI (`urn:oid:…`, `https://…`)"),
            ));
        }
        Ok(())
    }

    /// `Type.element.element`: checked for syntax, and against the site version's element
    /// definitions as far as they reach (every resource type of the version, its resource
    /// and backbone elements).
    fn element_path(
        &self,
        path: &Spanned<String>,
        key: &str,
    ) -> Result<(String, Vec<Box<str>>), AdapterError> {
        let text = path.get_ref();
        let mut parts = text.split('.');
        let ty = parts.next().unwrap_or_default();
        let segments: Vec<&str> = parts.collect();
        if !is_type_name(ty) || segments.is_empty() || !segments.iter().all(|s| is_element_name(s))
        {
            return Err(self.at(
                path,
                key,
                &format!(
                    "`{text}` is not an element path: `ResourceType.element` or `ResourceType.element.child` (no functions, indexes or `[x]`)"
                ),
            ));
        }
        let defs = definitions(self.version);
        let Some(mut node) = defs.root(ty) else {
            return Err(self.at(
                path,
                key,
                &format!("`{ty}` is not a resource type of FHIR {}", self.version),
            ));
        };
        {
            for (n, segment) in segments.iter().enumerate() {
                let Some(child) = defs.child(node, segment) else {
                    let so_far = std::iter::once(ty)
                        .chain(segments[..n].iter().copied())
                        .collect::<Vec<_>>()
                        .join(".");
                    return Err(self.at(
                        path,
                        key,
                        &format!(
                            "`{segment}` is not an element of {so_far} in FHIR {}",
                            self.version
                        ),
                    ));
                };
                match child.node {
                    Some(next) => node = next,
                    None => break,
                }
            }
        }
        Ok((
            ty.to_owned(),
            segments.into_iter().map(Into::into).collect(),
        ))
    }

    /// A default's TOML value as JSON: no dates (write them as strings), wrapped in an array
    /// where the element repeats.
    fn default_value(
        &self,
        value: &Spanned<toml::Value>,
        key: &str,
        ty: &str,
        segments: &[Box<str>],
    ) -> Result<Value, AdapterError> {
        fn has_datetime(v: &toml::Value) -> bool {
            match v {
                toml::Value::Datetime(_) => true,
                toml::Value::Array(items) => items.iter().any(has_datetime),
                toml::Value::Table(t) => t.values().any(has_datetime),
                _ => false,
            }
        }
        if has_datetime(value.get_ref()) {
            return Err(self.at(
                value,
                key,
                "TOML dates are not FHIR dates: write the value as a string (\"2024-01-31\")",
            ));
        }
        let json = serde_json::to_value(value.get_ref())
            .map_err(|e| self.at(value, key, &format!("cannot be written as JSON: {e}")))?;
        let defs = definitions(self.version);
        let mut node = defs.root(ty);
        let mut many = false;
        for segment in segments {
            let Some(child) = node.and_then(|n| defs.child(n, segment)) else {
                many = false;
                break;
            };
            many = child.many;
            node = child.node;
        }
        Ok(match json {
            Value::Array(_) => json,
            other if many => Value::Array(vec![other]),
            other => other,
        })
    }

    fn concept_map(
        &mut self,
        i: usize,
        map_ref: &file::ConceptMapRef,
        read: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<(), AdapterError> {
        let key = format!("concept_maps[{i}].file");
        let name = map_ref.file.get_ref();
        if name.trim().is_empty() {
            return Err(self.at(&map_ref.file, &key, "must name a ConceptMap file"));
        }
        let text = read(name).map_err(|e| {
            self.at(
                &map_ref.file,
                &key,
                &format!("ConceptMap file {name} cannot be read: {e}"),
            )
        })?;
        let map = concept_map::parse(&text)
            .map_err(|e| self.at(&map_ref.file, &key, &format!("{name}: {e}")))?;
        let line = file::line_of(self.text, map_ref.file.span().start);
        let forward = match map_ref.source {
            MapSource::Site => Direction::ToNetwork,
            MapSource::Network => Direction::ToSite,
        };
        let backward = match forward {
            Direction::ToNetwork => Direction::ToSite,
            Direction::ToSite => Direction::ToNetwork,
        };
        for group in &map.groups {
            let f = slot(forward);
            self.map_names[f]
                .entry(group.source.clone())
                .or_default()
                .push(map.name.clone());
            let unmapped = self.unmapped[f]
                .entry(group.source.clone())
                .or_insert_with(|| (UnmappedRule::Report, HashMap::default()));
            match &group.unmapped {
                Unmapped::Unsaid => {}
                Unmapped::UseSource => unmapped.0 = UnmappedRule::Keep,
                Unmapped::Fixed { code, display } => {
                    unmapped.0 = UnmappedRule::Fixed(Target {
                        system: group.target.as_str().into(),
                        code: code.as_str().into(),
                        display: display.as_deref().map(Into::into),
                        exact: false,
                        keep_original: map_ref.keep_original,
                    });
                }
            }
            if map_ref.reverse {
                let b = slot(backward);
                self.map_names[b]
                    .entry(group.target.clone())
                    .or_default()
                    .push(map.name.clone());
                self.unmapped[b]
                    .entry(group.target.clone())
                    .or_insert_with(|| (UnmappedRule::Report, HashMap::default()));
            }
            for entry in &group.entries {
                if map_ref.reverse {
                    // Read backward, the relationship inverts: equivalent stays exact, a
                    // target narrower than the source makes the source a broader
                    // approximation of it; a broader target gives nothing back.
                    let inverse = entry.relationship.inverse();
                    if let Some(target) = &entry.target
                        && matches!(
                            inverse,
                            Relationship::Equivalent | Relationship::TargetBroader
                        )
                    {
                        self.derived[slot(backward)]
                            .entry((group.target.clone(), target.code.clone()))
                            .or_default()
                            .push(Target {
                                system: group.source.as_str().into(),
                                code: entry.code.as_str().into(),
                                display: None,
                                exact: inverse == Relationship::Equivalent,
                                keep_original: map_ref.keep_original,
                            });
                    }
                }
                let usable_forward = matches!(
                    entry.relationship,
                    Relationship::Equivalent | Relationship::TargetBroader
                );
                let Some(target) = entry.target.as_ref().filter(|_| usable_forward) else {
                    if let Some(u) = self.unmapped[f].get_mut(&group.source) {
                        u.1.entry(entry.code.clone()).or_insert(entry.relationship);
                    }
                    continue;
                };
                let candidate = Target {
                    system: group.target.as_str().into(),
                    code: target.code.as_str().into(),
                    display: target.display.as_deref().map(Into::into),
                    exact: entry.relationship == Relationship::Equivalent,
                    keep_original: map_ref.keep_original,
                };
                let source_key = (group.source.clone(), entry.code.clone());
                match self.written[f].get(&source_key) {
                    Some(existing) if existing.target.exact == candidate.exact => {
                        return Err(AdapterError {
                            file: self.file.to_owned(),
                            line: Some(line),
                            key: Some(key.clone()),
                            message: format!(
                                "{name} {}: code `{}` of {} is mapped twice (also {} {} at line {}, to {}|{}); a site adapter translates each code to one code",
                                entry.location,
                                entry.code,
                                group.source,
                                existing.key,
                                existing.location,
                                existing.line,
                                existing.target.system,
                                existing.target.code
                            ),
                        });
                    }
                    Some(existing) if existing.target.exact => {}
                    _ => {
                        self.written[f].insert(
                            source_key,
                            Candidate {
                                target: candidate.clone(),
                                key: key.clone(),
                                line,
                                location: format!("{name} {}", entry.location),
                            },
                        );
                    }
                }
            }
            if map_ref.reverse {
                for entry in &group.entries {
                    if matches!(
                        entry.relationship,
                        Relationship::TargetBroader | Relationship::Related
                    ) && let Some(target) = &entry.target
                    {
                        let b = slot(backward);
                        if let Some(u) = self.unmapped[b].get_mut(&group.target) {
                            u.1.entry(target.code.clone())
                                .or_insert(entry.relationship.inverse());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Turns the candidates into the per-direction code tables.
    fn finish_codes(&mut self) {
        for direction in [Direction::ToNetwork, Direction::ToSite] {
            let s = slot(direction);
            let mut tables: HashMap<Box<str>, SystemCodes> = HashMap::default();
            let names = std::mem::take(&mut self.map_names[s]);
            let unmapped = std::mem::take(&mut self.unmapped[s]);
            for (system, (rule, no_maps)) in unmapped {
                let mut map_names = names.get(&system).cloned().unwrap_or_default();
                map_names.dedup();
                let mut codes: HashMap<Box<str>, Mapping> = HashMap::default();
                for (code, relationship) in no_maps {
                    codes.insert(code.into(), Mapping::None(Some(relationship)));
                }
                tables.insert(
                    system.as_str().into(),
                    SystemCodes {
                        map: map_names.join(", ").into(),
                        codes,
                        unmapped: rule,
                    },
                );
            }
            let written = std::mem::take(&mut self.written[s]);
            let derived = std::mem::take(&mut self.derived[s]);
            for ((system, code), candidates) in derived {
                if written.contains_key(&(system.clone(), code.clone())) {
                    continue;
                }
                let best_exact = candidates.iter().any(|t| t.exact);
                let mut best: Vec<&Target> = candidates
                    .iter()
                    .filter(|t| t.exact == best_exact)
                    .collect();
                best.dedup_by(|a, b| a.system == b.system && a.code == b.code);
                let mapping = if best.len() == 1 {
                    Mapping::To(best[0].clone())
                } else {
                    Mapping::Ambiguous
                };
                if let Some(table) = tables.get_mut(system.as_str()) {
                    table.codes.insert(code.into(), mapping);
                }
            }
            for ((system, code), candidate) in written {
                if let Some(table) = tables.get_mut(system.as_str()) {
                    table
                        .codes
                        .insert(code.into(), Mapping::To(candidate.target));
                }
            }
            match direction {
                Direction::ToNetwork => self.to_network.codes = tables,
                Direction::ToSite => self.to_site.codes = tables,
            }
        }
    }
}

/// Where in the tree the walk is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Plain,
    /// Items of an `extension`/`modifierExtension` array.
    Extension,
    /// Items of a CodeableConcept's `coding` array (already translated).
    Coding,
}

struct Walk<'a> {
    rules: &'a Rules,
    issues: Vec<Issue>,
    /// The FHIRPath-like location of the current element, for issues.
    path: String,
}

impl<'a> Walk<'a> {
    fn value(&mut self, value: &mut Value, depth: usize, context: Context) {
        if depth > MAX_DEPTH {
            return;
        }
        match value {
            Value::Object(map) => self.object(map, depth, context),
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = self.path.len();
                    let _ = write!(self.path, "[{i}]");
                    self.value(item, depth + 1, context);
                    self.path.truncate(len);
                }
            }
            _ => {}
        }
    }

    fn object(&mut self, map: &mut Map<String, Value>, depth: usize, context: Context) {
        if let Some(resource_type) = map.get("resourceType").and_then(Value::as_str) {
            let resource_type = resource_type.to_owned();
            self.resource(map, &resource_type);
        }
        if context == Context::Extension
            && let Some(Value::String(url)) = map.get_mut("url")
            && let Some(to) = self.rules.extensions.get(url.as_str())
        {
            *url = to.to_string();
        }
        if let Some(Value::String(system)) = map.get("system") {
            if matches!(map.get("value"), Some(Value::String(_))) {
                if let Some(to) = self.rules.identifier_systems.get(system.as_str()) {
                    map.insert("system".into(), Value::String(to.to_string()));
                }
            } else if context != Context::Coding
                && matches!(map.get("code"), Some(Value::String(_)))
                && let Some(target) = self.translate(map)
            {
                replace_coding(map, target);
            }
        }
        for (key, child) in map.iter_mut() {
            let len = self.path.len();
            self.path.push('.');
            self.path.push_str(key);
            match (key.as_str(), child) {
                ("reference", Value::String(reference)) => {
                    if let Some((from, to)) = self
                        .rules
                        .reference_bases
                        .iter()
                        .find(|(from, _)| reference.starts_with(&**from))
                    {
                        *reference = format!("{to}{}", &reference[from.len()..]);
                    }
                }
                ("coding", Value::Array(codings)) => {
                    self.codings(codings);
                    for (i, item) in codings.iter_mut().enumerate() {
                        let len = self.path.len();
                        let _ = write!(self.path, "[{i}]");
                        self.value(item, depth + 2, Context::Coding);
                        self.path.truncate(len);
                    }
                }
                ("extension" | "modifierExtension", child @ Value::Array(_)) => {
                    self.value(child, depth + 1, Context::Extension);
                }
                (_, child) => self.value(child, depth + 1, Context::Plain),
            }
            self.path.truncate(len);
        }
    }

    /// A CodeableConcept's codings: each translated in place, or the translation added after
    /// it where its map keeps originals; duplicates (same system and code) then removed.
    fn codings(&mut self, codings: &mut Vec<Value>) {
        let mut i = 0;
        let mut changed = false;
        while i < codings.len() {
            let len = self.path.len();
            let _ = write!(self.path, "[{i}]");
            let target = match &codings[i] {
                Value::Object(m)
                    if matches!(m.get("system"), Some(Value::String(_)))
                        && matches!(m.get("code"), Some(Value::String(_))) =>
                {
                    self.translate(m)
                }
                _ => None,
            };
            self.path.truncate(len);
            if let Some(target) = target {
                changed = true;
                if target.keep_original {
                    let mut copy = codings[i].clone();
                    if let Value::Object(m) = &mut copy {
                        replace_coding(m, target);
                        m.remove("userSelected");
                    }
                    codings.insert(i + 1, copy);
                    i += 1;
                } else if let Value::Object(m) = &mut codings[i] {
                    replace_coding(m, target);
                }
            }
            i += 1;
        }
        if changed && codings.len() > 1 {
            let mut seen: Vec<(String, String)> = Vec::new();
            codings.retain(|c| {
                let key = (
                    c.get("system")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    c.get("code")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                );
                if key.1.is_empty() || !seen.contains(&key) {
                    seen.push(key);
                    true
                } else {
                    false
                }
            });
        }
    }

    /// The replacement of a coding, if its system is mapped; issues for what is kept or
    /// approximated.
    fn translate(&mut self, coding: &Map<String, Value>) -> Option<&'a Target> {
        let system = coding.get("system")?.as_str()?;
        let code = coding.get("code")?.as_str()?;
        let rules: &'a Rules = self.rules;
        let table = rules.codes.get(system)?;
        let found = table.codes.get(code);
        let target = match found {
            Some(Mapping::To(target)) => target,
            Some(Mapping::Ambiguous) => {
                self.issue(
                    Severity::Warning,
                    IssueCode::CodeInvalid,
                    format!(
                        "code `{code}` of {system} maps back to several codes ({}); kept as it is",
                        table.map
                    ),
                );
                return None;
            }
            Some(Mapping::None(relationship)) => {
                let why = match relationship {
                    Some(Relationship::NotRelated) | None => "has no counterpart".to_owned(),
                    Some(r) => format!(
                        "is only mapped as `{}`, which a translation cannot use",
                        r.as_str()
                    ),
                };
                self.issue(
                    Severity::Warning,
                    IssueCode::CodeInvalid,
                    format!(
                        "code `{code}` of {system} {why} ({}); kept as it is",
                        table.map
                    ),
                );
                return None;
            }
            None => match &table.unmapped {
                UnmappedRule::Keep => return None,
                UnmappedRule::Report => {
                    self.issue(
                        Severity::Warning,
                        IssueCode::CodeInvalid,
                        format!(
                            "code `{code}` of {system} is not in {}; kept as it is",
                            table.map
                        ),
                    );
                    return None;
                }
                UnmappedRule::Fixed(target) => target,
            },
        };
        if !target.exact {
            let (severity, kept) = if target.keep_original {
                (
                    Severity::Information,
                    "the original coding is kept beside it",
                )
            } else {
                (Severity::Warning, "the original code is replaced")
            };
            self.issue(
                severity,
                IssueCode::Informational,
                format!(
                    "code `{code}` of {system} approximated by the broader `{}` of {} ({}); {kept}",
                    target.code, target.system, table.map
                ),
            );
        }
        Some(target)
    }

    fn issue(&mut self, severity: Severity, code: IssueCode, diagnostics: String) {
        self.issues
            .push(Issue::new(severity, code, diagnostics).at(self.path.clone()));
    }

    /// Resource-level rules: drops, defaults, profiles.
    fn resource(&mut self, map: &mut Map<String, Value>, resource_type: &str) {
        if let Some(drops) = self.rules.drops.get(resource_type) {
            for segments in drops {
                let mut dropped = Vec::new();
                let mut at = self.path.clone();
                drop_at(map, segments, &mut at, &mut dropped);
                for place in dropped {
                    self.issues.push(
                        Issue::new(
                            Severity::Information,
                            IssueCode::Informational,
                            "element dropped by the site adapter",
                        )
                        .at(place),
                    );
                }
            }
        }
        if let Some(defaults) = self.rules.defaults.get(resource_type) {
            for (segments, value) in defaults {
                let mut filled = Vec::new();
                let mut at = self.path.clone();
                default_at(map, segments, value, &mut at, &mut filled);
                for place in filled {
                    self.issues.push(
                        Issue::new(
                            Severity::Information,
                            IssueCode::Informational,
                            "element absent, filled with the site adapter's default",
                        )
                        .at(place),
                    );
                }
            }
        }
        // `*` means every resource a site serves, not the Bundles that carry them.
        let every = if resource_type == "Bundle" {
            None
        } else {
            Some("*")
        };
        for key in std::iter::once(resource_type).chain(every) {
            let Some(stamp) = self.rules.profiles.get(key) else {
                continue;
            };
            let meta = map
                .entry("meta")
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(meta) = meta else { continue };
            let profiles = meta
                .entry("profile")
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(profiles) = profiles else {
                continue;
            };
            profiles.retain(|p| {
                !p.as_str()
                    .is_some_and(|p| stamp.remove.iter().any(|r| **r == *p))
            });
            for add in &stamp.add {
                if !profiles.iter().any(|p| p.as_str() == Some(add)) {
                    profiles.push(Value::String(add.to_string()));
                }
            }
            if profiles.is_empty() {
                meta.remove("profile");
            }
            if meta.is_empty() {
                map.remove("meta");
            }
        }
    }
}

/// Sets a Coding's system and code to `target`'s; its display follows (or goes: it named the
/// old code), and so does its version.
fn replace_coding(map: &mut Map<String, Value>, target: &Target) {
    map.insert("system".into(), Value::String(target.system.to_string()));
    map.insert("code".into(), Value::String(target.code.to_string()));
    map.remove("version");
    map.remove("_display");
    match &target.display {
        Some(display) => {
            map.insert("display".into(), Value::String(display.to_string()));
        }
        None => {
            map.remove("display");
        }
    }
}

/// Removes the element at `segments` below `map` (every occurrence, arrays crossed), with its
/// primitive extensions (`_name`); records where.
fn drop_at(
    map: &mut Map<String, Value>,
    segments: &[Box<str>],
    at: &mut String,
    dropped: &mut Vec<String>,
) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let len = at.len();
    at.push('.');
    at.push_str(first);
    if rest.is_empty() {
        let removed = map.remove(&**first).is_some();
        let removed_ext = map.remove(&format!("_{first}")).is_some();
        if removed || removed_ext {
            dropped.push(at.clone());
        }
    } else {
        match map.get_mut(&**first) {
            Some(Value::Object(child)) => drop_at(child, rest, at, dropped),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Object(child) = item {
                        let l = at.len();
                        let _ = write!(at, "[{i}]");
                        drop_at(child, rest, at, dropped);
                        at.truncate(l);
                    }
                }
            }
            _ => {}
        }
    }
    at.truncate(len);
}

/// Sets the element at `segments` where its parent exists and it is absent; records where.
fn default_at(
    map: &mut Map<String, Value>,
    segments: &[Box<str>],
    value: &Value,
    at: &mut String,
    filled: &mut Vec<String>,
) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let len = at.len();
    at.push('.');
    at.push_str(first);
    if rest.is_empty() {
        if !map.contains_key(&**first) && !map.contains_key(&format!("_{first}")) {
            map.insert(first.to_string(), value.clone());
            filled.push(at.clone());
        }
    } else {
        match map.get_mut(&**first) {
            Some(Value::Object(child)) => default_at(child, rest, value, at, filled),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Object(child) = item {
                        let l = at.len();
                        let _ = write!(at, "[{i}]");
                        default_at(child, rest, value, at, filled);
                        at.truncate(l);
                    }
                }
            }
            _ => {}
        }
    }
    at.truncate(len);
}

#[cfg(test)]
mod tests;
