//! The cross-site identity of a site-local patient, `{site}/Patient/{id}`: what receipts name,
//! what the consent cache is keyed by, and what the consortium key hashes into the ledger's
//! patient key.
//!
//! Owns the form only. Leaves out which sites exist and what makes a valid site name or id
//! (the callers check those), and the hashing (`assent_consent`'s consortium key).

use std::fmt;
use std::str::FromStr;

/// A patient of one site: `{site}/Patient/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SitePatient {
    pub site: String,
    pub id: String,
}

impl SitePatient {
    pub fn new(site: impl Into<String>, id: impl Into<String>) -> SitePatient {
        SitePatient {
            site: site.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for SitePatient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/Patient/{}", self.site, self.id)
    }
}

/// A text that is not `{site}/Patient/{id}` with a non-empty site and id free of `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotSitePatient;

impl fmt::Display for NotSitePatient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a site's patient is `{site}/Patient/{id}`")
    }
}

impl std::error::Error for NotSitePatient {}

impl FromStr for SitePatient {
    type Err = NotSitePatient;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(site), Some("Patient"), Some(id), None) if !site.is_empty() && !id.is_empty() => {
                Ok(SitePatient::new(site, id))
            }
            _ => Err(NotSitePatient),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_reads_back() {
        let p = SitePatient::new("st-mary", "p1");
        assert_eq!(p.to_string(), "st-mary/Patient/p1");
        assert_eq!("st-mary/Patient/p1".parse(), Ok(p));
        for bad in [
            "",
            "st-mary/Patient/",
            "/Patient/p1",
            "Patient/p1",
            "st-mary/Observation/p1",
            "st-mary/Patient/p1/_history/2",
        ] {
            assert_eq!(bad.parse::<SitePatient>(), Err(NotSitePatient), "{bad}");
        }
    }
}
