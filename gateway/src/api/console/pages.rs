//! The console's HTML, rendered on the server with `maud` (every value escaped by the
//! template), and its one stylesheet. No script, no external asset.
//!
//! Owns layout and wording. Leaves out what is shown (`console.rs` loads and filters; the
//! verification is `audit_api`'s).

use std::collections::HashMap;

use assent_receipts::{Disclosure, format_instant};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::services::audit::ReceiptDetail;
use crate::store::ReceiptRow;
use assent_receipts::Check;

/// The stylesheet, served at `/console/style.css`.
pub const STYLESHEET: &str = r#"
:root { --ink: #1d2430; --muted: #5b6577; --line: #d8dde6; --bg: #f6f7f9; --accent: #1f5fa8;
        --ok: #1d7a46; --ok-bg: #e3f4ea; --bad: #b3261e; --bad-bg: #fbe7e6; --warn: #8a5a00;
        --warn-bg: #fff3d6; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
header { background: #12263f; color: #fff; padding: .8rem 1.5rem; display: flex;
         align-items: center; justify-content: space-between; }
header h1 { font-size: 1.1rem; margin: 0; font-weight: 600; }
header a { color: #cfe0f5; }
header a.brand { color: #fff; text-decoration: none; }
main { max-width: 80rem; margin: 0 auto; padding: 1.2rem 1rem 3rem; }
h2 { font-size: 1.25rem; margin: 1.2rem 0 .6rem; }
a { color: var(--accent); }
form.filters { background: #fff; border: 1px solid var(--line); border-radius: 8px;
               padding: 1rem; display: grid; gap: .8rem 1rem;
               grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); }
form.filters label { display: flex; flex-direction: column; font-size: .85rem;
                     color: var(--muted); gap: .25rem; }
form.filters label.check { flex-direction: row; align-items: center; gap: .5rem;
                           color: var(--ink); }
input, select { font: inherit; padding: .35rem .5rem; border: 1px solid var(--line);
                border-radius: 5px; background: #fff; color: var(--ink); }
.actions { display: flex; gap: .6rem; align-items: end; }
button, .button { font: inherit; padding: .4rem .9rem; border-radius: 5px; cursor: pointer;
                  border: 1px solid var(--accent); background: var(--accent); color: #fff;
                  text-decoration: none; display: inline-block; }
.button.secondary { background: #fff; color: var(--accent); }
table { width: 100%; border-collapse: collapse; background: #fff; margin-top: .8rem;
        border: 1px solid var(--line); border-radius: 8px; overflow: hidden;
        table-layout: fixed; }
th, td { text-align: left; padding: .4rem .45rem; border-bottom: 1px solid var(--line);
         vertical-align: top; overflow-wrap: anywhere; font-size: .9rem; }
col.time { width: 7rem; } col.site { width: 6rem; } col.purpose { width: 5.6rem; }
col.decision { width: 6rem; } col.status { width: 4rem; } col.receipt { width: 4.4rem; }
td .id { display: block; color: var(--muted); font-size: .78rem; }
td .person { display: inline-block; }
dd .id { color: var(--muted); font-size: .85rem; }
th { background: #eef1f5; font-size: .72rem; text-transform: uppercase; letter-spacing: 0;
     overflow-wrap: normal;
     color: var(--muted); }
tr:last-child td { border-bottom: 0; }
td.mono, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace;
                 font-size: .82rem; word-break: break-all; }
time { white-space: nowrap; }
td time { white-space: normal; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; font-size: .8rem;
         font-weight: 600; }
.permit, .holds { background: var(--ok-bg); color: var(--ok); }
.deny, .fails { background: var(--bad-bg); color: var(--bad); }
.error, .pending, .unavailable { background: var(--warn-bg); color: var(--warn); }
.banner { padding: .8rem 1rem; border-radius: 8px; font-weight: 600; margin: 1rem 0; }
.banner.holds { border: 1px solid var(--ok); }
.banner.fails { border: 1px solid var(--bad); }
dl.facts { display: grid; grid-template-columns: 14rem 1fr; background: #fff; margin: 0;
           border: 1px solid var(--line); border-radius: 8px; }
dl.facts dt, dl.facts dd { margin: 0; padding: .45rem .7rem; border-bottom: 1px solid var(--line); }
dl.facts dt { color: var(--muted); font-size: .9rem; }
.summary { color: var(--muted); margin: .8rem 0 0; }
.note { color: var(--muted); font-size: .9rem; }
.pager { margin-top: .8rem; }
"#;

/// A whole page around `content`.
pub fn layout(title: &str, signed_in: Option<&str>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Assent compliance console" }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                header {
                    h1 { a.brand href="/console/" { "Assent compliance console" } }
                    @if let Some(who) = signed_in {
                        span { "Signed in as " strong id="signed-in-as" { (who) } " · " a href="/console/logout" { "Sign out" } }
                    }
                }
                main { (content) }
            }
        }
    }
}

