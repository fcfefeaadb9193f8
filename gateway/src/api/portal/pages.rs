//! The patient portal's HTML, rendered on the server with `maud` (every value escaped by the
//! template), and its one stylesheet: no script, no external asset; labelled forms, usable by
//! keyboard, readable at 360 px, colours with WCAG AA contrast.
//!
//! Owns layout and wording (a consent in plain words). Leaves out what is shown (`portal.rs`).

use std::collections::HashMap;

use assent_consent::{Effect, Party, Timestamp, parse_consent_any};
use assent_receipts::{Disclosure, format_instant};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::GRANTABLE_PURPOSES;
use super::categories::{self, DATA_CATEGORIES};
use crate::services::directory::SiteDirectory;

/// The stylesheet, served at `/portal/style.css`: one column, fluid to 360 px.
pub const STYLESHEET: &str = r#"
:root { --ink: #1b2330; --muted: #4a5568; --line: #cfd6e0; --bg: #f7f8fa; --accent: #1a5597;
        --ok: #17663b; --ok-bg: #e3f4ea; --bad: #a3221b; --bad-bg: #fbe7e6; --warn: #7a4f00;
        --warn-bg: #fff3d6; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #12263f; color: #fff; padding: .8rem 1rem; }
header h1 { font-size: 1.15rem; margin: 0 0 .3rem; }
header nav { display: flex; flex-wrap: wrap; gap: .4rem 1rem; }
header a { color: #fff; }
main { max-width: 52rem; margin: 0 auto; padding: 1rem 1rem 3rem; }
h2 { font-size: 1.3rem; margin: 1.2rem 0 .6rem; }
h3 { font-size: 1.05rem; margin: 0 0 .4rem; }
a { color: var(--accent); }
a:focus, button:focus, input:focus, select:focus, summary:focus
  { outline: 3px solid #f0b400; outline-offset: 2px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .9rem;
        margin: .8rem 0; }
.card p { margin: .3rem 0; }
form.stack { display: grid; gap: .8rem; }
label { display: block; font-weight: 600; }
label .hint, .note { font-weight: 400; color: var(--muted); font-size: .92rem; }
fieldset { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .8rem; }
fieldset label { font-weight: 400; display: flex; gap: .5rem; align-items: center; }
input[type=text], input[type=date], select { font: inherit; width: 100%; padding: .45rem .55rem;
        border: 1px solid #8391a5; border-radius: 5px; background: #fff; color: var(--ink); }
button, .button { font: inherit; padding: .5rem 1rem; border-radius: 5px; cursor: pointer;
        border: 1px solid var(--accent); background: var(--accent); color: #fff;
        text-decoration: none; display: inline-block; }
button.danger { background: #fff; color: var(--bad); border-color: var(--bad); }
.badge { display: inline-block; padding: .05rem .55rem; border-radius: 999px; font-size: .85rem;
         font-weight: 600; }
.in-force, .permitted { background: var(--ok-bg); color: var(--ok); }
.revoked, .denied { background: var(--bad-bg); color: var(--bad); }
.ended, .failed { background: var(--warn-bg); color: var(--warn); }
.banner { padding: .8rem 1rem; border-radius: 8px; font-weight: 600; margin: 1rem 0;
          background: #fff; border: 1px solid var(--line); }
.banner.ok { border-color: var(--ok); }
.banner.fails { border-color: var(--bad); color: var(--bad); }
.emergency { border-left: 5px solid var(--bad); }
.mono { font-family: ui-monospace, Menlo, monospace; font-size: .85rem; overflow-wrap: anywhere; }
ol.history { padding-left: 1.2rem; margin: .3rem 0; }
.filters { display: grid; gap: .6rem; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr));
           align-items: end; }
"#;

/// A whole page around `content`.
fn layout(title: &str, signed_in: bool, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · My health records" }
                link rel="stylesheet" href="/portal/style.css";
            }
            body {
                header {
                    h1 { "My health records" }
                    @if signed_in {
                        nav aria-label="Portal" {
                            a href="/portal/" { "My sharing choices" }
                            a href="/portal/disclosures" { "Who saw my records" }
                            a href="/portal/logout" { "Sign out" }
                        }
                    }
                }
                main id="main" { (content) }
            }
        }
    }
}

