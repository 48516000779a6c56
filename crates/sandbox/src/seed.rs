//! The seed: the sandbox's initial state, built in ([`Seed::demo`]) or read from a JSON file
//! (`SandboxOptions::seed`).
//!
//! # Seed JSON format
//!
//! A seed file is one JSON object whose keys are the camelCase field names of [`Seed`] and the
//! types it refers to; unknown keys are rejected, so typos do not go unnoticed. Only `users` is
//! required; every other collection defaults to empty. Dates are RFC 3339 strings
//! (`2024-03-14T09:26:53.589Z`); ids are 24 hex characters (compared case-insensitively).
//! `serde_json::to_string_pretty(&Seed::demo())` prints the built-in seed in this format. In the
//! sketch below, `…` stands for ids and texts, and the `//` remarks are not part of the format.
//!
//! ```json
//! {
//!   "users": [{
//!     "id": "665010000000000000000001", "email": "dana.demo@example.com",
//!     "password": "Sandbox-Demo-Passw0rd!", "firstName": "Dana", "lastName": "Demo",
//!     "companyName": "", "title": "", "phoneNumber": "", "location": "", "url": "",
//!     "githubName": "dana-demo",            // optional; absent = GitHub not connected
//!     "emailVerified": true,                 // default true
//!     "twoFactorAuthKey": null,              // a 52 char base32 key = 2FA enabled
//!     "ssoLinked": false,
//!     "creationDate": "2023-02-14T15:04:05.000Z",   // default: when the seed is loaded
//!     "recentItems": [{"itemType": "application", "itemIds": ["665050000000000000000001"]},
//!                     {"itemType": "device", "parentId": "665050000000000000000001", "itemIds": ["…"]}],
//!     "usage": {"devices": 40, "payloadsPerDay": 25000, "notebookMinutesPerDay": 12}  // optional
//!   }],
//!   "instances": [{"id": "…", "name": "…", "members": [{"userId": "…", "role": "admin"}]}],
//!   "organizations": [{
//!     "id": "…", "name": "Acme Industrial IoT", "description": "…",
//!     "creationDate": "…", "lastUpdated": "…", "planId": "sandbox-business",
//!     "billingEmail": "…", "iconColor": "#00A3E0", "mfaMode": "notRequired",
//!     "subscriptionStatus": "active", "isEnterprise": false, "whitelistedEmailDomains": [],
//!     "disabledAt": null, "isReadOnly": false, "banner": {"message": "…", "level": "info"},
//!     "instanceId": null,                    // set = owned by that instance
//!     "tags": [{"key": "region", "value": "emea"}], "referralId": null, "customerId": null,
//!     "subscriptionId": null, "auditLogEnabled": false,
//!     "limits": {"member": 50},              // overrides of the plan defaults
//!     "members": [{"userId": "…", "role": "admin", "applicationRoles": [], "dashboardRoles": []}],
//!     "usage": null
//!   }],
//!   "invites": [{"id": "…", "orgId": "…", "email": "…", "role": "edit", "applicationRoles": [],
//!                "dashboardRoles": [], "disallowTransfer": false, "invitedBy": "<user id>",
//!                "inviteDate": "…",          // default: when the seed is loaded
//!                "ttlMs": 604800000}],       // default: SandboxOptions::invite_ttl
//!   "applications": [{"id": "…", "name": "…", "owner": {"organization": "<org id>"}}],
//!   "dashboards":   [{"id": "…", "name": "…", "owner": {"user": "<user id>"}}],
//!   "devices": [{"id": "…", "name": "…", "applicationId": "…"}],
//!   "flows":   [{"id": "…", "name": "…", "applicationId": "…"}],
//!   "tokens": [{"token": "…", "description": "…", "subject": {"user": "<user id>"},
//!               "scopes": ["all.User"], "issuedAt": "…", "expiresAt": null}]
//! }
//! ```
//!
//! A token's `subject` is `{"user": id}` (acts as that user: organization access follows the
//! user's memberships and roles), `{"organization": id}` (an organization API token: only that
//! organization, with admin rights) or `{"instance": id}` (an instance API token: only the
//! organizations owned by that instance, with admin rights). Scopes still decide which actions
//! a token may call.
//!
//! `usage` tunes the synthetic usage numbers of a user or organization (see
//! `usage.rs`); when absent, the magnitudes are derived from a hash of the id.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{
    schemas::ORG_LIMIT_KEYS,
    validate::{Format, check_string, is_email, is_id},
};

/// The token with every scope (`all.User`, `all.Organization`, `all.Instance`) for the demo
/// user [`DEMO_USER_ID`].
pub const DEMO_TOKEN: &str = "wnology-sandbox-demo-all-scopes";
/// A read-only token (`all.User.read`) for the demo user.
pub const USER_READ_TOKEN: &str = "wnology-sandbox-demo-user-read";
/// A read-only organization API token (`all.Organization.read`) for [`DEMO_ORG_ID`].
pub const ORG_READ_TOKEN: &str = "wnology-sandbox-acme-org-read";
/// An `all.User` token for the second user [`SECOND_USER_ID`], who has their own data.
pub const SECOND_USER_TOKEN: &str = "wnology-sandbox-second-user";
/// An instance API token (`all.Instance`) for [`DEMO_INSTANCE_ID`].
pub const INSTANCE_ADMIN_TOKEN: &str = "wnology-sandbox-instance-admin";

