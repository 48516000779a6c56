//! The action handlers: pure functions over the locked [`Store`] and an already
//! authenticated, authorized and validated request ([`Ctx`]).
//!
//! Handlers return a [`Reply`]; usage reports are returned unevaluated so the dispatcher can
//! compute them after releasing the store's lock.

mod instance_org;
mod me;
mod orgs;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    actions::{Action, ActionSpec},
    auth::Caller,
    error::ApiError,
    query::Query,
    seed::{Owner, RoleGrant, SeedResource, TokenSubject},
    state::Store,
    usage::{Report, UsageRequest, UsageSubject},
};

/// Everything a handler needs about the request.
pub(crate) struct Ctx<'a> {
    /// The action being served.
    pub spec: &'static ActionSpec,
    /// The authenticated caller.
    pub caller: &'a Caller,
    /// Path parameters (ids, lower-cased), by name.
    pub path: &'a [(&'static str, String)],
    /// The validated query.
    pub query: &'a Query,
    /// The validated body (`Value::Null` for bodiless actions).
    pub body: &'a Value,
    /// The request's time.
    pub now: DateTime<Utc>,
}

impl Ctx<'_> {
    /// A path parameter; the router guarantees it exists for the action's template.
    fn path_param(&self, name: &str) -> Result<&str, ApiError> {
        self.path
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
            .ok_or_else(|| ApiError::Internal(format!("path parameter {name} is missing")))
    }

    /// The body as a typed struct. The body already passed schema validation, so a failure
    /// here means the struct and the schema disagree; it is still answered as a 400.
    fn body<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_value(self.body.clone())
            .map_err(|error| ApiError::validation(error.to_string()))
    }

    /// A required query parameter (the parser has enforced `required`).
    fn query_text(&self, name: &str) -> Result<&str, ApiError> {
        self.query
            .text(name)
            .ok_or_else(|| ApiError::validation(format!("\"{name}\" is required")))
    }
}

/// A handler's answer.
pub(crate) enum Reply {
    /// A finished JSON body (sent with the action's success status).
    Json(Value),
    /// A usage report to compute outside the lock.
    Usage(UsageRequest),
}

/// Runs the handler of `ctx.spec.action`.
pub(crate) fn handle(store: &mut Store, ctx: &Ctx) -> Result<Reply, ApiError> {
    use Action::*;
    let json = match ctx.spec.action {
        MeGet => me::get(store, ctx)?,
        MePatch => me::patch(store, ctx)?,
        MeVerifyEmail => me::verify_email(store, ctx)?,
        MeChangePassword => me::change_password(store, ctx)?,
        MeDelete => me::delete(store, ctx)?,
        MeGenerateTwoFactorAuth => me::generate_two_factor(store, ctx)?,
        MeEnableTwoFactorAuth => me::enable_two_factor(store, ctx)?,
        MeDisableTwoFactorAuth => me::disable_two_factor(store, ctx)?,
        MeDisconnectGithub => me::disconnect_github(store, ctx)?,
        MeAddRecentItem => me::add_recent_item(store, ctx)?,
        MeFetchRecentItems => me::fetch_recent_items(store, ctx)?,
        MeInvites => me::invites(store, ctx)?,
        MeInvite => me::invite(store, ctx)?,
        MeRespondToInvite => me::respond_to_invite(store, ctx)?,
        MeTransferResources => me::transfer_resources(store, ctx)?,
        MeRefreshToken => me::refresh_token(store, ctx)?,
        MeDeviceCounts | MeNotebookMinuteCounts | MePayloadCounts | MePayloadCountsBreakdown => {
            let user = store.user(ctx.caller.user_id()?)?;
            return usage(UsageSubject::user(&user.account), ctx);
        }
        OrgsGet => orgs::list(store, ctx)?,
        OrgsPost => orgs::create(store, ctx)?,
        OrgGet => orgs::get(store, ctx)?,
        OrgPatch => orgs::patch(store, ctx)?,
        OrgDelete => orgs::delete(store, ctx)?,
        OrgPendingInvites => orgs::pending_invites(store, ctx)?,
        OrgInviteMember => orgs::invite_member(store, ctx)?,
        OrgRevokeInvite => orgs::revoke_invite(store, ctx)?,
        OrgModifyMember => orgs::modify_member(store, ctx)?,
        OrgRemoveMember => orgs::remove_member(store, ctx)?,
        OrgTransferResources => orgs::transfer_resources(store, ctx)?,
        OrgDeviceCounts
        | OrgNotebookMinuteCounts
        | OrgPayloadCounts
        | OrgPayloadCountsBreakdown => {
            let org_id = ctx.path_param("orgId")?;
            store.org_access(&ctx.caller.subject, org_id)?;
            let org = store
                .org(org_id)
                .ok_or_else(|| ApiError::not_found("Organization", org_id))?;
            return usage(UsageSubject::org(org), ctx);
        }
        InstanceOrgGet => instance_org::get(store, ctx)?,
        InstanceOrgPatch => instance_org::patch(store, ctx)?,
        InstanceOrgDelete => instance_org::delete(store, ctx)?,
        InstanceOrgDeviceCounts
        | InstanceOrgNotebookMinuteCounts
        | InstanceOrgPayloadCounts
        | InstanceOrgPayloadCountsBreakdown => {
            let org = instance_org::readable(store, ctx)?;
            return usage(UsageSubject::org(org), ctx);
        }
    };
    Ok(Reply::Json(json))
}