/// The page asking to sign in.
pub fn sign_in(message: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h2 { "Sign in" }
            p { "The compliance console shows who accessed which patient records through the gateway. It needs the audit role." }
            @if let Some(m) = message { p.banner.fails { (m) } }
            p { a.button id="sign-in" href="/console/login" { "Sign in with the identity provider" } }
        },
    )
}

/// The console's own error: a page with the status, the sentence and the stable code.
pub fn error(who: Option<&str>, status: u16, code: &str, message: &str) -> Markup {
    let title = match status {
        404 => "Not found",
        400 => "These values cannot be used",
        401 | 403 => "Not allowed",
        503 => "Unavailable",
        _ => "Something went wrong",
    };
    layout(
        title,
        who,
        html! {
            h2 { (title) }
            p.banner.fails id="error" { (message) }
            p.note { "HTTP " (status) " · " span.mono id="error-code" { (code) } }
            p { a href="/console/" { "← Access log" } }
        },
    )
}

/// A receipt's time, readable (`6 Dec 2026, 14:03:07 UTC`), in a `time` element carrying
/// the exact instant (`datetime` and the tooltip).
fn readable_time(time_ms: i64) -> Markup {
    let exact = format_instant(time_ms);
    html! { time datetime=(exact) title=(exact) { (readable_instant(&exact)) } }
}

/// `2026-12-06T14:03:07.123Z` as `6 Dec 2026, 14:03:07 UTC`; any other text as it is.
pub fn readable_instant(exact: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts = (|| {
        let (date, time) = exact.split_once('T')?;
        let mut ymd = date.split('-');
        let (year, month, day) = (ymd.next()?, ymd.next()?, ymd.next()?);
        let month = MONTHS.get(month.parse::<usize>().ok()?.checked_sub(1)?)?;
        let day = day.parse::<u8>().ok()?;
        let clock = time.get(..8)?;
        Some(format!("{day} {month} {year}, {clock} UTC"))
    })();
    parts.unwrap_or_else(|| exact.to_owned())
}

/// The filters as the form shows them.
#[derive(Debug, Clone, Default)]
pub struct FilterForm {
    pub patient: String,
    pub practitioner: String,
    pub site: String,
    pub from: String,
    pub to: String,
    pub decision: String,
    pub break_glass: bool,
}

fn decision_badge(decision: &str) -> Markup {
    html! { span class={"badge " (decision)} { (decision) } }
}

fn check_badge(check: Check) -> Markup {
    html! { span class={"badge " (check.as_str())} { (check.as_str()) } }
}

/// The search page: the filter form, the matching accesses, paging and the CSV export.
/// The accesses a search page lists: one page of rows, how many match in all, and the link to
/// the page of older ones.
#[derive(Clone, Copy, Default)]
pub struct Listing<'a> {
    pub rows: &'a [ReceiptRow],
    /// Names known for the practitioners and patients of `rows`.
    pub names: Option<&'a Names>,
    pub total: Option<i64>,
    pub older_href: Option<&'a str>,
}