/// The demo user.
pub const DEMO_USER_ID: &str = "665010000000000000000001";
/// The demo user's email.
pub const DEMO_USER_EMAIL: &str = "dana.demo@example.com";
/// The demo user's password (for `me.delete`, `me.changePassword`, two-factor changes).
pub const DEMO_USER_PASSWORD: &str = "Sandbox-Demo-Passw0rd!";
/// The second user, a `view` member of [`DEMO_ORG_ID`] and admin of [`SECOND_USER_ORG_ID`].
pub const SECOND_USER_ID: &str = "665010000000000000000002";
/// The second user's email.
pub const SECOND_USER_EMAIL: &str = "sam.second@example.com";
/// The second user's password.
pub const SECOND_USER_PASSWORD: &str = "Second-User-Passw0rd!";
/// A third user, an `edit` member of the demo organization, without a token.
pub const THIRD_USER_ID: &str = "665010000000000000000003";
/// "Acme Industrial IoT": the demo user is admin, the second user a viewer.
pub const DEMO_ORG_ID: &str = "665020000000000000000001";
/// "Blue River Water Utility": the demo user is only an `edit` member (org writes get 403).
pub const DEMO_EDIT_ORG_ID: &str = "665020000000000000000003";
/// "Northwind Cold Chain": the second user's organization; the demo user is not a member.
pub const SECOND_USER_ORG_ID: &str = "665020000000000000000008";
/// The demo instance; the demo user is an instance admin.
pub const DEMO_INSTANCE_ID: &str = "665030000000000000000001";
/// "Zeta Mining Operations", owned by [`DEMO_INSTANCE_ID`], demo user is admin member.
pub const INSTANCE_ORG_ID: &str = "665020000000000000000009";
/// "Omega Retail Analytics", owned by [`DEMO_INSTANCE_ID`], no member in common with the demo user.
pub const INSTANCE_ONLY_ORG_ID: &str = "665020000000000000000010";
/// A pending invitation of the demo user to [`SECOND_USER_ORG_ID`] (fresh when the seed loads).
pub const DEMO_INVITE_ID: &str = "665040000000000000000001";
/// An invitation of the demo user to [`INSTANCE_ONLY_ORG_ID`] that expired in January 2025.
pub const EXPIRED_INVITE_ID: &str = "665040000000000000000002";
/// A pending invitation to [`DEMO_ORG_ID`] for `new.engineer@example.com`.
pub const DEMO_ORG_INVITE_ID: &str = "665040000000000000000003";
/// "Plant Floor Monitoring", an application owned by [`DEMO_ORG_ID`].
pub const DEMO_ORG_APPLICATION_ID: &str = "665050000000000000000001";
/// "Personal Weather Station", an application owned by the demo user.
pub const DEMO_USER_APPLICATION_ID: &str = "665050000000000000000003";
/// "Weather Overview", a dashboard owned by the demo user.
pub const DEMO_USER_DASHBOARD_ID: &str = "665060000000000000000002";

/// The whole initial state. See the module docs for the JSON format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    /// Users (each may log in with a seeded token).
    pub users: Vec<SeedUser>,
    /// Private instances.
    #[serde(default)]
    pub instances: Vec<SeedInstance>,
    /// Organizations, including instance-owned ones (`instanceId`).
    #[serde(default)]
    pub organizations: Vec<SeedOrganization>,
    /// Pending (or expired) invitations to organizations.
    #[serde(default)]
    pub invites: Vec<SeedInvite>,
    /// Applications (named targets for recent items and resource transfers).
    #[serde(default)]
    pub applications: Vec<SeedResource>,
    /// Dashboards.
    #[serde(default)]
    pub dashboards: Vec<SeedResource>,
    /// Devices, inside an application.
    #[serde(default)]
    pub devices: Vec<SeedChild>,
    /// Workflows, inside an application.
    #[serde(default)]
    pub flows: Vec<SeedChild>,
    /// API tokens.
    #[serde(default)]
    pub tokens: Vec<SeedToken>,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedUser {
    /// Id (24 hex characters).
    pub id: String,
    /// Email, unique among users (case-insensitive); invitations are matched on it.
    pub email: String,
    /// Password in clear text (this is a sandbox); at least 8 characters.
    pub password: String,
    /// First name (non-empty).
    pub first_name: String,
    /// Last name.
    #[serde(default)]
    pub last_name: String,
    /// Company.
    #[serde(default)]
    pub company_name: String,
    /// Job title.
    #[serde(default)]
    pub title: String,
    /// Phone number.
    #[serde(default)]
    pub phone_number: String,
    /// Location.
    #[serde(default)]
    pub location: String,
    /// Personal URL.
    #[serde(default)]
    pub url: String,
    /// Connected GitHub account; `me.disconnectGithub` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_name: Option<String>,
    /// Whether the email is verified.
    #[serde(default = "yes")]
    pub email_verified: bool,
    /// The two-factor key; present means two-factor authentication is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_factor_auth_key: Option<String>,
    /// Whether the account is linked to single sign-on.
    #[serde(default)]
    pub sso_linked: bool,
    /// Creation date; defaults to when the seed is loaded.
    #[serde(default = "Utc::now")]
    pub creation_date: DateTime<Utc>,
    /// Recent item lists, most recent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_items: Vec<SeedRecentList>,
    /// Magnitudes of the synthetic usage numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageProfile>,
}

/// One recent item list of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedRecentList {
    /// Kind of the items.
    pub item_type: ItemType,
    /// The application of device and flow lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Item ids, most recent first.
    pub item_ids: Vec<String>,
}

/// Magnitudes of a user's or organization's synthetic usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageProfile {
    /// Device count once the account has ramped up (90 days after creation).
    pub devices: u64,
    /// Average payloads per day, all types together.
    pub payloads_per_day: u64,
    /// Average notebook execution minutes per day.
    pub notebook_minutes_per_day: u64,
}

/// A private instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedInstance {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Instance members: `admin` may patch and delete instance organizations; every member may
    /// read them.
    #[serde(default)]
    pub members: Vec<SeedInstanceMember>,
}

/// A user's membership of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedInstanceMember {
    /// The user.
    pub user_id: String,
    /// Instance role.
    pub role: InstanceRole,
}

