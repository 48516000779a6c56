//! The in-memory store: the seed's collections plus the runtime-only bits (pending two-factor
//! keys, dismissed invitations, token cut-offs), with the lookups and access rules the handlers
//! share.
//!
//! The store lives behind a `std::sync::Mutex` in [`super::Sandbox`]; handlers run
//! synchronously while holding it and never across an `.await`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rand::Rng;

use super::{
    error::ApiError,
    seed::{
        ItemType, OrgRole, Owner, Seed, SeedChild, SeedInstance, SeedInvite, SeedMember,
        SeedOrganization, SeedResource, SeedToken, SeedUser, TokenSubject,
    },
};

/// How many items a recent item list keeps (the upstream does not document its limit).
pub(crate) const RECENT_ITEMS_LIMIT: usize = 10;

/// A user plus the runtime-only state the seed format does not carry.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// The seeded (and since patched) account.
    pub account: SeedUser,
    /// Last profile change.
    pub last_updated: DateTime<Utc>,
    /// Last password change.
    pub password_last_updated: DateTime<Utc>,
    /// Tokens issued before this are rejected (`mePatch.tokenCutoff`).
    pub token_cutoff: Option<DateTime<Utc>>,
    /// Key from `me.generateTwoFactorAuth`, waiting for `me.enableTwoFactorAuth`.
    pub pending_two_factor_key: Option<String>,
    /// Invitations this user dismissed (hidden from `GET /me/invites`).
    pub dismissed_invites: HashSet<String>,
}

/// The whole mutable state.
#[derive(Debug)]
pub(crate) struct Store {
    /// Users by id.
    pub users: HashMap<String, User>,
    /// Organizations, in creation order.
    pub orgs: Vec<SeedOrganization>,
    /// Instances.
    pub instances: Vec<SeedInstance>,
    /// Invitations, in creation order.
    pub invites: Vec<SeedInvite>,
    /// Applications.
    pub applications: Vec<SeedResource>,
    /// Dashboards.
    pub dashboards: Vec<SeedResource>,
    /// Devices.
    pub devices: Vec<SeedChild>,
    /// Workflows.
    pub flows: Vec<SeedChild>,
    /// Tokens by their text.
    pub tokens: HashMap<String, SeedToken>,
    /// Default invitation lifetime in milliseconds (`SandboxOptions::invite_ttl`).
    pub invite_ttl_ms: u64,
}

/// What a caller may do in one organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrgAccess {
    /// Any action (admin members, and organization or instance API tokens).
    Admin,
    /// A member with a role below admin.
    Member(OrgRole),
}

impl Store {
    /// Builds the store from a normalized, checked seed.
    pub(crate) fn new(seed: Seed, invite_ttl_ms: u64) -> Store {
        let users = seed
            .users
            .into_iter()
            .map(|account| {
                let user = User {
                    last_updated: account.creation_date,
                    password_last_updated: account.creation_date,
                    token_cutoff: None,
                    pending_two_factor_key: None,
                    dismissed_invites: HashSet::new(),
                    account,
                };
                (user.account.id.clone(), user)
            })
            .collect();
        Store {
            users,
            orgs: seed.organizations,
            instances: seed.instances,
            invites: seed.invites,
            applications: seed.applications,
            dashboards: seed.dashboards,
            devices: seed.devices,
            flows: seed.flows,
            tokens: seed
                .tokens
                .into_iter()
                .map(|token| (token.token.clone(), token))
                .collect(),
            invite_ttl_ms,
        }
    }

    /// A user by id, or 404.
    pub(crate) fn user(&self, id: &str) -> Result<&User, ApiError> {
        self.users
            .get(id)
            .ok_or_else(|| ApiError::not_found("User", id))
    }

