//! SMART App Launch scopes, v1 (`patient/Observation.read`, `user/*.*`) and v2
//! (`patient/Observation.rs`, `system/Patient.cruds`, granular
//! `patient/Observation.rs?category=…|laboratory`): strict parsing and enforcement per
//! interaction and resource type.
//!
//! Parsing never widens: a scope that does not parse is dropped and reported as a
//! [`ScopeWarning`]. Enforcement returns a [`Grant`] saying which granular restrictions and
//! which patient confinement apply; checking a resource against them is in
//! `scopes/granular.rs`. Leaves out: finding a resource's patient compartment (the gateway
//! knows compartment definitions per FHIR version).
//!
//! Rules (SMART App Launch 2.x, "Scopes for requesting FHIR Resources"):
//! v2 `c` create; `r` read, vread and instance history; `u` update and patch; `d` delete;
//! `s` type-level search and type-level history. Letters appear once each, in `cruds` order.
//! v1 `read` = `rs`, `write` = `cud`, `*` = `cruds`. Granular query strings are v2 only.

mod granular;

use std::fmt;

use assent_fhir::Interaction;
use serde_json::Value;

use crate::error::AuthError;

/// Whose data a resource scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeContext {
    /// `patient/`: only the token's patient launch context.
    Patient,
    /// `user/`: whatever the user may see.
    User,
    /// `system/`: a backend service, no user.
    System,
}

impl ScopeContext {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }
}

/// A set of SMART v2 permission letters (`c r u d s`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const CREATE: Permissions = Permissions(1);
    pub const READ: Permissions = Permissions(2);
    pub const UPDATE: Permissions = Permissions(4);
    pub const DELETE: Permissions = Permissions(8);
    pub const SEARCH: Permissions = Permissions(16);
    pub const ALL: Permissions = Permissions(31);

    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    /// The v2 letters, in `cruds` order.
    pub fn letters(self) -> String {
        LETTERS
            .iter()
            .filter(|(_, p)| self.contains(*p))
            .map(|(c, _)| *c)
            .collect()
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({})", self.letters())
    }
}

/// One token-search value of a granular scope (`system|code`, `code`, `system|`, `|code`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenValue {
    /// `code`: the code in any system.
    Code(String),
    /// `system|code`.
    SystemCode { system: String, code: String },
    /// `system|`: any code of the system.
    System(String),
    /// `|code`: the code with no system.
    NoSystem(String),
}

impl fmt::Display for TokenValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenValue::Code(code) => f.write_str(code),
            TokenValue::SystemCode { system, code } => write!(f, "{system}|{code}"),
            TokenValue::System(system) => write!(f, "{system}|"),
            TokenValue::NoSystem(code) => write!(f, "|{code}"),
        }
    }
}

/// One `parameter=value[,value…]` of a granular scope: any one value satisfies it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchCondition {
    pub parameter: String,
    pub values: Vec<TokenValue>,
}

impl SearchCondition {
    /// The condition as a search parameter name and value, to add to a search.
    pub fn to_query_pair(&self) -> (String, String) {
        let values: Vec<String> = self.values.iter().map(ToString::to_string).collect();
        (self.parameter.clone(), values.join(","))
    }

    /// Whether `resource` satisfies this condition (token search on the element named by the
    /// parameter: CodeableConcept, Coding, Identifier or code). An element this crate cannot
    /// evaluate does not satisfy it.
    pub fn is_satisfied_by(&self, resource: &Value) -> bool {
        granular::satisfies(resource, self)
    }
}

/// One parsed resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: ScopeContext,
    /// `None` for `*`.
    pub resource_type: Option<String>,
    pub permissions: Permissions,
    /// Granular restrictions, all of which must hold (empty: none).
    pub conditions: Vec<SearchCondition>,
    /// The scope as the token stated it.
    pub text: String,
}

/// A scope that was dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeWarning {
    pub scope: String,
    pub reason: &'static str,
}

/// A token's scopes, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    resource: Vec<ResourceScope>,
    other: Vec<String>,
}