/// Instance member roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum InstanceRole {
    Admin,
    Edit,
    View,
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedOrganization {
    /// Id.
    pub id: String,
    /// Name (1 to 255 characters).
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Creation date; defaults to when the seed is loaded.
    #[serde(default = "Utc::now")]
    pub creation_date: DateTime<Utc>,
    /// Last update; defaults to the creation date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<DateTime<Utc>>,
    /// Plan id (free text).
    #[serde(default = "default_plan")]
    pub plan_id: String,
    /// Billing email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_email: Option<String>,
    /// Icon color, e.g. `#00A3E0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_color: Option<String>,
    /// Multi-factor authentication mode.
    #[serde(default)]
    pub mfa_mode: MfaMode,
    /// Subscription status.
    #[serde(default)]
    pub subscription_status: SubscriptionStatus,
    /// Enterprise flag.
    #[serde(default)]
    pub is_enterprise: bool,
    /// Email domains allowed for members.
    #[serde(default)]
    pub whitelisted_email_domains: Vec<String>,
    /// When the organization was disabled; absent = enabled (`disabledAt: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
    /// Read-only flag.
    #[serde(default)]
    pub is_read_only: bool,
    /// Banner shown to members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<Banner>,
    /// The owning instance, for instance-owned organizations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Tags (instance organizations).
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Referral id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_id: Option<String>,
    /// Billing customer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Billing subscription id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// Audit log flag.
    #[serde(default)]
    pub audit_log_enabled: bool,
    /// Overrides of the default limits (keys of the `org.limits` schema).
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
    /// Members; an organization should keep at least one admin.
    #[serde(default)]
    pub members: Vec<SeedMember>,
    /// Magnitudes of the synthetic usage numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageProfile>,
}

/// A member of an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedMember {
    /// The user.
    pub user_id: String,
    /// Organization role.
    pub role: OrgRole,
    /// Per-application roles.
    #[serde(default)]
    pub application_roles: Vec<RoleGrant>,
    /// Per-dashboard roles.
    #[serde(default)]
    pub dashboard_roles: Vec<RoleGrant>,
}

/// An application or dashboard role grant, `{resourceId, role}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleGrant {
    /// Application or dashboard id.
    pub resource_id: String,
    /// Role on it.
    pub role: ResourceRole,
}

/// Organization roles (`admin` is needed for organization writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum OrgRole {
    Admin,
    Edit,
    Collaborate,
    View,
    None,
}

/// Application and dashboard roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum ResourceRole {
    Collaborate,
    View,
    None,
}

/// Organization multi-factor authentication modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum MfaMode {
    #[default]
    NotRequired,
    AdminRequired,
    Required,
}

/// Billing subscription statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum SubscriptionStatus {
    Trialing,
    #[default]
    Active,
    PastDue,
    Canceled,
    Unpaid,
}

/// An organization banner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Banner {
    /// Text.
    #[serde(default)]
    pub message: String,
    /// Severity.
    #[serde(default)]
    pub level: BannerLevel,
}

/// Banner severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum BannerLevel {
    #[default]
    Info,
    Warning,
    Critical,
}

/// An instance organization tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tag {
    /// `^[0-9a-zA-Z_-]{1,255}$`.
    pub key: String,
    /// 1 to 255 characters.
    pub value: String,
}

/// An invitation to an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedInvite {
    /// Id.
    pub id: String,
    /// The inviting organization.
    pub org_id: String,
    /// The invitee's email; the user with this email sees it under `GET /me/invites`.
    pub email: String,
    /// Role granted on acceptance.
    pub role: OrgRole,
    /// Application roles granted on acceptance.
    #[serde(default)]
    pub application_roles: Vec<RoleGrant>,
    /// Dashboard roles granted on acceptance.
    #[serde(default)]
    pub dashboard_roles: Vec<RoleGrant>,
    /// The upstream's `disallowTransfer` flag (stored and echoed).
    #[serde(default)]
    pub disallow_transfer: bool,
    /// The inviting user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<String>,
    /// When the invitation was sent; defaults to when the seed is loaded.
    #[serde(default = "Utc::now")]
    pub invite_date: DateTime<Utc>,
    /// Lifetime in milliseconds; defaults to `SandboxOptions::invite_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// An application or dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedResource {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner.
    pub owner: Owner,
}

/// The owner of an application or dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Owner {
    /// Owned by a user (id).
    User(String),
    /// Owned by an organization (id).
    Organization(String),
}

/// A device or workflow inside an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedChild {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The application it belongs to.
    pub application_id: String,
}

/// Recent item kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub enum ItemType {
    Application,
    Device,
    Flow,
    Dashboard,
    Organization,
}

impl ItemType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemType::Application => "application",
            ItemType::Device => "device",
            ItemType::Flow => "flow",
            ItemType::Dashboard => "dashboard",
            ItemType::Organization => "organization",
        }
    }

    /// The name in messages, e.g. `Application`.
    pub fn title(self) -> &'static str {
        match self {
            ItemType::Application => "Application",
            ItemType::Device => "Device",
            ItemType::Flow => "Flow",
            ItemType::Dashboard => "Dashboard",
            ItemType::Organization => "Organization",
        }
    }

    /// Parses the wire name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Application,
            Self::Device,
            Self::Flow,
            Self::Dashboard,
            Self::Organization,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// An API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedToken {
    /// The bearer token text.
    pub token: String,
    /// What it is for (printed at start-up).
    #[serde(default)]
    pub description: String,
    /// Who the token acts as.
    pub subject: TokenSubject,
    /// Granted scopes; an action accepts the token when one of them is in its list.
    pub scopes: Vec<String>,
    /// Issue date; tokens issued before the user's `tokenCutoff` are rejected.
    #[serde(default = "Utc::now")]
    pub issued_at: DateTime<Utc>,
    /// Expiry; absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Who a token acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenSubject {
    /// A user (id).
    User(String),
    /// An organization API token (organization id).
    Organization(String),
    /// An instance API token (instance id).
    Instance(String),
}

