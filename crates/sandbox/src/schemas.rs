//! The upstream's request body schemas (API 1.30.0, `schemas/*.json`), transcribed into
//! [`Schema`] constants. Property order follows the upstream files. Also the response schemas'
//! `summary` keys, which the `summaryInclude` / `summaryExclude` query parameters name.

use super::validate::{Format, Schema};

/// `^[A-Fa-f\d]{24}$`.
// The pattern implies the length; checking it via the format gives the clearer message.
const ID: Schema = Schema::string(0, usize::MAX, Format::Id);
const EMAIL: Schema = Schema::string(0, 1024, Format::Email);
const TEXT_1024: Schema = Schema::string(0, 1024, Format::Any);
const NAME_1024: Schema = Schema::string(1, 1024, Format::Any);
const ORG_NAME: Schema = Schema::string(1, 255, Format::Any);
const DESCRIPTION: Schema = Schema::string(0, 32767, Format::Any);
const ICON_COLOR: Schema = Schema::string(0, 64, Format::Any);
const CURRENT_PASSWORD: Schema = Schema::string(8, 2048, Format::Any);
const NEW_PASSWORD: Schema = Schema::string(12, 2048, Format::Password);
const TWO_FACTOR_CODE: Schema = Schema::string(0, 2048, Format::Any);
const DATE_TIME: Schema = Schema::string(0, usize::MAX, Format::DateTime);
const NON_NEGATIVE: Schema = Schema::Integer {
    min: Some(0),
    max: None,
};

/// Organization member roles.
pub(crate) const ORG_ROLES: &[&str] = &["admin", "edit", "collaborate", "view", "none"];
/// Application and dashboard roles.
pub(crate) const RESOURCE_ROLES: &[&str] = &["collaborate", "view", "none"];
/// Organization multi-factor authentication modes.
pub(crate) const MFA_MODES: &[&str] = &["notRequired", "adminRequired", "required"];
/// Recent item types.
pub(crate) const ITEM_TYPES: &[&str] =
    &["application", "device", "flow", "dashboard", "organization"];

/// `{resourceId, role}`, an application or dashboard role grant.
const ROLE_GRANT: Schema = Schema::Object {
    properties: &[("resourceId", ID), ("role", Schema::one_of(RESOURCE_ROLES))],
    required: &["resourceId", "role"],
    additional: false,
};
/// `applicationRoles` / `dashboardRoles` (maxItems fell from 1000 to 100 in 1.30.0).
const ROLE_GRANTS: Schema = Schema::Array {
    items: &ROLE_GRANT,
    max_items: 100,
};

/// `recentItem` (no `additionalProperties: false` upstream).
pub(crate) static RECENT_ITEM: Schema = Schema::Object {
    properties: &[
        ("itemType", Schema::one_of(ITEM_TYPES)),
        ("parentId", ID),
        ("itemId", ID),
    ],
    required: &["itemType", "itemId"],
    additional: true,
};

/// `changePassword`.
pub(crate) static CHANGE_PASSWORD: Schema = Schema::Object {
    properties: &[
        ("twoFactorCode", TWO_FACTOR_CODE),
        ("password", CURRENT_PASSWORD),
        ("newPassword", NEW_PASSWORD),
        ("invalidateExistingTokens", Schema::Boolean),
        ("tokenTTL", NON_NEGATIVE),
    ],
    required: &["password", "newPassword"],
    additional: false,
};

/// `userCredentials`.
pub(crate) static USER_CREDENTIALS: Schema = Schema::Object {
    properties: &[
        ("email", EMAIL),
        ("password", CURRENT_PASSWORD),
        ("twoFactorCode", TWO_FACTOR_CODE),
        (
            "requestedScopes",
            Schema::Array {
                items: &Schema::string(1, 1024, Format::Scope),
                max_items: usize::MAX,
            },
        ),
        ("tokenTTL", NON_NEGATIVE),
    ],
    required: &["email", "password"],
    additional: false,
};

/// `multiFactorAuthDisable`.
pub(crate) static MFA_DISABLE: Schema = Schema::Object {
    properties: &[
        ("twoFactorCode", TWO_FACTOR_CODE),
        ("password", CURRENT_PASSWORD),
    ],
    required: &["password", "twoFactorCode"],
    additional: false,
};

/// `multiFactorAuthEnable`.
pub(crate) static MFA_ENABLE: Schema = Schema::Object {
    properties: &[
        ("twoFactorAuthKey", Schema::string(52, 52, Format::Any)),
        ("password", CURRENT_PASSWORD),
        ("twoFactorCode", TWO_FACTOR_CODE),
    ],
    required: &["password", "twoFactorCode"],
    additional: false,
};

