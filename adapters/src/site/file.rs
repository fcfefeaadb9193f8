//! The site adapter file (TOML) as serde structs whose values keep their spans, and the
//! location of an error (line and dotted key) from a byte span of the file.
//!
//! Leaves out: what the keys mean (`site.rs` builds the rules), reading files (the caller).

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The whole adapter file. Every table is optional; unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdapterFile {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub identifier_systems: Vec<Pair>,
    #[serde(default)]
    pub concept_maps: Vec<ConceptMapRef>,
    #[serde(default)]
    pub extensions: Vec<Pair>,
    #[serde(default)]
    pub reference_bases: Vec<Pair>,
    #[serde(default)]
    pub profiles: Vec<ProfileRule>,
    #[serde(default)]
    pub defaults: Vec<DefaultRule>,
    #[serde(default)]
    pub drops: Vec<DropRule>,
}

/// A value as the site writes it and as the network writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pair {
    pub site: Spanned<String>,
    pub network: Spanned<String>,
}

/// Whose codes a ConceptMap's `group.source` systems are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MapSource {
    Site,
    Network,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConceptMapRef {
    pub file: Spanned<String>,
    #[serde(default = "default_source")]
    pub source: MapSource,
    #[serde(default = "default_true")]
    pub reverse: bool,
    #[serde(default)]
    pub keep_original: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProfileRule {
    pub resource: Spanned<String>,
    #[serde(default)]
    pub site: Vec<Spanned<String>>,
    #[serde(default)]
    pub network: Vec<Spanned<String>>,
}

/// Which way a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RuleDirection {
    ToNetwork,
    ToSite,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefaultRule {
    pub path: Spanned<String>,
    pub value: Spanned<toml::Value>,
    #[serde(default = "default_direction")]
    pub direction: RuleDirection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DropRule {
    pub path: Spanned<String>,
    #[serde(default = "default_direction")]
    pub direction: RuleDirection,
}

fn default_source() -> MapSource {
    MapSource::Site
}
fn default_true() -> bool {
    true
}
fn default_direction() -> RuleDirection {
    RuleDirection::ToNetwork
}

/// The 1-based line of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The dotted key (`concept_maps[1].file`) whose key or value holds `span`, the deepest
/// found, if any. Reads the document again with the span-keeping parser (also a document
/// with syntax errors, as far as it parses).
pub(crate) fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let (table, _) = DeTable::parse_recoverable(text);
    let mut path = String::new();
    find_in_table(table.get_ref(), span, &mut path);
    (!path.is_empty()).then_some(path)
}

fn holds(outer: Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

/// Whether `value`'s span, or a key or value below it, holds `span`. Tables of an array of
/// tables span only their header, so their keys lie outside it.
fn reaches(value: &toml::Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    if holds(value.span(), span) {
        return true;
    }
    match value.get_ref() {
        DeValue::Table(table) => table
            .iter()
            .any(|(k, v)| holds(k.span(), span) || reaches(v, span)),
        DeValue::Array(items) => items.iter().any(|item| reaches(item, span)),
        _ => false,
    }
}

fn find_in_table(table: &DeTable<'_>, span: &Range<usize>, path: &mut String) {
    for (key, value) in table {
        let on_key = holds(key.span(), span);
        if on_key || reaches(value, span) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key.get_ref());
            if !on_key {
                find_in_value(value.get_ref(), span, path);
            }
            return;
        }
    }
}

fn find_in_value(value: &DeValue<'_>, span: &Range<usize>, path: &mut String) {
    match value {
        DeValue::Table(table) => find_in_table(table, span, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if reaches(item, span) {
                    path.push_str(&format!("[{i}]"));
                    find_in_value(item.get_ref(), span, path);
                    return;
                }
            }
        }
        _ => {}
    }
}