fn yes() -> bool {
    true
}

fn default_plan() -> String {
    "sandbox-starter".to_string()
}

/// A UTC date from its parts; the demo seed's dates are all valid, and an impossible one would
/// fall back to the epoch rather than panic.
fn date(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|day| day.and_hms_milli_opt(hour, minute, 0, 0))
        .map(|naive| naive.and_utc())
        .unwrap_or_default()
}

fn user(
    id: &str,
    email: &str,
    password: &str,
    first: &str,
    last: &str,
    created: DateTime<Utc>,
) -> SeedUser {
    SeedUser {
        id: id.into(),
        email: email.into(),
        password: password.into(),
        first_name: first.into(),
        last_name: last.into(),
        company_name: String::new(),
        title: String::new(),
        phone_number: String::new(),
        location: String::new(),
        url: String::new(),
        github_name: None,
        email_verified: true,
        two_factor_auth_key: None,
        sso_linked: false,
        creation_date: created,
        recent_items: Vec::new(),
        usage: None,
    }
}

impl SeedOrganization {
    /// A new organization with no members and every optional field unset, as `POST /orgs`
    /// creates one (on the starter plan, active).
    pub(crate) fn new(
        id: &str,
        name: &str,
        description: &str,
        created: DateTime<Utc>,
        updated: DateTime<Utc>,
    ) -> SeedOrganization {
        SeedOrganization {
            id: id.into(),
            name: name.into(),
            description: description.into(),
            creation_date: created,
            last_updated: Some(updated),
            plan_id: default_plan(),
            billing_email: None,
            icon_color: None,
            mfa_mode: MfaMode::NotRequired,
            subscription_status: SubscriptionStatus::Active,
            is_enterprise: false,
            whitelisted_email_domains: Vec::new(),
            disabled_at: None,
            is_read_only: false,
            banner: None,
            instance_id: None,
            tags: Vec::new(),
            referral_id: None,
            customer_id: None,
            subscription_id: None,
            audit_log_enabled: false,
            limits: BTreeMap::new(),
            members: Vec::new(),
            usage: None,
        }
    }
}

impl SeedMember {
    /// A member with `role` and no application or dashboard roles.
    pub(crate) fn new(user_id: &str, role: OrgRole) -> SeedMember {
        SeedMember {
            user_id: user_id.into(),
            role,
            application_roles: Vec::new(),
            dashboard_roles: Vec::new(),
        }
    }
}

fn invite(
    id: &str,
    org_id: &str,
    email: &str,
    role: OrgRole,
    by: &str,
    date: DateTime<Utc>,
) -> SeedInvite {
    SeedInvite {
        id: id.into(),
        org_id: org_id.into(),
        email: email.into(),
        role,
        application_roles: Vec::new(),
        dashboard_roles: Vec::new(),
        disallow_transfer: false,
        invited_by: Some(by.into()),
        invite_date: date,
        ttl_ms: None,
    }
}

fn resource(id: &str, name: &str, owner: Owner) -> SeedResource {
    SeedResource {
        id: id.into(),
        name: name.into(),
        owner,
    }
}

fn child(id: &str, name: &str, application_id: &str) -> SeedChild {
    SeedChild {
        id: id.into(),
        name: name.into(),
        application_id: application_id.into(),
    }
}

fn token(
    token: &str,
    description: &str,
    subject: TokenSubject,
    scopes: &[&str],
    issued: DateTime<Utc>,
) -> SeedToken {
    SeedToken {
        token: token.into(),
        description: description.into(),
        subject,
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        issued_at: issued,
        expires_at: None,
    }
}