/// `mePatch`.
pub(crate) static ME_PATCH: Schema = Schema::Object {
    properties: &[
        ("email", EMAIL),
        ("firstName", NAME_1024),
        ("lastName", TEXT_1024),
        ("companyName", TEXT_1024),
        ("title", TEXT_1024),
        ("phoneNumber", TEXT_1024),
        ("location", TEXT_1024),
        ("url", TEXT_1024),
        ("password", NEW_PASSWORD),
        ("tokenCutoff", DATE_TIME),
        (
            "currentCredentials",
            Schema::Object {
                properties: &[
                    ("twoFactorCode", TWO_FACTOR_CODE),
                    ("password", CURRENT_PASSWORD),
                ],
                required: &["password"],
                additional: false,
            },
        ),
    ],
    required: &[],
    additional: false,
};

/// `orgInviteActionUser`.
pub(crate) static INVITE_ACTION: Schema = Schema::Object {
    properties: &[("action", Schema::one_of(&["accept", "dismiss", "reject"]))],
    required: &["action"],
    additional: false,
};

/// `resourceTransfer`.
pub(crate) static RESOURCE_TRANSFER: Schema = Schema::Object {
    properties: &[
        ("destinationId", ID),
        ("destinationType", Schema::one_of(&["user", "organization"])),
        (
            "applicationIds",
            Schema::Array {
                items: &ID,
                max_items: 1000,
            },
        ),
        (
            "dashboardIds",
            Schema::Array {
                items: &ID,
                max_items: 1000,
            },
        ),
        ("strict", Schema::Boolean),
    ],
    required: &["destinationId", "destinationType"],
    additional: false,
};

/// The properties `orgPost` and `orgPatch` share.
const ORG_FIELDS: &[(&str, Schema)] = &[
    ("name", ORG_NAME),
    ("description", DESCRIPTION),
    ("planId", TEXT_1024),
    ("billingEmail", EMAIL),
    ("cardToken", TEXT_1024),
    ("iconColor", ICON_COLOR),
    ("mfaMode", Schema::one_of(MFA_MODES)),
];

/// `orgPost`.
pub(crate) static ORG_POST: Schema = Schema::Object {
    properties: ORG_FIELDS,
    required: &["name"],
    additional: false,
};

/// `orgPatch`.
pub(crate) static ORG_PATCH: Schema = Schema::Object {
    properties: ORG_FIELDS,
    required: &[],
    additional: false,
};

/// `orgInvitePost`.
pub(crate) static ORG_INVITE_POST: Schema = Schema::Object {
    properties: &[
        ("email", EMAIL),
        ("role", Schema::one_of(ORG_ROLES)),
        ("applicationRoles", ROLE_GRANTS),
        ("dashboardRoles", ROLE_GRANTS),
        ("disallowTransfer", Schema::Boolean),
    ],
    required: &["email", "role"],
    additional: false,
};

/// `orgMemberPatch`.
pub(crate) static ORG_MEMBER_PATCH: Schema = Schema::Object {
    properties: &[
        ("userId", ID),
        ("role", Schema::one_of(ORG_ROLES)),
        ("applicationRoles", ROLE_GRANTS),
        ("dashboardRoles", ROLE_GRANTS),
    ],
    required: &["userId"],
    additional: false,
};

/// The organization `limits` keys with their `minimum` (and `systemInterval`'s `maximum`),
/// shared by the `org`, `instanceOrg` and `instanceOrgPatch` schemas.
pub(crate) const ORG_LIMIT_KEYS: &[(&str, i64)] = &[
    ("apitoken", 0),
    ("application", 0),
    ("applicationcertificate", 0),
    ("applicationcertificateauthority", 0),
    ("applicationkey", 0),
    ("credential", 0),
    ("dashboard", 0),
    ("datatable", 0),
    ("device", 0),
    ("devicerecipe", 0),
    ("experiencedomain", 0),
    ("experienceendpoint", 0),
    ("experiencegroup", 0),
    ("experienceslug", 0),
    ("experienceuser", 0),
    ("experienceversion", 0),
    ("experienceview", 0),
    ("file", 0),
    ("flow", 0),
    ("integration", 0),
    ("notebook", 0),
    ("privatefile", 0),
    ("resourcejob", 0),
    ("webhook", 0),
    ("dataTTL", 86400),
    ("member", 0),
    ("payload", 0),
    ("storage", 0),
    ("notebookMinutesPerRun", 0),
    ("notebookMinutesPerMonth", 0),
    ("notebookInParallel", 0),
    ("experienceFlowSlots", 0),
    ("applicationFlowSlots", 0),
    ("systemInterval", 5),
];

const fn limit(min: i64) -> Schema {
    Schema::Integer {
        min: Some(min),
        max: None,
    }
}

