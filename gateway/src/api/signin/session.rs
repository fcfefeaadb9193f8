//! The browser sign-in's cookies, signed with HMAC-SHA256: the session (who signed in, until
//! when) and the short-lived sign-in state (OAuth `state`, OpenID `nonce`, PKCE verifier)
//! kept between the redirect to the identity provider and its callback; and any other sealed
//! value a realm needs ([`CookieSigner::seal_named`]: the portal's session).
//!
//! A cookie value is dot-separated base64url fields with the MAC last; the MAC covers a
//! purpose label naming the realm (`console`, `portal`) and the kind of cookie, so a sign-in
//! cookie can never pass as a session, nor a console cookie as a portal one. Leaves out
//! setting the cookies' attributes (`signin.rs`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Signs and reads one realm's cookies.
#[derive(Clone)]
pub struct CookieSigner {
    key: Vec<u8>,
    realm: &'static str,
}

/// A signed-in caller (the console: a compliance officer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The caller id (`subject@issuer`).
    pub caller: String,
    pub expires_at: u64,
}

/// The sign-in in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub expires_at: u64,
}

pub fn now_secs() -> u64 {
    let millis = assent_ledger::Clock::now_millis(&assent_ledger::SystemClock);
    u64::try_from(millis / 1000).unwrap_or(0)
}

impl CookieSigner {
    /// The console's signer.
    pub fn new(key: Vec<u8>) -> CookieSigner {
        CookieSigner::for_realm(key, "console")
    }

    /// The signer of `realm`'s cookies (its purpose labels are `assent-{realm}-…`).
    pub fn for_realm(key: Vec<u8>, realm: &'static str) -> CookieSigner {
        CookieSigner { key, realm }
    }

    fn label(&self, name: &str) -> String {
        format!("assent-{}-{name}-v1", self.realm)
    }

    /// `fields` sealed under this realm's label `name`.
    pub fn seal_named(&self, name: &str, fields: &[&str]) -> String {
        self.seal(&self.label(name), fields)
    }

    /// The `n_fields` fields sealed in `value` under label `name`, if its MAC holds.
    pub fn open_named(&self, name: &str, value: &str, n_fields: usize) -> Option<Vec<String>> {
        self.open(&self.label(name), value, n_fields)
    }

    fn hmac(&self, purpose: &str, fields: &[&str]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        for part in std::iter::once(purpose).chain(fields.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    fn mac(&self, purpose: &str, fields: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(self.hmac(purpose, fields).finalize().into_bytes())
    }

    fn seal(&self, purpose: &str, fields: &[&str]) -> String {
        let mut out: Vec<String> = fields.iter().map(|f| URL_SAFE_NO_PAD.encode(f)).collect();
        out.push(self.mac(purpose, fields));
        out.join(".")
    }

    fn open(&self, purpose: &str, value: &str, n_fields: usize) -> Option<Vec<String>> {
        let parts: Vec<&str> = value.split('.').collect();
        if parts.len() != n_fields + 1 {
            return None;
        }
        let fields: Vec<String> = parts[..n_fields]
            .iter()
            .map(|p| {
                URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            })
            .collect::<Option<_>>()?;
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        let given = URL_SAFE_NO_PAD.decode(parts[n_fields]).ok()?;
        // Constant-time comparison through the MAC's own verifier.
        self.hmac(purpose, &refs).verify_slice(&given).ok()?;
        Some(fields)
    }

    pub fn session(&self, session: &Session) -> String {
        self.seal(
            &self.label("session"),
            &[&session.caller, &session.expires_at.to_string()],
        )
    }

    /// The session in `value`, if its MAC holds and it has not expired.
    pub fn read_session(&self, value: &str) -> Option<Session> {
        let f = self.open(&self.label("session"), value, 2)?;
        let expires_at: u64 = f[1].parse().ok()?;
        (expires_at > now_secs()).then(|| Session {
            caller: f[0].clone(),
            expires_at,
        })
    }

    pub fn login(&self, login: &PendingLogin) -> String {
        self.seal(
            &self.label("login"),
            &[
                &login.state,
                &login.nonce,
                &login.pkce_verifier,
                &login.expires_at.to_string(),
            ],
        )
    }

    pub fn read_login(&self, value: &str) -> Option<PendingLogin> {
        let f = self.open(&self.label("login"), value, 4)?;
        let expires_at: u64 = f[3].parse().ok()?;
        (expires_at > now_secs()).then(|| PendingLogin {
            state: f[0].clone(),
            nonce: f[1].clone(),
            pkce_verifier: f[2].clone(),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_hold_only_with_their_key_purpose_and_time() {
        let signer = CookieSigner::new(vec![7; 32]);
        let session = Session {
            caller: "privacy-officer@http://127.0.0.1:1".into(),
            expires_at: now_secs() + 60,
        };
        let value = signer.session(&session);
        assert_eq!(signer.read_session(&value), Some(session.clone()));
        assert_eq!(CookieSigner::new(vec![8; 32]).read_session(&value), None);
        // Another caller's name under the same MAC does not pass.
        let mut parts: Vec<&str> = value.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode("admin@x");
        parts[0] = &forged;
        assert_eq!(signer.read_session(&parts.join(".")), None);
        // Expired.
        let old = signer.session(&Session {
            expires_at: now_secs() - 1,
            ..session
        });
        assert_eq!(signer.read_session(&old), None);
        // A sign-in cookie is not a session.
        let login = PendingLogin {
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            expires_at: now_secs() + 60,
        };
        let login_value = signer.login(&login);
        assert_eq!(signer.read_login(&login_value), Some(login));
        assert_eq!(signer.read_session(&login_value), None);
        assert_eq!(signer.read_session("garbage"), None);
        // Another realm's cookie under the same key does not pass.
        let portal = CookieSigner::for_realm(vec![7; 32], "portal");
        assert_eq!(portal.read_session(&value), None);
        assert_eq!(portal.read_login(&login_value), None);
    }
}
