//! End-to-end tests through the gateway's gRPC surface against the sandbox.
//!
//! Each test starts a sandbox (the in-memory simulator of the upstream REST API) on
//! `127.0.0.1:0` and the real gateway in front of it, and talks only gRPC, through the
//! generated clients, with the sandbox's documented tokens: sessions of real users (create,
//! list, patch, invite, accept, usage, delete), scope and role refusals, expired invitations,
//! the sandbox's validation messages, credentials (passwords, two-factor, token refresh),
//! resource transfers, instance organizations, and per-user usage through the cache.
//!
//! The gateway caches reads (`x-cache` metadata) and writes invalidate what they change, so
//! every read that follows a write is checked to be fresh, also across users.
#![cfg(feature = "sandbox")]

use std::time::Duration;

use crate::support::with_token;
use crate::support_sandbox::*;
use futures_util::future::join_all;
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::{
    proto::{self, OrgListRequest},
    sandbox::{
        DEMO_INSTANCE_ID, DEMO_INVITE_ID, DEMO_ORG_ID, DEMO_TOKEN, DEMO_USER_APPLICATION_ID,
        DEMO_USER_DASHBOARD_ID, DEMO_USER_EMAIL, DEMO_USER_ID, DEMO_USER_PASSWORD,
        EXPIRED_INVITE_ID, INSTANCE_ADMIN_TOKEN, INSTANCE_ONLY_ORG_ID, INSTANCE_ORG_ID,
        ORG_READ_TOKEN, SECOND_USER_EMAIL, SECOND_USER_ID, SECOND_USER_TOKEN, TWO_FACTOR_CODE,
        USER_READ_TOKEN,
    },
};

/// 2025-06-02T00:00:00.000Z (a Monday), in ms since the epoch: usage windows start here.
const START: i64 = 1_748_822_400_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// "acme-labs": the demo user is its only (admin) member.
const ACME_LABS_ORG_ID: &str = "665020000000000000000002";
/// An application of the second user's organization, which the demo user does not own.
const SECOND_ORG_APPLICATION_ID: &str = "665050000000000000000005";
/// The message of a 401 from the sandbox.
const REVOKED: &str = "Invalid, expired or revoked token";

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

/// `OrgService/List` of the session's organizations: name glob, name descending, one page.
fn session_orgs(page: u32, per_page: u32) -> OrgListRequest {
    OrgListRequest {
        sort_field: proto::SortField::Name.into(),
        sort_direction: proto::SortDirection::Desc.into(),
        page: Some(page),
        per_page: Some(per_page),
        filter_field: proto::FilterField::Name.into(),
        filter: "E2E Session *".into(),
        summary_exclude: Vec::new(),
        summary_include: vec!["memberCount".into()],
    }
}

fn names(orgs: &proto::Orgs) -> Vec<&str> {
    orgs.items
        .iter()
        .map(|org| org.name.as_deref().unwrap_or_default())
        .collect()
}

fn member_role<'a>(org: &'a proto::Org, user_id: &str) -> Option<&'a str> {
    org.members
        .iter()
        .find(|member| member.user_id.as_deref() == Some(user_id))
        .and_then(|member| member.role.as_deref())
}