/// The page asking to sign in.
pub fn sign_in(message: Option<&str>) -> Markup {
    layout(
        "Sign in",
        false,
        html! {
            h2 { "Sign in" }
            p { "Decide who may see your health records, and see who did." }
            @if let Some(m) = message { p.banner.fails role="alert" { (m) } }
            p { a.button id="sign-in" href="/portal/login" { "Sign in" } }
        },
    )
}

/// After the sign-in: on to the portal (a link, so that the session cookie goes with it).
pub fn signed_in() -> Markup {
    layout(
        "Signed in",
        true,
        html! {
            h2 { "You are signed in" }
            p { a.button id="continue" href="/portal/" { "Continue to my sharing choices" } }
        },
    )
}

/// The portal's own error: a page with the status, the sentence and the stable code.
pub fn error(signed_in: bool, status: u16, code: &str, message: &str) -> Markup {
    let title = match status {
        404 => "Not found",
        400 => "These values cannot be used",
        401 | 403 => "Not allowed",
        503 => "Unavailable",
        _ => "Something went wrong",
    };
    layout(
        title,
        signed_in,
        html! {
            h2 { (title) }
            p.banner.fails id="error" role="alert" { (message) }
            p.note { "HTTP " (status) " · " span.mono id="error-code" { (code) } }
            p { a href="/portal/" { "Back to my sharing choices" } }
        },
    )
}

/// One version of a consent in its history.
pub struct Version {
    pub version: u64,
    pub updated_at: i64,
    pub tx_id: String,
    pub revoked: bool,
}

/// One consent as the sharing page shows it.
pub struct Choice {
    pub id: String,
    /// `at st-mary`, `at every site holding your records`.
    pub where_: String,
    pub in_force: bool,
    pub revoked: bool,
    pub version: u64,
    /// Unix seconds of the current version.
    pub updated_at: i64,
    pub tx_id: String,
    pub document: Value,
    pub sentences: Vec<String>,
    pub history: Vec<Version>,
}

/// A site the patient's records are held at, its default and the patient's choice there.
pub struct SiteChoice {
    pub site: String,
    pub policy: assent_consent::SitePolicy,
    /// The consent in force that opts the patient out of (or into) the site, if any.
    pub held: Option<String>,
}

/// The plain sentence for a site and the patient's choice there.
pub fn site_sentence(s: &SiteChoice) -> String {
    use assent_consent::SitePolicy::*;
    match (s.policy, s.held.is_some()) {
        (OptOut, false) => format!(
            "{} shares your records with its staff unless you opt out.",
            s.site
        ),
        (OptOut, true) => format!(
            "You opted out at {}: nobody there may see your records.",
            s.site
        ),
        (OptIn, false) => format!(
            "{} shares your records only with those you choose, unless you opt in.",
            s.site
        ),
        (OptIn, true) => format!(
            "You opted in at {}: its staff may see your records for treatment.",
            s.site
        ),
    }
}

/// `1 March 2027` for Unix seconds.
pub fn long_date(unix_seconds: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let exact = format_instant(unix_seconds.saturating_mul(1000));
    let words = (|| {
        let date = exact.split('T').next()?;
        let mut ymd = date.split('-');
        let (year, month, day) = (ymd.next()?, ymd.next()?, ymd.next()?);
        let month = MONTHS.get(month.parse::<usize>().ok()?.checked_sub(1)?)?;
        Some(format!("{} {month} {year}", day.parse::<u8>().ok()?))
    })();
    words.unwrap_or(exact)
}

