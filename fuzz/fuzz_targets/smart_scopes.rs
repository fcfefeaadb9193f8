//! SMART scopes on arbitrary claims: parsing never panics and never widens (each scope kept
//! is a token of the claim, read as written: its context, type and letters; every token is
//! either kept or reported), granular conditions read back the same from the query they are
//! added to a search as, and checking a grant against an arbitrary resource never panics.
#![no_main]

use arbitrary::Arbitrary;
use assent_auth::{Access, Permissions, ScopeContext, Scopes};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    claim: &'a str,
    resource: &'a [u8],
    resource_type: u8,
}

const TYPES: [&str; 4] = ["Observation", "Patient", "Condition", "Xyz"];

/// The letters a scope text grants, read here from its text (SMART App Launch 2.x).
fn letters_of(text: &str) -> Option<Permissions> {
    let main = text.split_once('?').map_or(text, |(m, _)| m);
    let (_, permission) = main.rsplit_once('.')?;
    let all = [
        ('c', Permissions::CREATE),
        ('r', Permissions::READ),
        ('u', Permissions::UPDATE),
        ('d', Permissions::DELETE),
        ('s', Permissions::SEARCH),
    ];
    Some(match permission {
        "read" => Permissions::READ.union(Permissions::SEARCH),
        "write" => Permissions::CREATE
            .union(Permissions::UPDATE)
            .union(Permissions::DELETE),
        "*" => Permissions::ALL,
        letters => letters.chars().fold(Permissions::default(), |acc, c| {
            all.iter()
                .find(|(l, _)| *l == c)
                .map_or(acc, |(_, p)| acc.union(*p))
        }),
    })
}

fuzz_target!(|input: Input| {
    let (scopes, warnings) = Scopes::parse(input.claim);
    let tokens: Vec<&str> = input.claim.split(' ').filter(|s| !s.is_empty()).collect();
    assert_eq!(
        scopes.resource_scopes().len() + scopes.other_scopes().len() + warnings.len(),
        tokens.len(),
        "a scope was neither kept nor reported: {:?}",
        input.claim
    );
    for scope in scopes.resource_scopes() {
        assert!(
            tokens.contains(&scope.text.as_str()),
            "{scope:?} not in the claim"
        );
        let context = match scope.context {
            ScopeContext::Patient => "patient/",
            ScopeContext::User => "user/",
            ScopeContext::System => "system/",
        };
        assert!(scope.text.starts_with(context), "{scope:?}");
        let rest = &scope.text[context.len()..];
        let main = rest.split_once('?').map_or(rest, |(m, _)| m);
        let named = main.rsplit_once('.').map(|(t, _)| t);
        assert_eq!(
            named,
            Some(scope.resource_type.as_deref().unwrap_or("*")),
            "{scope:?}"
        );
        let written = letters_of(&scope.text).expect("letters");
        assert!(
            written.contains(scope.permissions),
            "{scope:?} widened past {written:?}"
        );
        assert!(
            scope.conditions.is_empty() || rest.contains('?'),
            "{scope:?}"
        );
        // The conditions, as added to a search, read back as the same conditions.
        if !scope.conditions.is_empty() {
            let query: Vec<String> = scope
                .conditions
                .iter()
                .map(|c| {
                    let (name, value) = c.to_query_pair();
                    format!("{name}={}", value.replace('%', "%25").replace('&', "%26"))
                })
                .collect();
            let again = format!("{context}{main}?{}", query.join("&"));
            let (reparsed, w) = Scopes::parse(&again);
            assert!(w.is_empty(), "{again}: {w:?}");
            assert_eq!(
                reparsed.resource_scopes()[0].conditions,
                scope.conditions,
                "{again}"
            );
        }
    }
    let resource = serde_json::from_slice::<serde_json::Value>(input.resource).unwrap_or_default();
    let resource_type = TYPES[input.resource_type as usize % TYPES.len()];
    for access in [
        Access::Read,
        Access::Search,
        Access::HistoryType,
        Access::Create,
    ] {
        if let Ok(grant) = scopes.authorize_access(access, resource_type) {
            // Granted only by a scope that names the type (or `*`) with the letter.
            assert!(scopes.resource_scopes().iter().any(|s| {
                s.resource_type
                    .as_deref()
                    .is_none_or(|t| t == resource_type)
                    && s.permissions.contains(access.permission())
            }));
            let _ = grant.permits(&resource, true);
            let _ = grant.permits(&resource, false);
            let _ = grant.search_narrowing();
        }
    }
});