impl Seed {
    /// The built-in demo seed: four users, ten organizations with varied names (two owned by
    /// an instance), one instance, invitations both from and to the demo user (one expired),
    /// applications, dashboards, devices, flows, recent items and five documented tokens.
    ///
    /// Invitation dates of the fresh invitations are "now", so they are pending whenever the
    /// sandbox starts; every other date is fixed.
    pub fn demo() -> Seed {
        let now = Utc::now();
        let users_created = date(2023, 2, 14, 15, 4);

        let mut demo = user(
            DEMO_USER_ID,
            DEMO_USER_EMAIL,
            DEMO_USER_PASSWORD,
            "Dana",
            "Demo",
            users_created,
        );
        demo.company_name = "Acme Industrial".into();
        demo.title = "IoT Solutions Architect".into();
        demo.phone_number = "+1 555 0100".into();
        demo.location = "Cincinnati, OH".into();
        demo.url = "https://example.com/dana".into();
        demo.github_name = Some("dana-demo".into());
        demo.usage = Some(UsageProfile {
            devices: 40,
            payloads_per_day: 25_000,
            notebook_minutes_per_day: 12,
        });
        demo.recent_items = vec![
            SeedRecentList {
                item_type: ItemType::Application,
                parent_id: None,
                item_ids: vec![
                    DEMO_ORG_APPLICATION_ID.into(),
                    DEMO_USER_APPLICATION_ID.into(),
                ],
            },
            SeedRecentList {
                item_type: ItemType::Dashboard,
                parent_id: None,
                item_ids: vec![
                    "665060000000000000000001".into(),
                    DEMO_USER_DASHBOARD_ID.into(),
                ],
            },
            SeedRecentList {
                item_type: ItemType::Organization,
                parent_id: None,
                item_ids: vec![DEMO_ORG_ID.into(), "665020000000000000000005".into()],
            },
            SeedRecentList {
                item_type: ItemType::Device,
                parent_id: Some(DEMO_ORG_APPLICATION_ID.into()),
                item_ids: vec![
                    "665070000000000000000001".into(),
                    "665070000000000000000002".into(),
                ],
            },
        ];

        let mut second = user(
            SECOND_USER_ID,
            SECOND_USER_EMAIL,
            SECOND_USER_PASSWORD,
            "Sam",
            "Second",
            date(2024, 6, 3, 8, 30),
        );
        second.company_name = "Northwind Logistics".into();
        second.usage = Some(UsageProfile {
            devices: 6,
            payloads_per_day: 1_500,
            notebook_minutes_per_day: 0,
        });
        second.recent_items = vec![SeedRecentList {
            item_type: ItemType::Application,
            parent_id: None,
            item_ids: vec!["665050000000000000000004".into()],
        }];

        let third = user(
            THIRD_USER_ID,
            "priya.patel@example.com",
            "Third-User-Passw0rd!",
            "Priya",
            "Patel",
            date(2023, 9, 21, 11, 0),
        );
        let mut fourth = user(
            "665010000000000000000004",
            "oskar.ops@example.net",
            "Fourth-User-Passw0rd!",
            "Oskar",
            "Olsen",
            date(2025, 1, 2, 9, 45),
        );
        fourth.email_verified = false;

        let mut acme = SeedOrganization::new(
            DEMO_ORG_ID,
            "Acme Industrial IoT",
            "Plant floor monitoring and predictive maintenance for Acme's three factories.",
            date(2023, 3, 1, 10, 0),
            date(2025, 11, 20, 16, 12),
        );
        acme.plan_id = "sandbox-business".into();
        acme.billing_email = Some("billing@example.com".into());
        acme.icon_color = Some("#00A3E0".into());
        acme.whitelisted_email_domains = vec!["example.com".into()];
        acme.banner = Some(Banner {
            message: "Scheduled maintenance: Sunday 02:00-04:00 UTC".into(),
            level: BannerLevel::Info,
        });
        acme.limits = BTreeMap::from([("member".to_string(), 50)]);
        acme.usage = Some(UsageProfile {
            devices: 850,
            payloads_per_day: 1_200_000,
            notebook_minutes_per_day: 95,
        });
        acme.members = vec![
            SeedMember::new(DEMO_USER_ID, OrgRole::Admin),
            SeedMember::new(SECOND_USER_ID, OrgRole::View),
            SeedMember {
                user_id: THIRD_USER_ID.into(),
                role: OrgRole::Edit,
                application_roles: vec![RoleGrant {
                    resource_id: "665050000000000000000002".into(),
                    role: ResourceRole::Collaborate,
                }],
                dashboard_roles: Vec::new(),
            },
        ];

        let mut acme_labs = SeedOrganization::new(
            "665020000000000000000002",
            "acme-labs",
            "Prototypes and experiments.",
            date(2024, 1, 9, 9, 0),
            date(2024, 1, 9, 9, 0),
        );
        acme_labs.members = vec![SeedMember::new(DEMO_USER_ID, OrgRole::Admin)];

        let mut blue_river = SeedOrganization::new(
            DEMO_EDIT_ORG_ID,
            "Blue River Water Utility",
            "Pump stations and reservoir levels.",
            date(2023, 7, 17, 13, 30),
            date(2025, 6, 2, 7, 5),
        );
        blue_river.mfa_mode = MfaMode::AdminRequired;
        blue_river.members = vec![
            SeedMember::new(THIRD_USER_ID, OrgRole::Admin),
            SeedMember::new(DEMO_USER_ID, OrgRole::Edit),
        ];

        let mut contoso = SeedOrganization::new(
            "665020000000000000000004",
            "Contoso Smart Buildings",
            "HVAC and occupancy sensing.",
            date(2022, 11, 4, 12, 0),
            date(2024, 8, 30, 10, 10),
        );
        contoso.subscription_status = SubscriptionStatus::PastDue;
        contoso.members = vec![
            SeedMember::new("665010000000000000000004", OrgRole::Admin),
            SeedMember::new(DEMO_USER_ID, OrgRole::View),
        ];

        let mut delta = SeedOrganization::new(
            "665020000000000000000005",
            "Delta Farms Telemetry",
            "Soil moisture and irrigation control.",
            date(2024, 4, 22, 6, 0),
            date(2025, 9, 14, 18, 40),
        );
        delta.icon_color = Some("#4CAF50".into());
        delta.members = vec![SeedMember::new(DEMO_USER_ID, OrgRole::Admin)];

        let mut edge = SeedOrganization::new(
            "665020000000000000000006",
            "Edge Gateway Pilot",
            "",
            date(2025, 2, 11, 14, 20),
            date(2025, 2, 12, 9, 0),
        );
        edge.subscription_status = SubscriptionStatus::Trialing;
        edge.members = vec![
            SeedMember::new(THIRD_USER_ID, OrgRole::Admin),
            SeedMember::new(DEMO_USER_ID, OrgRole::Collaborate),
        ];

        let mut fabrikam = SeedOrganization::new(
            "665020000000000000000007",
            "Fabrikam Fleet Tracking",
            "GPS trackers on 300 delivery vans.",
            date(2023, 10, 5, 8, 15),
            date(2025, 12, 1, 12, 0),
        );
        fabrikam.mfa_mode = MfaMode::Required;
        fabrikam.members = vec![
            SeedMember::new(DEMO_USER_ID, OrgRole::Admin),
            SeedMember::new(THIRD_USER_ID, OrgRole::View),
        ];

        let mut northwind = SeedOrganization::new(
            SECOND_USER_ORG_ID,
            "Northwind Cold Chain",
            "Refrigerated container monitoring.",
            date(2024, 6, 4, 10, 0),
            date(2025, 10, 10, 10, 0),
        );
        northwind.usage = Some(UsageProfile {
            devices: 120,
            payloads_per_day: 90_000,
            notebook_minutes_per_day: 5,
        });
        northwind.members = vec![SeedMember::new(SECOND_USER_ID, OrgRole::Admin)];

        let mut zeta = SeedOrganization::new(
            INSTANCE_ORG_ID,
            "Zeta Mining Operations",
            "Conveyor and ventilation telemetry, managed by the sandbox instance.",
            date(2024, 2, 29, 23, 0),
            date(2025, 7, 7, 7, 7),
        );
        zeta.instance_id = Some(DEMO_INSTANCE_ID.into());
        zeta.plan_id = "instance-enterprise".into();
        zeta.icon_color = Some("#FFB300".into());
        zeta.banner = Some(Banner {
            message: "Instance upgrade planned for the first of next month".into(),
            level: BannerLevel::Warning,
        });
        zeta.is_enterprise = true;
        zeta.audit_log_enabled = true;
        zeta.tags = vec![
            Tag {
                key: "region".into(),
                value: "emea".into(),
            },
            Tag {
                key: "tier".into(),
                value: "gold".into(),
            },
        ];
        zeta.referral_id = Some("partner-zeta-001".into());
        zeta.customer_id = Some("cus_sandbox_zeta".into());
        zeta.subscription_id = Some("sub_sandbox_zeta".into());
        zeta.billing_email = Some("accounts@zeta-mining.example".into());
        zeta.limits = BTreeMap::from([("member".to_string(), 500), ("device".to_string(), 5_000)]);
        zeta.members = vec![SeedMember::new(DEMO_USER_ID, OrgRole::Admin)];

        let mut omega = SeedOrganization::new(
            INSTANCE_ONLY_ORG_ID,
            "Omega Retail Analytics",
            "Footfall counters for 40 stores.",
            date(2025, 5, 5, 5, 5),
            date(2025, 5, 6, 5, 5),
        );
        omega.instance_id = Some(DEMO_INSTANCE_ID.into());
        omega.is_enterprise = true;
        omega.tags = vec![Tag {
            key: "region".into(),
            value: "amer".into(),
        }];
        omega.members = vec![SeedMember::new(THIRD_USER_ID, OrgRole::Admin)];

        let mut contractor = invite(
            "665040000000000000000004",
            DEMO_ORG_ID,
            "contractor@example.net",
            OrgRole::View,
            DEMO_USER_ID,
            now,
        );
        contractor.application_roles = vec![RoleGrant {
            resource_id: DEMO_ORG_APPLICATION_ID.into(),
            role: ResourceRole::View,
        }];
        contractor.disallow_transfer = true;

        Seed {
            users: vec![demo, second, third, fourth],
            instances: vec![SeedInstance {
                id: DEMO_INSTANCE_ID.into(),
                name: "WEGnology Sandbox Instance".into(),
                members: vec![
                    SeedInstanceMember {
                        user_id: DEMO_USER_ID.into(),
                        role: InstanceRole::Admin,
                    },
                    SeedInstanceMember {
                        user_id: THIRD_USER_ID.into(),
                        role: InstanceRole::View,
                    },
                ],
            }],
            organizations: vec![
                acme, acme_labs, blue_river, contoso, delta, edge, fabrikam, northwind, zeta, omega,
            ],
            invites: vec![
                invite(
                    DEMO_INVITE_ID,
                    SECOND_USER_ORG_ID,
                    DEMO_USER_EMAIL,
                    OrgRole::Edit,
                    SECOND_USER_ID,
                    now,
                ),
                invite(
                    EXPIRED_INVITE_ID,
                    INSTANCE_ONLY_ORG_ID,
                    DEMO_USER_EMAIL,
                    OrgRole::View,
                    THIRD_USER_ID,
                    date(2025, 1, 6, 9, 0),
                ),
                invite(
                    DEMO_ORG_INVITE_ID,
                    DEMO_ORG_ID,
                    "new.engineer@example.com",
                    OrgRole::Edit,
                    DEMO_USER_ID,
                    now,
                ),
                contractor,
            ],
            applications: vec![
                resource(
                    DEMO_ORG_APPLICATION_ID,
                    "Plant Floor Monitoring",
                    Owner::Organization(DEMO_ORG_ID.into()),
                ),
                resource(
                    "665050000000000000000002",
                    "Conveyor Predictive Maintenance",
                    Owner::Organization(DEMO_ORG_ID.into()),
                ),
                resource(
                    DEMO_USER_APPLICATION_ID,
                    "Personal Weather Station",
                    Owner::User(DEMO_USER_ID.into()),
                ),
                resource(
                    "665050000000000000000004",
                    "Home Energy Monitor",
                    Owner::User(SECOND_USER_ID.into()),
                ),
                resource(
                    "665050000000000000000005",
                    "Reefer Container Tracking",
                    Owner::Organization(SECOND_USER_ORG_ID.into()),
                ),
                resource(
                    "665050000000000000000006",
                    "Ventilation Control",
                    Owner::Organization(INSTANCE_ORG_ID.into()),
                ),
            ],
            dashboards: vec![
                resource(
                    "665060000000000000000001",
                    "Plant KPIs",
                    Owner::Organization(DEMO_ORG_ID.into()),
                ),
                resource(
                    DEMO_USER_DASHBOARD_ID,
                    "Weather Overview",
                    Owner::User(DEMO_USER_ID.into()),
                ),
                resource(
                    "665060000000000000000003",
                    "Energy Use",
                    Owner::User(SECOND_USER_ID.into()),
                ),
            ],
            devices: vec![
                child(
                    "665070000000000000000001",
                    "Line 1 PLC",
                    DEMO_ORG_APPLICATION_ID,
                ),
                child(
                    "665070000000000000000002",
                    "Line 2 Vibration Sensor",
                    DEMO_ORG_APPLICATION_ID,
                ),
                child(
                    "665070000000000000000003",
                    "Rooftop Anemometer",
                    DEMO_USER_APPLICATION_ID,
                ),
                child(
                    "665070000000000000000004",
                    "Smart Meter",
                    "665050000000000000000004",
                ),
            ],
            flows: vec![
                child(
                    "665080000000000000000001",
                    "Downtime Alerts",
                    DEMO_ORG_APPLICATION_ID,
                ),
                child(
                    "665080000000000000000002",
                    "Storm Warning",
                    DEMO_USER_APPLICATION_ID,
                ),
            ],
            tokens: vec![
                token(
                    DEMO_TOKEN,
                    "demo user Dana Demo, every scope",
                    TokenSubject::User(DEMO_USER_ID.into()),
                    &["all.User", "all.Organization", "all.Instance"],
                    now,
                ),
                token(
                    USER_READ_TOKEN,
                    "demo user Dana Demo, read only",
                    TokenSubject::User(DEMO_USER_ID.into()),
                    &["all.User.read"],
                    now,
                ),
                token(
                    ORG_READ_TOKEN,
                    "organization API token for Acme Industrial IoT, read only",
                    TokenSubject::Organization(DEMO_ORG_ID.into()),
                    &["all.Organization.read"],
                    now,
                ),
                token(
                    SECOND_USER_TOKEN,
                    "second user Sam Second (own organization, applications and usage)",
                    TokenSubject::User(SECOND_USER_ID.into()),
                    &["all.User"],
                    now,
                ),
                token(
                    INSTANCE_ADMIN_TOKEN,
                    "instance API token for WEGnology Sandbox Instance",
                    TokenSubject::Instance(DEMO_INSTANCE_ID.into()),
                    &["all.Instance"],
                    now,
                ),
            ],
        }
    }

