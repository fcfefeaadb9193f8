//! Numbers written back as they were spelt. The workspace reads JSON numbers as their text
//! (serde_json's `arbitrary_precision`), which keeps every digit, but serde_json's parser
//! spells an exponent one way: marker `e`, sign always written (`1E3`, `1e3` → `1e+3`).
//! [`Spellings`] remembers how the exponents of a body were written and [`Spellings::to_vec`]
//! writes them so again, so a number leaves the gateway exactly as the site or the client
//! wrote it.
//!
//! Cost: a body without an exponent costs one pass of a prefilter over its bytes (a digit,
//! `e`/`E`, then a digit or sign, with a number's start before it; vectorised, about 8.8 GB/s,
//! 1.5 % of serde_json's parse of the same bytes over the 2,597 official examples, test
//! `cost`) and nothing at the write. Only a body the prefilter passes is scanned (strings
//! skipped: 36 of the 2,597, 3 of which hold an exponent number) and only a body with an
//! exponent spelt otherwise than serde_json writes it is written with the respelling
//! formatter.
//!
//! One value spelt two ways in one body (`1E3` and `1e3`): the spellings are handed out in
//! the order serde_json writes the tree (keys sorted, as its `Map` is a `BTreeMap`), so a
//! body written back unchanged gets each spelling at its place. A conversion that moves
//! numbers between elements may hand two such spellings out in another order: the same
//! value either way, and only in a body that already spelt one value two ways.
//!
//! Leaves out: the receipt's content hash, which is over canonical JSON (keys sorted, no
//! whitespace, exponents in serde_json's one spelling): a canonical form keeps what a number
//! means (every digit, trailing zeros) and drops what is only spelling.

use std::collections::HashMap;
use std::io;

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

/// How the exponent numbers of one or more JSON texts were written, by their text as
/// serde_json spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spellings {
    by_normal: HashMap<String, Spelt>,
}

/// Every occurrence of one value, in the order serde_json writes the tree (text by text).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spelt {
    list: Vec<String>,
    /// Every occurrence spelt alike (the common case): then any copy takes that spelling.
    uniform: bool,
}

impl Spellings {
    /// The spellings of `text`'s exponent numbers (none for a text without exponents).
    pub fn of(text: &[u8]) -> Spellings {
        let mut spellings = Spellings::default();
        spellings.add(text);
        spellings
    }

    /// Adds the spellings of another text (one more page of an answer).
    pub fn add(&mut self, text: &[u8]) {
        if !may_have_exponent(text) {
            return;
        }
        let mut found = exponent_numbers(text);
        // The order serde_json writes the tree in: paths compared step by step.
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, original) in found {
            let spelt = self
                .by_normal
                .entry(normalised(&original))
                .or_insert_with(|| Spelt {
                    list: Vec::new(),
                    uniform: true,
                });
            spelt.uniform &= spelt.list.first().is_none_or(|first| *first == original);
            spelt.list.push(original);
        }
    }

    /// Whether nothing needs respelling: serde_json's own writing is exact.
    pub fn is_empty(&self) -> bool {
        self.by_normal
            .iter()
            .all(|(normal, s)| s.uniform && s.list.first() == Some(normal))
    }

    /// `value` as JSON text, every number spelt as these spellings say (indented when
    /// `pretty`); serde_json's own writing when there is nothing to respell.
    pub fn to_vec(&self, value: &Value, pretty: bool) -> serde_json::Result<Vec<u8>> {
        if self.is_empty() {
            return if pretty {
                serde_json::to_vec_pretty(value)
            } else {
                serde_json::to_vec(value)
            };
        }
        let mut out = Vec::with_capacity(128);
        if pretty {
            self.write(&mut out, value, PrettyFormatter::new())?;
        } else {
            self.write(&mut out, value, CompactFormatter)?;
        }
        Ok(out)
    }

    /// `value` as compact JSON text, numbers spelt as these spellings say.
    pub fn to_string(&self, value: &Value) -> String {
        let bytes = self.to_vec(value, false).unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    fn write<F: Formatter>(
        &self,
        out: &mut Vec<u8>,
        value: &Value,
        inner: F,
    ) -> serde_json::Result<()> {
        let formatter = Respell {
            inner,
            spellings: self,
            handed: HashMap::new(),
        };
        let mut serializer = serde_json::Serializer::with_formatter(out, formatter);
        value.serialize(&mut serializer)
    }

    /// How `normal` (serde_json's spelling) is written: the `nth` occurrence in write order.
    fn spelling(&self, normal: &str, nth: usize) -> Option<&str> {
        let spelt = self.by_normal.get(normal)?;
        let original = if spelt.uniform {
            spelt.list.first()
        } else {
            // More occurrences than the input had (a conversion copied one): the last.
            spelt.list.get(nth).or(spelt.list.last())
        };
        original.map(String::as_str)
    }
}

