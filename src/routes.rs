//! The declarative description of every RPC: which upstream call it becomes, how it is cached
//! and what it invalidates. This file is the one place that maps gRPC to REST; the shared code
//! in [`crate::gateway`] and [`crate::upstream`] does the rest.
//!
//! Request messages carry the upstream's path and query parameters as fields named after them
//! (`org_id` ⇄ `orgId`), so a route names each parameter once, by its upstream name, and the
//! field is found through the message's canonical JSON.

use http::Method;

/// The gRPC service an RPC belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `wnology.v1.MeService`
    Me,
    /// `wnology.v1.OrgService`
    Org,
    /// `wnology.v1.InstanceOrgService`
    InstanceOrg,
}

impl Service {
    /// The fully qualified gRPC service name.
    pub const fn grpc_name(self) -> &'static str {
        match self {
            Service::Me => "wnology.v1.MeService",
            Service::Org => "wnology.v1.OrgService",
            Service::InstanceOrg => "wnology.v1.InstanceOrgService",
        }
    }
}

/// How a query parameter's value is checked and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A 24-hex-character id.
    Id,
    /// Free text, sent as-is.
    Text,
    /// An integer, sent in decimal.
    Integer,
    /// A boolean, sent as `true` / `false`.
    Flag,
    /// A list of names, sent joined with commas.
    List,
    /// A Protobuf enum whose values stand for fixed upstream strings; `*_UNSPECIFIED` is omitted.
    Enum,
}

/// One upstream query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The upstream name, which is also the request field's JSON name.
    pub name: &'static str,
    /// How the value is checked and written.
    pub kind: ParamKind,
    /// Whether the upstream requires it.
    pub required: bool,
}

impl Param {
    const fn optional(name: &'static str, kind: ParamKind) -> Param {
        Param {
            name,
            kind,
            required: false,
        }
    }

    const fn required(name: &'static str, kind: ParamKind) -> Param {
        Param {
            name,
            kind,
            required: true,
        }
    }
}

/// The upstream JSON body of an action, carried in the request's `body` field.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    /// The body schema's required properties (upstream names), checked before the call.
    pub required_fields: &'static [&'static str],
}

/// How a successful answer may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheClass {
    /// Never cached: writes, and reads with side effects (`MeService/RefreshToken`).
    Never,
    /// Entities and lists (me, organizations, invitations, recent items).
    Entity,
    /// The high-volume usage reads (device, payload and notebook-minute counts).
    Usage,
}

/// A set of cached answers, named from one call's point of view. A route lists the scopes its
/// cached answers belong to (`Route::scopes`) and the scopes its success makes stale
/// (`Route::invalidates`); the cache resolves them against the call (`cache::Scope`).
/// Every answer also belongs to its caller's `CallerAll` and to `Everything`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every cached read of the organization named by the request's `orgId`, for every token.
    Org,
    /// Every cached `OrgService/List`, for every token.
    OrgLists,
    /// The caller's cached `MeService` reads.
    CallerMe,
    /// Everything cached for the caller's token.
    CallerAll,
    /// The organization named in the answer's `orgId` (an accepted invitation).
    AnswerOrg,
    /// The organization a transfer goes to (`body.destinationId` with `destinationType`
    /// `organization`).
    DestinationOrg,
    /// Every token's cached invitations (`MeService/Invites`, `MeService/Invite`): the invitee
    /// of an organization's invitation is another user, whose token the gateway cannot name.
    Invitations,
    /// Everything cached, for every token, when the write revokes the user's other tokens
    /// (`invalidateExistingTokens` or a new `tokenCutoff`): the gateway cannot tell which
    /// tokens belong to the user, so it drops them all.
    EverythingIfTokensRevoked,
    /// Everything cached, for every token, when the write sets a new password (`MePatch` with
    /// `password`), which revokes the user's other tokens.
    EverythingIfPasswordSet,
    /// Everything cached, for every token (the user is gone, and with it all its tokens).
    Everything,
}