/// `instanceOrgPatch.limits`; written out because `const` code cannot build it from
/// [`ORG_LIMIT_KEYS`]. A unit test keeps the two lists in step.
const LIMITS: Schema = Schema::Object {
    properties: &[
        ("apitoken", limit(0)),
        ("application", limit(0)),
        ("applicationcertificate", limit(0)),
        ("applicationcertificateauthority", limit(0)),
        ("applicationkey", limit(0)),
        ("credential", limit(0)),
        ("dashboard", limit(0)),
        ("datatable", limit(0)),
        ("device", limit(0)),
        ("devicerecipe", limit(0)),
        ("experiencedomain", limit(0)),
        ("experienceendpoint", limit(0)),
        ("experiencegroup", limit(0)),
        ("experienceslug", limit(0)),
        ("experienceuser", limit(0)),
        ("experienceversion", limit(0)),
        ("experienceview", limit(0)),
        ("file", limit(0)),
        ("flow", limit(0)),
        ("integration", limit(0)),
        ("notebook", limit(0)),
        ("privatefile", limit(0)),
        ("resourcejob", limit(0)),
        ("webhook", limit(0)),
        ("dataTTL", limit(86400)),
        ("member", limit(0)),
        ("payload", limit(0)),
        ("storage", limit(0)),
        ("notebookMinutesPerRun", limit(0)),
        ("notebookMinutesPerMonth", limit(0)),
        ("notebookInParallel", limit(0)),
        ("experienceFlowSlots", limit(0)),
        ("applicationFlowSlots", limit(0)),
        (
            "systemInterval",
            Schema::Integer {
                min: Some(5),
                max: Some(3600),
            },
        ),
    ],
    required: &[],
    additional: false,
};

/// `instanceOrgPatch`.
pub(crate) static INSTANCE_ORG_PATCH: Schema = Schema::Object {
    properties: &[
        ("name", ORG_NAME),
        ("description", DESCRIPTION),
        ("iconColor", ICON_COLOR),
        ("limits", LIMITS),
        (
            "whitelistedEmailDomains",
            Schema::Array {
                items: &Schema::string(3, 45, Format::Any),
                max_items: usize::MAX,
            },
        ),
        ("auditLogEnabled", Schema::Boolean),
        ("disabledAt", Schema::DateTimeOrBoolean),
        ("isReadOnly", Schema::Boolean),
        (
            "tags",
            Schema::Array {
                items: &Schema::Object {
                    properties: &[
                        ("key", Schema::string(1, 255, Format::TagKey)),
                        ("value", Schema::string(1, 255, Format::Any)),
                    ],
                    required: &["key", "value"],
                    additional: false,
                },
                max_items: 100,
            },
        ),
        ("referralId", TEXT_1024),
        ("mfaMode", Schema::one_of(MFA_MODES)),
        (
            "banner",
            Schema::Object {
                properties: &[
                    ("message", Schema::string(0, 2048, Format::Any)),
                    ("level", Schema::one_of(&["info", "warning", "critical"])),
                ],
                required: &[],
                additional: false,
            },
        ),
    ],
    required: &[],
    additional: false,
};

/// The `summary` keys of `me` (`schemas/me.json`, in order).
pub(crate) const USER_SUMMARY_KEYS: &[&str] = &[
    "apiTokenCount",
    "appCount",
    "certificateCount",
    "certificateAuthorityCount",
    "credentialCount",
    "dashCount",
    "dataTableCount",
    "deviceCount",
    "deviceRecipeCount",
    "eventCount",
    "experienceDomainCount",
    "experienceEndpointCount",
    "experienceGroupCount",
    "experienceSlugCount",
    "experienceUserCount",
    "experienceVersionCount",
    "experienceViewCount",
    "fileCount",
    "flowCount",
    "integrationCount",
    "keyCount",
    "notebookCount",
    "resourceJobCount",
    "privateFileCount",
    "webhookCount",
    "orgCount",
    "instanceCount",
    "payloadCount",
    "storageStats",
    "notebookStats",
];

/// The `summary` keys of `org` and `instanceOrg` (`schemas/org.json`, in order).
pub(crate) const ORG_SUMMARY_KEYS: &[&str] = &[
    "apiTokenCount",
    "appCount",
    "certificateCount",
    "certificateAuthorityCount",
    "credentialCount",
    "dashCount",
    "dataTableCount",
    "deviceCount",
    "deviceRecipeCount",
    "eventCount",
    "experienceDomainCount",
    "experienceEndpointCount",
    "experienceGroupCount",
    "experienceSlugCount",
    "experienceUserCount",
    "experienceVersionCount",
    "experienceViewCount",
    "fileCount",
    "flowCount",
    "integrationCount",
    "keyCount",
    "notebookCount",
    "privateFileCount",
    "resourceJobCount",
    "webhookCount",
    "memberCount",
    "pendingInviteCount",
    "payloadCount",
    "storageStats",
    "notebookStats",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_schema_lists_every_limit_key() {
        let Schema::Object { properties, .. } = &LIMITS else {
            panic!("limits is an object")
        };
        let names: Vec<&str> = properties.iter().map(|(name, _)| *name).collect();
        let keys: Vec<&str> = ORG_LIMIT_KEYS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, keys);
        for ((_, schema), (_, min)) in properties.iter().zip(ORG_LIMIT_KEYS) {
            let Schema::Integer {
                min: Some(schema_min),
                ..
            } = schema
            else {
                panic!("integer")
            };
            assert_eq!(schema_min, min);
        }
    }
}