    /// Lower-cases every id (ids compare case-insensitively, and the store keys on lower case)
    /// and fills `lastUpdated` from `creationDate`.
    pub(crate) fn normalize(&mut self) {
        fn lower(id: &mut str) {
            id.make_ascii_lowercase();
        }
        fn lower_grants(grants: &mut [RoleGrant]) {
            grants
                .iter_mut()
                .for_each(|grant| lower(&mut grant.resource_id));
        }
        for user in &mut self.users {
            lower(&mut user.id);
            for list in &mut user.recent_items {
                list.parent_id.iter_mut().for_each(|id| lower(id));
                list.item_ids.iter_mut().for_each(|id| lower(id));
            }
        }
        for instance in &mut self.instances {
            lower(&mut instance.id);
            instance
                .members
                .iter_mut()
                .for_each(|member| lower(&mut member.user_id));
        }
        for org in &mut self.organizations {
            lower(&mut org.id);
            org.instance_id.iter_mut().for_each(|id| lower(id));
            org.last_updated.get_or_insert(org.creation_date);
            for member in &mut org.members {
                lower(&mut member.user_id);
                lower_grants(&mut member.application_roles);
                lower_grants(&mut member.dashboard_roles);
            }
        }
        for invite in &mut self.invites {
            lower(&mut invite.id);
            lower(&mut invite.org_id);
            invite.invited_by.iter_mut().for_each(|id| lower(id));
            lower_grants(&mut invite.application_roles);
            lower_grants(&mut invite.dashboard_roles);
        }
        for resource in self
            .applications
            .iter_mut()
            .chain(self.dashboards.iter_mut())
        {
            lower(&mut resource.id);
            match &mut resource.owner {
                Owner::User(id) | Owner::Organization(id) => lower(id),
            }
        }
        for child in self.devices.iter_mut().chain(self.flows.iter_mut()) {
            lower(&mut child.id);
            lower(&mut child.application_id);
        }
        for token in &mut self.tokens {
            match &mut token.subject {
                TokenSubject::User(id)
                | TokenSubject::Organization(id)
                | TokenSubject::Instance(id) => lower(id),
            }
        }
    }