/// What a request does to a resource type, at the granularity of SMART v2 letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Vread,
    HistoryInstance,
    HistoryType,
    Search,
    Create,
    Update,
    Delete,
}

impl Access {
    /// The v2 letter this access needs.
    pub fn permission(self) -> Permissions {
        match self {
            Access::Read | Access::Vread | Access::HistoryInstance => Permissions::READ,
            Access::Search | Access::HistoryType => Permissions::SEARCH,
            Access::Create => Permissions::CREATE,
            Access::Update => Permissions::UPDATE,
            Access::Delete => Permissions::DELETE,
        }
    }
}

/// One way an access is allowed: confined to the token's patient or not, with granular
/// conditions that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRule {
    pub patient_confined: bool,
    pub conditions: Vec<SearchCondition>,
}

/// What the scopes allow for one access to one resource type: any one rule suffices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    rules: Vec<GrantRule>,
}

impl Grant {
    /// A grant with no restriction at all (for interactions that touch no resource).
    pub fn unrestricted() -> Grant {
        Grant {
            rules: vec![GrantRule {
                patient_confined: false,
                conditions: Vec::new(),
            }],
        }
    }

    pub fn rules(&self) -> &[GrantRule] {
        &self.rules
    }

    /// Neither confined to a patient nor narrowed by granular conditions.
    pub fn is_unrestricted(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !r.patient_confined && r.conditions.is_empty())
    }

    /// Every rule is confined to the token's patient: confine the request to it (a search
    /// narrowed to the patient, a read of another patient's data refused with 403).
    pub fn patient_confined(&self) -> bool {
        self.rules.iter().all(|r| r.patient_confined)
    }

    /// The conditions to add to a search when one rule alone decides (then results need no
    /// filtering on conditions). `None` when several rules apply: search unnarrowed and keep
    /// only results that [`permits`](Grant::permits) accepts.
    pub fn search_narrowing(&self) -> Option<&[SearchCondition]> {
        match self.rules.as_slice() {
            [rule] => Some(&rule.conditions),
            _ => None,
        }
    }

    /// Whether results must be checked one by one with [`permits`](Grant::permits).
    pub fn needs_result_filtering(&self) -> bool {
        !self.is_unrestricted()
    }

    /// Whether `resource` may be released under this grant. `in_patient_compartment` says
    /// whether the resource is in the compartment of the token's patient (the gateway decides).
    pub fn permits(&self, resource: &Value, in_patient_compartment: bool) -> bool {
        self.rules.iter().any(|rule| {
            (!rule.patient_confined || in_patient_compartment)
                && rule.conditions.iter().all(|c| c.is_satisfied_by(resource))
        })
    }

    /// This grant without its patient-confined rules, or `None` if nothing remains.
    pub(crate) fn without_patient_rules(self) -> Option<Grant> {
        let rules: Vec<GrantRule> = self
            .rules
            .into_iter()
            .filter(|r| !r.patient_confined)
            .collect();
        (!rules.is_empty()).then_some(Grant { rules })
    }
}

impl Scopes {
    /// Parses a space-separated `scope` claim. Unparseable scopes are dropped and returned as
    /// warnings; nothing is ever widened.
    pub fn parse(text: &str) -> (Scopes, Vec<ScopeWarning>) {
        Scopes::from_list(text.split(' ').filter(|s| !s.is_empty()))
    }

