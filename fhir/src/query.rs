//! Query strings and `_search` form bodies, the one way every Assent crate reads and writes
//! them: [`pairs`] decodes (`application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte)
//! and [`encode_pairs`] writes the one canonical form the gateway forwards.
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
}