    /// Checks ids, references and values; the error says what is wrong and where.
    /// Call after [`Seed::normalize`].
    pub(crate) fn check(&self) -> Result<(), String> {
        let users = unique_ids("users", self.users.iter().map(|user| user.id.as_str()))?;
        let instances = unique_ids(
            "instances",
            self.instances.iter().map(|instance| instance.id.as_str()),
        )?;
        let orgs = unique_ids(
            "organizations",
            self.organizations.iter().map(|org| org.id.as_str()),
        )?;
        unique_ids(
            "invites",
            self.invites.iter().map(|invite| invite.id.as_str()),
        )?;
        let applications = unique_ids(
            "applications",
            self.applications.iter().map(|app| app.id.as_str()),
        )?;
        let dashboards = unique_ids(
            "dashboards",
            self.dashboards.iter().map(|dash| dash.id.as_str()),
        )?;
        let devices = unique_ids(
            "devices",
            self.devices.iter().map(|device| device.id.as_str()),
        )?;
        let flows = unique_ids("flows", self.flows.iter().map(|flow| flow.id.as_str()))?;

        let mut emails = HashSet::new();
        for user in &self.users {
            let at = format!("user {}", user.id);
            if !is_email(&user.email) {
                return Err(format!("{at}: email {:?} is not a valid email", user.email));
            }
            if !emails.insert(user.email.to_lowercase()) {
                return Err(format!(
                    "{at}: email {} is used by another user",
                    user.email
                ));
            }
            field(
                &at,
                "password",
                check_string(&user.password, 8, 2048, Format::Any, &[]),
            )?;
            field(
                &at,
                "firstName",
                check_string(&user.first_name, 1, 1024, Format::Any, &[]),
            )?;
            for list in &user.recent_items {
                let known = match list.item_type {
                    ItemType::Application => &applications,
                    ItemType::Dashboard => &dashboards,
                    ItemType::Organization => &orgs,
                    ItemType::Device => &devices,
                    ItemType::Flow => &flows,
                };
                for id in &list.item_ids {
                    if !known.contains(id.as_str()) {
                        return Err(format!(
                            "{at}: recent {} {id} does not exist",
                            list.item_type.as_str()
                        ));
                    }
                }
            }
        }
        for instance in &self.instances {
            for member in &instance.members {
                known(
                    &users,
                    &member.user_id,
                    &format!("instance {} member", instance.id),
                )?;
            }
        }
        for org in &self.organizations {
            let at = format!("organization {}", org.id);
            field(
                &at,
                "name",
                check_string(&org.name, 1, 255, Format::Any, &[]),
            )?;
            if let Some(instance) = &org.instance_id {
                known(&instances, instance, &format!("{at} instanceId"))?;
            }
            let mut member_ids = HashSet::new();
            for member in &org.members {
                known(&users, &member.user_id, &format!("{at} member"))?;
                if !member_ids.insert(member.user_id.as_str()) {
                    return Err(format!("{at}: user {} is a member twice", member.user_id));
                }
            }
            for (key, value) in &org.limits {
                match ORG_LIMIT_KEYS.iter().find(|(name, _)| name == key) {
                    Some((_, min)) if value >= min => {}
                    Some((_, min)) => {
                        return Err(format!("{at}: limit {key} must be at least {min}"));
                    }
                    None => return Err(format!("{at}: unknown limit {key}")),
                }
            }
            for tag in &org.tags {
                field(
                    &at,
                    "tags.key",
                    check_string(&tag.key, 1, 255, Format::TagKey, &[]),
                )?;
                field(
                    &at,
                    "tags.value",
                    check_string(&tag.value, 1, 255, Format::Any, &[]),
                )?;
            }
        }
        for invite in &self.invites {
            let at = format!("invite {}", invite.id);
            known(&orgs, &invite.org_id, &format!("{at} orgId"))?;
            if !is_email(&invite.email) {
                return Err(format!(
                    "{at}: email {:?} is not a valid email",
                    invite.email
                ));
            }
            if let Some(by) = &invite.invited_by {
                known(&users, by, &format!("{at} invitedBy"))?;
            }
        }
        for resource in self.applications.iter().chain(&self.dashboards) {
            match &resource.owner {
                Owner::User(id) => known(&users, id, &format!("{} owner", resource.id))?,
                Owner::Organization(id) => known(&orgs, id, &format!("{} owner", resource.id))?,
            }
        }
        for child in self.devices.iter().chain(&self.flows) {
            known(
                &applications,
                &child.application_id,
                &format!("{} applicationId", child.id),
            )?;
        }
        let mut tokens = HashSet::new();
        for token in &self.tokens {
            if token.token.is_empty()
                || token
                    .token
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "token {:?} must be non-empty without whitespace",
                    token.token
                ));
            }
            if !tokens.insert(token.token.as_str()) {
                return Err(format!("token {} is listed twice", token.token));
            }
            match &token.subject {
                TokenSubject::User(id) => known(&users, id, "token subject")?,
                TokenSubject::Organization(id) => known(&orgs, id, "token subject")?,
                TokenSubject::Instance(id) => known(&instances, id, "token subject")?,
            }
            if token.scopes.is_empty() {
                return Err(format!("token {} has no scopes", token.token));
            }
            for scope in &token.scopes {
                field(
                    &format!("token {}", token.token),
                    "scopes",
                    check_string(scope, 1, 1024, Format::Scope, &[]),
                )?;
            }
        }
        Ok(())
    }
}