/// One RPC's translation to the upstream REST call.
#[derive(Debug)]
pub struct Route {
    /// The gRPC service.
    pub service: Service,
    /// The gRPC method name (`PayloadCounts`).
    pub rpc: &'static str,
    /// The upstream action (`me.payloadCounts`).
    pub action: &'static str,
    /// The upstream HTTP method.
    pub method: Method,
    /// The upstream path template; `{name}` segments are 24-hex-character ids taken from the
    /// request field of that JSON name.
    pub path: &'static str,
    /// The upstream query parameters, in the order the official clients send them.
    pub query: &'static [Param],
    /// The JSON body, if the action takes one.
    pub body: Option<Body>,
    /// The upstream's documented success status.
    pub success: u16,
    /// How the answer may be cached.
    pub cache: CacheClass,
    /// The scopes a cached answer belongs to, beyond its caller's `CallerAll` and
    /// `Everything`: a write that invalidates one of them makes the answer stale.
    pub scopes: &'static [Scope],
    /// What a success makes stale.
    pub invalidates: &'static [Scope],
}

impl Route {
    /// Whether the upstream call is a read (GET), and so safe to retry.
    pub fn is_read(&self) -> bool {
        self.method == Method::GET
    }

    /// The names of the `{placeholders}` of the path template, in order.
    pub fn path_params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
    }

    /// The gRPC method path, `/wnology.v1.MeService/PayloadCounts`.
    pub fn grpc_path(&self) -> String {
        format!("/{}", self.full_method())
    }

    /// The fully qualified method, `wnology.v1.MeService/PayloadCounts` (formatted lazily).
    pub fn full_method(&self) -> impl std::fmt::Display + '_ {
        struct FullMethod<'a>(&'a Route);
        impl std::fmt::Display for FullMethod<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}/{}", self.0.service.grpc_name(), self.0.rpc)
            }
        }
        FullMethod(self)
    }
}

/// The upstream string for a query enum value, by its Protobuf name; `None` for
/// `*_UNSPECIFIED` and unknown names.
pub fn enum_query_value(proto_name: &str) -> Option<&'static str> {
    Some(match proto_name {
        "SORT_FIELD_NAME" => "name",
        "SORT_FIELD_ID" => "id",
        "SORT_FIELD_CREATION_DATE" => "creationDate",
        "SORT_FIELD_LAST_UPDATED" => "lastUpdated",
        "SORT_DIRECTION_ASC" => "asc",
        "SORT_DIRECTION_DESC" => "desc",
        "FILTER_FIELD_NAME" => "name",
        "ITEM_TYPE_APPLICATION" => "application",
        "ITEM_TYPE_DEVICE" => "device",
        "ITEM_TYPE_FLOW" => "flow",
        "ITEM_TYPE_DASHBOARD" => "dashboard",
        "ITEM_TYPE_ORGANIZATION" => "organization",
        "RESOLUTION_DAY" => "86400000",
        "RESOLUTION_HOUR" => "3600000",
        _ => return None,
    })
}

use CacheClass::{Entity, Never, Usage};
use ParamKind::{Enum, Flag, Id, Integer, List, Text};
use Scope::{
    AnswerOrg, CallerAll, CallerMe, DestinationOrg, Everything, EverythingIfPasswordSet,
    EverythingIfTokensRevoked, Invitations, Org, OrgLists,
};