    /// A user by id for changing, or 404.
    pub(crate) fn user_mut(&mut self, id: &str) -> Result<&mut User, ApiError> {
        self.users
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found("User", id))
    }

    /// The user with this email (case-insensitive).
    pub(crate) fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users
            .values()
            .find(|user| user.account.email.eq_ignore_ascii_case(email))
    }

    /// An organization by id.
    pub(crate) fn org(&self, id: &str) -> Option<&SeedOrganization> {
        self.orgs.iter().find(|org| org.id == id)
    }

    /// An organization by id for changing, or 404.
    pub(crate) fn org_mut(&mut self, id: &str) -> Result<&mut SeedOrganization, ApiError> {
        self.orgs
            .iter_mut()
            .find(|org| org.id == id)
            .ok_or_else(|| ApiError::not_found("Organization", id))
    }

    /// An instance by id.
    pub(crate) fn instance(&self, id: &str) -> Option<&SeedInstance> {
        self.instances.iter().find(|instance| instance.id == id)
    }

    /// The organizations a user is a member of.
    pub(crate) fn orgs_of_user<'a>(
        &'a self,
        user_id: &'a str,
    ) -> impl Iterator<Item = &'a SeedOrganization> + 'a {
        self.orgs
            .iter()
            .filter(move |org| member_of(org, user_id).is_some())
    }

    /// The invitations of an organization, oldest first.
    pub(crate) fn invites_of_org<'a>(
        &'a self,
        org_id: &'a str,
    ) -> impl Iterator<Item = &'a SeedInvite> + 'a {
        self.invites
            .iter()
            .filter(move |invite| invite.org_id == org_id)
    }

    /// An invitation's lifetime in milliseconds.
    pub(crate) fn ttl_ms(&self, invite: &SeedInvite) -> u64 {
        invite.ttl_ms.unwrap_or(self.invite_ttl_ms)
    }

    /// Whether an invitation's lifetime has passed.
    pub(crate) fn is_expired(&self, invite: &SeedInvite, now: DateTime<Utc>) -> bool {
        let age = now
            .signed_duration_since(invite.invite_date)
            .num_milliseconds();
        age > i64::try_from(self.ttl_ms(invite)).unwrap_or(i64::MAX)
    }

    /// What `subject` may do in organization `org_id`; 404 when the organization does not
    /// exist or the caller cannot see it (the upstream does not reveal foreign organizations).
    pub(crate) fn org_access(
        &self,
        subject: &TokenSubject,
        org_id: &str,
    ) -> Result<OrgAccess, ApiError> {
        let not_found = || ApiError::not_found("Organization", org_id);
        let org = self.org(org_id).ok_or_else(not_found)?;
        match subject {
            TokenSubject::User(user_id) => {
                match member_of(org, user_id).map(|member| member.role) {
                    Some(OrgRole::Admin) => Ok(OrgAccess::Admin),
                    Some(role) => Ok(OrgAccess::Member(role)),
                    None => Err(not_found()),
                }
            }
            TokenSubject::Organization(id) if *id == org.id => Ok(OrgAccess::Admin),
            TokenSubject::Instance(id) if org.instance_id.as_deref() == Some(id) => {
                Ok(OrgAccess::Admin)
            }
            TokenSubject::Organization(_) | TokenSubject::Instance(_) => Err(not_found()),
        }
    }

    /// Like [`Store::org_access`], but requires admin rights (403 otherwise).
    pub(crate) fn org_admin(&self, subject: &TokenSubject, org_id: &str) -> Result<(), ApiError> {
        match self.org_access(subject, org_id)? {
            OrgAccess::Admin => Ok(()),
            OrgAccess::Member(_) => Err(ApiError::Forbidden(format!(
                "This action requires the admin role in organization {org_id}"
            ))),
        }
    }

    /// Checks that `subject` may use instance `instance_id` and that organization `org_id`
    /// belongs to it. `write` requires instance admin rights (403 otherwise).
    pub(crate) fn instance_org_access(
        &self,
        subject: &TokenSubject,
        instance_id: &str,
        org_id: &str,
        write: bool,
    ) -> Result<(), ApiError> {
        let instance = self
            .instance(instance_id)
            .ok_or_else(|| ApiError::not_found("Instance", instance_id))?;
        let admin = match subject {
            TokenSubject::User(user_id) => {
                let member = instance
                    .members
                    .iter()
                    .find(|member| member.user_id == *user_id);
                let Some(member) = member else {
                    return Err(ApiError::not_found("Instance", instance_id));
                };
                member.role == super::seed::InstanceRole::Admin
            }
            TokenSubject::Instance(id) if *id == instance.id => true,
            TokenSubject::Instance(_) => return Err(ApiError::not_found("Instance", instance_id)),
            TokenSubject::Organization(_) => {
                return Err(ApiError::Forbidden(
                    "Organization API tokens cannot access instances".into(),
                ));
            }
        };
        let owned = self
            .org(org_id)
            .is_some_and(|org| org.instance_id.as_deref() == Some(instance_id));
        if !owned {
            return Err(ApiError::not_found("Organization", org_id));
        }
        if write && !admin {
            return Err(ApiError::Forbidden(format!(
                "This action requires the admin role in instance {instance_id}"
            )));
        }
        Ok(())
    }

    /// Whether a user can see an application or dashboard (owns it, or is a member of the
    /// owning organization).
    pub(crate) fn can_see_resource(&self, user_id: &str, resource: &SeedResource) -> bool {
        match &resource.owner {
            Owner::User(owner) => owner == user_id,
            Owner::Organization(org_id) => self
                .org(org_id)
                .is_some_and(|org| member_of(org, user_id).is_some()),
        }
    }

    /// The name of a recent item and the application it belongs to (devices and flows), if the
    /// item exists and `user_id` may see it.
    pub(crate) fn visible_item(
        &self,
        user_id: &str,
        kind: ItemType,
        id: &str,
    ) -> Option<(String, Option<String>)> {
        let resource = |list: &[SeedResource]| {
            let item = list.iter().find(|item| item.id == id)?;
            self.can_see_resource(user_id, item)
                .then(|| (item.name.clone(), None))
        };
        match kind {
            ItemType::Organization => self
                .orgs_of_user(user_id)
                .find(|org| org.id == id)
                .map(|org| (org.name.clone(), None)),
            ItemType::Application => resource(&self.applications),
            ItemType::Dashboard => resource(&self.dashboards),
            ItemType::Device | ItemType::Flow => {
                let list = if kind == ItemType::Device {
                    &self.devices
                } else {
                    &self.flows
                };
                let item = list.iter().find(|item| item.id == id)?;
                let app = self
                    .applications
                    .iter()
                    .find(|app| app.id == item.application_id)?;
                self.can_see_resource(user_id, app)
                    .then(|| (item.name.clone(), Some(item.application_id.clone())))
            }
        }
    }

    /// Adds `token`, returning its text.
    pub(crate) fn insert_token(&mut self, token: SeedToken) -> String {
        let text = token.token.clone();
        self.tokens.insert(text.clone(), token);
        text
    }

    /// Removes a user and everything that only makes sense with them: tokens, memberships,
    /// instance memberships, owned applications and dashboards (with their devices and flows),
    /// and non-instance organizations left without members.
    pub(crate) fn delete_user(&mut self, user_id: &str) {
        self.users.remove(user_id);
        self.tokens
            .retain(|_, token| token.subject != TokenSubject::User(user_id.to_string()));
        for org in &mut self.orgs {
            org.members.retain(|member| member.user_id != user_id);
        }
        for instance in &mut self.instances {
            instance.members.retain(|member| member.user_id != user_id);
        }
        let orphans: Vec<String> = self
            .orgs
            .iter()
            .filter(|org| org.members.is_empty() && org.instance_id.is_none())
            .map(|org| org.id.clone())
            .collect();
        for org_id in orphans {
            self.delete_org(&org_id);
        }
        self.delete_owned(&Owner::User(user_id.to_string()));
        for invite in &mut self.invites {
            if invite.invited_by.as_deref() == Some(user_id) {
                invite.invited_by = None;
            }
        }
    }

    /// Removes an organization with its invitations, tokens and owned resources.
    pub(crate) fn delete_org(&mut self, org_id: &str) {
        self.orgs.retain(|org| org.id != org_id);
        self.invites.retain(|invite| invite.org_id != org_id);
        self.tokens
            .retain(|_, token| token.subject != TokenSubject::Organization(org_id.to_string()));
        self.delete_owned(&Owner::Organization(org_id.to_string()));
    }

    fn delete_owned(&mut self, owner: &Owner) {
        let gone: HashSet<String> = self
            .applications
            .iter()
            .filter(|app| app.owner == *owner)
            .map(|app| app.id.clone())
            .collect();
        self.applications.retain(|app| app.owner != *owner);
        self.dashboards.retain(|dash| dash.owner != *owner);
        self.devices
            .retain(|device| !gone.contains(&device.application_id));
        self.flows
            .retain(|flow| !gone.contains(&flow.application_id));
    }
}

/// The membership of `user_id` in `org`.
pub(crate) fn member_of<'a>(org: &'a SeedOrganization, user_id: &str) -> Option<&'a SeedMember> {
    org.members.iter().find(|member| member.user_id == user_id)
}

/// A new object id in the upstream's (MongoDB ObjectId) shape: 8 hex digits of seconds since
/// the epoch, then 16 random hex digits.
pub(crate) fn new_id(now: DateTime<Utc>) -> String {
    let seconds = u32::try_from(now.timestamp()).unwrap_or(u32::MAX);
    format!("{seconds:08x}{:016x}", rand::rng().random::<u64>())
}

/// A new bearer token: recognisably a sandbox token, with 160 random bits.
pub(crate) fn new_token_text() -> String {
    let mut rng = rand::rng();
    format!(
        "wnology-sandbox-{:016x}{:016x}{:08x}",
        rng.random::<u64>(),
        rng.random::<u64>(),
        rng.random::<u32>()
    )
}