fn unique_ids<'a>(
    what: &str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashSet<&'a str>, String> {
    let mut seen = HashSet::new();
    for id in ids {
        if !is_id(id) {
            return Err(format!("{what}: id {id:?} is not 24 hex characters"));
        }
        if !seen.insert(id) {
            return Err(format!("{what}: id {id} is used twice"));
        }
    }
    Ok(seen)
}

fn known(ids: &HashSet<&str>, id: &str, at: &str) -> Result<(), String> {
    if ids.contains(id) {
        Ok(())
    } else {
        Err(format!("{at}: {id} does not exist"))
    }
}

fn field(at: &str, name: &str, result: Result<(), String>) -> Result<(), String> {
    result.map_err(|why| format!("{at}: {name} {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_seed_is_valid_and_round_trips_through_json() {
        let mut seed = Seed::demo();
        seed.normalize();
        assert_eq!(seed.check(), Ok(()));
        let text = serde_json::to_string_pretty(&seed).expect("serializes");
        let back: Seed = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, seed);
    }

    #[test]
    fn minimal_seed_uses_defaults() {
        let seed: Seed = serde_json::from_str(
            r#"{"users": [{"id": "AAAAAAAAAAAAAAAAAAAAAAAA", "email": "a@b.co", "password": "password1", "firstName": "A"}]}"#,
        )
        .expect("parses");
        let mut seed = seed;
        seed.normalize();
        assert_eq!(seed.users[0].id, "aaaaaaaaaaaaaaaaaaaaaaaa");
        assert!(seed.users[0].email_verified);
        assert_eq!(seed.check(), Ok(()));
    }

    #[test]
    fn broken_references_are_reported() {
        let mut seed = Seed::demo();
        seed.organizations[0].members[0].user_id = "ffffffffffffffffffffffff".into();
        assert_eq!(
            seed.check(),
            Err("organization 665020000000000000000001 member: ffffffffffffffffffffffff does not exist".into())
        );
        let mut seed = Seed::demo();
        seed.tokens[1].token = DEMO_TOKEN.into();
        assert_eq!(
            seed.check(),
            Err(format!("token {DEMO_TOKEN} is listed twice"))
        );
        let unknown: Result<Seed, _> = serde_json::from_str(r#"{"users": [], "colour": 1}"#);
        assert!(unknown.is_err());
    }
}