    /// Parses scopes given one by one (an `scp` array claim).
    pub fn from_list<'a>(scopes: impl IntoIterator<Item = &'a str>) -> (Scopes, Vec<ScopeWarning>) {
        let mut parsed = Scopes::default();
        let mut warnings = Vec::new();
        for scope in scopes {
            if is_known_other_scope(scope) {
                parsed.other.push(scope.to_owned());
                continue;
            }
            match parse_resource_scope(scope) {
                Ok(resource) => parsed.resource.push(resource),
                Err(reason) => warnings.push(ScopeWarning {
                    scope: scope.to_owned(),
                    reason,
                }),
            }
        }
        (parsed, warnings)
    }

    pub fn resource_scopes(&self) -> &[ResourceScope] {
        &self.resource
    }

    /// Non-resource SMART/OpenID scopes kept as stated (`openid`, `launch/patient`, …), and
    /// the issuer's role scopes ([`crate::IssuerConfig::role_scopes`]).
    pub fn other_scopes(&self) -> &[String] {
        &self.other
    }

    /// Keeps a role scope as stated among the other scopes.
    pub(crate) fn keep_other(&mut self, scope: &str) {
        if !self.other.iter().any(|s| s == scope) {
            self.other.push(scope.to_owned());
        }
    }

    /// Whether any resource scope has the `patient/` context.
    pub fn has_patient_scopes(&self) -> bool {
        self.resource
            .iter()
            .any(|s| s.context == ScopeContext::Patient)
    }

    /// Enforcement for a FHIR interaction on `resource_type`.
    ///
    /// `Read`/`Vread` need `r` (v1 `read`); `Search` needs `s` (v1 `read`). `History` and
    /// `Operation` cannot tell instance from type level here, so they need one scope granting
    /// both `r` and `s`; call [`authorize_access`](Scopes::authorize_access) with
    /// [`Access::HistoryInstance`] or [`Access::HistoryType`] for the exact rule.
    /// `Capabilities` touches no resource and is always granted.
    pub fn authorize(
        &self,
        interaction: Interaction,
        resource_type: &str,
    ) -> Result<Grant, AuthError> {
        let needed = match interaction {
            Interaction::Capabilities => return Ok(Grant::unrestricted()),
            Interaction::Read | Interaction::Vread => Permissions::READ,
            Interaction::Search => Permissions::SEARCH,
            Interaction::History | Interaction::Operation => {
                Permissions::READ.union(Permissions::SEARCH)
            }
        };
        self.grant_for(needed, resource_type)
    }

    /// Enforcement for one [`Access`] on `resource_type`.
    pub fn authorize_access(
        &self,
        access: Access,
        resource_type: &str,
    ) -> Result<Grant, AuthError> {
        self.grant_for(access.permission(), resource_type)
    }

    fn grant_for(&self, needed: Permissions, resource_type: &str) -> Result<Grant, AuthError> {
        let mut rules: Vec<GrantRule> = Vec::new();
        for scope in &self.resource {
            let type_matches = scope
                .resource_type
                .as_deref()
                .is_none_or(|t| t == resource_type);
            if !type_matches || !scope.permissions.contains(needed) {
                continue;
            }
            let rule = GrantRule {
                patient_confined: scope.context == ScopeContext::Patient,
                conditions: scope.conditions.clone(),
            };
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        if rules.is_empty() {
            let letters = needed.letters();
            return Err(AuthError::InsufficientScope {
                needed: format!(
                    "patient/{resource_type}.{letters} user/{resource_type}.{letters} system/{resource_type}.{letters}"
                ),
            });
        }
        Ok(Grant {
            rules: drop_subsumed(rules),
        })
    }
}

const LETTERS: [(char, Permissions); 5] = [
    ('c', Permissions::CREATE),
    ('r', Permissions::READ),
    ('u', Permissions::UPDATE),
    ('d', Permissions::DELETE),
    ('s', Permissions::SEARCH),
];

/// Longest resource type name accepted (the longest FHIR type is well under this).
const MAX_TYPE_LEN: usize = 64;

