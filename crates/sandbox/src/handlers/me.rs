//! `me.*`: the calling user's account, credentials, recent items and invitations.
//!
//! Sandbox rules where the upstream is silent:
//! - Passwords and two-factor codes in bodies are checked against the account; a wrong one is
//!   400 `InvalidCredentials`. While two-factor authentication is enabled, the fixed code
//!   [`TWO_FACTOR_CODE`] (`123456`) is the only accepted code (no real TOTP).
//! - `PATCH /me` needs `currentCredentials` to change `email` or `password`.
//! - `POST /me/verify-email` marks the email verified at once (there is no mailbox).
//! - `PATCH /me/changePassword` always mints a new token (same scopes as the calling token,
//!   optional `tokenTTL` in seconds); with `invalidateExistingTokens: true` every other token of
//!   the user stops working (401) and `tokenCutoff` is set.
//! - Recent item lists keep the last [`RECENT_ITEMS_LIMIT`] distinct items per
//!   `(itemType, parentId)`; a device or flow is filed under its application when `parentId` is
//!   absent. Unknown or invisible items are 404.
//! - Invitations: `accept` and `reject` of an expired invitation are 410; `dismiss` works on
//!   any invitation and only hides it from the invitee.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, success, transfer};
use crate::{
    auth::{TWO_FACTOR_CODE, mint_token},
    error::ApiError,
    render::{self, MeOptions},
    seed::{ItemType, Owner, SeedMember, SeedRecentList},
    state::{RECENT_ITEMS_LIMIT, Store, User},
};

fn user_id(ctx: &Ctx) -> Result<String, ApiError> {
    ctx.caller.user_id().map(str::to_string)
}

fn me_body(store: &Store, ctx: &Ctx, id: &str) -> Result<Value, ApiError> {
    let user = store.user(id)?;
    Ok(render::me(
        store,
        user,
        &MeOptions::from_query(ctx.query),
        ctx.now,
    ))
}

/// Checks a password and, when two-factor authentication is on, the two-factor code.
fn check_credentials(
    user: &User,
    password: &str,
    two_factor_code: Option<&str>,
) -> Result<(), ApiError> {
    if user.account.password != password {
        return Err(ApiError::InvalidCredentials(
            "The password is incorrect".into(),
        ));
    }
    if user.account.two_factor_auth_key.is_some() && two_factor_code != Some(TWO_FACTOR_CODE) {
        return Err(ApiError::InvalidCredentials(
            "A valid twoFactorCode is required".into(),
        ));
    }
    Ok(())
}

