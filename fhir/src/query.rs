//! Query strings and `_search` form bodies, the one way every Assent crate reads and writes
//! them: [`pairs`] decodes (`application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte),
//! [`decode`] reads one name or value the same way but refuses what is not UTF-8, and
//! [`encode_pairs`] writes the one canonical form the gateway forwards.
//!
//! Leaves out what the parameters mean (search parsing is [`crate::compartment`]'s).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The name/value pairs of a query string or form body, in order, decoded as forms are:
/// `+` is a space, `%XX` a byte, invalid UTF-8 replaced.
pub fn pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

/// One name or value of a query string or form body (the text between `&` and `=`), decoded
/// as [`pairs`] decodes it (`+` is a space, `%XX` a byte); `Err` when the bytes are not UTF-8.
pub fn decode(component: &str) -> Result<String, NotUtf8> {
    let plus_as_space = component.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| NotUtf8)
}

/// A query component whose decoded bytes are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a query parameter is not valid UTF-8 once decoded")
    }
}

impl std::error::Error for NotUtf8 {}

/// A query string (or form body) from `pairs`, in the one encoding the gateway forwards:
/// names keep letters, digits and `-._:`; values keep letters, digits, `-._~` and the FHIR
/// delimiters `,|:/$*@`; every other byte is percent-encoded (a space is `%20`, never `+`),
/// so the site reads exactly the values the gateway decided on.
pub fn encode_pairs<'p>(pairs: impl IntoIterator<Item = (&'p str, &'p str)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(utf8_percent_encode(name, NAME_ESCAPES));
        out.push('=');
        out.extend(utf8_percent_encode(value, VALUE_ESCAPES));
    }
    out
}

const NAME_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b':');
const VALUE_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b',')
    .remove(b'|')
    .remove(b':')
    .remove(b'/')
    .remove(b'$')
    .remove(b'*')
    .remove(b'@');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_decode_as_forms_do_and_encode_canonically() {
        let read = pairs("subject=Patient%2F1&code=http%3A%2F%2Floinc.org%7C1+2&_count=");
        assert_eq!(
            read,
            [
                ("subject".to_owned(), "Patient/1".to_owned()),
                ("code".to_owned(), "http://loinc.org|1 2".to_owned()),
                ("_count".to_owned(), String::new()),
            ]
        );
        let written = encode_pairs(read.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        assert_eq!(
            written,
            "subject=Patient/1&code=http://loinc.org|1%202&_count="
        );
        assert_eq!(pairs(&written), read);
    }

    #[test]
    fn decode_reads_one_component_as_pairs_does() {
        assert_eq!(
            decode("http%3A%2F%2Floinc.org%7C1+2"),
            Ok("http://loinc.org|1 2".into())
        );
        assert_eq!(decode("a%2Bb=c"), Ok("a+b=c".into()));
        assert_eq!(decode("%zz"), Ok("%zz".into()));
        assert_eq!(decode("%FF"), Err(NotUtf8));
        for raw in ["a+b%20c", "%C3%A9t%C3%A9", "x%3D1", ""] {
            assert_eq!(
                pairs(&format!("n={raw}")),
                [("n".to_owned(), decode(raw).unwrap())]
            );
        }
    }
}
