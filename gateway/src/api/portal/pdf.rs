//! "Who saw my records" as a PDF: the same rows and receipt ids as the CSV, laid out on A4
//! landscape pages with the PDF base-14 fonts (Helvetica, Helvetica-Bold; nothing embedded),
//! written with `pdf-writer` (uncompressed content streams). Each access takes two lines: when,
//! who, site, what, purpose and decision, then its receipt id (a text string of its own, so a
//! privacy officer can copy it) and the basis; a break-glass access adds its justification in
//! bold. Text outside WinAnsi shows as `?`.

use assent_receipts::Disclosure;
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

const WIDTH: f32 = 842.0;
const HEIGHT: f32 = 595.0;
const MARGIN: f32 = 40.0;
const SIZE: f32 = 8.0;
const LINE: f32 = 11.0;
/// The height one access takes (two lines and a gap).
const ROW: f32 = 2.0 * LINE + 5.0;
/// The first line's columns: x and the most characters shown.
const COLUMNS: [(&str, f32, usize); 6] = [
    ("When (UTC)", MARGIN, 20),
    ("Who", 150.0, 36),
    ("Site", 320.0, 18),
    ("What", 410.0, 62),
    ("Purpose", 680.0, 22),
    ("Decision", 775.0, 10),
];

/// The PDF of `list` (newest first, as given), titled with the period.
pub fn disclosures_pdf(list: &[Disclosure], period: &str) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let mut next = 1;
    let mut alloc = || {
        next += 1;
        Ref::new(next - 1)
    };
    let (catalog, tree, regular, bold, info) = (alloc(), alloc(), alloc(), alloc(), alloc());
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr("Who saw my records"))
        .producer(TextStr("Assent patient portal"));

    let first_rows = ((HEIGHT - 2.0 * MARGIN - 4.0 * LINE) / ROW) as usize;
    let rows = ((HEIGHT - 2.0 * MARGIN - 2.0 * LINE) / ROW) as usize;
    let mut chunks: Vec<&[Disclosure]> = Vec::new();
    let (head, mut rest) = list.split_at(first_rows.min(list.len()));
    chunks.push(head);
    while !rest.is_empty() {
        let (page, more) = rest.split_at(rows.min(rest.len()));
        chunks.push(page);
        rest = more;
    }
    let total = chunks.len();
    let mut page_ids = Vec::new();
    for (n, chunk) in chunks.into_iter().enumerate() {
        let (page_id, content_id) = (alloc(), alloc());
        page_ids.push(page_id);
        let mut c = Content::new();
        let mut y = HEIGHT - MARGIN;
        if n == 0 {
            text(&mut c, b"F2", 14.0, MARGIN, y, "Who saw my records");
            y -= 1.5 * LINE;
            let summary = if list.is_empty() {
                format!("{period}: nobody accessed your records in this period.")
            } else {
                format!("{period}: {} accesses, newest first.", list.len())
            };
            text(&mut c, b"F1", SIZE, MARGIN, y, &summary);
            y -= 1.5 * LINE;
        }
        for (title, x, _) in COLUMNS {
            text(&mut c, b"F2", SIZE, x, y, title);
        }
        y -= LINE;
        text(
            &mut c,
            b"F1",
            SIZE,
            MARGIN + 10.0,
            y,
            "Receipt id (a privacy officer can verify it) and the basis of the decision",
        );
        y -= ROW - LINE;
        for d in chunk {
            let cells = [
                d.when.replace('T', " ").trim_end_matches('Z').to_owned(),
                d.who.clone(),
                d.site.clone().unwrap_or_default(),
                d.what.clone(),
                d.why.clone().unwrap_or_default(),
                d.decision.to_owned(),
            ];
            for ((_, x, most), cell) in COLUMNS.iter().zip(&cells) {
                text(&mut c, b"F1", SIZE, *x, y, &clip(cell, *most));
            }
            let second = y - LINE;
            text(&mut c, b"F1", SIZE, MARGIN + 10.0, second, "Receipt");
            // The id alone in its own string, whole.
            text(&mut c, b"F2", SIZE, MARGIN + 42.0, second, &d.receipt_id);
            let after = MARGIN + 50.0 + 4.6 * d.receipt_id.len() as f32;
            match &d.emergency {
                Some(emergency) => {
                    c.set_fill_rgb(0.6, 0.0, 0.0);
                    text(&mut c, b"F2", SIZE, after, second, &clip(emergency, 150));
                    c.set_fill_rgb(0.0, 0.0, 0.0);
                }
                None => text(&mut c, b"F1", SIZE, after, second, &clip(&d.basis, 150)),
            }
            y -= ROW;
        }
        text(
            &mut c,
            b"F1",
            SIZE,
            MARGIN,
            MARGIN / 2.0,
            &format!("Page {} of {total}", n + 1),
        );
        pdf.stream(content_id, &c.finish());
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT))
            .parent(tree)
            .contents(content_id);
        let mut resources = page.resources();
        let mut fonts = resources.fonts();
        fonts.pair(Name(b"F1"), regular);
        fonts.pair(Name(b"F2"), bold);
        fonts.finish();
        resources.finish();
    }
    pdf.pages(tree).count(total as i32).kids(page_ids);
    pdf.catalog(catalog).pages(tree);
    pdf.finish()
}

