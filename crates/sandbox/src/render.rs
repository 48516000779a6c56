//! Builds the response bodies (`me`, `org`, `instanceOrg`, invitations, recent item lists)
//! from the store, with the upstream schemas' property names. Optional properties without a
//! value (`githubName`, `banner`, `iconColor`, `tokenCutoff`, ...) are left out rather than sent
//! as `null`. (Key order in the JSON text is alphabetical, as `serde_json` keeps it; JSON
//! objects are unordered.)
//!
//! # `summary`, `summaryInclude` and `summaryExclude`
//!
//! The upstream does not document which summary fields are returned by default or how the
//! two parameters combine. The sandbox returns every field of the schema's `summary` by
//! default; `summaryInclude` narrows that to the listed fields, and `summaryExclude` then
//! removes fields (so a field named in both is left out). Unknown field names are a 400.
//!
//! Counts the sandbox tracks are real (`appCount`, `dashCount`, `flowCount`, `orgCount`,
//! `instanceCount`, `memberCount`, `pendingInviteCount`); `deviceCount`, `payloadCount`
//! (current calendar month) and `notebookStats` agree with the usage endpoints; the rest are
//! stable synthetic numbers derived from the owner's id.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::{
    query::Query,
    schemas::{ORG_SUMMARY_KEYS, USER_SUMMARY_KEYS},
    seed::{ItemType, MfaMode, OrgRole, Owner, RoleGrant, SeedInvite, SeedOrganization},
    state::{RECENT_ITEMS_LIMIT, Store, User},
    time::iso,
    usage::{self, UsageSubject},
};

/// Synthetic application-level counts: key and exclusive upper bound.
const SYNTHETIC_COUNTS: &[(&str, u64)] = &[
    ("certificateCount", 4),
    ("certificateAuthorityCount", 2),
    ("credentialCount", 6),
    ("dataTableCount", 9),
    ("deviceRecipeCount", 7),
    ("eventCount", 240),
    ("experienceDomainCount", 2),
    ("experienceEndpointCount", 45),
    ("experienceGroupCount", 12),
    ("experienceSlugCount", 3),
    ("experienceUserCount", 180),
    ("experienceVersionCount", 5),
    ("experienceViewCount", 36),
    ("fileCount", 130),
    ("integrationCount", 5),
    ("keyCount", 12),
    ("notebookCount", 6),
    ("privateFileCount", 25),
    ("resourceJobCount", 5),
    ("webhookCount", 7),
];

/// The personal limits every user gets (`me.limits`, no `member` key).
const USER_LIMITS: &[(&str, i64)] = &[
    ("apitoken", 25),
    ("application", 10),
    ("applicationcertificate", 100),
    ("applicationcertificateauthority", 10),
    ("applicationkey", 1_000),
    ("credential", 25),
    ("dashboard", 50),
    ("datatable", 10),
    ("device", 250),
    ("devicerecipe", 50),
    ("experiencedomain", 1),
    ("experienceendpoint", 500),
    ("experiencegroup", 100),
    ("experienceslug", 1),
    ("experienceuser", 1_000),
    ("experienceversion", 5),
    ("experienceview", 500),
    ("file", 1_000),
    ("flow", 100),
    ("integration", 10),
    ("notebook", 10),
    ("privatefile", 1_000),
    ("resourcejob", 10),
    ("webhook", 25),
    ("dataTTL", 2_592_000),
    ("payload", 10_000_000),
    ("storage", 10_737_418_240),
    ("notebookMinutesPerRun", 60),
    ("notebookMinutesPerMonth", 1_000),
    ("notebookInParallel", 1),
    ("experienceFlowSlots", 10),
    ("applicationFlowSlots", 50),
    ("systemInterval", 60),
];

/// The default organization limits (`org.limits`); seeds and `instanceOrg.patch` override keys.
const ORG_LIMITS: &[(&str, i64)] = &[
    ("apitoken", 100),
    ("application", 50),
    ("applicationcertificate", 1_000),
    ("applicationcertificateauthority", 25),
    ("applicationkey", 10_000),
    ("credential", 100),
    ("dashboard", 250),
    ("datatable", 50),
    ("device", 2_500),
    ("devicerecipe", 250),
    ("experiencedomain", 5),
    ("experienceendpoint", 2_000),
    ("experiencegroup", 1_000),
    ("experienceslug", 5),
    ("experienceuser", 10_000),
    ("experienceversion", 25),
    ("experienceview", 2_000),
    ("file", 10_000),
    ("flow", 500),
    ("integration", 50),
    ("notebook", 50),
    ("privatefile", 10_000),
    ("resourcejob", 50),
    ("webhook", 100),
    ("dataTTL", 7_776_000),
    ("member", 25),
    ("payload", 100_000_000),
    ("storage", 107_374_182_400),
    ("notebookMinutesPerRun", 120),
    ("notebookMinutesPerMonth", 10_000),
    ("notebookInParallel", 4),
    ("experienceFlowSlots", 50),
    ("applicationFlowSlots", 250),
    ("systemInterval", 30),
];

