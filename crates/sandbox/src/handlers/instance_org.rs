//! `instanceOrg.*`: organizations owned by a private instance, seen from the instance.
//!
//! Access: instance members (any role) may read; instance admins may patch and delete (403
//! otherwise). An instance API token acts as an admin of its own instance. An unknown
//! instance, an instance the caller does not belong to, or an organization the instance does
//! not own is 404.
//!
//! `PATCH` rules the upstream leaves open: `limits` keys are merged into the current limits;
//! `tags` and `whitelistedEmailDomains` replace the lists; `disabledAt: true` disables the
//! organization now (keeping an earlier date), `false` re-enables it, a date-time sets it;
//! a `banner` with an empty or missing `message` removes the banner.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{Ctx, success};
use crate::{
    error::ApiError,
    render::{self, SummaryFilter},
    seed::{Banner, BannerLevel, MfaMode, SeedOrganization, Tag},
    state::Store,
};

fn ids<'a>(ctx: &'a Ctx) -> Result<(&'a str, &'a str), ApiError> {
    Ok((ctx.path_param("instanceId")?, ctx.path_param("orgId")?))
}

/// The organization of an `instanceOrg` read, after the access check.
pub(super) fn readable<'a>(store: &'a Store, ctx: &Ctx) -> Result<&'a SeedOrganization, ApiError> {
    let (instance_id, org_id) = ids(ctx)?;
    store.instance_org_access(&ctx.caller.subject, instance_id, org_id, false)?;
    store
        .org(org_id)
        .ok_or_else(|| ApiError::not_found("Organization", org_id))
}

fn body(store: &Store, ctx: &Ctx, org: &SeedOrganization) -> Value {
    render::instance_org(store, org, &SummaryFilter::from_query(ctx.query), ctx.now)
}

/// `GET /instances/{instanceId}/orgs/{orgId}`.
pub(super) fn get(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let org = readable(store, ctx)?;
    Ok(body(store, ctx, org))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BannerPatch {
    message: Option<String>,
    level: Option<BannerLevel>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceOrgPatch {
    name: Option<String>,
    description: Option<String>,
    icon_color: Option<String>,
    limits: Option<BTreeMap<String, i64>>,
    whitelisted_email_domains: Option<Vec<String>>,
    audit_log_enabled: Option<bool>,
    disabled_at: Option<Value>,
    is_read_only: Option<bool>,
    tags: Option<Vec<Tag>>,
    referral_id: Option<String>,
    mfa_mode: Option<MfaMode>,
    banner: Option<BannerPatch>,
}

/// `PATCH /instances/{instanceId}/orgs/{orgId}`.
pub(super) fn patch(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let (instance_id, org_id) = ids(ctx)?;
    store.instance_org_access(&ctx.caller.subject, instance_id, org_id, true)?;
    let patch: InstanceOrgPatch = ctx.body()?;
    let org = store.org_mut(org_id)?;
    if let Some(name) = patch.name {
        org.name = name;
    }
    if let Some(description) = patch.description {
        org.description = description;
    }
    if let Some(color) = patch.icon_color {
        org.icon_color = Some(color);
    }
    if let Some(limits) = patch.limits {
        org.limits.extend(limits);
    }
    if let Some(domains) = patch.whitelisted_email_domains {
        org.whitelisted_email_domains = domains;
    }
    if let Some(enabled) = patch.audit_log_enabled {
        org.audit_log_enabled = enabled;
    }
    match patch.disabled_at {
        Some(Value::Bool(true)) => org.disabled_at = Some(org.disabled_at.unwrap_or(ctx.now)),
        Some(Value::Bool(false)) => org.disabled_at = None,
        Some(Value::String(text)) => {
            let at = DateTime::parse_from_rfc3339(&text).map_err(|_| {
                ApiError::validation("\"disabledAt\" must be a boolean or an ISO 8601 date-time")
            })?;
            org.disabled_at = Some(at.with_timezone(&Utc));
        }
        _ => {}
    }
    if let Some(read_only) = patch.is_read_only {
        org.is_read_only = read_only;
    }
    if let Some(tags) = patch.tags {
        org.tags = tags;
    }
    if let Some(referral) = patch.referral_id {
        org.referral_id = Some(referral);
    }
    if let Some(mode) = patch.mfa_mode {
        org.mfa_mode = mode;
    }
    if let Some(banner) = patch.banner {
        org.banner = match banner.message.filter(|message| !message.is_empty()) {
            Some(message) => Some(Banner {
                message,
                level: banner.level.unwrap_or_default(),
            }),
            None => None,
        };
    }
    org.last_updated = Some(ctx.now);
    let org = store
        .org(org_id)
        .ok_or_else(|| ApiError::not_found("Organization", org_id))?;
    Ok(body(store, ctx, org))
}

/// `DELETE /instances/{instanceId}/orgs/{orgId}`.
pub(super) fn delete(store: &mut Store, ctx: &Ctx) -> Result<Value, ApiError> {
    let (instance_id, org_id) = ids(ctx)?;
    store.instance_org_access(&ctx.caller.subject, instance_id, org_id, true)?;
    store.delete_org(org_id);
    Ok(success())
}