/// `GET /me`.
pub(super) fn get(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    me_body(store, ctx, &user_id(ctx)?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Credentials {
    password: String,
    two_factor_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MePatch {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    company_name: Option<String>,
    title: Option<String>,
    phone_number: Option<String>,
    location: Option<String>,
    url: Option<String>,
    password: Option<String>,
    token_cutoff: Option<DateTime<Utc>>,
    current_credentials: Option<Credentials>,
}

/// `PATCH /me`.
pub(super) fn patch(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let body: MePatch = ctx.body()?;
    let user = store.user(&id)?;
    let new_email = body
        .email
        .as_ref()
        .filter(|email| !email.eq_ignore_ascii_case(&user.account.email));
    if new_email.is_some() || body.password.is_some() {
        let Some(current) = &body.current_credentials else {
            return Err(ApiError::validation(
                "\"currentCredentials\" is required to change the email or password",
            ));
        };
        check_credentials(user, &current.password, current.two_factor_code.as_deref())?;
    }
    if let Some(email) = new_email
        && store.user_by_email(email).is_some()
    {
        return Err(ApiError::validation(format!(
            "\"email\" {email} is already in use"
        )));
    }
    let new_email = new_email.cloned();
    let user = store.user_mut(&id)?;
    let account = &mut user.account;
    if let Some(email) = new_email {
        account.email = email;
        account.email_verified = false;
    }
    let texts = [
        (body.first_name, &mut account.first_name),
        (body.last_name, &mut account.last_name),
        (body.company_name, &mut account.company_name),
        (body.title, &mut account.title),
        (body.phone_number, &mut account.phone_number),
        (body.location, &mut account.location),
        (body.url, &mut account.url),
    ];
    for (value, field) in texts {
        if let Some(value) = value {
            *field = value;
        }
    }
    if let Some(password) = body.password {
        account.password = password;
        user.password_last_updated = ctx.now;
    }
    if let Some(cutoff) = body.token_cutoff {
        user.token_cutoff = Some(cutoff);
    }
    user.last_updated = ctx.now;
    me_body(store, ctx, &id)
}

/// `POST /me/verify-email`: the sandbox has no mailbox, so the email counts as verified.
pub(super) fn verify_email(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let user = store.user_mut(&user_id(ctx)?)?;
    user.account.email_verified = true;
    Ok(success())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePassword {
    two_factor_code: Option<String>,
    password: String,
    new_password: String,
    #[serde(default)]
    invalidate_existing_tokens: bool,
    #[serde(rename = "tokenTTL")]
    token_ttl: Option<i64>,
}

/// `PATCH /me/changePassword`.
pub(super) fn change_password(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let body: ChangePassword = ctx.body()?;
    check_credentials(
        store.user(&id)?,
        &body.password,
        body.two_factor_code.as_deref(),
    )?;
    let user = store.user_mut(&id)?;
    user.account.password = body.new_password;
    user.password_last_updated = ctx.now;
    user.last_updated = ctx.now;
    if body.invalidate_existing_tokens {
        // Removing the tokens makes them unknown (401); the cut-off also covers tokens that a
        // seed file might re-add, and shows up as `tokenCutoff` in `GET /me`.
        user.token_cutoff = Some(ctx.now);
        let subject = ctx.caller.subject.clone();
        store.tokens.retain(|_, token| token.subject != subject);
    }
    let token = mint_token(
        store,
        ctx.caller,
        "minted by me.changePassword",
        ctx.now,
        body.token_ttl,
    );
    let user = store.user(&id)?;
    Ok(json!({ "userId": id, "token": token, "needsToVerifyEmail": !user.account.email_verified }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserCredentials {
    email: String,
    password: String,
    two_factor_code: Option<String>,
}

/// `POST /me/delete`: checks the credentials, then deletes the user and their tokens.
pub(super) fn delete(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let body: UserCredentials = ctx.body()?;
    let user = store.user(&id)?;
    if !user.account.email.eq_ignore_ascii_case(&body.email) {
        return Err(ApiError::InvalidCredentials(
            "The email does not match the current user".into(),
        ));
    }
    check_credentials(user, &body.password, body.two_factor_code.as_deref())?;
    store.delete_user(&id);
    Ok(success())
}

/// 32 random bytes in RFC 4648 base32 without padding: 52 characters.
fn new_two_factor_key() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes: [u8; 32] = rand::rng().random();
    let mut key = String::with_capacity(52);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            key.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        key.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    key
}

/// `PATCH /me/generateTwoFactorAuth`: a new key, kept until `enableTwoFactorAuth`.
pub(super) fn generate_two_factor(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let user = store.user_mut(&user_id(ctx)?)?;
    if user.account.two_factor_auth_key.is_some() {
        return Err(ApiError::validation(
            "Two-factor authentication is already enabled",
        ));
    }
    let key = new_two_factor_key();
    let mut key_uri = String::from("otpauth://totp/WEGnology:");
    key_uri.extend(utf8_percent_encode(&user.account.email, NON_ALPHANUMERIC));
    // Writing to a String cannot fail.
    let _ = write!(key_uri, "?secret={key}&issuer=WEGnology");
    user.pending_two_factor_key = Some(key.clone());
    Ok(json!({ "key": key, "keyUri": key_uri }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwoFactor {
    two_factor_auth_key: Option<String>,
    password: String,
    two_factor_code: String,
}

/// `PATCH /me/enableTwoFactorAuth`: needs the password, a key (from the body or from
/// `generateTwoFactorAuth`) and the code [`TWO_FACTOR_CODE`].
pub(super) fn enable_two_factor(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let body: TwoFactor = ctx.body()?;
    let user = store.user_mut(&id)?;
    if user.account.two_factor_auth_key.is_some() {
        return Err(ApiError::validation(
            "Two-factor authentication is already enabled",
        ));
    }
    check_credentials(user, &body.password, None)?;
    let Some(key) = body
        .two_factor_auth_key
        .or_else(|| user.pending_two_factor_key.clone())
    else {
        return Err(ApiError::validation(
            "\"twoFactorAuthKey\" is required unless PATCH /me/generateTwoFactorAuth was called first",
        ));
    };
    if body.two_factor_code != TWO_FACTOR_CODE {
        return Err(ApiError::InvalidCredentials(
            "The twoFactorCode is incorrect".into(),
        ));
    }
    user.account.two_factor_auth_key = Some(key);
    user.pending_two_factor_key = None;
    user.last_updated = ctx.now;
    me_body(store, ctx, &id)
}

/// `PATCH /me/disableTwoFactorAuth`: needs the password and the code [`TWO_FACTOR_CODE`].
pub(super) fn disable_two_factor(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let body: TwoFactor = ctx.body()?;
    let user = store.user_mut(&id)?;
    if user.account.two_factor_auth_key.is_none() {
        return Err(ApiError::validation(
            "Two-factor authentication is not enabled",
        ));
    }
    check_credentials(user, &body.password, Some(&body.two_factor_code))?;
    user.account.two_factor_auth_key = None;
    user.last_updated = ctx.now;
    me_body(store, ctx, &id)
}

/// `PATCH /me/disconnectGithub`.
pub(super) fn disconnect_github(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let user = store.user_mut(&id)?;
    user.account.github_name = None;
    user.last_updated = ctx.now;
    me_body(store, ctx, &id)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecentItem {
    item_type: ItemType,
    parent_id: Option<String>,
    item_id: String,
}

/// `POST /me/recentItems`.
pub(super) fn add_recent_item(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let body: RecentItem = ctx.body()?;
    let item_id = body.item_id.to_ascii_lowercase();
    let given_parent = body.parent_id.map(|parent| parent.to_ascii_lowercase());
    let kind = body.item_type;
    let Some((_, application)) = store.visible_item(&id, kind, &item_id) else {
        return Err(ApiError::not_found(kind.title(), &item_id));
    };
    let parent = match (application, given_parent) {
        (Some(app), Some(given)) if app != given => {
            return Err(ApiError::validation(format!(
                "\"parentId\" must be the item's application {app}"
            )));
        }
        (Some(app), _) => Some(app),
        (None, given) => given,
    };
    let user = store.user_mut(&id)?;
    let lists = &mut user.account.recent_items;
    let same = |list: &SeedRecentList| list.item_type == kind && list.parent_id == parent;
    if !lists.iter().any(same) {
        lists.push(SeedRecentList {
            item_type: kind,
            parent_id: parent.clone(),
            item_ids: Vec::new(),
        });
    }
    if let Some(list) = lists.iter_mut().find(|list| same(list)) {
        list.item_ids.retain(|existing| *existing != item_id);
        list.item_ids.insert(0, item_id);
        list.item_ids.truncate(RECENT_ITEMS_LIMIT);
    }
    let user = store.user(&id)?;
    Ok(render::recent_list(store, user, kind, parent.as_deref()))
}

/// `GET /me/recentItems?itemType=…[&parentId=…]`.
pub(super) fn fetch_recent_items(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let user = store.user(ctx.caller.user_id()?)?;
    let kind_name = ctx.query_text("itemType")?;
    let kind = ItemType::parse(kind_name)
        .ok_or_else(|| ApiError::validation(format!("unknown itemType {kind_name}")))?;
    Ok(render::recent_list(
        store,
        user,
        kind,
        ctx.query.text("parentId"),
    ))
}

/// The invitations addressed to `user`, not dismissed, newest first.
fn my_invites<'a>(store: &'a Store, user: &User) -> Vec<&'a crate::seed::SeedInvite> {
    let mut invites: Vec<_> = store
        .invites
        .iter()
        .filter(|invite| {
            invite.email.eq_ignore_ascii_case(&user.account.email)
                && !user.dismissed_invites.contains(&invite.id)
        })
        .collect();
    invites.sort_by(|a, b| {
        b.invite_date
            .cmp(&a.invite_date)
            .then_with(|| a.id.cmp(&b.id))
    });
    invites
}

/// `GET /me/invites`.
pub(super) fn invites(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let user = store.user(ctx.caller.user_id()?)?;
    let items = my_invites(store, user)
        .into_iter()
        .map(|invite| render::user_invite(store, invite, ctx.now));
    Ok(Value::Array(items.collect()))
}

/// One invitation addressed to the caller, or 404.
fn my_invite(store: &Store, ctx: &Ctx) -> Result<crate::seed::SeedInvite, ApiError> {
    let invite_id = ctx.path_param("inviteId")?;
    let user = store.user(ctx.caller.user_id()?)?;
    my_invites(store, user)
        .into_iter()
        .find(|invite| invite.id == invite_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("Invitation", invite_id))
}

/// `GET /me/invites/{inviteId}`.
pub(super) fn invite(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let invite = my_invite(store, ctx)?;
    Ok(render::user_invite(store, &invite, ctx.now))
}

#[derive(Deserialize)]
struct InviteAction {
    action: String,
}

/// `POST /me/invites/{inviteId}`: `accept` adds the caller as a member with the invitation's
/// roles, `reject` withdraws it, `dismiss` hides it from the caller.
pub(super) fn respond_to_invite(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let body: InviteAction = ctx.body()?;
    let invite = my_invite(store, ctx)?;
    let expired = store.is_expired(&invite, ctx.now);
    let result = match body.action.as_str() {
        "accept" | "reject" if expired => {
            return Err(ApiError::InvitationExpired(format!(
                "Invitation {} has expired",
                invite.id
            )));
        }
        "accept" => {
            let org = store.org_mut(&invite.org_id)?;
            if !org.members.iter().any(|member| member.user_id == id) {
                org.members.push(SeedMember {
                    user_id: id.clone(),
                    role: invite.role,
                    application_roles: invite.application_roles.clone(),
                    dashboard_roles: invite.dashboard_roles.clone(),
                });
                org.last_updated = Some(ctx.now);
            }
            store.invites.retain(|other| other.id != invite.id);
            "accepted"
        }
        "reject" => {
            store.invites.retain(|other| other.id != invite.id);
            "rejected"
        }
        _ => {
            store
                .user_mut(&id)?
                .dismissed_invites
                .insert(invite.id.clone());
            "dismissed"
        }
    };
    Ok(json!({ "result": result, "orgId": invite.org_id }))
}

/// `PATCH /me/transferResources`.
pub(super) fn transfer_resources(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    transfer(store, ctx, Owner::User(id))
}

/// `GET /me/refreshToken`: a new token with the same subject and scopes; the old one stays
/// valid.
pub(super) fn refresh_token(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let id = user_id(ctx)?;
    let token = mint_token(
        store,
        ctx.caller,
        "minted by me.refreshToken",
        ctx.now,
        None,
    );
    let user = store.user(&id)?;
    Ok(json!({ "userId": id, "token": token, "needsToVerifyEmail": !user.account.email_verified }))
}

#[cfg(test)]
mod tests {
    use super::new_two_factor_key;

    #[test]
    fn two_factor_keys_are_52_base32_characters() {
        let key = new_two_factor_key();
        assert_eq!(key.len(), 52);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        assert_ne!(key, new_two_factor_key());
    }
}