/// One line of text at (x, y) in font `font`.
fn text(c: &mut Content, font: &[u8], size: f32, x: f32, y: f32, s: &str) {
    c.begin_text();
    c.set_font(Name(font), size);
    c.next_line(x, y);
    c.show(Str(&win_ansi(s)));
    c.end_text();
}

/// At most `most` characters of `s`, with `…` when cut.
fn clip(s: &str, most: usize) -> String {
    if s.chars().count() <= most {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(most.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// `s` in WinAnsiEncoding: ASCII and Latin-1 as they are, `…` and `·`, anything else `?`;
/// control characters as spaces.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|ch| match ch {
            '…' => 0x85,
            '–' => 0x96,
            '—' => 0x97,
            c if (c as u32) < 0x20 || c == '\u{7f}' => b' ',
            c if (c as u32) < 0x7f => c as u8,
            c if (0xa0..=0xff).contains(&(c as u32)) => c as u32 as u8,
            _ => b'?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disclosure(id: &str, emergency: Option<&str>) -> Disclosure {
        Disclosure {
            receipt_id: id.to_owned(),
            when: "2026-12-06T09:00:00Z".to_owned(),
            who: "Alice Adams (Practitioner/dr-alice)".to_owned(),
            organization: None,
            site: Some("st-mary".to_owned()),
            what: "read Patient/p1 (a patient record)".to_owned(),
            why: Some("treatment (TREAT)".to_owned()),
            decision: "permitted",
            basis: "consent c1, version 1 (a (nested) note)".to_owned(),
            emergency: emergency.map(str::to_owned),
        }
    }

    #[test]
    fn every_receipt_id_is_in_the_pdf_across_pages() {
        let list: Vec<Disclosure> = (0..60)
            .map(|i| {
                disclosure(
                    &format!("r{i:04}abc"),
                    (i == 7).then_some("emergency: Müller"),
                )
            })
            .collect();
        let pdf = disclosures_pdf(&list, "All time");
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        for d in &list {
            assert!(
                text.contains(&format!("({})", d.receipt_id)),
                "{}",
                d.receipt_id
            );
        }
        assert!(
            text.contains("/Helvetica") && text.contains("Page 4 of 4"),
            "{text}"
        );
        assert!(text.ends_with("%%EOF") || text.trim_end().ends_with("%%EOF"));
    }

    #[test]
    fn text_is_win_ansi_and_clipped() {
        assert_eq!(win_ansi("Müller…\n中"), b"M\xfcller\x85 ?".to_vec());
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
        let empty = disclosures_pdf(&[], "1 Jan 2001 to 31 Dec 2001");
        assert!(String::from_utf8_lossy(&empty).contains("nobody accessed"));
    }
}
