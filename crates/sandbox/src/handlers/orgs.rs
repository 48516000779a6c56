//! `orgs.*` and `org.*`: listing, creating and managing organizations, their members and
//! invitations.
//!
//! Access: a user sees only organizations they are a member of (others are 404, as if they did
//! not exist); organization and instance API tokens see only their own organization(s).
//! Writes (`patch`, `delete`, `inviteMember`, `revokeInvite`, `modifyMember`, `removeMember`,
//! `transferResources`) need the admin role (403 otherwise), except that any member may remove
//! themselves. An organization always keeps at least one admin (400 otherwise).
//!
//! `GET /orgs` sorts names case-insensitively, breaks ties by id, pages from page 0 and
//! echoes `filter`/`filterField` only when given; `filter` is applied only with
//! `filterField=name` (see [`crate::glob`]).

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, lower_grants, success, transfer};
use crate::{
    error::ApiError,
    glob::glob_match,
    render::{self, SummaryFilter},
    seed::{
        MfaMode, OrgRole, Owner, RoleGrant, SeedInvite, SeedMember, SeedOrganization, TokenSubject,
    },
    state::{Store, new_id},
};

fn org_body(store: &Store, ctx: &Ctx, org_id: &str) -> Result<Value, ApiError> {
    let org = store
        .org(org_id)
        .ok_or_else(|| ApiError::not_found("Organization", org_id))?;
    Ok(render::org(
        store,
        org,
        &SummaryFilter::from_query(ctx.query),
        ctx.now,
    ))
}

/// `GET /orgs`.
pub(super) fn list(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let user_id = ctx.caller.user_id()?;
    let filter_field = ctx.query.text("filterField");
    let filter = ctx.query.text("filter");
    let mut orgs: Vec<&SeedOrganization> = store.orgs_of_user(user_id).collect();
    if let (Some("name"), Some(pattern)) = (filter_field, filter) {
        orgs.retain(|org| glob_match(pattern, &org.name));
    }
    let sort_field = ctx.query.text("sortField").unwrap_or("name");
    let sort_direction = ctx.query.text("sortDirection").unwrap_or("asc");
    let key = |a: &SeedOrganization, b: &SeedOrganization| -> Ordering {
        let primary = match sort_field {
            "id" => Ordering::Equal,
            "creationDate" => a.creation_date.cmp(&b.creation_date),
            "lastUpdated" => a.last_updated.cmp(&b.last_updated),
            _ => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
        };
        primary.then_with(|| a.id.cmp(&b.id))
    };
    orgs.sort_by(|a, b| key(a, b));
    if sort_direction == "desc" {
        orgs.reverse();
    }
    let page = ctx.query.int("page").unwrap_or(0);
    let per_page = ctx.query.int("perPage").unwrap_or(100);
    let skip = usize::try_from(page.saturating_mul(per_page)).unwrap_or(usize::MAX);
    let take = usize::try_from(per_page).unwrap_or(usize::MAX);
    let summary = SummaryFilter::from_query(ctx.query);
    let items: Vec<Value> = orgs
        .iter()
        .skip(skip)
        .take(take)
        .map(|org| render::org(store, org, &summary, ctx.now))
        .collect();
    let mut body = json!({
        "items": items,
        "count": items.len(),
        "totalCount": orgs.len(),
        "perPage": per_page,
        "page": page,
        "sortField": sort_field,
        "sortDirection": sort_direction,
    });
    if let Some(fields) = body.as_object_mut() {
        if let Some(filter) = filter {
            fields.insert("filter".into(), json!(filter));
        }
        if let Some(field) = filter_field {
            fields.insert("filterField".into(), json!(field));
        }
    }
    Ok(body)
}

/// `orgPost` / `orgPatch` body (`cardToken` is accepted and dropped: the sandbox bills nobody).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrgFields {
    name: Option<String>,
    description: Option<String>,
    plan_id: Option<String>,
    billing_email: Option<String>,
    icon_color: Option<String>,
    mfa_mode: Option<MfaMode>,
}

impl OrgFields {
    fn apply(self, org: &mut SeedOrganization) {
        if let Some(name) = self.name {
            org.name = name;
        }
        if let Some(description) = self.description {
            org.description = description;
        }
        if let Some(plan) = self.plan_id {
            org.plan_id = plan;
        }
        if let Some(email) = self.billing_email {
            org.billing_email = Some(email);
        }
        if let Some(color) = self.icon_color {
            org.icon_color = Some(color);
        }
        if let Some(mode) = self.mfa_mode {
            org.mfa_mode = mode;
        }
    }
}

/// `POST /orgs`: the caller becomes the only (admin) member.
pub(super) fn create(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let user_id = ctx.caller.user_id()?.to_string();
    let fields: OrgFields = ctx.body()?;
    let id = new_id(ctx.now);
    let mut org = SeedOrganization::new(&id, "", "", ctx.now, ctx.now);
    org.members = vec![SeedMember::new(&user_id, OrgRole::Admin)];
    fields.apply(&mut org);
    store.orgs.push(org);
    org_body(store, ctx, &id)
}

/// `GET /orgs/{orgId}`.
pub(super) fn get(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?;
    store.org_access(&ctx.caller.subject, org_id)?;
    org_body(store, ctx, org_id)
}

/// `PATCH /orgs/{orgId}`.
pub(super) fn patch(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?;
    store.org_admin(&ctx.caller.subject, org_id)?;
    let fields: OrgFields = ctx.body()?;
    let org = store.org_mut(org_id)?;
    fields.apply(org);
    org.last_updated = Some(ctx.now);
    org_body(store, ctx, org_id)
}

/// `DELETE /orgs/{orgId}`.
pub(super) fn delete(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?;
    store.org_admin(&ctx.caller.subject, org_id)?;
    store.delete_org(org_id);
    Ok(success())
}