/// Which summary fields to return, from `summaryInclude` / `summaryExclude`.
#[derive(Debug, Default, Clone)]
pub(crate) struct SummaryFilter {
    include: Option<Vec<String>>,
    exclude: Vec<String>,
}

impl SummaryFilter {
    /// Reads the two parameters from a validated query (absent ones are absent).
    pub(crate) fn from_query(query: &Query) -> Self {
        SummaryFilter {
            include: query
                .keys("summaryInclude")
                .filter(|keys| !keys.is_empty())
                .map(<[String]>::to_vec),
            exclude: query
                .keys("summaryExclude")
                .map(<[String]>::to_vec)
                .unwrap_or_default(),
        }
    }

    fn wants(&self, key: &str) -> bool {
        let included = self
            .include
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == key));
        included && !self.exclude.iter().any(|k| k == key)
    }
}

/// The start and end of the current billing period: the calendar month (UTC) holding `now`.
fn current_period(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let month_start = |year: i32, month: u32| {
        NaiveDate::from_ymd_opt(year, month, 1)
            .and_then(|day| day.and_hms_opt(0, 0, 0))
            .map(|naive| naive.and_utc())
            .unwrap_or(now)
    };
    let start = month_start(now.year(), now.month());
    let end = if now.month() == 12 {
        month_start(now.year() + 1, 1)
    } else {
        month_start(now.year(), now.month() + 1)
    };
    (start, end)
}

