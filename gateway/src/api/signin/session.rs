//! The browser sign-in's cookies, signed with HMAC-SHA256: the session (who signed in, its
//! session id, until when) and the short-lived sign-in state (OAuth `state`, OpenID `nonce`,
//! PKCE verifier) kept between the redirect to the identity provider and its callback; and any
//! other sealed value a realm needs ([`CookieSigner::seal_named`]: the portal's session).
//!
//! A sealed value is dot-separated base64url fields with the MAC last; the MAC covers a
//! purpose label naming the realm (`console`, `portal`) and the kind of cookie, so a sign-in
//! cookie can never pass as a session, nor a console cookie as a portal one. **Sessions are
//! also encrypted** ([`CookieSigner::encrypt_session`]): AES-256-GCM through the `cookie`
//! crate's `PrivateJar` (actix-web's `secure-cookies`), with the purpose label as associated
//! data, under a key of the realm's own derived from the session secret with HMAC-SHA256
//! under the label `assent-{realm}-session-encryption-v1` (then the crate's HKDF): never the
//! signing key itself. A stolen session cookie shows nothing (the access token inside it
//! included), and an edited one does not open. Leaves out setting the cookies' attributes and
//! the list of ended sessions (`signin.rs`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Signs and reads one realm's cookies.
#[derive(Clone)]
pub struct CookieSigner {
    key: Vec<u8>,
    realm: &'static str,
    /// The realm's session encryption key (derived apart from `key`).
    private: actix_web::cookie::Key,
}

/// A signed-in caller (the console: a compliance officer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The caller id (`subject@issuer`).
    pub caller: String,
    pub expires_at: u64,
    /// This session's id: the one a sign-out ends (`signin::end_session`).
    pub id: String,
}

/// A fresh random session id (128 bits).
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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
        let mut derive = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        derive.update(format!("assent-{realm}-session-encryption-v1").as_bytes());
        // 32 bytes: what `Key::derive_from` needs at least.
        let private = actix_web::cookie::Key::derive_from(&derive.finalize().into_bytes());
        CookieSigner {
            key,
            realm,
            private,
        }
    }

    /// `plain` encrypted (AES-256-GCM, a fresh nonce) with this realm's session key, bound to
    /// the label `name` as associated data.
    pub fn encrypt_session(&self, name: &str, plain: String) -> String {
        use actix_web::cookie::{Cookie, CookieJar};
        let label = self.label(name);
        let mut jar = CookieJar::new();
        jar.private_mut(&self.private)
            .add(Cookie::new(label.clone(), plain));
        jar.get(&label)
            .map(|c| c.value().to_owned())
            .unwrap_or_default()
    }

    /// The plain text of `value` encrypted under label `name`, if it opens (any edit, another
    /// key, realm or label: `None`).
    pub fn decrypt_session(&self, name: &str, value: &str) -> Option<String> {
        use actix_web::cookie::{Cookie, CookieJar};
        let jar = CookieJar::new();
        jar.private(&self.private)
            .decrypt(Cookie::new(self.label(name), value.to_owned()))
            .map(|c| c.value().to_owned())
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

    /// The session, sealed and encrypted.
    pub fn session(&self, session: &Session) -> String {
        let sealed = self.seal(
            &self.label("session"),
            &[
                &session.caller,
                &session.expires_at.to_string(),
                &session.id,
            ],
        );
        self.encrypt_session("session", sealed)
    }

    /// The session in `value`, if it decrypts, its MAC holds and it has not expired (whether
    /// it was ended is the caller's question: `signin::session_ended`).
    pub fn read_session(&self, value: &str) -> Option<Session> {
        let sealed = self.decrypt_session("session", value)?;
        let f = self.open(&self.label("session"), &sealed, 3)?;
        let expires_at: u64 = f[1].parse().ok()?;
        (expires_at > now_secs()).then(|| Session {
            caller: f[0].clone(),
            expires_at,
            id: f[2].clone(),
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
            id: new_session_id(),
        };
        let value = signer.session(&session);
        assert_eq!(signer.read_session(&value), Some(session.clone()));
        assert_eq!(CookieSigner::new(vec![8; 32]).read_session(&value), None);
        // Encrypted: neither the caller nor the session id shows.
        assert!(!value.contains("privacy") && !value.contains(&session.id));
        assert!(!value.contains(&URL_SAFE_NO_PAD.encode(&session.caller)));
        // Another caller's name under the same MAC does not pass, sealed or encrypted.
        let sealed = signer.decrypt_session("session", &value).unwrap();
        let mut parts: Vec<&str> = sealed.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode("admin@x");
        parts[0] = &forged;
        let forged = signer.encrypt_session("session", parts.join("."));
        assert_eq!(signer.read_session(&forged), None);
        // The sealed value alone (not encrypted) is not a session.
        assert_eq!(signer.read_session(&sealed), None);
        // Any edit of the ciphertext fails to open.
        let bytes = value.as_bytes();
        for at in [0, bytes.len() / 2, bytes.len() - 5] {
            let mut edited = value.clone().into_bytes();
            edited[at] = if edited[at] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(edited).unwrap();
            assert_eq!(signer.read_session(&edited), None, "edit at {at}");
        }
        // Expired.
        let old = signer.session(&Session {
            expires_at: now_secs() - 1,
            ..session.clone()
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