/// `MeService/AddRecentItem`: Adds an item to a recent item list.
pub static ME_ADD_RECENT_ITEM: Route = Route {
    service: Service::Me,
    rpc: "AddRecentItem",
    action: "me.addRecentItem",
    method: Method::POST,
    path: "/me/recentItems",
    query: &[],
    body: Some(Body {
        required_fields: &["itemType", "itemId"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe],
};

/// `MeService/ChangePassword`: Changes the current user's password and optionally logs out all other sessions.
pub static ME_CHANGE_PASSWORD: Route = Route {
    service: Service::Me,
    rpc: "ChangePassword",
    action: "me.changePassword",
    method: Method::PATCH,
    path: "/me/changePassword",
    query: &[],
    body: Some(Body {
        required_fields: &["password", "newPassword"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe, EverythingIfTokensRevoked],
};

/// `MeService/Delete`: Deletes the current user.
pub static ME_DELETE: Route = Route {
    service: Service::Me,
    rpc: "Delete",
    action: "me.delete",
    method: Method::POST,
    path: "/me/delete",
    query: &[],
    body: Some(Body {
        required_fields: &["email", "password"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Everything],
};

/// `MeService/DeviceCounts`: Returns device counts by day for the time range specified for all applications the current user owns.
pub static ME_DEVICE_COUNTS: Route = Route {
    service: Service::Me,
    rpc: "DeviceCounts",
    action: "me.deviceCounts",
    method: Method::GET,
    path: "/me/deviceCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[CallerMe],
    invalidates: &[],
};

/// `MeService/DisableTwoFactorAuth`: Disables multi-factor authentication for the current user.
pub static ME_DISABLE_TWO_FACTOR_AUTH: Route = Route {
    service: Service::Me,
    rpc: "DisableTwoFactorAuth",
    action: "me.disableTwoFactorAuth",
    method: Method::PATCH,
    path: "/me/disableTwoFactorAuth",
    query: &[
        Param::optional("includeRecent", Flag),
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: Some(Body {
        required_fields: &["password", "twoFactorCode"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe],
};

/// `MeService/DisconnectGithub`: Disconnects the user from Github.
pub static ME_DISCONNECT_GITHUB: Route = Route {
    service: Service::Me,
    rpc: "DisconnectGithub",
    action: "me.disconnectGithub",
    method: Method::PATCH,
    path: "/me/disconnectGithub",
    query: &[
        Param::optional("includeRecent", Flag),
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: None,
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe],
};

/// `MeService/EnableTwoFactorAuth`: Enables multi-factor authentication for the current user.
pub static ME_ENABLE_TWO_FACTOR_AUTH: Route = Route {
    service: Service::Me,
    rpc: "EnableTwoFactorAuth",
    action: "me.enableTwoFactorAuth",
    method: Method::PATCH,
    path: "/me/enableTwoFactorAuth",
    query: &[
        Param::optional("includeRecent", Flag),
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: Some(Body {
        required_fields: &["password", "twoFactorCode"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe],
};

/// `MeService/FetchRecentItems`: Gets a recent item list.
pub static ME_FETCH_RECENT_ITEMS: Route = Route {
    service: Service::Me,
    rpc: "FetchRecentItems",
    action: "me.fetchRecentItems",
    method: Method::GET,
    path: "/me/recentItems",
    query: &[
        Param::optional("parentId", Id),
        Param::required("itemType", Enum),
    ],
    body: None,
    success: 200,
    cache: Entity,
    scopes: &[CallerMe],
    invalidates: &[],
};

/// `MeService/GenerateTwoFactorAuth`: Returns the multi-factor authentication key for the current user.
pub static ME_GENERATE_TWO_FACTOR_AUTH: Route = Route {
    service: Service::Me,
    rpc: "GenerateTwoFactorAuth",
    action: "me.generateTwoFactorAuth",
    method: Method::PATCH,
    path: "/me/generateTwoFactorAuth",
    query: &[],
    body: None,
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe],
};

/// `MeService/Get`: Retrieves information on the current user.
pub static ME_GET: Route = Route {
    service: Service::Me,
    rpc: "Get",
    action: "me.get",
    method: Method::GET,
    path: "/me",
    query: &[
        Param::optional("includeRecent", Flag),
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: None,
    success: 200,
    cache: Entity,
    scopes: &[CallerMe],
    invalidates: &[],
};

/// `MeService/Invite`: Retrieves information for an invitation to an organization.
pub static ME_INVITE: Route = Route {
    service: Service::Me,
    rpc: "Invite",
    action: "me.invite",
    method: Method::GET,
    path: "/me/invites/{inviteId}",
    query: &[],
    body: None,
    success: 200,
    cache: Entity,
    scopes: &[CallerMe, Invitations],
    invalidates: &[],
};

/// `MeService/Invites`: Retrieves pending organization invitations for a user.
pub static ME_INVITES: Route = Route {
    service: Service::Me,
    rpc: "Invites",
    action: "me.invites",
    method: Method::GET,
    path: "/me/invites",
    query: &[],
    body: None,
    success: 200,
    cache: Entity,
    scopes: &[CallerMe, Invitations],
    invalidates: &[],
};

/// `MeService/NotebookMinuteCounts`: Returns notebook execution usage by day for the time range specified for all applications the current user owns.
pub static ME_NOTEBOOK_MINUTE_COUNTS: Route = Route {
    service: Service::Me,
    rpc: "NotebookMinuteCounts",
    action: "me.notebookMinuteCounts",
    method: Method::GET,
    path: "/me/notebookMinuteCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[CallerMe],
    invalidates: &[],
};

/// `MeService/Patch`: Updates information about the current user.
pub static ME_PATCH: Route = Route {
    service: Service::Me,
    rpc: "Patch",
    action: "me.patch",
    method: Method::PATCH,
    path: "/me",
    query: &[
        Param::optional("includeRecent", Flag),
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: Some(Body {
        required_fields: &[],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe, EverythingIfTokensRevoked, EverythingIfPasswordSet],
};

/// `MeService/PayloadCounts`: Returns payload counts for the time range specified for all applications the current user owns.
pub static ME_PAYLOAD_COUNTS: Route = Route {
    service: Service::Me,
    rpc: "PayloadCounts",
    action: "me.payloadCounts",
    method: Method::GET,
    path: "/me/payloadCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
        Param::optional("asBytes", Flag),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[CallerMe],
    invalidates: &[],
};

/// `MeService/PayloadCountsBreakdown`: Returns payload counts per resolution in the time range specified for all applications the current user owns.
pub static ME_PAYLOAD_COUNTS_BREAKDOWN: Route = Route {
    service: Service::Me,
    rpc: "PayloadCountsBreakdown",
    action: "me.payloadCountsBreakdown",
    method: Method::GET,
    path: "/me/payloadCountsBreakdown",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
        Param::optional("resolution", Enum),
        Param::optional("asBytes", Flag),
        Param::optional("includeNonBillable", Flag),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[CallerMe],
    invalidates: &[],
};

/// `MeService/RefreshToken`: Returns a new auth token based on the current auth token.
pub static ME_REFRESH_TOKEN: Route = Route {
    service: Service::Me,
    rpc: "RefreshToken",
    action: "me.refreshToken",
    method: Method::GET,
    path: "/me/refreshToken",
    query: &[],
    body: None,
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerAll],
};

/// `MeService/RespondToInvite`: Accepts or rejects an invitation to an organization.
pub static ME_RESPOND_TO_INVITE: Route = Route {
    service: Service::Me,
    rpc: "RespondToInvite",
    action: "me.respondToInvite",
    method: Method::POST,
    path: "/me/invites/{inviteId}",
    query: &[],
    body: Some(Body {
        required_fields: &["action"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe, OrgLists, AnswerOrg, Invitations],
};

/// `MeService/TransferResources`: Moves resources to a new owner.
pub static ME_TRANSFER_RESOURCES: Route = Route {
    service: Service::Me,
    rpc: "TransferResources",
    action: "me.transferResources",
    method: Method::PATCH,
    path: "/me/transferResources",
    query: &[],
    body: Some(Body {
        required_fields: &["destinationId", "destinationType"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe, OrgLists, DestinationOrg],
};

/// `MeService/VerifyEmail`: Sends an email verification to the user.
pub static ME_VERIFY_EMAIL: Route = Route {
    service: Service::Me,
    rpc: "VerifyEmail",
    action: "me.verifyEmail",
    method: Method::POST,
    path: "/me/verify-email",
    query: &[],
    body: None,
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[CallerMe],
};

/// `OrgService/List`: Returns the organizations associated with the current user.
pub static ORG_LIST: Route = Route {
    service: Service::Org,
    rpc: "List",
    action: "orgs.get",
    method: Method::GET,
    path: "/orgs",
    query: &[
        Param::optional("sortField", Enum),
        Param::optional("sortDirection", Enum),
        Param::optional("page", Integer),
        Param::optional("perPage", Integer),
        Param::optional("filterField", Enum),
        Param::optional("filter", Text),
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: None,
    success: 200,
    cache: Entity,
    scopes: &[OrgLists],
    invalidates: &[],
};

/// `OrgService/Create`: Create a new organization.
pub static ORG_CREATE: Route = Route {
    service: Service::Org,
    rpc: "Create",
    action: "orgs.post",
    method: Method::POST,
    path: "/orgs",
    query: &[
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: Some(Body {
        required_fields: &["name"],
    }),
    success: 201,
    cache: Never,
    scopes: &[],
    invalidates: &[OrgLists, CallerMe],
};

/// `OrgService/Delete`: Deletes an organization.
pub static ORG_DELETE: Route = Route {
    service: Service::Org,
    rpc: "Delete",
    action: "org.delete",
    method: Method::DELETE,
    path: "/orgs/{orgId}",
    query: &[],
    body: None,
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists, CallerMe, Invitations],
};

/// `OrgService/DeviceCounts`: Returns device counts by day for the time range specified for this organization.
pub static ORG_DEVICE_COUNTS: Route = Route {
    service: Service::Org,
    rpc: "DeviceCounts",
    action: "org.deviceCounts",
    method: Method::GET,
    path: "/orgs/{orgId}/deviceCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[Org],
    invalidates: &[],
};

/// `OrgService/Get`: Retrieves information on an organization.
pub static ORG_GET: Route = Route {
    service: Service::Org,
    rpc: "Get",
    action: "org.get",
    method: Method::GET,
    path: "/orgs/{orgId}",
    query: &[
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: None,
    success: 200,
    cache: Entity,
    scopes: &[Org],
    invalidates: &[],
};

/// `OrgService/InviteMember`: Invites a person to an organization.
pub static ORG_INVITE_MEMBER: Route = Route {
    service: Service::Org,
    rpc: "InviteMember",
    action: "org.inviteMember",
    method: Method::POST,
    path: "/orgs/{orgId}/invites",
    query: &[],
    body: Some(Body {
        required_fields: &["email", "role"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists, Invitations],
};

/// `OrgService/ModifyMember`: Modifies a current org member's role.
pub static ORG_MODIFY_MEMBER: Route = Route {
    service: Service::Org,
    rpc: "ModifyMember",
    action: "org.modifyMember",
    method: Method::PATCH,
    path: "/orgs/{orgId}/member",
    query: &[
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: Some(Body {
        required_fields: &["userId"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists],
};

/// `OrgService/NotebookMinuteCounts`: Returns notebook execution usage by day for the time range specified for this organization.
pub static ORG_NOTEBOOK_MINUTE_COUNTS: Route = Route {
    service: Service::Org,
    rpc: "NotebookMinuteCounts",
    action: "org.notebookMinuteCounts",
    method: Method::GET,
    path: "/orgs/{orgId}/notebookMinuteCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[Org],
    invalidates: &[],
};

/// `OrgService/Patch`: Updates information about an organization.
pub static ORG_PATCH: Route = Route {
    service: Service::Org,
    rpc: "Patch",
    action: "org.patch",
    method: Method::PATCH,
    path: "/orgs/{orgId}",
    query: &[
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: Some(Body {
        required_fields: &[],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists],
};

/// `OrgService/PayloadCounts`: Returns payload counts for the time range specified for all applications this organization owns.
pub static ORG_PAYLOAD_COUNTS: Route = Route {
    service: Service::Org,
    rpc: "PayloadCounts",
    action: "org.payloadCounts",
    method: Method::GET,
    path: "/orgs/{orgId}/payloadCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
        Param::optional("asBytes", Flag),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[Org],
    invalidates: &[],
};

/// `OrgService/PayloadCountsBreakdown`: Returns payload counts per resolution in the time range specified for all application this organization owns.
pub static ORG_PAYLOAD_COUNTS_BREAKDOWN: Route = Route {
    service: Service::Org,
    rpc: "PayloadCountsBreakdown",
    action: "org.payloadCountsBreakdown",
    method: Method::GET,
    path: "/orgs/{orgId}/payloadCountsBreakdown",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
        Param::optional("resolution", Enum),
        Param::optional("asBytes", Flag),
        Param::optional("includeNonBillable", Flag),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[Org],
    invalidates: &[],
};

/// `OrgService/PendingInvites`: Gets the current pending invites.
pub static ORG_PENDING_INVITES: Route = Route {
    service: Service::Org,
    rpc: "PendingInvites",
    action: "org.pendingInvites",
    method: Method::GET,
    path: "/orgs/{orgId}/invites",
    query: &[],
    body: None,
    success: 200,
    cache: Entity,
    scopes: &[Org],
    invalidates: &[],
};

/// `OrgService/RemoveMember`: Removes a member from the org.
pub static ORG_REMOVE_MEMBER: Route = Route {
    service: Service::Org,
    rpc: "RemoveMember",
    action: "org.removeMember",
    method: Method::DELETE,
    path: "/orgs/{orgId}/member",
    query: &[
        Param::required("userId", Id),
        Param::optional("summaryExclude", List),
        Param::optional("summaryInclude", List),
    ],
    body: None,
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists],
};

/// `OrgService/RevokeInvite`: Revokes an existing invite.
pub static ORG_REVOKE_INVITE: Route = Route {
    service: Service::Org,
    rpc: "RevokeInvite",
    action: "org.revokeInvite",
    method: Method::DELETE,
    path: "/orgs/{orgId}/invites",
    query: &[Param::required("inviteId", Id)],
    body: None,
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists, Invitations],
};

/// `OrgService/TransferResources`: Moves resources to a new owner.
pub static ORG_TRANSFER_RESOURCES: Route = Route {
    service: Service::Org,
    rpc: "TransferResources",
    action: "org.transferResources",
    method: Method::PATCH,
    path: "/orgs/{orgId}/transferResources",
    query: &[],
    body: Some(Body {
        required_fields: &["destinationId", "destinationType"],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists, CallerMe, DestinationOrg],
};

/// `InstanceOrgService/Delete`: Deletes an organization.
pub static INSTANCE_ORG_DELETE: Route = Route {
    service: Service::InstanceOrg,
    rpc: "Delete",
    action: "instanceOrg.delete",
    method: Method::DELETE,
    path: "/instances/{instanceId}/orgs/{orgId}",
    query: &[],
    body: None,
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists, CallerMe, Invitations],
};

/// `InstanceOrgService/DeviceCounts`: Returns device counts by day for the time range specified for this organization.
pub static INSTANCE_ORG_DEVICE_COUNTS: Route = Route {
    service: Service::InstanceOrg,
    rpc: "DeviceCounts",
    action: "instanceOrg.deviceCounts",
    method: Method::GET,
    path: "/instances/{instanceId}/orgs/{orgId}/deviceCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[Org],
    invalidates: &[],
};

/// `InstanceOrgService/Get`: Retrieves information on an organization.
pub static INSTANCE_ORG_GET: Route = Route {
    service: Service::InstanceOrg,
    rpc: "Get",
    action: "instanceOrg.get",
    method: Method::GET,
    path: "/instances/{instanceId}/orgs/{orgId}",
    query: &[Param::optional("summaryInclude", List)],
    body: None,
    success: 200,
    cache: Entity,
    scopes: &[Org],
    invalidates: &[],
};

/// `InstanceOrgService/NotebookMinuteCounts`: Returns notebook execution usage by day for the time range specified for this organization.
pub static INSTANCE_ORG_NOTEBOOK_MINUTE_COUNTS: Route = Route {
    service: Service::InstanceOrg,
    rpc: "NotebookMinuteCounts",
    action: "instanceOrg.notebookMinuteCounts",
    method: Method::GET,
    path: "/instances/{instanceId}/orgs/{orgId}/notebookMinuteCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[Org],
    invalidates: &[],
};

/// `InstanceOrgService/Patch`: Updates information about an organization.
pub static INSTANCE_ORG_PATCH: Route = Route {
    service: Service::InstanceOrg,
    rpc: "Patch",
    action: "instanceOrg.patch",
    method: Method::PATCH,
    path: "/instances/{instanceId}/orgs/{orgId}",
    query: &[Param::optional("summaryInclude", List)],
    body: Some(Body {
        required_fields: &[],
    }),
    success: 200,
    cache: Never,
    scopes: &[],
    invalidates: &[Org, OrgLists],
};

/// `InstanceOrgService/PayloadCounts`: Returns payload counts for the time range specified for all applications this organization owns.
pub static INSTANCE_ORG_PAYLOAD_COUNTS: Route = Route {
    service: Service::InstanceOrg,
    rpc: "PayloadCounts",
    action: "instanceOrg.payloadCounts",
    method: Method::GET,
    path: "/instances/{instanceId}/orgs/{orgId}/payloadCounts",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
        Param::optional("asBytes", Flag),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[Org],
    invalidates: &[],
};

/// `InstanceOrgService/PayloadCountsBreakdown`: Returns payload counts per resolution in the time range specified for all application this organization owns.
pub static INSTANCE_ORG_PAYLOAD_COUNTS_BREAKDOWN: Route = Route {
    service: Service::InstanceOrg,
    rpc: "PayloadCountsBreakdown",
    action: "instanceOrg.payloadCountsBreakdown",
    method: Method::GET,
    path: "/instances/{instanceId}/orgs/{orgId}/payloadCountsBreakdown",
    query: &[
        Param::optional("start", Integer),
        Param::optional("end", Integer),
        Param::optional("resolution", Enum),
        Param::optional("asBytes", Flag),
        Param::optional("includeNonBillable", Flag),
    ],
    body: None,
    success: 200,
    cache: Usage,
    scopes: &[Org],
    invalidates: &[],
};

/// Every route, in the order of the upstream reference.
pub static ROUTES: [&Route; 42] = [
    &ME_ADD_RECENT_ITEM,
    &ME_CHANGE_PASSWORD,
    &ME_DELETE,
    &ME_DEVICE_COUNTS,
    &ME_DISABLE_TWO_FACTOR_AUTH,
    &ME_DISCONNECT_GITHUB,
    &ME_ENABLE_TWO_FACTOR_AUTH,
    &ME_FETCH_RECENT_ITEMS,
    &ME_GENERATE_TWO_FACTOR_AUTH,
    &ME_GET,
    &ME_INVITE,
    &ME_INVITES,
    &ME_NOTEBOOK_MINUTE_COUNTS,
    &ME_PATCH,
    &ME_PAYLOAD_COUNTS,
    &ME_PAYLOAD_COUNTS_BREAKDOWN,
    &ME_REFRESH_TOKEN,
    &ME_RESPOND_TO_INVITE,
    &ME_TRANSFER_RESOURCES,
    &ME_VERIFY_EMAIL,
    &ORG_LIST,
    &ORG_CREATE,
    &ORG_DELETE,
    &ORG_DEVICE_COUNTS,
    &ORG_GET,
    &ORG_INVITE_MEMBER,
    &ORG_MODIFY_MEMBER,
    &ORG_NOTEBOOK_MINUTE_COUNTS,
    &ORG_PATCH,
    &ORG_PAYLOAD_COUNTS,
    &ORG_PAYLOAD_COUNTS_BREAKDOWN,
    &ORG_PENDING_INVITES,
    &ORG_REMOVE_MEMBER,
    &ORG_REVOKE_INVITE,
    &ORG_TRANSFER_RESOURCES,
    &INSTANCE_ORG_DELETE,
    &INSTANCE_ORG_DEVICE_COUNTS,
    &INSTANCE_ORG_GET,
    &INSTANCE_ORG_NOTEBOOK_MINUTE_COUNTS,
    &INSTANCE_ORG_PATCH,
    &INSTANCE_ORG_PAYLOAD_COUNTS,
    &INSTANCE_ORG_PAYLOAD_COUNTS_BREAKDOWN,
];

/// The Markdown table of every RPC and its upstream call, as README.md carries it.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| RPC | Upstream call | Action | Body | Success | Cache |\n|---|---|---|---|---|---|\n",
    );
    for route in ROUTES {
        let query: Vec<String> = route
            .query
            .iter()
            .map(|p| {
                if p.required {
                    format!("{}=…", p.name)
                } else {
                    format!("[{}]", p.name)
                }
            })
            .collect();
        let call = if query.is_empty() {
            format!("`{} {}`", route.method, route.path)
        } else {
            format!("`{} {}?{}`", route.method, route.path, query.join("&"))
        };
        let short_service = route.service.grpc_name().trim_start_matches("wnology.v1.");
        table.push_str(&format!(
            "| `{short_service}/{}` | {call} | `{}` | {} | {} | {} |\n",
            route.rpc,
            route.action,
            if route.body.is_some() { "yes" } else { "–" },
            route.success,
            match route.cache {
                CacheClass::Never => "never",
                CacheClass::Entity => "entity",
                CacheClass::Usage => "usage",
            },
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_rpc_of_the_contract_has_exactly_one_route() {
        let pool = crate::json::descriptor_pool();
        let mut contract = HashSet::new();
        for service in pool.services() {
            for method in service.methods() {
                contract.insert(format!("/{}/{}", service.full_name(), method.name()));
            }
        }
        let routed: HashSet<String> = ROUTES.iter().map(|r| r.grpc_path()).collect();
        assert_eq!(routed.len(), 42, "duplicate routes");
        assert_eq!(contract, routed);
    }

    /// The proto comments restate each RPC's upstream call for readers of the contract: they
    /// must say what the route table does.
    #[test]
    fn proto_comments_state_each_routes_upstream_call() {
        let protos = [
            (Service::Me, include_str!("../proto/wnology/v1/me.proto")),
            (Service::Org, include_str!("../proto/wnology/v1/org.proto")),
            (
                Service::InstanceOrg,
                include_str!("../proto/wnology/v1/instance_org.proto"),
            ),
        ];
        for route in ROUTES {
            let (_, text) = protos.iter().find(|(s, _)| *s == route.service).unwrap();
            let declaration = format!("  rpc {}(", route.rpc);
            let at = text
                .find(&declaration)
                .unwrap_or_else(|| panic!("{}", route.rpc));
            // The comment block right above the declaration.
            let comment: Vec<&str> = text[..at]
                .lines()
                .rev()
                .take_while(|line| line.trim_start().starts_with("//"))
                .collect();
            let expected = format!(
                "  // Upstream: `{} {}` (action `{}`), {} on success.",
                route.method, route.path, route.action, route.success
            );
            assert!(
                comment.contains(&expected.as_str()),
                "{}: the proto comment does not say {expected:?}",
                route.rpc
            );
        }
    }

    #[test]
    fn request_messages_carry_every_route_parameter() {
        let pool = crate::json::descriptor_pool();
        for route in ROUTES {
            let service = pool.get_service_by_name(route.service.grpc_name()).unwrap();
            let method = service.methods().find(|m| m.name() == route.rpc).unwrap();
            let input = method.input();
            for name in route
                .path_params()
                .chain(route.query.iter().map(|p| p.name))
            {
                assert!(
                    input.get_field_by_json_name(name).is_some(),
                    "{}: no field for {name}",
                    route.rpc
                );
            }
            assert_eq!(
                input.get_field_by_name("body").is_some(),
                route.body.is_some(),
                "{}",
                route.rpc
            );
            // `clear_mask` shapes the body (`upstream::resolve`): only PATCH bodies have one.
            let clear_mask = input.get_field_by_name("clear_mask").is_some();
            assert!(
                !clear_mask || (route.body.is_some() && route.method == Method::PATCH),
                "{}: clear_mask without a PATCH body",
                route.rpc
            );
            let known = route.path_params().count()
                + route.query.len()
                + usize::from(route.body.is_some())
                + usize::from(clear_mask);
            assert_eq!(
                input.fields().count(),
                known,
                "{}: a field the route ignores",
                route.rpc
            );
        }
    }

    #[test]
    fn only_reads_are_cached_and_writes_are_not() {
        for route in ROUTES {
            if route.cache != CacheClass::Never {
                assert!(
                    route.is_read() && route.invalidates.is_empty(),
                    "{}",
                    route.rpc
                );
            }
        }
        assert_eq!(ME_REFRESH_TOKEN.cache, CacheClass::Never);
    }

    #[test]
    fn readme_rpc_table_matches_the_routes() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(&markdown_table()),
            "README.md's RPC table is stale: run `wnology-gateway routes`"
        );
    }
}