/// A number's text as serde_json's parser writes it: exponent marker `e`, its sign always
/// written. Other numbers are returned as they are.
pub fn normalised(number: &str) -> String {
    match number.find(['e', 'E']) {
        None => number.to_owned(),
        Some(at) => {
            let (mantissa, rest) = number.split_at(at);
            let exponent = &rest[1..];
            if exponent.starts_with(['+', '-']) {
                format!("{mantissa}e{exponent}")
            } else {
                format!("{mantissa}e+{exponent}")
            }
        }
    }
}

/// The writing formatter: `inner`'s layout, numbers respelt.
struct Respell<'s, F> {
    inner: F,
    spellings: &'s Spellings,
    /// How many occurrences of each normalised text were written so far.
    handed: HashMap<String, usize>,
}

impl<F: Formatter> Formatter for Respell<'_, F> {
    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        value: &str,
    ) -> io::Result<()> {
        if value.contains('e') {
            let nth = self.handed.entry(value.to_owned()).or_insert(0);
            let spelt = self.spellings.spelling(value, *nth);
            *nth += 1;
            if let Some(original) = spelt {
                return writer.write_all(original.as_bytes());
            }
        }
        self.inner.write_number_str(writer, value)
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.begin_array(writer)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_array(writer)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_array_value(writer, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_array_value(writer)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.begin_object(writer)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_object(writer)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_object_key(writer, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_object_key(writer)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.begin_object_value(writer)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.inner.end_object_value(writer)
    }
}

// ---- the prefilter -----------------------------------------------------------------------

/// Whether `text` may hold a number with an exponent: a digit, `e` or `E`, then a digit or
/// sign, where the digits before the marker start a number (after `:`, `,`, `[` or
/// whitespace, an optional `-`). Hex ids (`…-a1e3…`) do not pass; words inside strings
/// (`"dose 1E3"`) may, and the scan then finds no number there.
fn may_have_exponent(text: &[u8]) -> bool {
    if text.len() < 3 {
        return false;
    }
    // Candidate positions of the digit before the marker: 0..last.
    let last = text.len() - 2;
    let mut start = 0;
    while start + BLOCK <= last {
        let window: &[u8; BLOCK + 2] = text[start..start + BLOCK + 2]
            .try_into()
            .expect("BLOCK + 2 bytes");
        if block_may_hold(window) && (start..start + BLOCK).any(|i| marker_at(text, i + 1)) {
            return true;
        }
        start += BLOCK;
    }
    (start..last).any(|i| marker_at(text, i + 1))
}

const BLOCK: usize = 64;

/// Whether a digit, `e`/`E`, then a digit or sign starts anywhere in the first `BLOCK`
/// bytes of `window`: fixed bounds and no branches, so the compiler vectorises it.
#[inline]
fn block_may_hold(window: &[u8; BLOCK + 2]) -> bool {
    let mut hit = 0u8;
    for i in 0..BLOCK {
        let digit = window[i].wrapping_sub(b'0') < 10;
        let marker = (window[i + 1] | 0x20) == b'e';
        let next = window[i + 2];
        let after = (next.wrapping_sub(b'0') < 10) | (next == b'+') | (next == b'-');
        hit |= u8::from(digit & marker & after);
    }
    hit != 0
}

/// Whether `text[at]` is the exponent marker of a number that starts where a JSON value can.
fn marker_at(text: &[u8], at: usize) -> bool {
    if (text[at] | 0x20) != b'e'
        || !text[at - 1].is_ascii_digit()
        || !text
            .get(at + 1)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'+' || *b == b'-')
    {
        return false;
    }
    let mut i = at;
    while i > 0 && (text[i - 1].is_ascii_digit() || text[i - 1] == b'.') {
        i -= 1;
    }
    if i > 0 && text[i - 1] == b'-' {
        i -= 1;
    }
    i == 0
        || matches!(
            text[i - 1],
            b':' | b',' | b'[' | b' ' | b'\t' | b'\n' | b'\r'
        )
}