/// `GET /orgs/{orgId}/invites`: every member may list them.
pub(super) fn pending_invites(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?;
    store.org_access(&ctx.caller.subject, org_id)?;
    Ok(render::org_invites(store, org_id, ctx.now))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvitePost {
    email: String,
    role: OrgRole,
    application_roles: Option<Vec<RoleGrant>>,
    dashboard_roles: Option<Vec<RoleGrant>>,
    #[serde(default)]
    disallow_transfer: bool,
}

/// `POST /orgs/{orgId}/invites`: a new invitation replaces a pending one for the same email;
/// inviting a member is a 400.
pub(super) fn invite_member(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?.to_string();
    store.org_admin(&ctx.caller.subject, &org_id)?;
    let body: InvitePost = ctx.body()?;
    let org = store
        .org(&org_id)
        .ok_or_else(|| ApiError::not_found("Organization", &org_id))?;
    let is_member = org.members.iter().any(|member| {
        store
            .users
            .get(&member.user_id)
            .is_some_and(|user| user.account.email.eq_ignore_ascii_case(&body.email))
    });
    if is_member {
        return Err(ApiError::validation(format!(
            "{} is already a member of this organization",
            body.email
        )));
    }
    store.invites.retain(|invite| {
        !(invite.org_id == org_id && invite.email.eq_ignore_ascii_case(&body.email))
    });
    let invited_by = match &ctx.caller.subject {
        TokenSubject::User(id) => Some(id.clone()),
        TokenSubject::Organization(_) | TokenSubject::Instance(_) => None,
    };
    store.invites.push(SeedInvite {
        id: new_id(ctx.now),
        org_id: org_id.clone(),
        email: body.email,
        role: body.role,
        application_roles: lower_grants(body.application_roles).unwrap_or_default(),
        dashboard_roles: lower_grants(body.dashboard_roles).unwrap_or_default(),
        disallow_transfer: body.disallow_transfer,
        invited_by,
        invite_date: ctx.now,
        ttl_ms: None,
    });
    Ok(render::org_invites(store, &org_id, ctx.now))
}

/// `DELETE /orgs/{orgId}/invites?inviteId=…`.
pub(super) fn revoke_invite(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?;
    store.org_admin(&ctx.caller.subject, org_id)?;
    let invite_id = ctx.query_text("inviteId")?;
    let before = store.invites.len();
    store
        .invites
        .retain(|invite| !(invite.org_id == org_id && invite.id == invite_id));
    if store.invites.len() == before {
        return Err(ApiError::not_found("Invitation", invite_id));
    }
    Ok(render::org_invites(store, org_id, ctx.now))
}

/// 400 unless `org` still has an admin after `change` is applied to a copy of its members.
fn keep_an_admin(
    org: &SeedOrganization,
    change: impl FnOnce(&mut Vec<SeedMember>),
) -> Result<(), ApiError> {
    let mut members = org.members.clone();
    change(&mut members);
    if members.iter().any(|member| member.role == OrgRole::Admin) {
        Ok(())
    } else {
        Err(ApiError::validation(
            "An organization must keep at least one admin member",
        ))
    }
}

fn not_a_member(user_id: &str, org_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "User {user_id} is not a member of organization {org_id}"
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberPatch {
    user_id: String,
    role: Option<OrgRole>,
    application_roles: Option<Vec<RoleGrant>>,
    dashboard_roles: Option<Vec<RoleGrant>>,
}

/// `PATCH /orgs/{orgId}/member`.
pub(super) fn modify_member(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?;
    store.org_admin(&ctx.caller.subject, org_id)?;
    let body: MemberPatch = ctx.body()?;
    let user_id = body.user_id.to_ascii_lowercase();
    let org = store.org_mut(org_id)?;
    if !org.members.iter().any(|member| member.user_id == user_id) {
        return Err(not_a_member(&user_id, org_id));
    }
    if let Some(role) = body.role {
        keep_an_admin(org, |members| {
            members
                .iter_mut()
                .filter(|member| member.user_id == user_id)
                .for_each(|member| member.role = role)
        })?;
    }
    if let Some(member) = org
        .members
        .iter_mut()
        .find(|member| member.user_id == user_id)
    {
        if let Some(role) = body.role {
            member.role = role;
        }
        if let Some(grants) = lower_grants(body.application_roles) {
            member.application_roles = grants;
        }
        if let Some(grants) = lower_grants(body.dashboard_roles) {
            member.dashboard_roles = grants;
        }
    }
    org.last_updated = Some(ctx.now);
    org_body(store, ctx, org_id)
}

/// `DELETE /orgs/{orgId}/member?userId=…`: admins remove anyone, members themselves.
pub(super) fn remove_member(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?;
    let user_id = ctx.query_text("userId")?.to_string();
    let leaving = ctx.caller.subject == TokenSubject::User(user_id.clone());
    if leaving {
        store.org_access(&ctx.caller.subject, org_id)?;
    } else {
        store.org_admin(&ctx.caller.subject, org_id)?;
    }
    let org = store.org_mut(org_id)?;
    if !org.members.iter().any(|member| member.user_id == user_id) {
        return Err(not_a_member(&user_id, org_id));
    }
    keep_an_admin(org, |members| {
        members.retain(|member| member.user_id != user_id)
    })?;
    org.members.retain(|member| member.user_id != user_id);
    org.last_updated = Some(ctx.now);
    org_body(store, ctx, org_id)
}

/// `PATCH /orgs/{orgId}/transferResources`.
pub(super) fn transfer_resources(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org_id = ctx.path_param("orgId")?;
    store.org_admin(&ctx.caller.subject, org_id)?;
    transfer(store, ctx, Owner::Organization(org_id.to_string()))
}
