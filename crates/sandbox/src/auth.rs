//! Bearer tokens and scopes.
//!
//! A request must carry `Authorization: Bearer <token>`; a missing header, an unknown token, a
//! token of a deleted user, an expired token, or one issued before the user's `tokenCutoff`
//! (set by `PATCH /me` or by `PATCH /me/changePassword` with `invalidateExistingTokens`) is
//! answered 401. A known token without any of the scopes the action accepts
//! ([`ActionSpec::scopes`], the upstream 1.30.0 lists) is answered 403. Scopes match exactly:
//! the wildcards (`me.*`, `all.User`, …) are entries of the lists themselves.

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};

use super::{
    actions::ActionSpec,
    error::ApiError,
    seed::{SeedToken, TokenSubject},
    state::{Store, new_token_text},
};

/// The only two-factor code the sandbox accepts (no real TOTP is computed): needed by
/// `me.enableTwoFactorAuth` and `me.disableTwoFactorAuth`, and by password checks of users with
/// two-factor authentication enabled.
pub const TWO_FACTOR_CODE: &str = "123456";

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Who the token acts as.
    pub subject: TokenSubject,
    /// Its scopes.
    pub scopes: Vec<String>,
}

impl Caller {
    /// The user id of a user token; 403 for organization and instance API tokens, which have
    /// no "me".
    pub(crate) fn user_id(&self) -> Result<&str, ApiError> {
        match &self.subject {
            TokenSubject::User(id) => Ok(id),
            TokenSubject::Organization(_) | TokenSubject::Instance(_) => Err(ApiError::Forbidden(
                "This action requires a user token".into(),
            )),
        }
    }
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Finds the caller of a request (401 when there is none or the token is not valid).
pub(crate) fn authenticate(
    store: &Store,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<Caller, ApiError> {
    let Some(text) = bearer(headers) else {
        return Err(ApiError::Unauthorized(
            "Authorization header with a Bearer token is required".into(),
        ));
    };
    let invalid = || ApiError::Unauthorized("Invalid, expired or revoked token".into());
    let token = store.tokens.get(text).ok_or_else(invalid)?;
    if token.expires_at.is_some_and(|expiry| expiry <= now) {
        return Err(invalid());
    }
    if let TokenSubject::User(user_id) = &token.subject {
        let user = store.users.get(user_id).ok_or_else(invalid)?;
        if user
            .token_cutoff
            .is_some_and(|cutoff| token.issued_at < cutoff)
        {
            return Err(invalid());
        }
    }
    Ok(Caller {
        subject: token.subject.clone(),
        scopes: token.scopes.clone(),
    })
}

/// Checks the caller's scopes against the action's list (403 when none matches).
pub(crate) fn authorize(caller: &Caller, spec: &ActionSpec) -> Result<(), ApiError> {
    if caller
        .scopes
        .iter()
        .any(|scope| spec.scopes.contains(&scope.as_str()))
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "Token is missing a scope for {}; accepted scopes: {}",
            spec.name,
            spec.scopes.join(", ")
        )))
    }
}

/// Mints a token for the same subject with the same scopes as `caller` (refresh and password
/// change). `ttl_seconds` of 0 or absent means no expiry.
pub(crate) fn mint_token(
    store: &mut Store,
    caller: &Caller,
    description: &str,
    now: DateTime<Utc>,
    ttl_seconds: Option<i64>,
) -> String {
    let expires_at = ttl_seconds
        .filter(|ttl| *ttl > 0)
        .map(|ttl| now + chrono::Duration::seconds(ttl.min(10 * 365 * 86_400)));
    store.insert_token(SeedToken {
        token: new_token_text(),
        description: description.to_string(),
        subject: caller.subject.clone(),
        scopes: caller.scopes.clone(),
        issued_at: now,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }
}