fn ms(timestamp: &Option<pbjson_types::Timestamp>) -> i64 {
    let timestamp = timestamp.as_ref().expect("a date");
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

/// The sum of every number of a `PayloadStats` (all types, all sources).
fn payload_total(stats: &proto::PayloadStats) -> f64 {
    stats.types().iter().flat_map(|map| map.values()).sum()
}

fn non_empty_types(stats: &proto::PayloadStats) -> usize {
    stats.types().iter().filter(|map| !map.is_empty()).count()
}

/// Checks that a series has one point per `step` from `start`, and that `start`/`end` are
/// echoed.
#[track_caller]
fn assert_series(
    what: &str,
    start: &Option<pbjson_types::Timestamp>,
    end: &Option<pbjson_types::Timestamp>,
    dates: &[i64],
    window: (i64, i64),
    step: i64,
    points: usize,
) {
    assert_eq!(ms(start), window.0, "{what}: start");
    assert_eq!(ms(end), window.1, "{what}: end");
    assert_eq!(dates.len(), points, "{what}: number of points");
    for (i, date) in dates.iter().enumerate() {
        assert_eq!(
            *date,
            window.0 + i as i64 * step,
            "{what}: date of point {i}"
        );
    }
}

// A realistic session.

#[tokio::test]
async fn a_session_creates_lists_patches_invites_reads_usage_and_deletes_with_fresh_reads() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;
    let mut instance = stack.gateway.instance_org().await;

    // Who am I; the second identical read is served from the cache.
    let reply = ok(
        "me.get",
        me.get(with_token(proto::MeGetRequest::default(), DEMO_TOKEN))
            .await,
    );
    assert_eq!(x_cache(&reply), "miss");
    let dana = reply.into_inner();
    assert_eq!(dana.id.as_deref(), Some(DEMO_USER_ID));
    assert_eq!(dana.email.as_deref(), Some(DEMO_USER_EMAIL));
    let org_count = dana.summary.as_ref().and_then(|s| s.org_count).unwrap();
    let reply = ok(
        "me.get",
        me.get(with_token(proto::MeGetRequest::default(), DEMO_TOKEN))
            .await,
    );
    assert_eq!(x_cache(&reply), "hit");
    assert_eq!(reply.into_inner(), dana);

    // No session organization yet; the list is cached.
    let reply = ok(
        "orgs.get",
        orgs.list(with_token(session_orgs(0, 2), DEMO_TOKEN)).await,
    );
    assert_eq!(x_cache(&reply), "miss");
    assert_eq!(reply.into_inner().total_count, Some(0));
    let reply = ok(
        "orgs.get",
        orgs.list(with_token(session_orgs(0, 2), DEMO_TOKEN)).await,
    );
    assert_eq!(x_cache(&reply), "hit");

    // Create three organizations.
    let mut ids = Vec::new();
    for name in [
        "E2E Session Alpha",
        "E2E Session Bravo",
        "E2E Session Charlie",
    ] {
        let reply = ok(
            "orgs.post",
            orgs.create(with_token(
                proto::OrgCreateRequest {
                    body: Some(proto::OrgPost {
                        name: s(name),
                        description: s("made by the e2e session"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                DEMO_TOKEN,
            ))
            .await,
        );
        assert_eq!(x_cache(&reply), "-", "writes are never cached");
        let org = reply.into_inner();
        assert_eq!(org.name.as_deref(), Some(name));
        let id = org.id.clone().unwrap();
        assert!(is_id(&id), "{id}");
        assert_eq!(org.org_id.as_deref(), Some(id.as_str()));
        assert_eq!(member_role(&org, DEMO_USER_ID), Some("admin"));
        assert_eq!(org.members.len(), 1);
        ids.push(id);
    }
    let alpha = ids[0].clone();

    // The list is fresh after the writes: filter (glob), sort (name, descending) and paging.
    let reply = ok(
        "orgs.get",
        orgs.list(with_token(session_orgs(0, 2), DEMO_TOKEN)).await,
    );
    assert_eq!(x_cache(&reply), "miss", "the creates invalidated the list");
    let page = reply.into_inner();
    assert_eq!(names(&page), ["E2E Session Charlie", "E2E Session Bravo"]);
    assert_eq!(
        (page.count, page.total_count, page.page, page.per_page),
        (Some(2), Some(3), Some(0), Some(2))
    );
    assert_eq!(page.filter.as_deref(), Some("E2E Session *"));
    assert_eq!(page.filter_field.as_deref(), Some("name"));
    assert_eq!(page.sort_field.as_deref(), Some("name"));
    assert_eq!(page.sort_direction.as_deref(), Some("desc"));
    // `summaryInclude` narrowed every item's summary to the member count.
    let summary = page.items[0].summary.clone().unwrap();
    assert_eq!(summary.member_count, Some(1));
    assert_eq!(summary.payload_count, None);
    let page = ok(
        "orgs.get",
        orgs.list(with_token(session_orgs(1, 2), DEMO_TOKEN)).await,
    )
    .into_inner();
    assert_eq!(names(&page), ["E2E Session Alpha"]);
    assert_eq!(
        (page.count, page.total_count, page.page, page.per_page),
        (Some(1), Some(3), Some(1), Some(2))
    );
    // The glob is case-insensitive and `?` is one character.
    let page = ok(
        "orgs.get",
        orgs.list(with_token(
            OrgListRequest {
                filter_field: proto::FilterField::Name.into(),
                filter: "e2e session ?lpha".into(),
                ..Default::default()
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(names(&page), ["E2E Session Alpha"]);
    assert_eq!(page.sort_field.as_deref(), Some("name"), "default sort");
    assert_eq!(page.sort_direction.as_deref(), Some("asc"));

    // `me` is fresh after the creates: three more organizations.
    let reply = ok(
        "me.get",
        me.get(with_token(proto::MeGetRequest::default(), DEMO_TOKEN))
            .await,
    );
    assert_eq!(x_cache(&reply), "miss");
    let summary = reply.into_inner().summary.unwrap();
    assert_eq!(summary.org_count, Some(org_count + 3));

    // Patch one; the cached organization and list are fresh afterwards.
    let get_alpha = || {
        with_token(
            proto::OrgGetRequest {
                org_id: alpha.clone(),
                ..Default::default()
            },
            DEMO_TOKEN,
        )
    };
    let before = ok("org.get", orgs.get(get_alpha()).await);
    assert_eq!(x_cache(&before), "miss");
    let before = before.into_inner();
    assert_eq!(x_cache(&ok("org.get", orgs.get(get_alpha()).await)), "hit");
    let patched = ok(
        "org.patch",
        orgs.patch(with_token(
            proto::OrgPatchRequest {
                org_id: alpha.clone(),
                body: Some(proto::OrgPatch {
                    name: s("E2E Session Alpha Renamed"),
                    description: s("patched by the e2e session"),
                    icon_color: s("#123456"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(patched.name.as_deref(), Some("E2E Session Alpha Renamed"));
    let reply = ok("org.get", orgs.get(get_alpha()).await);
    assert_eq!(
        x_cache(&reply),
        "miss",
        "the patch invalidated the organization"
    );
    let after = reply.into_inner();
    assert_eq!(after.name.as_deref(), Some("E2E Session Alpha Renamed"));
    assert_eq!(
        after.description.as_deref(),
        Some("patched by the e2e session")
    );
    assert_eq!(after.icon_color.as_deref(), Some("#123456"));
    assert_eq!(after.creation_date, before.creation_date);
    assert!(ms(&after.last_updated) >= ms(&before.last_updated));
    let reply = ok(
        "orgs.get",
        orgs.list(with_token(session_orgs(1, 2), DEMO_TOKEN)).await,
    );
    assert_eq!(x_cache(&reply), "miss");
    assert_eq!(names(&reply.into_inner()), ["E2E Session Alpha Renamed"]);

    // Invite the second user as an editor.
    let invites = ok(
        "org.inviteMember",
        orgs.invite_member(with_token(
            proto::OrgInviteMemberRequest {
                org_id: alpha.clone(),
                body: Some(proto::OrgInvitePost {
                    email: s(SECOND_USER_EMAIL),
                    role: s("edit"),
                    ..Default::default()
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(invites.items.len(), 1);
    let invite = &invites.items[0];
    assert_eq!(invite.email.as_deref(), Some(SECOND_USER_EMAIL));
    assert_eq!(invite.role.as_deref(), Some("edit"));
    assert_eq!(invite.has_expired, Some(false));
    let invite_id = invite.id.clone().unwrap();

    // The second user sees it, reads it and accepts it.
    let reply = ok(
        "me.invites",
        me.invites(with_token(proto::MeInvitesRequest {}, SECOND_USER_TOKEN))
            .await,
    );
    assert_eq!(x_cache(&reply), "miss");
    let mine = reply.into_inner();
    let listed = mine
        .items
        .iter()
        .find(|i| i.id.as_deref() == Some(invite_id.as_str()))
        .expect("the invitation is listed")
        .clone();
    assert_eq!(
        listed.org_name.as_deref(),
        Some("E2E Session Alpha Renamed")
    );
    assert_eq!(listed.role.as_deref(), Some("edit"));
    assert_eq!(listed.expired, Some(false));
    assert_eq!(
        listed.invited_by.as_ref().and_then(|b| b.email.as_deref()),
        Some(DEMO_USER_EMAIL)
    );
    let one = ok(
        "me.invite",
        me.invite(with_token(
            proto::MeInviteRequest {
                invite_id: invite_id.clone(),
            },
            SECOND_USER_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(one, listed);
    let get_alpha_as_second = || {
        with_token(
            proto::OrgGetRequest {
                org_id: alpha.clone(),
                ..Default::default()
            },
            SECOND_USER_TOKEN,
        )
    };
    let status = err("org.get", orgs.get(get_alpha_as_second()).await);
    assert_upstream_error(
        &status,
        Code::NotFound,
        404,
        "NotFound",
        &format!("Organization {alpha} was not found"),
    );
    let second_list = || with_token(OrgListRequest::default(), SECOND_USER_TOKEN);
    let before = ok("orgs.get", orgs.list(second_list()).await).into_inner();
    assert!(!before.items.iter().any(|o| o.id.as_deref() == Some(&alpha)));
    let result = ok(
        "me.respondToInvite",
        me.respond_to_invite(with_token(
            proto::MeRespondToInviteRequest {
                invite_id: invite_id.clone(),
                body: Some(proto::OrgInviteActionUser {
                    action: s("accept"),
                }),
            },
            SECOND_USER_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(result.result.as_deref(), Some("accepted"));
    assert_eq!(result.org_id.as_deref(), Some(alpha.as_str()));

    // Fresh for the second user: no more invitation, the organization is listed and readable.
    let reply = ok(
        "me.invites",
        me.invites(with_token(proto::MeInvitesRequest {}, SECOND_USER_TOKEN))
            .await,
    );
    assert_eq!(x_cache(&reply), "miss");
    assert!(
        !reply
            .into_inner()
            .items
            .iter()
            .any(|i| i.id.as_deref() == Some(invite_id.as_str()))
    );
    let reply = ok("orgs.get", orgs.list(second_list()).await);
    assert_eq!(x_cache(&reply), "miss");
    assert_eq!(
        reply.into_inner().total_count,
        before.total_count.map(|n| n + 1)
    );
    let theirs = ok("org.get", orgs.get(get_alpha_as_second()).await).into_inner();
    assert_eq!(member_role(&theirs, SECOND_USER_ID), Some("edit"));

    // The member appears in the demo user's `OrgService/Get` (last read before the invitation).
    let reply = ok("org.get", orgs.get(get_alpha()).await);
    assert_eq!(x_cache(&reply), "miss");
    let org = reply.into_inner();
    assert_eq!(member_role(&org, SECOND_USER_ID), Some("edit"));
    assert_eq!(member_role(&org, DEMO_USER_ID), Some("admin"));
    let summary = org.summary.unwrap();
    assert_eq!(summary.member_count, Some(2));
    assert_eq!(summary.pending_invite_count, Some(0));

    // Usage: the user's, an organization's, an instance organization's; one point per bucket.
    let week = (START, START + 7 * DAY_MS - 1);
    let day = (START, START + DAY_MS - 1);
    let devices = ok(
        "me.deviceCounts",
        me.device_counts(with_token(
            proto::MeDeviceCountsRequest {
                start: Some(week.0),
                end: Some(week.1),
            },
            DEMO_TOKEN,
        ))
        .await,
    );
    assert_eq!(x_cache(&devices), "miss");
    let devices = devices.into_inner();
    let dates: Vec<i64> = devices.counts.iter().map(|c| ms(&c.date)).collect();
    assert_series(
        "me.deviceCounts",
        &devices.start,
        &devices.end,
        &dates,
        week,
        DAY_MS,
        7,
    );
    for pair in devices.counts.windows(2) {
        let (yesterday, today) = (&pair[0], &pair[1]);
        assert_eq!(
            today.total.unwrap() - yesterday.total.unwrap(),
            today.created.unwrap() - today.deleted.unwrap(),
            "device totals add up"
        );
    }
    let notebook = ok(
        "me.notebookMinuteCounts",
        me.notebook_minute_counts(with_token(
            proto::MeNotebookMinuteCountsRequest {
                start: Some(week.0),
                end: Some(week.1),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    let dates: Vec<i64> = notebook.counts.iter().map(|c| ms(&c.date)).collect();
    assert_series(
        "me.notebookMinuteCounts",
        &notebook.start,
        &notebook.end,
        &dates,
        week,
        DAY_MS,
        7,
    );
    let payloads = ok(
        "me.payloadCounts",
        me.payload_counts(with_token(
            proto::MePayloadCountsRequest {
                start: Some(week.0),
                end: Some(week.1),
                as_bytes: None,
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(non_empty_types(&payloads), 19);
    let breakdown = |start: i64, end: i64, resolution: proto::Resolution, all: bool| {
        with_token(
            proto::MePayloadCountsBreakdownRequest {
                start: Some(start),
                end: Some(end),
                resolution: resolution.into(),
                as_bytes: None,
                include_non_billable: Some(all),
            },
            DEMO_TOKEN,
        )
    };
    let hourly = ok(
        "me.payloadCountsBreakdown",
        me.payload_counts_breakdown(breakdown(day.0, day.1, proto::Resolution::Hour, false))
            .await,
    )
    .into_inner();
    let dates: Vec<i64> = hourly.counts.iter().map(|c| ms(&c.date)).collect();
    assert_series(
        "hourly breakdown",
        &hourly.start,
        &hourly.end,
        &dates,
        day,
        HOUR_MS,
        24,
    );
    let daily = ok(
        "me.payloadCountsBreakdown",
        me.payload_counts_breakdown(breakdown(day.0, day.1, proto::Resolution::Day, false))
            .await,
    )
    .into_inner();
    assert_eq!(daily.counts.len(), 1);
    let hours: i64 = hourly.counts.iter().map(|c| c.value.unwrap()).sum();
    assert_eq!(
        hours,
        daily.counts[0].value.unwrap(),
        "24 hours make the day"
    );
    let weekly = ok(
        "me.payloadCountsBreakdown",
        me.payload_counts_breakdown(breakdown(week.0, week.1, proto::Resolution::Day, true))
            .await,
    )
    .into_inner();
    assert_eq!(weekly.counts.len(), 7);
    let days: i64 = weekly.counts.iter().map(|c| c.value.unwrap()).sum();
    assert_eq!(
        days as f64,
        payload_total(&payloads),
        "the days make the week"
    );

    let six_hours = (START + 8 * HOUR_MS, START + 14 * HOUR_MS - 1);
    let org_hourly = ok(
        "org.payloadCountsBreakdown",
        orgs.payload_counts_breakdown(with_token(
            proto::OrgPayloadCountsBreakdownRequest {
                org_id: DEMO_ORG_ID.into(),
                start: Some(six_hours.0),
                end: Some(six_hours.1),
                resolution: proto::Resolution::Hour.into(),
                ..Default::default()
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    let dates: Vec<i64> = org_hourly.counts.iter().map(|c| ms(&c.date)).collect();
    assert_series(
        "org hourly breakdown",
        &org_hourly.start,
        &org_hourly.end,
        &dates,
        six_hours,
        HOUR_MS,
        6,
    );
    let org_devices = ok(
        "org.deviceCounts",
        orgs.device_counts(with_token(
            proto::OrgDeviceCountsRequest {
                org_id: DEMO_ORG_ID.into(),
                start: Some(week.0),
                end: Some(week.1),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(org_devices.counts.len(), 7);
    assert_ne!(
        org_devices, devices,
        "the organization's numbers are its own"
    );
    let org_notebook = ok(
        "org.notebookMinuteCounts",
        orgs.notebook_minute_counts(with_token(
            proto::OrgNotebookMinuteCountsRequest {
                org_id: DEMO_ORG_ID.into(),
                start: Some(week.0),
                end: Some(week.1),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(org_notebook.counts.len(), 7);
    let org_payloads = ok(
        "org.payloadCounts",
        orgs.payload_counts(with_token(
            proto::OrgPayloadCountsRequest {
                org_id: INSTANCE_ORG_ID.into(),
                start: Some(week.0),
                end: Some(week.1),
                as_bytes: None,
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    let instance_payloads = ok(
        "instanceOrg.payloadCounts",
        instance
            .payload_counts(with_token(
                proto::InstanceOrgPayloadCountsRequest {
                    instance_id: DEMO_INSTANCE_ID.into(),
                    org_id: INSTANCE_ORG_ID.into(),
                    start: Some(week.0),
                    end: Some(week.1),
                    as_bytes: None,
                },
                DEMO_TOKEN,
            ))
            .await,
    )
    .into_inner();
    assert_eq!(
        instance_payloads, org_payloads,
        "one organization, two paths"
    );
    let three_hours = (START, START + 3 * HOUR_MS - 1);
    let instance_hourly = ok(
        "instanceOrg.payloadCountsBreakdown",
        instance
            .payload_counts_breakdown(with_token(
                proto::InstanceOrgPayloadCountsBreakdownRequest {
                    instance_id: DEMO_INSTANCE_ID.into(),
                    org_id: INSTANCE_ORG_ID.into(),
                    start: Some(three_hours.0),
                    end: Some(three_hours.1),
                    resolution: proto::Resolution::Hour.into(),
                    ..Default::default()
                },
                DEMO_TOKEN,
            ))
            .await,
    )
    .into_inner();
    assert_eq!(instance_hourly.counts.len(), 3);
    let instance_devices = ok(
        "instanceOrg.deviceCounts",
        instance
            .device_counts(with_token(
                proto::InstanceOrgDeviceCountsRequest {
                    instance_id: DEMO_INSTANCE_ID.into(),
                    org_id: INSTANCE_ORG_ID.into(),
                    start: Some(week.0),
                    end: Some(week.0 + 2 * DAY_MS),
                },
                DEMO_TOKEN,
            ))
            .await,
    )
    .into_inner();
    assert_eq!(instance_devices.counts.len(), 3, "both ends count");
    let instance_notebook = ok(
        "instanceOrg.notebookMinuteCounts",
        instance
            .notebook_minute_counts(with_token(
                proto::InstanceOrgNotebookMinuteCountsRequest {
                    instance_id: DEMO_INSTANCE_ID.into(),
                    org_id: INSTANCE_ORG_ID.into(),
                    start: Some(week.0),
                    end: Some(week.1),
                },
                DEMO_TOKEN,
            ))
            .await,
    )
    .into_inner();
    assert_eq!(instance_notebook.counts.len(), 7);

    // Delete the session's organizations; every cached view of them is fresh afterwards.
    for id in &ids {
        let done = ok(
            "org.delete",
            orgs.delete(with_token(
                proto::OrgDeleteRequest { org_id: id.clone() },
                DEMO_TOKEN,
            ))
            .await,
        )
        .into_inner();
        assert_eq!(done.success, Some(true));
    }
    let status = err("org.get", orgs.get(get_alpha()).await);
    assert_upstream_error(
        &status,
        Code::NotFound,
        404,
        "NotFound",
        &format!("Organization {alpha} was not found"),
    );
    let page = ok(
        "orgs.get",
        orgs.list(with_token(session_orgs(0, 2), DEMO_TOKEN)).await,
    )
    .into_inner();
    assert_eq!((page.count, page.total_count), (Some(0), Some(0)));
    let theirs = ok("orgs.get", orgs.list(second_list()).await);
    assert_eq!(
        x_cache(&theirs),
        "miss",
        "deletes invalidate every token's lists"
    );
    assert_eq!(theirs.into_inner().total_count, before.total_count);
    let status = err("org.get", orgs.get(get_alpha_as_second()).await);
    assert_eq!(status.code(), Code::NotFound);
    let summary = ok(
        "me.get",
        me.get(with_token(proto::MeGetRequest::default(), DEMO_TOKEN))
            .await,
    )
    .into_inner()
    .summary
    .unwrap();
    assert_eq!(summary.org_count, Some(org_count));
}

// Refusals.

#[tokio::test]
async fn scopes_roles_and_tokens_are_enforced_by_the_sandbox_and_mapped_by_the_gateway() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;

    // What the narrower tokens may do.
    ok(
        "me.get",
        me.get(with_token(proto::MeGetRequest::default(), USER_READ_TOKEN))
            .await,
    );
    let acme = ok(
        "org.get",
        orgs.get(with_token(
            proto::OrgGetRequest {
                org_id: DEMO_ORG_ID.into(),
                ..Default::default()
            },
            ORG_READ_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(acme.name.as_deref(), Some("Acme Industrial IoT"));

    // What they may not.
    let sent = stack.upstream.requests();
    let status = err(
        "orgs.post",
        orgs.create(with_token(
            proto::OrgCreateRequest {
                body: Some(proto::OrgPost {
                    name: s("Not allowed"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            USER_READ_TOKEN,
        ))
        .await,
    );
    assert_upstream_error_containing(
        &status,
        Code::PermissionDenied,
        403,
        "Forbidden",
        "Token is missing a scope for orgs.post",
    );
    assert_eq!(
        stack.upstream.requests(),
        sent + 1,
        "the sandbox refused it"
    );
    let status = err(
        "me.patch",
        me.patch(with_token(
            proto::MePatchRequest {
                body: Some(proto::MePatch {
                    title: s("Nope"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            USER_READ_TOKEN,
        ))
        .await,
    );
    assert_upstream_error_containing(
        &status,
        Code::PermissionDenied,
        403,
        "Forbidden",
        "Token is missing a scope for me.patch",
    );
    let patch_acme = |token: &str| {
        with_token(
            proto::OrgPatchRequest {
                org_id: DEMO_ORG_ID.into(),
                body: Some(proto::OrgPatch {
                    description: s("Nope"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            token,
        )
    };
    let status = err("org.patch", orgs.patch(patch_acme(ORG_READ_TOKEN)).await);
    assert_upstream_error_containing(
        &status,
        Code::PermissionDenied,
        403,
        "Forbidden",
        "Token is missing a scope for org.patch",
    );
    // A full-scope token of a mere viewer is refused by role.
    let status = err("org.patch", orgs.patch(patch_acme(SECOND_USER_TOKEN)).await);
    assert_upstream_error(
        &status,
        Code::PermissionDenied,
        403,
        "Forbidden",
        &format!("This action requires the admin role in organization {DEMO_ORG_ID}"),
    );
    // The refusals changed nothing.
    let acme_again = ok(
        "org.get",
        orgs.get(with_token(
            proto::OrgGetRequest {
                org_id: DEMO_ORG_ID.into(),
                ..Default::default()
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(acme_again.description, acme.description);

    // A narrower token never reads what a broader one cached.
    let list = |token: &str| with_token(OrgListRequest::default(), token);
    assert_eq!(
        x_cache(&ok("orgs.get", orgs.list(list(DEMO_TOKEN)).await)),
        "miss"
    );
    assert_eq!(
        x_cache(&ok("orgs.get", orgs.list(list(DEMO_TOKEN)).await)),
        "hit"
    );
    assert_eq!(
        x_cache(&ok("orgs.get", orgs.list(list(USER_READ_TOKEN)).await)),
        "miss"
    );
    let status = err("orgs.get", orgs.list(list(ORG_READ_TOKEN)).await);
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "FORBIDDEN");

    // Unknown and missing tokens.
    let status = err(
        "me.get",
        me.get(with_token(
            proto::MeGetRequest::default(),
            "wnology-sandbox-no-such-token",
        ))
        .await,
    );
    assert_upstream_error(&status, Code::Unauthenticated, 401, "Unauthorized", REVOKED);
    let sent = stack.upstream.requests();
    let status = err(
        "me.get",
        me.get(tonic::Request::new(proto::MeGetRequest::default()))
            .await,
    );
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason(&status), "MISSING_TOKEN");
    assert_eq!(
        stack.upstream.requests(),
        sent,
        "refused before the sandbox"
    );
}

#[tokio::test]
async fn expired_invitations_are_failed_preconditions() {
    // The seeded invitation that expired in January 2025.
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let expired = ok(
        "me.invite",
        me.invite(with_token(
            proto::MeInviteRequest {
                invite_id: EXPIRED_INVITE_ID.into(),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(expired.expired, Some(true));
    let respond = |invite_id: &str, action: &str, token: &str| {
        with_token(
            proto::MeRespondToInviteRequest {
                invite_id: invite_id.into(),
                body: Some(proto::OrgInviteActionUser { action: s(action) }),
            },
            token,
        )
    };
    for action in ["accept", "reject"] {
        let status = err(
            "me.respondToInvite",
            me.respond_to_invite(respond(EXPIRED_INVITE_ID, action, DEMO_TOKEN))
                .await,
        );
        assert_upstream_error(
            &status,
            Code::FailedPrecondition,
            410,
            "InvitationExpired",
            &format!("Invitation {EXPIRED_INVITE_ID} has expired"),
        );
    }
    // Dismissing still works, and hides it.
    let dismissed = ok(
        "me.respondToInvite",
        me.respond_to_invite(respond(EXPIRED_INVITE_ID, "dismiss", DEMO_TOKEN))
            .await,
    )
    .into_inner();
    assert_eq!(dismissed.result.as_deref(), Some("dismissed"));
    let status = err(
        "me.invite",
        me.invite(with_token(
            proto::MeInviteRequest {
                invite_id: EXPIRED_INVITE_ID.into(),
            },
            DEMO_TOKEN,
        ))
        .await,
    );
    assert_eq!(status.code(), Code::NotFound);

    // A sandbox whose invitations live 1 ms: the seeded one and a new one both expire.
    let stack = Stack::start_with(invite_ttl(Duration::from_millis(1))).await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;
    let invites = ok(
        "org.inviteMember",
        orgs.invite_member(with_token(
            proto::OrgInviteMemberRequest {
                org_id: ACME_LABS_ORG_ID.into(),
                body: Some(proto::OrgInvitePost {
                    email: s(SECOND_USER_EMAIL),
                    role: s("view"),
                    ..Default::default()
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    let fresh = invites.items[0].id.clone().unwrap();
    assert_eq!(invites.items[0].ttl, Some(1.0));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seeded = ok(
        "me.invite",
        me.invite(with_token(
            proto::MeInviteRequest {
                invite_id: DEMO_INVITE_ID.into(),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!((seeded.ttl, seeded.expired), (Some(1.0), Some(true)));
    for (invite_id, token) in [
        (DEMO_INVITE_ID, DEMO_TOKEN),
        (fresh.as_str(), SECOND_USER_TOKEN),
    ] {
        let status = err(
            "me.respondToInvite",
            me.respond_to_invite(respond(invite_id, "accept", token))
                .await,
        );
        assert_upstream_error(
            &status,
            Code::FailedPrecondition,
            410,
            "InvitationExpired",
            &format!("Invitation {invite_id} has expired"),
        );
    }
    let pending = ok(
        "org.pendingInvites",
        orgs.pending_invites(with_token(
            proto::OrgPendingInvitesRequest {
                org_id: ACME_LABS_ORG_ID.into(),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(pending.items.len(), 1);
    assert_eq!(pending.items[0].has_expired, Some(true));
}

#[tokio::test]
async fn invalid_bodies_are_refused_by_the_sandbox_with_its_message_kept() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;

    // The gateway only checks required body fields; the sandbox validates the rest.
    let sent = stack.upstream.requests();
    let status = err(
        "org.patch",
        orgs.patch(with_token(
            proto::OrgPatchRequest {
                org_id: DEMO_ORG_ID.into(),
                body: Some(proto::OrgPatch {
                    name: Some("n".repeat(300)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            DEMO_TOKEN,
        ))
        .await,
    );
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        400,
        "Validation",
        "\"name\" must be at most 255 characters",
    );
    assert_eq!(stack.upstream.requests(), sent + 1);

    let change_password = |password: &str, new_password: &str| {
        with_token(
            proto::MeChangePasswordRequest {
                body: Some(proto::ChangePassword {
                    password: s(password),
                    new_password: s(new_password),
                    ..Default::default()
                }),
            },
            DEMO_TOKEN,
        )
    };
    let status = err(
        "me.changePassword",
        me.change_password(change_password(DEMO_USER_PASSWORD, "weakpassword"))
            .await,
    );
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        400,
        "Validation",
        "\"newPassword\" must contain an upper case letter, a digit, a symbol",
    );
    let status = err(
        "me.changePassword",
        me.change_password(change_password(
            "Not-The-Passw0rd!",
            "A-Much-Better-Passw0rd!",
        ))
        .await,
    );
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        400,
        "InvalidCredentials",
        "The password is incorrect",
    );

    let invite = |role: Option<String>| {
        with_token(
            proto::OrgInviteMemberRequest {
                org_id: DEMO_ORG_ID.into(),
                body: Some(proto::OrgInvitePost {
                    email: s("someone@example.com"),
                    role,
                    ..Default::default()
                }),
            },
            DEMO_TOKEN,
        )
    };
    let status = err(
        "org.inviteMember",
        orgs.invite_member(invite(s("owner"))).await,
    );
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        400,
        "Validation",
        "\"role\" must be one of [admin, edit, collaborate, view, none]",
    );

    // A missing required field, by contrast, is refused by the gateway before the sandbox.
    let sent = stack.upstream.requests();
    let status = err("org.inviteMember", orgs.invite_member(invite(None)).await);
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(info.domain, wnology_gateway::error::GATEWAY_DOMAIN);
    let violations = &details.bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "body.role");
    assert_eq!(stack.upstream.requests(), sent);

    // Nothing changed.
    let acme = ok(
        "org.get",
        orgs.get(with_token(
            proto::OrgGetRequest {
                org_id: DEMO_ORG_ID.into(),
                ..Default::default()
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(acme.name.as_deref(), Some("Acme Industrial IoT"));
    ok(
        "me.get",
        me.get(with_token(proto::MeGetRequest::default(), DEMO_TOKEN))
            .await,
    );
}

// Credentials.

#[tokio::test]
async fn a_password_change_that_invalidates_tokens_locks_out_the_old_token() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;
    let get = |token: &str| with_token(proto::MeGetRequest::default(), token);
    // Cached reads of the old token.
    assert_eq!(
        x_cache(&ok("me.get", me.get(get(DEMO_TOKEN)).await)),
        "miss"
    );
    assert_eq!(x_cache(&ok("me.get", me.get(get(DEMO_TOKEN)).await)), "hit");
    ok(
        "orgs.get",
        orgs.list(with_token(OrgListRequest::default(), DEMO_TOKEN))
            .await,
    );

    let new_password = "E2E-Session-Passw0rd!";
    let authed = ok(
        "me.changePassword",
        me.change_password(with_token(
            proto::MeChangePasswordRequest {
                body: Some(proto::ChangePassword {
                    password: s(DEMO_USER_PASSWORD),
                    new_password: s(new_password),
                    invalidate_existing_tokens: Some(true),
                    ..Default::default()
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(authed.user_id.as_deref(), Some(DEMO_USER_ID));
    assert_eq!(authed.needs_to_verify_email, Some(false));
    let token = authed.token.unwrap();
    assert!(!token.is_empty() && token != DEMO_TOKEN);

    // The old token is refused, even for reads it had cached.
    let status = err("me.get", me.get(get(DEMO_TOKEN)).await);
    assert_upstream_error(&status, Code::Unauthenticated, 401, "Unauthorized", REVOKED);
    let status = err(
        "orgs.get",
        orgs.list(with_token(OrgListRequest::default(), DEMO_TOKEN))
            .await,
    );
    assert_eq!(status.code(), Code::Unauthenticated);
    // So is the user's other token.
    let status = err("me.get", me.get(get(USER_READ_TOKEN)).await);
    assert_eq!(status.code(), Code::Unauthenticated);

    // The new token works, and `me` shows the cut-off.
    let dana = ok("me.get", me.get(get(&token)).await).into_inner();
    assert!(dana.token_cutoff.is_some());
    assert!(ms(&dana.password_last_updated) >= ms(&dana.token_cutoff) - 1000);
    // The old password is gone.
    let status = err(
        "me.changePassword",
        me.change_password(with_token(
            proto::MeChangePasswordRequest {
                body: Some(proto::ChangePassword {
                    password: s(DEMO_USER_PASSWORD),
                    new_password: s("Yet-Another-Passw0rd!"),
                    ..Default::default()
                }),
            },
            &token,
        ))
        .await,
    );
    assert_eq!(reason(&status), "INVALID_CREDENTIALS");
}

#[tokio::test]
async fn two_factor_authentication_is_generated_enabled_and_disabled() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let get = || with_token(proto::MeGetRequest::default(), DEMO_TOKEN);
    let enabled = |me: proto::Me| me.two_factor_auth_enabled;
    assert_eq!(
        enabled(ok("me.get", me.get(get()).await).into_inner()),
        Some(false)
    );

    let info = ok(
        "me.generateTwoFactorAuth",
        me.generate_two_factor_auth(with_token(
            proto::MeGenerateTwoFactorAuthRequest {},
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    let key = info.key.unwrap();
    assert_eq!(key.len(), 52);
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    );
    let uri = info.key_uri.unwrap();
    assert!(uri.starts_with("otpauth://totp/WEGnology:"), "{uri}");
    assert!(uri.contains(&format!("secret={key}")), "{uri}");

    let enable = |code: &str| {
        with_token(
            proto::MeEnableTwoFactorAuthRequest {
                body: Some(proto::MultiFactorAuthEnable {
                    two_factor_auth_key: None,
                    password: s(DEMO_USER_PASSWORD),
                    two_factor_code: s(code),
                }),
                ..Default::default()
            },
            DEMO_TOKEN,
        )
    };
    let status = err(
        "me.enableTwoFactorAuth",
        me.enable_two_factor_auth(enable("000000")).await,
    );
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        400,
        "InvalidCredentials",
        "The twoFactorCode is incorrect",
    );
    let on = ok(
        "me.enableTwoFactorAuth",
        me.enable_two_factor_auth(enable(TWO_FACTOR_CODE)).await,
    )
    .into_inner();
    assert_eq!(on.two_factor_auth_enabled, Some(true));
    let reply = ok("me.get", me.get(get()).await);
    assert_eq!(x_cache(&reply), "miss");
    assert_eq!(enabled(reply.into_inner()), Some(true));

    // While enabled, a new key cannot be generated and a password change needs the code.
    let status = err(
        "me.generateTwoFactorAuth",
        me.generate_two_factor_auth(with_token(
            proto::MeGenerateTwoFactorAuthRequest {},
            DEMO_TOKEN,
        ))
        .await,
    );
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        400,
        "Validation",
        "Two-factor authentication is already enabled",
    );
    let status = err(
        "me.changePassword",
        me.change_password(with_token(
            proto::MeChangePasswordRequest {
                body: Some(proto::ChangePassword {
                    password: s(DEMO_USER_PASSWORD),
                    new_password: s("Two-Factor-Passw0rd!"),
                    ..Default::default()
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    );
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        400,
        "InvalidCredentials",
        "A valid twoFactorCode is required",
    );

    let disable = |code: &str| {
        with_token(
            proto::MeDisableTwoFactorAuthRequest {
                body: Some(proto::MultiFactorAuthDisable {
                    two_factor_code: s(code),
                    password: s(DEMO_USER_PASSWORD),
                }),
                ..Default::default()
            },
            DEMO_TOKEN,
        )
    };
    let status = err(
        "me.disableTwoFactorAuth",
        me.disable_two_factor_auth(disable("999999")).await,
    );
    assert_eq!(reason(&status), "INVALID_CREDENTIALS");
    let off = ok(
        "me.disableTwoFactorAuth",
        me.disable_two_factor_auth(disable(TWO_FACTOR_CODE)).await,
    )
    .into_inner();
    assert_eq!(off.two_factor_auth_enabled, Some(false));
    let reply = ok("me.get", me.get(get()).await);
    assert_eq!(x_cache(&reply), "miss");
    assert_eq!(enabled(reply.into_inner()), Some(false));
}

#[tokio::test]
async fn refresh_token_mints_a_new_working_token_every_time() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;
    let refresh = || with_token(proto::MeRefreshTokenRequest {}, DEMO_TOKEN);
    let first = ok("me.refreshToken", me.refresh_token(refresh()).await);
    assert_eq!(x_cache(&first), "-", "never cached, though a GET upstream");
    let first = first.into_inner();
    let second = ok("me.refreshToken", me.refresh_token(refresh()).await).into_inner();
    assert_eq!(first.user_id.as_deref(), Some(DEMO_USER_ID));
    let (a, b) = (first.token.unwrap(), second.token.unwrap());
    assert!(a.starts_with("wnology-sandbox-"), "{a}");
    assert_ne!(a, b);
    assert_ne!(a, DEMO_TOKEN);
    for token in [a.as_str(), b.as_str(), DEMO_TOKEN] {
        let dana = ok(
            "me.get",
            me.get(with_token(proto::MeGetRequest::default(), token))
                .await,
        )
        .into_inner();
        assert_eq!(dana.id.as_deref(), Some(DEMO_USER_ID));
    }
    // Same scopes as the token it came from.
    ok(
        "orgs.post",
        orgs.create(with_token(
            proto::OrgCreateRequest {
                body: Some(proto::OrgPost {
                    name: s("Made with a refreshed token"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &a,
        ))
        .await,
    );
}

#[tokio::test]
async fn resources_move_between_the_user_and_an_organization() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;
    let counts = |me: proto::Me| {
        let summary = me.summary.unwrap();
        (summary.app_count.unwrap(), summary.dash_count.unwrap())
    };
    let get_me = || with_token(proto::MeGetRequest::default(), DEMO_TOKEN);
    let get_acme = || {
        with_token(
            proto::OrgGetRequest {
                org_id: DEMO_ORG_ID.into(),
                ..Default::default()
            },
            DEMO_TOKEN,
        )
    };
    let (apps, dashboards) = counts(ok("me.get", me.get(get_me()).await).into_inner());
    assert!(apps >= 1 && dashboards >= 1);

    let done = ok(
        "me.transferResources",
        me.transfer_resources(with_token(
            proto::MeTransferResourcesRequest {
                body: Some(proto::ResourceTransfer {
                    destination_id: s(DEMO_ORG_ID),
                    destination_type: s("organization"),
                    application_ids: vec![DEMO_USER_APPLICATION_ID.into()],
                    dashboard_ids: vec![DEMO_USER_DASHBOARD_ID.into()],
                    strict: Some(true),
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(done.success, Some(true));
    let reply = ok("me.get", me.get(get_me()).await);
    assert_eq!(x_cache(&reply), "miss");
    assert_eq!(counts(reply.into_inner()), (apps - 1, dashboards - 1));
    let acme = ok("org.get", orgs.get(get_acme()).await).into_inner();
    let acme_summary = acme.summary.unwrap();
    assert_eq!(
        (acme_summary.app_count, acme_summary.dash_count),
        (Some(3), Some(2)),
        "Acme's two applications and dashboard, and the moved ones"
    );

    // And back, from the organization.
    let done = ok(
        "org.transferResources",
        orgs.transfer_resources(with_token(
            proto::OrgTransferResourcesRequest {
                org_id: DEMO_ORG_ID.into(),
                body: Some(proto::ResourceTransfer {
                    destination_id: s(DEMO_USER_ID),
                    destination_type: s("user"),
                    application_ids: vec![DEMO_USER_APPLICATION_ID.into()],
                    dashboard_ids: vec![DEMO_USER_DASHBOARD_ID.into()],
                    strict: None,
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    assert_eq!(done.success, Some(true));
    let reply = ok("org.get", orgs.get(get_acme()).await);
    assert_eq!(x_cache(&reply), "miss", "the source organization is fresh");
    let acme_summary = reply.into_inner().summary.unwrap();
    assert_eq!(
        (acme_summary.app_count, acme_summary.dash_count),
        (Some(2), Some(1))
    );
    let reply = ok("me.get", me.get(get_me()).await);
    assert_eq!(x_cache(&reply), "miss");
    assert_eq!(counts(reply.into_inner()), (apps, dashboards));

    // A strict transfer of something the user does not own moves nothing.
    let status = err(
        "me.transferResources",
        me.transfer_resources(with_token(
            proto::MeTransferResourcesRequest {
                body: Some(proto::ResourceTransfer {
                    destination_id: s(DEMO_ORG_ID),
                    destination_type: s("organization"),
                    application_ids: vec![
                        DEMO_USER_APPLICATION_ID.into(),
                        SECOND_ORG_APPLICATION_ID.into(),
                    ],
                    dashboard_ids: Vec::new(),
                    strict: Some(true),
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    );
    assert_upstream_error(
        &status,
        Code::InvalidArgument,
        400,
        "Validation",
        &format!(
            "Application {SECOND_ORG_APPLICATION_ID} is not owned by the source and cannot be transferred"
        ),
    );
    assert_eq!(
        counts(ok("me.get", me.get(get_me()).await).into_inner()),
        (apps, dashboards)
    );
}

// Instance organizations.

#[tokio::test]
async fn an_instance_admin_token_reads_patches_and_deletes_instance_organizations() {
    let stack = Stack::start().await;
    let mut instance = stack.gateway.instance_org().await;
    let mut orgs = stack.gateway.org().await;
    let get = |org_id: &str, token: &str| {
        with_token(
            proto::InstanceOrgGetRequest {
                instance_id: DEMO_INSTANCE_ID.into(),
                org_id: org_id.into(),
                summary_include: Vec::new(),
            },
            token,
        )
    };
    let reply = ok(
        "instanceOrg.get",
        instance
            .get(get(INSTANCE_ORG_ID, INSTANCE_ADMIN_TOKEN))
            .await,
    );
    assert_eq!(x_cache(&reply), "miss");
    let zeta = reply.into_inner();
    assert_eq!(zeta.name.as_deref(), Some("Zeta Mining Operations"));
    assert_eq!(zeta.instance_id.as_deref(), Some(DEMO_INSTANCE_ID));
    assert_eq!(zeta.tags.len(), 2);
    assert_eq!(
        x_cache(&ok(
            "instanceOrg.get",
            instance
                .get(get(INSTANCE_ORG_ID, INSTANCE_ADMIN_TOKEN))
                .await
        )),
        "hit"
    );
    // The demo user (an admin member) has the same organization cached through `OrgService`.
    let get_zeta = || {
        with_token(
            proto::OrgGetRequest {
                org_id: INSTANCE_ORG_ID.into(),
                ..Default::default()
            },
            DEMO_TOKEN,
        )
    };
    ok("org.get", orgs.get(get_zeta()).await);
    assert_eq!(x_cache(&ok("org.get", orgs.get(get_zeta()).await)), "hit");

    let patched = ok(
        "instanceOrg.patch",
        instance
            .patch(with_token(
                proto::InstanceOrgPatchRequest {
                    instance_id: DEMO_INSTANCE_ID.into(),
                    org_id: INSTANCE_ORG_ID.into(),
                    summary_include: vec!["memberCount".into()],
                    clear_mask: None,
                    body: Some(proto::InstanceOrgPatch {
                        name: s("Zeta Mining (E2E)"),
                        tags: vec![proto::OrgTag {
                            key: s("tier"),
                            value: s("platinum"),
                        }],
                        disabled_at: Some(proto::DisabledAt {
                            value: Some(proto::disabled_at::Value::Flag(true)),
                        }),
                        is_read_only: Some(true),
                        ..Default::default()
                    }),
                },
                INSTANCE_ADMIN_TOKEN,
            ))
            .await,
    )
    .into_inner();
    assert_eq!(patched.name.as_deref(), Some("Zeta Mining (E2E)"));
    assert_eq!(patched.tags.len(), 1);
    assert!(matches!(
        patched.disabled_at.and_then(|d| d.value),
        Some(proto::disabled_at::Value::At(_))
    ));
    let summary = patched.summary.unwrap();
    assert_eq!(summary.member_count, Some(1));
    assert_eq!(summary.device_count, None, "summaryInclude narrowed it");

    // Fresh for the instance token and, through `OrgService`, for the demo user.
    let reply = ok(
        "instanceOrg.get",
        instance
            .get(get(INSTANCE_ORG_ID, INSTANCE_ADMIN_TOKEN))
            .await,
    );
    assert_eq!(x_cache(&reply), "miss");
    let zeta = reply.into_inner();
    assert_eq!(zeta.name.as_deref(), Some("Zeta Mining (E2E)"));
    assert_eq!(zeta.is_read_only, Some(true));
    let reply = ok("org.get", orgs.get(get_zeta()).await);
    assert_eq!(x_cache(&reply), "miss");
    assert_eq!(
        reply.into_inner().name.as_deref(),
        Some("Zeta Mining (E2E)")
    );

    // Delete the organization the demo user is not a member of.
    let omega = ok(
        "instanceOrg.get",
        instance
            .get(get(INSTANCE_ONLY_ORG_ID, INSTANCE_ADMIN_TOKEN))
            .await,
    )
    .into_inner();
    assert_eq!(omega.name.as_deref(), Some("Omega Retail Analytics"));
    let done = ok(
        "instanceOrg.delete",
        instance
            .delete(with_token(
                proto::InstanceOrgDeleteRequest {
                    instance_id: DEMO_INSTANCE_ID.into(),
                    org_id: INSTANCE_ONLY_ORG_ID.into(),
                },
                INSTANCE_ADMIN_TOKEN,
            ))
            .await,
    )
    .into_inner();
    assert_eq!(done.success, Some(true));
    let status = err(
        "instanceOrg.get",
        instance
            .get(get(INSTANCE_ONLY_ORG_ID, INSTANCE_ADMIN_TOKEN))
            .await,
    );
    assert_upstream_error(
        &status,
        Code::NotFound,
        404,
        "NotFound",
        &format!("Organization {INSTANCE_ONLY_ORG_ID} was not found"),
    );

    // Others do not see the instance; the instance does not own the demo organization.
    let status = err(
        "instanceOrg.get",
        instance.get(get(INSTANCE_ORG_ID, SECOND_USER_TOKEN)).await,
    );
    assert_upstream_error(
        &status,
        Code::NotFound,
        404,
        "NotFound",
        &format!("Instance {DEMO_INSTANCE_ID} was not found"),
    );
    let status = err(
        "instanceOrg.get",
        instance.get(get(DEMO_ORG_ID, INSTANCE_ADMIN_TOKEN)).await,
    );
    assert_eq!(status.code(), Code::NotFound);
}

// Usage per user, through the cache.

#[tokio::test]
async fn different_users_see_their_own_usage_and_the_cache_never_mixes_them() {
    let stack = Stack::start().await;
    let week = (START, START + 7 * DAY_MS - 1);
    let payloads = |token: &str| {
        with_token(
            proto::MePayloadCountsRequest {
                start: Some(week.0),
                end: Some(week.1),
                as_bytes: None,
            },
            token,
        )
    };
    let devices = |token: &str| {
        with_token(
            proto::MeDeviceCountsRequest {
                start: Some(week.0),
                end: Some(week.1),
            },
            token,
        )
    };
    let mut me = stack.gateway.me().await;

    // First reads: one upstream call per token, even for two tokens of the same user.
    let mut first = Vec::new();
    for token in [DEMO_TOKEN, SECOND_USER_TOKEN, USER_READ_TOKEN] {
        let reply = ok("me.payloadCounts", me.payload_counts(payloads(token)).await);
        assert_eq!(x_cache(&reply), "miss", "{token}");
        first.push(reply.into_inner());
    }
    assert_ne!(first[0], first[1], "two users, two sets of numbers");
    assert_eq!(
        first[0], first[2],
        "one user, two tokens, one set of numbers"
    );
    assert!(payload_total(&first[0]) > 10.0 * payload_total(&first[1]));

    // Many concurrent reads of both users: each gets their own numbers, from the cache.
    let sent = stack.upstream.requests();
    let channel = stack.channel().await;
    let calls = (0..40).map(|i| {
        let channel = channel.clone();
        let token = if i % 2 == 0 {
            DEMO_TOKEN
        } else {
            SECOND_USER_TOKEN
        };
        async move {
            let mut me = proto::me_service_client::MeServiceClient::new(channel);
            let reply = ok("me.payloadCounts", me.payload_counts(payloads(token)).await);
            (token, x_cache(&reply), reply.into_inner())
        }
    });
    for (token, cache, stats) in join_all(calls).await {
        assert_eq!(cache, "hit");
        let expected = if token == DEMO_TOKEN {
            &first[0]
        } else {
            &first[1]
        };
        assert_eq!(&stats, expected, "{token}");
    }
    assert_eq!(stack.upstream.requests(), sent, "all served from the cache");

    // Device counts follow each user's profile: about 40 devices for Dana, 6 for Sam.
    for (token, range) in [(DEMO_TOKEN, 38..=40), (SECOND_USER_TOKEN, 5..=6)] {
        for round in ["miss", "hit"] {
            let reply = ok("me.deviceCounts", me.device_counts(devices(token)).await);
            assert_eq!(x_cache(&reply), round);
            for count in reply.into_inner().counts {
                assert!(range.contains(&count.total.unwrap()), "{token}: {count:?}");
            }
        }
    }

    // An organization's usage is the organization's, whoever asks, cached per token.
    let mut orgs = stack.gateway.org().await;
    let org_payloads = |token: &str| {
        with_token(
            proto::OrgPayloadCountsRequest {
                org_id: DEMO_ORG_ID.into(),
                start: Some(week.0),
                end: Some(week.1),
                as_bytes: None,
            },
            token,
        )
    };
    let by_user = ok(
        "org.payloadCounts",
        orgs.payload_counts(org_payloads(DEMO_TOKEN)).await,
    );
    assert_eq!(x_cache(&by_user), "miss");
    let by_org_token = ok(
        "org.payloadCounts",
        orgs.payload_counts(org_payloads(ORG_READ_TOKEN)).await,
    );
    assert_eq!(x_cache(&by_org_token), "miss");
    let (by_user, by_org_token) = (by_user.into_inner(), by_org_token.into_inner());
    assert_eq!(by_user, by_org_token);
    assert_ne!(by_user, first[0]);
    // The second user, a viewer of Acme, sees the same numbers; acme-labs, where they are not
    // a member, is not found.
    let by_viewer = ok(
        "org.payloadCounts",
        orgs.payload_counts(org_payloads(SECOND_USER_TOKEN)).await,
    );
    assert_eq!(x_cache(&by_viewer), "miss");
    assert_eq!(by_viewer.into_inner(), by_user);
    let status = err(
        "org.payloadCounts",
        orgs.payload_counts(with_token(
            proto::OrgPayloadCountsRequest {
                org_id: ACME_LABS_ORG_ID.into(),
                start: Some(week.0),
                end: Some(week.1),
                as_bytes: None,
            },
            SECOND_USER_TOKEN,
        ))
        .await,
    );
    assert_eq!(status.code(), Code::NotFound);
}

// Defects of the gateway's cache invalidation (see the reasons).

#[tokio::test]
async fn writes_by_one_user_are_seen_at_once_by_the_other() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;
    let invites_of_second = || with_token(proto::MeInvitesRequest {}, SECOND_USER_TOKEN);
    let get_labs = || {
        with_token(
            proto::OrgGetRequest {
                org_id: ACME_LABS_ORG_ID.into(),
                ..Default::default()
            },
            DEMO_TOKEN,
        )
    };
    let pending_of_labs = || {
        with_token(
            proto::OrgPendingInvitesRequest {
                org_id: ACME_LABS_ORG_ID.into(),
            },
            DEMO_TOKEN,
        )
    };
    let mut stale = Vec::new();
    let before = ok("me.invites", me.invites(invites_of_second()).await).into_inner();

    // The demo user invites the second user.
    let invites = ok(
        "org.inviteMember",
        orgs.invite_member(with_token(
            proto::OrgInviteMemberRequest {
                org_id: ACME_LABS_ORG_ID.into(),
                body: Some(proto::OrgInvitePost {
                    email: s(SECOND_USER_EMAIL),
                    role: s("edit"),
                    ..Default::default()
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    )
    .into_inner();
    let invite_id = invites.items[0].id.clone().unwrap();
    let after = ok("me.invites", me.invites(invites_of_second()).await).into_inner();
    if after.items.len() != before.items.len() + 1 {
        stale.push("the invitee's cached MeService/Invites after OrgService/InviteMember");
    }

    // The demo user looks at the organization, then the second user accepts.
    ok("org.get", orgs.get(get_labs()).await);
    ok(
        "org.pendingInvites",
        orgs.pending_invites(pending_of_labs()).await,
    );
    ok(
        "me.respondToInvite",
        me.respond_to_invite(with_token(
            proto::MeRespondToInviteRequest {
                invite_id,
                body: Some(proto::OrgInviteActionUser {
                    action: s("accept"),
                }),
            },
            SECOND_USER_TOKEN,
        ))
        .await,
    );
    let labs = ok("org.get", orgs.get(get_labs()).await).into_inner();
    if member_role(&labs, SECOND_USER_ID) != Some("edit") {
        stale.push("the inviter's cached OrgService/Get after MeService/RespondToInvite");
    }
    let pending = ok(
        "org.pendingInvites",
        orgs.pending_invites(pending_of_labs()).await,
    );
    if !pending.into_inner().items.is_empty() {
        stale
            .push("the inviter's cached OrgService/PendingInvites after MeService/RespondToInvite");
    }
    assert!(stale.is_empty(), "stale reads: {stale:#?}");
}

#[tokio::test]
async fn revoked_tokens_are_never_served_from_the_cache() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;
    let get = |token: &str| with_token(proto::MeGetRequest::default(), token);

    let mut served = Vec::new();
    // The user's read-only token has `me` cached; the user changes the password and
    // invalidates every token.
    ok("me.get", me.get(get(USER_READ_TOKEN)).await);
    ok(
        "me.changePassword",
        me.change_password(with_token(
            proto::MeChangePasswordRequest {
                body: Some(proto::ChangePassword {
                    password: s(DEMO_USER_PASSWORD),
                    new_password: s("E2E-Revoke-Passw0rd!"),
                    invalidate_existing_tokens: Some(true),
                    ..Default::default()
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    );
    if let Ok(reply) = me.get(get(USER_READ_TOKEN)).await {
        served.push(format!(
            "MeService/Get ({}) to a token revoked by another token's ChangePassword",
            x_cache(&reply)
        ));
    }

    // The second user cuts off their own tokens with `tokenCutoff`.
    let list = || with_token(OrgListRequest::default(), SECOND_USER_TOKEN);
    ok("orgs.get", orgs.list(list()).await);
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
    ok(
        "me.patch",
        me.patch(with_token(
            proto::MePatchRequest {
                body: Some(proto::MePatch {
                    token_cutoff: Some(pbjson_types::Timestamp {
                        seconds: cutoff.timestamp(),
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            SECOND_USER_TOKEN,
        ))
        .await,
    );
    if let Ok(reply) = orgs.list(list()).await {
        served.push(format!(
            "OrgService/List ({}) to a token cut off by its own MePatch tokenCutoff",
            x_cache(&reply)
        ));
    }
    assert!(served.is_empty(), "revoked tokens served: {served:#?}");
}

#[tokio::test]
async fn a_transfer_refreshes_the_destination_organization() {
    let stack = Stack::start().await;
    let mut me = stack.gateway.me().await;
    let mut orgs = stack.gateway.org().await;
    let get_acme = || {
        with_token(
            proto::OrgGetRequest {
                org_id: DEMO_ORG_ID.into(),
                ..Default::default()
            },
            DEMO_TOKEN,
        )
    };
    let acme = ok("org.get", orgs.get(get_acme()).await).into_inner();
    let apps = acme.summary.unwrap().app_count.unwrap();
    ok(
        "me.transferResources",
        me.transfer_resources(with_token(
            proto::MeTransferResourcesRequest {
                body: Some(proto::ResourceTransfer {
                    destination_id: s(DEMO_ORG_ID),
                    destination_type: s("organization"),
                    application_ids: vec![DEMO_USER_APPLICATION_ID.into()],
                    dashboard_ids: Vec::new(),
                    strict: Some(true),
                }),
            },
            DEMO_TOKEN,
        ))
        .await,
    );
    let acme = ok("org.get", orgs.get(get_acme()).await).into_inner();
    assert_eq!(
        acme.summary.unwrap().app_count,
        Some(apps + 1),
        "the destination's cached OrgService/Get is stale after MeService/TransferResources"
    );
}

/// A proto3 list has no presence, so an empty one is left out of the JSON body unless
/// `clear_mask` names it; then it is sent as `[]` and clears the list upstream.
#[tokio::test]
async fn a_list_named_in_clear_mask_is_cleared() {
    let stack = Stack::start().await;
    let mut instance = stack.gateway.instance_org().await;
    let before = ok(
        "instanceOrg.get",
        instance
            .get(with_token(
                proto::InstanceOrgGetRequest {
                    instance_id: DEMO_INSTANCE_ID.into(),
                    org_id: INSTANCE_ORG_ID.into(),
                    summary_include: Vec::new(),
                },
                INSTANCE_ADMIN_TOKEN,
            ))
            .await,
    )
    .into_inner();
    assert_eq!(before.tags.len(), 2, "Zeta is seeded with two tags");
    let patched = ok(
        "instanceOrg.patch",
        instance
            .patch(with_token(
                proto::InstanceOrgPatchRequest {
                    instance_id: DEMO_INSTANCE_ID.into(),
                    org_id: INSTANCE_ORG_ID.into(),
                    summary_include: Vec::new(),
                    body: Some(proto::InstanceOrgPatch {
                        description: s("no more tags"),
                        tags: Vec::new(),
                        ..Default::default()
                    }),
                    clear_mask: Some(pbjson_types::FieldMask {
                        paths: vec!["tags".into()],
                    }),
                },
                INSTANCE_ADMIN_TOKEN,
            ))
            .await,
    )
    .into_inner();
    assert_eq!(patched.description.as_deref(), Some("no more tags"));
    assert_eq!(
        patched.tags.len(),
        0,
        "Zeta's two tags survive a patch with `tags: []`"
    );
}