/// Stable pseudo-random number below `bound` for (owner, key).
fn synthetic(owner_id: &str, key: &str, bound: u64) -> u64 {
    let hash = format!("{owner_id}/{key}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    if bound == 0 { 0 } else { (hash >> 7) % bound }
}

/// The `summary` object of a user (`owner = Owner::User`) or organization.
fn summary(
    store: &Store,
    owner: &Owner,
    subject: &UsageSubject,
    keys: &[&str],
    filter: &SummaryFilter,
    now: DateTime<Utc>,
) -> Value {
    let owner_id = match owner {
        Owner::User(id) | Owner::Organization(id) => id.as_str(),
    };
    let owned_apps: Vec<&str> = store
        .applications
        .iter()
        .filter(|app| app.owner == *owner)
        .map(|app| app.id.as_str())
        .collect();
    let has_apps = !owned_apps.is_empty();
    let (period_start, _) = current_period(now);
    let mut fields = Map::new();
    for key in keys.iter().copied().filter(|key| filter.wants(key)) {
        let value = match key {
            "appCount" => json!(owned_apps.len()),
            "dashCount" => json!(
                store
                    .dashboards
                    .iter()
                    .filter(|dash| dash.owner == *owner)
                    .count()
            ),
            "flowCount" => json!(
                store
                    .flows
                    .iter()
                    .filter(|flow| owned_apps.contains(&flow.application_id.as_str()))
                    .count()
            ),
            "deviceCount" => json!(usage::device_count(subject, now)),
            "apiTokenCount" => json!(1 + synthetic(owner_id, key, 5)),
            "orgCount" => json!(store.orgs_of_user(owner_id).count()),
            "instanceCount" => json!(
                store
                    .instances
                    .iter()
                    .filter(|i| i.members.iter().any(|m| m.user_id == owner_id))
                    .count()
            ),
            "memberCount" => json!(
                store
                    .org(owner_id)
                    .map(|org| org.members.len())
                    .unwrap_or_default()
            ),
            "pendingInviteCount" => json!(
                store
                    .invites_of_org(owner_id)
                    .filter(|invite| !store.is_expired(invite, now))
                    .count()
            ),
            "payloadCount" => {
                let now_ms = now.timestamp_millis();
                usage::payload_stats(
                    subject,
                    period_start.timestamp_millis(),
                    now_ms,
                    now_ms,
                    false,
                )
            }
            "storageStats" => {
                let count = if has_apps {
                    synthetic(owner_id, key, 4_000)
                } else {
                    0
                };
                json!({ "count": count, "size": count * (40_000 + synthetic(owner_id, "size", 600_000)) })
            }
            "notebookStats" => {
                let (minutes, runs) = usage::notebook_totals(subject, period_start, now);
                let awaiting = if minutes > 0 {
                    synthetic(owner_id, key, 3)
                } else {
                    0
                };
                json!({ "awaitingCompletion": awaiting, "minutesThisPeriod": minutes, "runsThisPeriod": runs })
            }
            other => {
                let bound = SYNTHETIC_COUNTS
                    .iter()
                    .find(|(name, _)| *name == other)
                    .map(|(_, bound)| *bound);
                // Application-level resources only exist where there are applications.
                json!(if has_apps {
                    synthetic(owner_id, other, bound.unwrap_or(10))
                } else {
                    0
                })
            }
        };
        fields.insert(key.to_string(), value);
    }
    Value::Object(fields)
}

fn limits(defaults: &[(&str, i64)], overrides: impl Fn(&str) -> Option<i64>) -> Value {
    let fields: Map<String, Value> = defaults
        .iter()
        .map(|(key, value)| (key.to_string(), json!(overrides(key).unwrap_or(*value))))
        .collect();
    Value::Object(fields)
}

/// A Gravatar-style avatar URL derived from the email.
fn avatar_url(email: &str) -> String {
    let lower = email.to_lowercase();
    format!(
        "https://www.gravatar.com/avatar/{:016x}{:016x}?d=identicon",
        synthetic(&lower, "a", u64::MAX),
        synthetic(&lower, "b", u64::MAX)
    )
}

fn full_name(user: &User) -> String {
    format!("{} {}", user.account.first_name, user.account.last_name)
        .trim()
        .to_string()
}

/// Options of the `me` body.
#[derive(Debug, Default, Clone)]
pub(crate) struct MeOptions {
    /// `includeRecent=true`: add `recentDashboards`, `recentApplications`, `recentOrganizations`.
    pub include_recent: bool,
    /// Summary fields.
    pub summary: SummaryFilter,
}

impl MeOptions {
    /// Reads `includeRecent`, `summaryInclude`, `summaryExclude`.
    pub(crate) fn from_query(query: &Query) -> Self {
        MeOptions {
            include_recent: query.flag("includeRecent"),
            summary: SummaryFilter::from_query(query),
        }
    }
}

/// The `me` body.
pub(crate) fn me(store: &Store, user: &User, options: &MeOptions, now: DateTime<Utc>) -> Value {
    let account = &user.account;
    let (period_start, period_end) = current_period(now);
    let mut body = Map::new();
    let mut put = |key: &str, value: Value| {
        body.insert(key.to_string(), value);
    };
    put("id", json!(account.id));
    put("userId", json!(account.id));
    put("creationDate", json!(iso(account.creation_date)));
    put("lastUpdated", json!(iso(user.last_updated)));
    put(
        "passwordLastUpdated",
        json!(iso(user.password_last_updated)),
    );
    put("email", json!(account.email));
    put("firstName", json!(account.first_name));
    put("lastName", json!(account.last_name));
    put("companyName", json!(account.company_name));
    put("title", json!(account.title));
    put("phoneNumber", json!(account.phone_number));
    put("location", json!(account.location));
    put("url", json!(account.url));
    if let Some(cutoff) = user.token_cutoff {
        put("tokenCutoff", json!(iso(cutoff)));
    }
    put("emailVerified", json!(account.email_verified));
    put("needsToVerifyEmail", json!(!account.email_verified));
    put(
        "twoFactorAuthEnabled",
        json!(account.two_factor_auth_key.is_some()),
    );
    put("fullName", json!(full_name(user)));
    if let Some(github) = &account.github_name {
        put("githubName", json!(github));
    }
    put("avatarUrl", json!(avatar_url(&account.email)));
    put("limits", limits(USER_LIMITS, |_| None));
    if options.include_recent {
        put(
            "recentDashboards",
            recent_list(store, user, ItemType::Dashboard, None),
        );
        put(
            "recentApplications",
            recent_list(store, user, ItemType::Application, None),
        );
        put(
            "recentOrganizations",
            recent_list(store, user, ItemType::Organization, None),
        );
    }
    let owner = Owner::User(account.id.clone());
    let subject = UsageSubject::user(account);
    put(
        "summary",
        summary(
            store,
            &owner,
            &subject,
            USER_SUMMARY_KEYS,
            &options.summary,
            now,
        ),
    );
    put("currentPeriodStart", json!(iso(period_start)));
    put("currentPeriodEnd", json!(iso(period_end)));
    put("ssoLinked", json!(account.sso_linked));
    Value::Object(body)
}

/// A `recentItemList`: the items that still exist and are visible, most recent first.
pub(crate) fn recent_list(
    store: &Store,
    user: &User,
    kind: ItemType,
    parent: Option<&str>,
) -> Value {
    let list = user
        .account
        .recent_items
        .iter()
        .find(|list| list.item_type == kind && list.parent_id.as_deref() == parent);
    let items: Vec<Value> = list
        .map(|list| list.item_ids.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|id| {
            let (name, _) = store.visible_item(&user.account.id, kind, id)?;
            Some(json!({ "id": id, "name": name }))
        })
        .take(RECENT_ITEMS_LIMIT)
        .collect();
    let mut body = Map::new();
    body.insert("itemType".into(), json!(kind.as_str()));
    if let Some(parent) = parent {
        body.insert("parentId".into(), json!(parent));
    }
    body.insert("items".into(), Value::Array(items));
    Value::Object(body)
}

fn grants(grants: &[RoleGrant]) -> Value {
    json!(
        grants
            .iter()
            .map(|grant| json!({ "resourceId": grant.resource_id, "role": grant.role }))
            .collect::<Vec<_>>()
    )
}

fn disabled_at(org: &SeedOrganization) -> Value {
    match org.disabled_at {
        Some(at) => json!(iso(at)),
        None => json!(false),
    }
}

/// The `org` body.
pub(crate) fn org(
    store: &Store,
    org: &SeedOrganization,
    filter: &SummaryFilter,
    now: DateTime<Utc>,
) -> Value {
    let (period_start, period_end) = current_period(now);
    let members: Vec<Value> = org
        .members
        .iter()
        .filter_map(|member| {
            let user = store.users.get(&member.user_id)?;
            Some(json!({
                "userId": member.user_id,
                "firstName": user.account.first_name,
                "lastName": user.account.last_name,
                "email": user.account.email,
                "avatarUrl": avatar_url(&user.account.email),
                "role": member.role,
                "applicationRoles": grants(&member.application_roles),
                "dashboardRoles": grants(&member.dashboard_roles),
                "twoFactorAuthEnabled": user.account.two_factor_auth_key.is_some(),
                "ssoLinked": user.account.sso_linked,
            }))
        })
        .collect();
    let mut body = Map::new();
    let mut put = |key: &str, value: Value| {
        body.insert(key.to_string(), value);
    };
    put("id", json!(org.id));
    put("orgId", json!(org.id));
    put("creationDate", json!(iso(org.creation_date)));
    put(
        "lastUpdated",
        json!(iso(org.last_updated.unwrap_or(org.creation_date))),
    );
    put("name", json!(org.name));
    put("description", json!(org.description));
    put("members", Value::Array(members));
    put(
        "limits",
        limits(ORG_LIMITS, |key| org.limits.get(key).copied()),
    );
    put("summary", org_summary(store, org, filter, now));
    put("planId", json!(org.plan_id));
    if let Some(email) = &org.billing_email {
        put("billingEmail", json!(email));
    }
    put("subscriptionStatus", json!(org.subscription_status));
    put("currentPeriodStart", json!(iso(period_start)));
    put("currentPeriodEnd", json!(iso(period_end)));
    put("isEnterprise", json!(org.is_enterprise));
    if let Some(color) = &org.icon_color {
        put("iconColor", json!(color));
    }
    put(
        "whitelistedEmailDomains",
        json!(org.whitelisted_email_domains),
    );
    put("disabledAt", disabled_at(org));
    put("isReadOnly", json!(org.is_read_only));
    put("mfaMode", json!(org.mfa_mode));
    if let Some(banner) = &org.banner {
        put("banner", json!(banner));
    }
    Value::Object(body)
}

fn org_summary(
    store: &Store,
    org: &SeedOrganization,
    filter: &SummaryFilter,
    now: DateTime<Utc>,
) -> Value {
    let owner = Owner::Organization(org.id.clone());
    summary(
        store,
        &owner,
        &UsageSubject::org(org),
        ORG_SUMMARY_KEYS,
        filter,
        now,
    )
}

/// The `instanceOrg` body (the schema forbids other properties, so no `members`).
pub(crate) fn instance_org(
    store: &Store,
    org: &SeedOrganization,
    filter: &SummaryFilter,
    now: DateTime<Utc>,
) -> Value {
    let (period_start, period_end) = current_period(now);
    let mut body = Map::new();
    let mut put = |key: &str, value: Value| {
        body.insert(key.to_string(), value);
    };
    put("creationDate", json!(iso(org.creation_date)));
    put(
        "lastUpdated",
        json!(iso(org.last_updated.unwrap_or(org.creation_date))),
    );
    put("name", json!(org.name));
    put("id", json!(org.id));
    put("orgId", json!(org.id));
    put("instanceId", json!(org.instance_id));
    put("description", json!(org.description));
    if let Some(color) = &org.icon_color {
        put("iconColor", json!(color));
    }
    put(
        "limits",
        limits(ORG_LIMITS, |key| org.limits.get(key).copied()),
    );
    put("summary", org_summary(store, org, filter, now));
    put(
        "whitelistedEmailDomains",
        json!(org.whitelisted_email_domains),
    );
    put("auditLogEnabled", json!(org.audit_log_enabled));
    put("disabledAt", disabled_at(org));
    put("isReadOnly", json!(org.is_read_only));
    put("tags", json!(org.tags));
    if let Some(referral) = &org.referral_id {
        put("referralId", json!(referral));
    }
    put("mfaMode", json!(org.mfa_mode));
    if let Some(banner) = &org.banner {
        put("banner", json!(banner));
    }
    put("planId", json!(org.plan_id));
    if let Some(customer) = &org.customer_id {
        put("customerId", json!(customer));
    }
    if let Some(subscription) = &org.subscription_id {
        put("subscriptionId", json!(subscription));
    }
    if let Some(email) = &org.billing_email {
        put("billingEmail", json!(email));
    }
    put("subscriptionStatus", json!(org.subscription_status));
    put("currentPeriodStart", json!(iso(period_start)));
    put("currentPeriodEnd", json!(iso(period_end)));
    Value::Object(body)
}

/// One item of `orgInvites` (what the organization sees).
pub(crate) fn org_invite(store: &Store, invite: &SeedInvite, now: DateTime<Utc>) -> Value {
    json!({
        "id": invite.id,
        "email": invite.email,
        "role": invite.role,
        "applicationRoles": grants(&invite.application_roles),
        "dashboardRoles": grants(&invite.dashboard_roles),
        "inviteDate": iso(invite.invite_date),
        "ttl": store.ttl_ms(invite),
        "hasExpired": store.is_expired(invite, now),
        "disallowTransfer": invite.disallow_transfer,
    })
}

/// The `orgInvites` array of an organization, oldest first.
pub(crate) fn org_invites(store: &Store, org_id: &str, now: DateTime<Utc>) -> Value {
    Value::Array(
        store
            .invites_of_org(org_id)
            .map(|invite| org_invite(store, invite, now))
            .collect(),
    )
}

/// One `orgInviteUser` (what the invitee sees).
pub(crate) fn user_invite(store: &Store, invite: &SeedInvite, now: DateTime<Utc>) -> Value {
    let org = store.org(&invite.org_id);
    let requires_mfa = org.is_some_and(|org| match org.mfa_mode {
        MfaMode::Required => true,
        MfaMode::AdminRequired => invite.role == OrgRole::Admin,
        MfaMode::NotRequired => false,
    });
    let mut body = Map::new();
    body.insert("id".into(), json!(invite.id));
    body.insert(
        "orgName".into(),
        json!(org.map(|org| org.name.as_str()).unwrap_or_default()),
    );
    body.insert("role".into(), json!(invite.role));
    body.insert("requiresMFA".into(), json!(requires_mfa));
    body.insert("inviteDate".into(), json!(iso(invite.invite_date)));
    body.insert("ttl".into(), json!(store.ttl_ms(invite)));
    body.insert("expired".into(), json!(store.is_expired(invite, now)));
    if let Some(inviter) = invite
        .invited_by
        .as_deref()
        .and_then(|id| store.users.get(id))
    {
        body.insert(
            "invitedBy".into(),
            json!({ "fullName": full_name(inviter), "email": inviter.account.email }),
        );
    }
    Value::Object(body)
}
