//! Taking the bearer token out of an `Authorization` header value (RFC 6750 §2.1).
//!
//! Leaves out: reading headers (the gateway passes the value as a string) and tokens in
//! query strings or form bodies, which are not accepted.

use crate::error::AuthError;

/// The token in `Authorization: Bearer <token>`. No header, or another scheme, is
/// [`AuthError::Missing`] (answered with a bare `Bearer` challenge); a `Bearer` header whose
/// token is empty or has characters outside RFC 6750's `b64token` is malformed.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let Some(value) = authorization else {
        return Err(AuthError::Missing);
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = rest.trim_start_matches(' ');
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if token.is_empty() || !token.bytes().all(b64token) {
        return Err(AuthError::Malformed {
            reason: "the Authorization header's bearer token is empty or has invalid characters",
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_token_after_the_scheme() {
        assert_eq!(bearer_token(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(Some("bearer  abc")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(Some("Basic dXNlcjpwdw==")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            bearer_token(Some("Bearer")).unwrap_err().code(),
            "token-malformed"
        );
        assert_eq!(
            bearer_token(Some("Bearer a b")).unwrap_err().code(),
            "token-malformed"
        );
        assert_eq!(
            bearer_token(Some("Bearer a\u{7}")).unwrap_err().code(),
            "token-malformed"
        );
    }
}