/// A FHIR instant (`2026-12-06T08:43:52.109Z`) as `6 December 2026, 08:43 UTC`; any other
/// text as it is.
fn readable(instant: &str) -> String {
    (|| {
        let (date, time) = instant.split_once('T')?;
        let (y, rest) = date.split_once('-')?;
        let (m, d) = rest.split_once('-')?;
        let seconds = civil_days(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)? * 86_400;
        Some(format!("{}, {} UTC", long_date(seconds), time.get(..5)?))
    })()
    .unwrap_or_else(|| instant.to_owned())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_days(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn when(t: Timestamp) -> Option<i64> {
    (t != Timestamp::MIN && t != Timestamp::MAX).then(|| t.unix_seconds())
}

/// The consent in plain words, one sentence per provision that names whom it concerns (or
/// the root): "Alice Adams (Practitioner/dr-alice) at st-mary may see your records for
/// treatment until 1 March 2027".
pub fn sentences(document: &Value, where_: &str, names: &HashMap<String, String>) -> Vec<String> {
    let Ok((consent, _)) = parse_consent_any(document) else {
        return vec!["A consent the portal cannot read in words.".to_owned()];
    };
    let mut out = Vec::new();
    for (i, p) in consent.provisions().into_iter().enumerate() {
        if i > 0 && p.actors.is_empty() && p.purposes.is_empty() && p.period.is_none() {
            continue;
        }
        let who: Vec<String> = p
            .actors
            .iter()
            .map(|a| match &a.party {
                Some(Party::Reference(r)) => match names.get(r) {
                    Some(name) => format!("{name} ({r})"),
                    None => r.clone(),
                },
                Some(Party::Identifier { value, .. }) => value.clone(),
                None => "anyone in that role".to_owned(),
            })
            .collect();
        let who = if who.is_empty() {
            "Anyone".to_owned()
        } else {
            who.join(" or ")
        };
        let verb = match p.effect {
            Effect::Permit => "may see",
            Effect::Deny => "may not see",
        };
        let what = categories::words(&p.resource_types);
        let why = if p.purposes.is_empty() {
            String::new()
        } else {
            let words: Vec<String> = p
                .purposes
                .iter()
                .map(|c| {
                    assent_auth::PurposeOfUse::parse(&c.code)
                        .map(|p| p.display().to_owned())
                        .unwrap_or_else(|| c.code.clone())
                })
                .collect();
            format!(" for {}", words.join(" or "))
        };
        let period = p.period.or(consent.period);
        // A period's end is exclusive: its last day is the one before.
        let last_day = |t: Timestamp| when(t).map(|e| e - 1);
        let span = match period.map(|p| (when(p.start), last_day(p.end))) {
            Some((Some(s), Some(e))) => {
                format!(" from {} until {}", long_date(s), long_date(e))
            }
            Some((Some(s), None)) => format!(" from {}", long_date(s)),
            Some((None, Some(e))) => format!(" until {}", long_date(e)),
            _ => String::new(),
        };
        out.push(format!("{who} {where_} {verb} {what}{why}{span}."));
    }
    out
}

fn status_badge(choice: &Choice) -> Markup {
    let (class, words) = if choice.revoked {
        ("revoked", "Revoked")
    } else if choice.in_force {
        ("in-force", "In force")
    } else {
        ("ended", "Not in force")
    };
    html! { span class={"badge " (class)} { (words) } }
}

/// My sharing choices: every consent with its history, revoke buttons, the grant form.
pub fn sharing(
    csrf: &str,
    choices: &[Choice],
    sites: &[SiteChoice],
    known: &[(String, String)],
    directories: &[(String, Option<std::sync::Arc<SiteDirectory>>)],
) -> Markup {
    let listed = !known.is_empty()
        || directories.iter().any(|(_, d)| {
            d.as_ref()
                .is_some_and(|d| !d.practitioners.is_empty() || !d.organizations.is_empty())
        });
    layout(
        "My sharing choices",
        true,
        html! {
            h2 { "My sharing choices" }
            @if choices.is_empty() {
                p id="no-choices" { "You have made no sharing choices yet: each site's own rule applies." }
            }
            @for c in choices {
                section.card id={"consent-" (c.id)} aria-labelledby={"title-" (c.id)} {
                    h3 id={"title-" (c.id)} { (status_badge(c)) " Consent " span.mono { (c.id) } }
                    @for s in &c.sentences { p.sentence { (s) } }
                    p.note {
                        "Version " (c.version) ", took effect " (long_date(c.updated_at))
                        " · ledger transaction " span.mono.tx { (c.tx_id) }
                    }
                    details {
                        summary { "History (" (c.history.len()) " version" @if c.history.len() != 1 { "s" } ")" }
                        ol.history {
                            @for v in &c.history {
                                li {
                                    "Version " (v.version) @if v.revoked { " (revoked)" }
                                    ", " (long_date(v.updated_at)) " · "
                                    span.mono { (v.tx_id) }
                                }
                            }
                        }
                    }
                    @if c.in_force && !c.revoked {
                        @if let Some(purposes) = super::share_purposes(&c.document) {
                            @let purposes = if purposes.is_empty() { GRANTABLE_PURPOSES.iter().map(|p| (*p).to_owned()).collect() } else { purposes };
                            details {
                                summary { "Narrow this choice" }
                                form.stack method="post" action="/portal/narrow" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="consent" value=(c.id);
                                    fieldset {
                                        legend { "Keep only these purposes" }
                                        @for code in &purposes {
                                            @let words = assent_auth::PurposeOfUse::parse(code).map(|p| p.display()).unwrap_or(code);
                                            label { input type="checkbox" name="purpose" value=(code) checked; (words) }
                                        }
                                    }
                                    @let held = categories::share_resource_types(&c.document);
                                    @let kept = categories::categories_of(&held).0;
                                    fieldset {
                                        legend { "Keep only these kinds of record " span.hint { "(none ticked: as now)" } }
                                        @for k in DATA_CATEGORIES.iter().filter(|k| held.is_empty() || kept.contains(k)) {
                                            label { input type="checkbox" name="category" value=(k.code) checked; (k.label) }
                                        }
                                    }
                                    div {
                                        label for={"narrow-until-" (c.id)} { "End earlier, on " span.hint { "(optional)" } }
                                        input type="date" id={"narrow-until-" (c.id)} name="until";
                                    }
                                    p { button type="submit" id={"narrow-" (c.id)} { "Narrow" } }
                                }
                            }
                        }
                        form method="post" action="/portal/revoke" {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="consent" value=(c.id);
                            button.danger type="submit" id={"revoke-" (c.id)} { "Revoke this choice" }
                        }
                    }
                }
            }
            @if !sites.is_empty() {
                h2 id="sites-title" { "Sites holding my records" }
                @for s in sites {
                    section.card id={"site-" (s.site)} aria-label={"Your choice at " (s.site)} {
                        p.sentence { (site_sentence(s)) }
                        @if let Some(id) = &s.held {
                            form method="post" action="/portal/revoke" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="consent" value=(id);
                                button type="submit" id={"undo-site-" (s.site)} { "Undo my choice at " (s.site) }
                            }
                        } @else {
                            form method="post" action="/portal/site" {
                                input type="hidden" name="csrf" value=(csrf);
                                input type="hidden" name="site" value=(s.site);
                                button type="submit" id={"site-choice-" (s.site)} {
                                    @match s.policy {
                                        assent_consent::SitePolicy::OptOut => { "Opt out at " (s.site) }
                                        assent_consent::SitePolicy::OptIn => { "Opt in for treatment at " (s.site) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 id="grant-title" { "Share my records with someone" }
            form.stack.card method="post" action="/portal/grant" aria-labelledby="grant-title" {
                input type="hidden" name="csrf" value=(csrf);
                @for (site, d) in directories {
                    @if d.is_none() {
                        p.banner.fails id={"directory-unavailable-" (site)} role="status" {
                            "The directory of " (site) " is unavailable just now: "
                            "choose from the others or write the reference below."
                        }
                    }
                }
                @if listed {
                    div {
                        label for="chosen" { "Choose a practitioner or organization" }
                        select id="chosen" name="chosen" {
                            option value="" { "(or write one below)" }
                            @if !known.is_empty() {
                                optgroup label="Seen at this gateway" {
                                    @for (reference, name) in known {
                                        option value=(reference) { (name) " (" (reference) ")" }
                                    }
                                }
                            }
                            @for (site, d) in directories {
                                @if let Some(d) = d {
                                    @for (kind, list) in [("Practitioners", &d.practitioners), ("Organizations", &d.organizations)] {
                                        @if !list.is_empty() {
                                            optgroup label={(kind) " at " (site)} {
                                                @for e in list {
                                                    option value={(site) "|" (e.reference)} { (e.name) " (" (e.reference) ")" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                div {
                    label for="practitioner" { "Practitioner or organization "
                        span.hint { "(for example Practitioner/dr-alice, or just dr-alice)" } }
                    input type="text" id="practitioner" name="practitioner" autocomplete="off";
                }
                fieldset {
                    legend { "For what" }
                    @for code in GRANTABLE_PURPOSES {
                        @let words = assent_auth::PurposeOfUse::parse(code).map(|p| p.display()).unwrap_or(code);
                        label { input type="checkbox" name="purpose" value=(code) checked[*code == "TREAT"]; (words) }
                    }
                }
                fieldset {
                    legend { "Which records " span.hint { "(none chosen: all your records)" } }
                    @for k in DATA_CATEGORIES {
                        label { input type="checkbox" name="category" value=(k.code) id={"category-" (k.code)}; (k.label) }
                    }
                }
                div.filters {
                    div { label for="from" { "From " span.hint { "(optional)" } } input type="date" id="from" name="from"; }
                    div { label for="until" { "Until " span.hint { "(optional)" } } input type="date" id="until" name="until"; }
                }
                p { button type="submit" id="grant" { "Share" } }
            }
        },
    )
}

/// The page after a change: what took effect, when, and its ledger transaction.
pub fn changed(title: &str, consent_id: &str, version: u64, tx_id: &str, at: i64) -> Markup {
    layout(
        title,
        true,
        html! {
            h2 { (title) }
            p.banner.ok id="changed" role="status" {
                "Your choice took effect on " (long_date(at)) "."
            }
            dl.card {
                dt { "Consent" } dd.mono id="consent-id" { (consent_id) }
                dt { "Version" } dd id="version" { (version) }
                dt { "Ledger transaction" } dd.mono id="tx" { (tx_id) }
            }
            p { a href="/portal/" { "Back to my sharing choices" } }
        },
    )
}

/// Who saw my records: the period filter, each access, the CSV link.
pub fn disclosures(
    list: &[Disclosure],
    names: &HashMap<String, String>,
    you: Option<&str>,
    from: &str,
    to: &str,
    csv_href: &str,
) -> Markup {
    layout(
        "Who saw my records",
        true,
        html! {
            h2 { "Who saw my records" }
            form.filters.card method="get" action="/portal/disclosures" aria-label="Period" {
                div { label for="from" { "From" } input type="date" id="from" name="from" value=(from); }
                div { label for="to" { "To" } input type="date" id="to" name="to" value=(to); }
                div { button type="submit" { "Show" } }
            }
            p { a href=(csv_href) id="csv" download { "Download as CSV" } " or "
                a href=(csv_href.replacen("disclosures.csv", "disclosures.pdf", 1)) id="pdf" download { "as PDF" }
                " (one row per access, with its receipt id)" }
            @if list.is_empty() { p id="none" { "Nobody accessed your records in this period." } }
            @for d in list {
                @let decision = match d.decision { "permitted" => "permitted", "denied" => "denied", _ => "failed" };
                article.card.emergency[d.emergency.is_some()] {
                    h3 {
                        span class={"badge " (decision)} { (d.decision) } " "
                        @if you == Some(d.who.as_str()) { "You" }
                        @else if let Some(name) = names.get(&d.who) { (name) " (" (d.who) ")" }
                        @else { (d.who) }
                    }
                    p {
                        time datetime=(d.when) title=(d.when) { (readable(&d.when)) }
                        @if let Some(site) = &d.site { " · at " (site) }
                        @if let Some(org) = &d.organization { " · " (org) }
                    }
                    p { (d.what) @if let Some(why) = &d.why { " · for " (why) } }
                    p.note { (d.basis) }
                    @if let Some(e) = &d.emergency { p.banner.fails { (e) } }
                    p.note { "Receipt " span.mono { (d.receipt_id) } }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_as_dates() {
        assert_eq!(
            readable("2026-12-06T08:43:52.109Z"),
            "6 December 2026, 08:43 UTC"
        );
        assert_eq!(
            readable("2000-02-29T23:59:59Z"),
            "29 February 2000, 23:59 UTC"
        );
        assert_eq!(readable("not a date"), "not a date");
        assert_eq!(long_date(1_803_859_200), "1 March 2027");
    }
}