fn is_known_other_scope(scope: &str) -> bool {
    matches!(
        scope,
        "openid" | "profile" | "email" | "fhirUser" | "launch" | "offline_access" | "online_access"
    ) || scope
        .strip_prefix("launch/")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn parse_resource_scope(scope: &str) -> Result<ResourceScope, &'static str> {
    let (context, rest) = scope
        .split_once('/')
        .ok_or("not a SMART resource scope or a known OpenID/SMART scope")?;
    let context = match context {
        "patient" => ScopeContext::Patient,
        "user" => ScopeContext::User,
        "system" => ScopeContext::System,
        _ => return Err("scope context is not patient, user or system"),
    };
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (rest, None),
    };
    let (resource_type, permission) = main
        .rsplit_once('.')
        .ok_or("no '.' between resource type and permissions")?;
    let resource_type = match resource_type {
        "*" => None,
        t if is_resource_type_name(t) => Some(t.to_owned()),
        _ => return Err("resource type is not '*' or a FHIR resource type name"),
    };
    let (permissions, v2) = match permission {
        "read" => (Permissions::READ.union(Permissions::SEARCH), false),
        "write" => (
            Permissions::CREATE
                .union(Permissions::UPDATE)
                .union(Permissions::DELETE),
            false,
        ),
        "*" => (Permissions::ALL, false),
        letters => (parse_v2_letters(letters)?, true),
    };
    let conditions = match query {
        None => Vec::new(),
        Some(_) if !v2 => return Err("granular restrictions need v2 permissions (cruds)"),
        Some(_) if resource_type.is_none() => {
            return Err("granular restrictions need a resource type, not '*'");
        }
        Some(query) => parse_conditions(query)?,
    };
    Ok(ResourceScope {
        context,
        resource_type,
        permissions,
        conditions,
        text: scope.to_owned(),
    })
}

fn is_resource_type_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_TYPE_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && bytes.all(|b| b.is_ascii_alphabetic())
}

fn parse_v2_letters(letters: &str) -> Result<Permissions, &'static str> {
    if letters.is_empty() {
        return Err("no permissions");
    }
    let mut permissions = Permissions::default();
    let mut next = 0;
    for c in letters.chars() {
        let position = LETTERS[next..]
            .iter()
            .position(|(l, _)| *l == c)
            .ok_or("permissions are not v1 read/write/* nor v2 letters in cruds order")?;
        permissions = permissions.union(LETTERS[next + position].1);
        next += position + 1;
    }
    Ok(permissions)
}

fn parse_conditions(query: &str) -> Result<Vec<SearchCondition>, &'static str> {
    if query.is_empty() {
        return Err("empty granular query");
    }
    let mut conditions = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair
            .split_once('=')
            .ok_or("granular restriction is not name=value")?;
        let name_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(
                "granular search parameter name is not supported (modifiers and _ parameters are not)",
            );
        }
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| "granular value is not UTF-8 after percent-decoding")?;
        if value.contains('\\') {
            return Err("escaped characters in granular values are not supported");
        }
        let values = value
            .split(',')
            .map(parse_token_value)
            .collect::<Result<Vec<_>, _>>()?;
        conditions.push(SearchCondition {
            parameter: name.to_owned(),
            values,
        });
    }
    Ok(conditions)
}

fn parse_token_value(value: &str) -> Result<TokenValue, &'static str> {
    let token = match value.split_once('|') {
        None if !value.is_empty() => TokenValue::Code(value.to_owned()),
        None => return Err("empty granular value"),
        Some((_, code)) if code.contains('|') => {
            return Err("more than one '|' in a granular value");
        }
        Some(("", "")) => return Err("empty granular value"),
        Some(("", code)) => TokenValue::NoSystem(code.to_owned()),
        Some((system, "")) => TokenValue::System(system.to_owned()),
        Some((system, code)) => TokenValue::SystemCode {
            system: system.to_owned(),
            code: code.to_owned(),
        },
    };
    Ok(token)
}

/// Drops rules that another rule makes redundant: one that is no more confined and has a
/// subset of its conditions.
fn drop_subsumed(rules: Vec<GrantRule>) -> Vec<GrantRule> {
    let subsumes = |a: &GrantRule, b: &GrantRule| {
        (!a.patient_confined || b.patient_confined)
            && a.conditions.iter().all(|c| b.conditions.contains(c))
    };
    let mut kept: Vec<GrantRule> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let redundant = rules
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && subsumes(other, rule) && (!subsumes(rule, other) || j < i));
        if !redundant {
            kept.push(rule.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests;