/// The usage report of `subject` for the usage action in `ctx`.
fn usage(subject: UsageSubject, ctx: &Ctx) -> Result<Reply, ApiError> {
    use Action::*;
    let report = match ctx.spec.action {
        MeDeviceCounts | OrgDeviceCounts | InstanceOrgDeviceCounts => Report::DeviceCounts,
        MeNotebookMinuteCounts | OrgNotebookMinuteCounts | InstanceOrgNotebookMinuteCounts => {
            Report::NotebookMinuteCounts
        }
        MePayloadCounts | OrgPayloadCounts | InstanceOrgPayloadCounts => {
            Report::payload_counts(ctx.query)
        }
        _ => Report::breakdown(ctx.query),
    };
    Ok(Reply::Usage(UsageRequest::new(
        subject, report, ctx.query, ctx.now,
    )?))
}

/// `{"success": true}`.
fn success() -> Value {
    json!({ "success": true })
}

/// Lower-cases the ids of role grants (ids compare case-insensitively).
fn lower_grants(grants: Option<Vec<RoleGrant>>) -> Option<Vec<RoleGrant>> {
    grants.map(|grants| {
        grants
            .into_iter()
            .map(|grant| RoleGrant {
                resource_id: grant.resource_id.to_ascii_lowercase(),
                role: grant.role,
            })
            .collect()
    })
}

/// `resourceTransfer` body.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferBody {
    destination_id: String,
    destination_type: String,
    #[serde(default)]
    application_ids: Vec<String>,
    #[serde(default)]
    dashboard_ids: Vec<String>,
    #[serde(default)]
    strict: bool,
}

/// Moves applications and dashboards from `source` to the body's destination.
///
/// The destination must exist: a user, or an organization the calling user is a member of
/// (organization and instance API tokens may name any existing organization); otherwise 404.
/// Ids not owned by `source` are skipped, or rejected with 400 when `strict` is true (nothing is
/// moved then). Devices and workflows move with their application.
fn transfer(store: &mut Store, ctx: &Ctx, source: Owner) -> Result<Value, ApiError> {
    let body: TransferBody = ctx.body()?;
    let destination_id = body.destination_id.to_ascii_lowercase();
    let destination = if body.destination_type == "user" {
        store.user(&destination_id)?;
        Owner::User(destination_id)
    } else {
        match &ctx.caller.subject {
            TokenSubject::User(_) => {
                store.org_access(&ctx.caller.subject, &destination_id)?;
            }
            TokenSubject::Organization(_) | TokenSubject::Instance(_) => {
                store
                    .org(&destination_id)
                    .ok_or_else(|| ApiError::not_found("Organization", &destination_id))?;
            }
        }
        Owner::Organization(destination_id)
    };
    if destination == source {
        return Err(ApiError::validation(
            "the destination must differ from the current owner",
        ));
    }
    // Check everything before moving anything, so a strict transfer is all or nothing.
    let movable = |list: &[SeedResource], ids: &[String], what: &str| {
        let mut owned = Vec::new();
        for id in ids.iter().map(|id| id.to_ascii_lowercase()) {
            if list
                .iter()
                .any(|item| item.id == id && item.owner == source)
            {
                owned.push(id);
            } else if body.strict {
                return Err(ApiError::validation(format!(
                    "{what} {id} is not owned by the source and cannot be transferred"
                )));
            }
        }
        Ok(owned)
    };
    let applications = movable(&store.applications, &body.application_ids, "Application")?;
    let dashboards = movable(&store.dashboards, &body.dashboard_ids, "Dashboard")?;
    for (list, ids) in [
        (&mut store.applications, applications),
        (&mut store.dashboards, dashboards),
    ] {
        for item in list.iter_mut().filter(|item| ids.contains(&item.id)) {
            item.owner = destination.clone();
        }
    }
    Ok(success())
}