pub fn search(
    who: &str,
    form: &FilterForm,
    sites: &[String],
    listing: &Listing,
    export_href: &str,
    error: Option<&str>,
) -> Markup {
    let Listing {
        rows,
        names,
        total,
        older_href,
    } = *listing;
    let no_names = Names::default();
    let names = names.unwrap_or(&no_names);
    layout(
        "Access log",
        Some(who),
        html! {
            h2 { "Access log" }
            form.filters method="get" action="/console/" {
                label { "Patient" input name="patient" id="f-patient" value=(form.patient) placeholder="id (with a site) or site/Patient/id"; }
                label { "Practitioner" input name="practitioner" id="f-practitioner" value=(form.practitioner) placeholder="id or Practitioner/id"; }
                label { "Site" select name="site" id="f-site" {
                    option value="" selected[form.site.is_empty()] { "Any site" }
                    @for s in sites { option value=(s) selected[&form.site == s] { (s) } }
                } }
                label { "From (date)" input type="date" name="from" id="f-from" value=(form.from); }
                label { "To (date, inclusive)" input type="date" name="to" id="f-to" value=(form.to); }
                label { "Decision" select name="decision" id="f-decision" {
                    @for (value, text) in [("", "Any decision"), ("permit", "Permitted"), ("deny", "Denied"), ("error", "Failed")] {
                        option value=(value) selected[form.decision == value] { (text) }
                    }
                } }
                label.check { input type="checkbox" name="break_glass" id="f-break-glass" value="on" checked[form.break_glass]; "Break-glass only" }
                div.actions {
                    button type="submit" id="apply" { "Apply filters" }
                    a.button.secondary href="/console/" { "Clear" }
                }
            }
            @if let Some(e) = error { p.banner.fails id="filter-error" { (e) } }
            p.summary {
                span id="result-count" { (rows.len()) } " access" @if rows.len() != 1 { "es" } " shown"
                @if let Some(total) = total { " of " span id="result-total" { (total) } " matching these filters" }
                ", newest first. "
                a.button.secondary id="export-csv" href=(export_href) { "Export this filter as CSV" }
                " "
                a.button.secondary id="export-ndjson" href=(export_href.replacen("/console/export.csv", "/console/export.ndjson", 1)) { "Export as NDJSON" }
                " "
                a.button.secondary id="verify-export" href=(export_href.replacen("/console/export.csv", "/console/verify", 1)) { "Verify this export" }
            }
            p.note { "The NDJSON export carries every receipt's proof and anchor: " code { "assent verify --config assent.toml receipts.ndjson" } " checks it offline." }
            table id="results" {
                colgroup { col.time; col.who; col.patient; col.site; col.request; col.purpose; col.decision; col.status; col.receipt; }
                thead { tr { th { "Time (UTC)" } th { "Practitioner" } th { "Patient" } th { "Site" } th { "Request" } th { "Purpose" } th { "Decision" } th { "Status" } th { "Receipt" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { (readable_time(r.time_ms)) }
                            td { (names.caller(&r.actor)) }
                            td { (names.patients_of(r)) }
                            td { (r.site.as_deref().unwrap_or("—")) }
                            td { (request_text(r)) }
                            td { (r.purpose.as_deref().unwrap_or("—")) }
                            td { (decision_badge(&r.decision)) @if r.break_glass { " " span.badge.deny { "break-glass" } } }
                            td { (r.status) }
                            td { a.receipt-link href={"/console/receipts/" (r.receipt_id)} { "View" } }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.note { "No access matches these filters." } }
            @if let Some(href) = older_href { p.pager { a.button.secondary id="older" href=(href) { "Older accesses →" } } }
        },
    )
}

/// Names shown beside ids where the store has them: a practitioner's as their token gave it,
/// a patient's as their consent gives it (`Consent.patient.display`). The id is always shown.
#[derive(Debug, Default)]
pub struct Names {
    /// By actor (`Practitioner/dr-alice`).
    pub callers: HashMap<String, String>,
    /// By patient identity as receipts name them (`st-mary/Patient/p1`).
    pub patients: HashMap<String, String>,
}

impl Names {
    /// The caller: their name and, beside it, the id; the id alone when no name is known.
    fn caller(&self, actor: &str) -> Markup {
        named(actor, self.callers.get(actor))
    }

    /// The patients a receipt names, each with their name where known, or a dash.
    fn patients_of(&self, row: &ReceiptRow) -> Markup {
        let patients = receipt_patients(row);
        html! {
            @if patients.is_empty() { "—" }
            @for (i, p) in patients.iter().enumerate() {
                @if i > 0 { ", " }
                span.person { (named(p, self.patients.get(p))) }
            }
        }
    }
}

/// `id` with `name` before it when there is one.
fn named(id: &str, name: Option<&String>) -> Markup {
    html! {
        @if let Some(name) = name { span.name { (name) } " " span.id { (id) } } @else { (id) }
    }
}

/// The patients a receipt names, in clear.
pub fn receipt_patients(row: &ReceiptRow) -> Vec<String> {
    serde_json::from_str(&row.patients).unwrap_or_default()
}

/// What a receipt records: the FHIR interaction and type, or the consent API call or audit
/// read (`consent-revoke Consent`).
fn request_text(row: &ReceiptRow) -> String {
    let what = if row.kind == "fhir" {
        row.interaction.as_deref().unwrap_or("?")
    } else {
        row.kind.as_str()
    };
    format!("{what} {}", row.resource_type.as_deref().unwrap_or(""))
}

/// One receipt, its facts and whether it verifies.
pub fn receipt(
    who: &str,
    d: &ReceiptDetail,
    disclosure: Option<&Disclosure>,
    names: &Names,
) -> Markup {
    let v = &d.verification;
    let row = &d.row;
    layout(
        "Receipt",
        Some(who),
        html! {
            p { a href="/console/" { "← Access log" } }
            h2 { "Receipt " span.mono { (row.receipt_id) } }
            @if v.verified {
                p.banner.holds id="verification" { "✓ This receipt verifies: its content matches its hash, its chain link holds, and its proof leads to the root anchored on the ledger." }
            } @else {
                p.banner.fails id="verification" { "✗ This receipt does not verify (yet): see the checks below." }
            }
            @if let Some(text) = disclosure { p { (text.sentence()) } }
            h2 { "Checks" }
            dl.facts id="checks" {
                dt { "Content hash" } dd { (check_badge(v.hash)) }
                dt { "Chain link" } dd { (check_badge(v.chain)) }
                dt { "Inclusion proof" } dd { (check_badge(v.proof)) }
                dt { "Ledger anchor" } dd { (check_badge(v.ledger)) }
            }
            h2 { "Facts" }
            dl.facts {
                dt { "Time (UTC)" } dd { (readable_time(row.time_ms)) " " span.note.mono { (format_instant(row.time_ms)) } }
                dt { "Gateway, sequence" } dd { (row.gateway_id) ", " (row.sequence) }
                dt { "Practitioner" } dd id="practitioner" { (names.caller(&row.actor)) }
                dt { "Patients reached" } dd id="patients" { (names.patients_of(row)) }
                dt { "Site" } dd { (row.site.as_deref().unwrap_or("—")) }
                dt { "Request" } dd { (request_text(row)) }
                dt { "Purpose" } dd { (row.purpose.as_deref().unwrap_or("—")) }
                dt { "Decision" } dd { (decision_badge(&row.decision)) " (HTTP " (row.status) ")" }
                @if let Some(dec) = &d.decoded {
                    dt { "Consent relied on" } dd { (dec.receipt.consent.header_value()) }
                    dt { "Break-glass" } dd { @if dec.receipt.break_glass { "yes" @if let Some(j) = &dec.receipt.break_glass_justification { ": " (j) } } @else { "no" } }
                    dt { "Released" } dd.mono { @if dec.receipt.resources.is_empty() { "nothing" } @else { @for r in &dec.receipt.resources { (r.reference()) br; } } }
                }
                dt { "Hash" } dd.mono { (hex::encode(&row.hash)) }
            }
            h2 { "Anchor" }
            @match &d.batch {
                None => p.note { "Not in a closed batch yet: the receipt is anchored within the batch window." },
                Some(b) => dl.facts id="anchor" {
                    dt { "Batch" } dd { (b.batch_id) " (receipts " (b.first_sequence) "–" (b.last_sequence) ")" }
                    dt { "Merkle root" } dd.mono { (hex::encode(&b.root)) }
                    dt { "Ledger transaction" } dd.mono { (b.tx_id.as_deref().unwrap_or("pending")) }
                    dt { "Block" } dd { @match b.block_number { Some(n) => (n), None => "pending" } }
                    @if let Some(a) = &d.anchoring {
                        dt { "Proof" } dd { "leaf " (a.proof.index + 1) " of " (a.proof.size) ", " (a.proof.siblings.len()) " sibling hashes" }
                    }
                },
            }
            p.note { (PreEscaped("Download the NDJSON export and run <code>assent verify</code> to check receipts offline.")) }
        },
    )
}

/// "Verify this export": the report of the filter's export checked against the ledger.
pub fn verified(who: &str, report: &assent_receipts::VerifyReport, back: &str) -> Markup {
    layout(
        "Export verification",
        Some(who),
        html! {
            p { a href=(back) { "← Access log (this filter)" } }
            h2 { "Export verification" }
            @if report.all_held() {
                p.banner.holds id="export-verdict" { "✓ Every receipt of this export verifies: its content matches its hash, its chain link holds, and every anchored batch's proof leads to the root on the ledger." }
            } @else {
                p.banner.fails id="export-verdict" { "✗ " (report.failures.len()) " check" @if report.failures.len() != 1 { "s" } " failed: see below." }
            }
            dl.facts id="export-report" {
                dt { "Receipts checked" } dd id="export-receipts" { (report.n_receipts) }
                dt { "Anchored on the ledger" } dd { (report.n_anchored) }
                dt { "Not anchored yet (the batch window)" } dd { (report.n_pending) }
            }
            @if !report.failures.is_empty() {
                h2 { "Failures" }
                ul id="export-failures" { @for f in &report.failures { li.mono { (f.to_string()) } } }
            }
            p.note { "The same checks as " code { "assent verify" } " on the NDJSON export; a filtered export may leave out receipts of a chain, which is not a failure here." }
        },
    )
}

/// The page the callback answers with: a same-site navigation into the console, so that the
/// new `SameSite=Strict` session cookie goes with it.
pub fn signed_in(who: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="0; url=/console/";
                title { "Signed in · Assent compliance console" }
                link rel="stylesheet" href="/console/style.css";
            }
            body { main { p { "Signed in as " (who) ". " a id="continue" href="/console/" { "Continue to the console" } } } }
        }
    }
}