// ---- the scan ----------------------------------------------------------------------------

/// One step of a path: an object key (unescaped) or an array index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every number with an exponent in `text` (strings skipped), with its path and its text.
/// Text that is not JSON ends the scan where it stops making sense; nothing panics.
fn exponent_numbers(text: &[u8]) -> Vec<(Vec<Step>, String)> {
    let mut out = Vec::new();
    let mut path: Vec<Step> = Vec::new();
    // Per open container: whether it is an object, and the next array index.
    let mut open: Vec<(bool, usize)> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        match b {
            b'{' => {
                open.push((true, 0));
                expect_key = true;
                i += 1;
            }
            b'[' => {
                open.push((false, 0));
                path.push(Step::Index(0));
                expect_key = false;
                i += 1;
            }
            b'}' | b']' => {
                open.pop();
                path.pop();
                i += 1;
            }
            b',' => {
                match open.last_mut() {
                    Some((true, _)) => {
                        path.pop();
                        expect_key = true;
                    }
                    Some((false, index)) => {
                        *index += 1;
                        if let Some(last) = path.last_mut() {
                            *last = Step::Index(*index);
                        }
                    }
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let mut escaped = false;
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' {
                        escaped = true;
                        i += 1;
                    }
                    i += 1;
                }
                let raw = &text[start..i.min(text.len())];
                i += 1;
                if expect_key {
                    path.push(Step::Key(key_text(raw, escaped)));
                    expect_key = false;
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let number = &text[start..i];
                if number.iter().any(|b| (b | 0x20) == b'e')
                    && let Ok(number) = std::str::from_utf8(number)
                {
                    out.push((path.clone(), number.to_owned()));
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// An object key as the parsed tree holds it (escapes resolved).
fn key_text(raw: &[u8], escaped: bool) -> String {
    if escaped {
        let mut quoted = Vec::with_capacity(raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(raw);
        quoted.push(b'"');
        if let Ok(key) = serde_json::from_slice::<String>(&quoted) {
            return key;
        }
    }
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str, pretty: bool) -> String {
        let value: Value = serde_json::from_str(text).unwrap();
        String::from_utf8(
            Spellings::of(text.as_bytes())
                .to_vec(&value, pretty)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn every_exponent_spelling_is_written_as_read() {
        for number in [
            "1e3",
            "1E3",
            "1e+3",
            "1E+3",
            "1e-3",
            "1E-3",
            "-1.5E-7",
            "2.50e+10",
            "-3.0E-0",
            "0e0",
            "1E03",
            "-0E+0",
            "123456789012345678901234567890E-30",
        ] {
            let text = format!(r#"{{"a":{number},"b":[{number}]}}"#);
            assert_eq!(round_trip(&text, false), text, "{number}");
        }
    }

    #[test]
    fn a_body_without_exponents_needs_nothing() {
        for text in [
            r#"{"id":"a1e3-1e5","value":1.50,"n":[0.010,-0,10]}"#,
            r#"{"fullUrl":"urn:uuid:3fdc72f4-1e3e-4a9c-9a2a-a1e3e5e7c9d1"}"#,
            r#"{"x":"e1","y":"12e"}"#,
        ] {
            assert!(Spellings::of(text.as_bytes()).is_empty(), "{text}");
            assert!(
                !may_have_exponent(text.as_bytes()) || exponent_numbers(text.as_bytes()).is_empty()
            );
        }
        // Already serde_json's spelling: nothing to respell either.
        assert!(Spellings::of(br#"{"a":1e+3,"b":2.5e-7}"#).is_empty());
    }

    #[test]
    fn words_in_strings_are_not_numbers() {
        // The prefilter passes (" 1E3" inside a string), the scan skips strings: a real
        // number `1e+3` elsewhere is not respelt after the string's text.
        let text = r#"{"text":"dose: 1E3 units","value":1e+3}"#;
        assert_eq!(
            round_trip(text, false),
            r#"{"text":"dose: 1E3 units","value":1e+3}"#
        );
        let text = r#"{"text":"say \"2E5\", [3E1","v":[3E1]}"#;
        assert_eq!(round_trip(text, false), text);
    }

    #[test]
    fn one_value_spelt_two_ways_keeps_each_spelling_in_place() {
        // Keys out of order in the input: the spellings follow the written (sorted) order.
        let text = r#"{"z":1E3,"a":{"k":[1e3,1e+3]},"m":1E+3,"\u0062":1e3}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let out = Spellings::of(text.as_bytes()).to_string(&value);
        assert_eq!(out, r#"{"a":{"k":[1e3,1e+3]},"b":1e3,"m":1E+3,"z":1E3}"#);
    }

    #[test]
    fn pretty_output_keeps_its_layout() {
        let text = r#"{"a":[1E3,2]}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        let expected = serde_json::to_string_pretty(&value)
            .unwrap()
            .replace("1e+3", "1E3");
        assert_eq!(round_trip(text, true), expected);
    }

    #[test]
    fn pages_add_up_and_copies_take_a_spelling() {
        let mut spellings = Spellings::of(br#"{"a":5E2}"#);
        spellings.add(br#"{"b":7e-1}"#);
        let value = serde_json::json!({"a": serde_json::from_str::<Value>("5e+2").unwrap(),
            "b": serde_json::from_str::<Value>("7e-1").unwrap(),
            "c": serde_json::from_str::<Value>("5e+2").unwrap()});
        assert_eq!(spellings.to_string(&value), r#"{"a":5E2,"b":7e-1,"c":5E2}"#);
    }

    #[test]
    fn garbage_does_not_panic() {
        for text in [
            &b"1e"[..],
            b"[1E",
            b"{\"a\":\"",
            b"\"\\",
            b"]]]}1e5,,",
            b"-e3",
            b"e3",
        ] {
            let _ = Spellings::of(text);
        }
    }

    /// The cost on bodies without exponents, measured over the official examples
    /// (`ASSENT_FHIR_EXAMPLES`): the prefilter against serde_json's parse of the same bytes.
    /// `cargo test -p assent-fhir --release spelling::tests::cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn cost() {
        use std::time::Instant;
        let root = std::env::var("ASSENT_FHIR_EXAMPLES").expect("ASSENT_FHIR_EXAMPLES");
        let mut bodies = Vec::new();
        for version in ["stu3", "r4", "r4b", "r5"] {
            for entry in std::fs::read_dir(format!("{root}/{version}")).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    bodies.push(std::fs::read(path).unwrap());
                }
            }
        }
        let bytes: usize = bodies.iter().map(Vec::len).sum();
        let (mut hits, mut found) = (0, 0);
        for body in &bodies {
            if may_have_exponent(body) {
                hits += 1;
                found += usize::from(!exponent_numbers(body).is_empty());
            }
        }
        let runs = 5;
        let best = |f: &dyn Fn() -> usize| {
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(f());
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        let prefilter = best(&|| bodies.iter().filter(|b| may_have_exponent(b)).count());
        let of = best(&|| {
            bodies
                .iter()
                .filter(|b| !Spellings::of(b).is_empty())
                .count()
        });
        let parse = best(&|| {
            bodies
                .iter()
                .filter(|b| serde_json::from_slice::<Value>(b).is_ok())
                .count()
        });
        let mb = |d: std::time::Duration| bytes as f64 / d.as_secs_f64() / 1e6;
        eprintln!(
            "{} bodies, {bytes} bytes; prefilter passes {hits}, of which {found} hold an exponent number",
            bodies.len()
        );
        eprintln!(
            "prefilter {prefilter:?} ({:.0} MB/s); Spellings::of {of:?} ({:.0} MB/s); serde_json parse {parse:?} ({:.0} MB/s); prefilter/parse {:.2} %",
            mb(prefilter),
            mb(of),
            mb(parse),
            100.0 * prefilter.as_secs_f64() / parse.as_secs_f64()
        );
    }

    #[test]
    fn normalised_is_serde_jsons_spelling() {
        for number in ["1E3", "1e3", "1e+3", "-2.5E-7", "0.5", "12", "1E03"] {
            let value: Value = serde_json::from_str(number).unwrap();
            assert_eq!(normalised(number), value.to_string(), "{number}");
        }
    }
}
