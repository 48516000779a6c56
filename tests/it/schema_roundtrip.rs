//! One test per upstream JSON Schema: its fixture fills every property path of the schema (and
//! nothing else), decodes into the generated message, and re-encodes to exactly the same JSON.

use std::fmt::Debug;

use crate::schemas::{self, assert_covers_inventory, fixture, fixture_bytes};
use pbjson_types::Timestamp;
use serde_json::Value;
use wnology_gateway::{json::UpstreamJson, proto};

/// Checks the fixture of `schema` against the inventory, decodes it as `M`, re-encodes it, and
/// returns the decoded message.
fn round_trip<M: UpstreamJson + PartialEq + Debug>(schema: &str) -> M {
    let json = fixture(schema);
    assert_covers_inventory(schema, &json);
    let message = M::from_upstream_json(fixture_bytes(schema))
        .unwrap_or_else(|e| panic!("{schema}: cannot decode the fixture: {e}"));
    let encoded = message
        .to_upstream_json()
        .unwrap_or_else(|e| panic!("{schema}: cannot encode: {e}"));
    let differences = json_differences(&json, &encoded);
    assert!(
        differences.is_empty(),
        "{schema}: the re-encoded JSON differs from the fixture:\n{}",
        differences.join("\n")
    );
    assert_eq!(encoded, json, "{schema}");
    // Decoding what was encoded gives the same message back.
    let again = M::from_upstream_json(encoded.to_string().as_bytes()).unwrap();
    assert_eq!(again, message, "{schema}: decode(encode(m)) != m");
    message
}

/// The differences between `expected` and `actual`, one line per JSON path.
fn json_differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("$", expected, actual, &mut out);
    out
}

fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => diff(&format!("{path}.{key}"), value, other, out),
                    None => out.push(format!("{path}.{key}: missing (expected {value})")),
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    out.push(format!("{path}.{key}: unexpected {value}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (x, y) if x != y => out.push(format!("{path}: expected {x}, got {y}")),
        _ => {}
    }
}

fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

#[test]
fn authed_user() {
    let m: proto::AuthedUser = round_trip("authedUser");
    assert_eq!(m.user_id, s("5a7b9c1d3e5f7a9b1c3d5e7f"));
    assert_eq!(m.org_id, s("575ed6e87ae143cd83dc4aa8"));
    assert_eq!(m.needs_to_verify_email, Some(true));
    assert!(m.token.unwrap().starts_with("eyJhbGciOiJIUzI1NiIs"));
}

#[test]
fn change_password() {
    let m: proto::ChangePassword = round_trip("changePassword");
    assert_eq!(m.token_ttl, Some(2_592_000));
    assert_eq!(m.invalidate_existing_tokens, Some(true));
    assert_eq!(m.two_factor_code, s("482913"));
    assert_eq!(m.password, s("old-Passw0rd!"));
    assert_eq!(m.new_password, s("N3w&Longer-Passphrase"));
}

#[test]
fn device_counts() {
    let m: proto::DeviceCounts = round_trip("deviceCounts");
    assert_eq!(m.start, ts(1_714_521_600, 0));
    assert_eq!(m.counts.len(), 2);
    let first = &m.counts[0];
    assert_eq!(
        (first.created, first.deleted, first.total),
        (Some(12), Some(3), Some(1284))
    );
    // A zero count is present, not absent.
    assert_eq!(m.counts[1].deleted, Some(0));
    assert_eq!(m.counts[1].date, ts(1_714_608_000, 0));
}

#[test]
fn error() {
    let m: proto::Error = round_trip("error");
    assert_eq!(m.r#type, s("NotFound"));
    assert_eq!(m.message, s("Organization was not found"));
}

#[test]
fn instance_org() {
    let m: proto::InstanceOrg = round_trip("instanceOrg");
    assert_eq!(m.creation_date, ts(1_631_608_200, 125_000_000));
    assert_eq!(m.instance_id, s("5f3e2d1c0b9a887766554433"));
    let limits = m.limits.unwrap();
    assert_eq!(limits.data_ttl, Some(7_776_000));
    assert_eq!(limits.storage, Some(20_000_000_000));
    assert_eq!(limits.system_interval, Some(31));
    let summary = m.summary.unwrap();
    assert_eq!(summary.device_count, Some(1845));
    assert_eq!(summary.pending_invite_count, Some(5));
    assert_eq!(
        summary.payload_count.unwrap().device_state.get("mqtt"),
        Some(&481_202.0)
    );
    assert_eq!(summary.storage_stats.unwrap().size, Some(734_003_202));
    assert_eq!(
        m.disabled_at.unwrap().value,
        Some(proto::disabled_at::Value::At(Timestamp {
            seconds: 1_719_788_400,
            nanos: 0
        }))
    );
    assert_eq!(m.tags.len(), 2);
    assert_eq!(
        (m.tags[1].key.as_deref(), m.tags[1].value.as_deref()),
        (Some("tier_gold"), Some("yes"))
    );
    assert_eq!(m.banner.unwrap().level, s("critical"));
    assert_eq!(m.subscription_status, s("past_due"));
    assert_eq!(m.audit_log_enabled, Some(true));
}

#[test]
fn instance_org_patch() {
    let m: proto::InstanceOrgPatch = round_trip("instanceOrgPatch");
    let limits = m.limits.unwrap();
    assert_eq!(limits.data_ttl, Some(15_552_000));
    assert_eq!(limits.notebook_in_parallel, Some(5));
    assert_eq!(
        m.disabled_at.unwrap().value,
        Some(proto::disabled_at::Value::At(Timestamp {
            seconds: 1_725_170_400,
            nanos: 500_000_000
        }))
    );
    assert_eq!(m.audit_log_enabled, Some(false));
    assert_eq!(m.is_read_only, Some(true));
    assert_eq!(
        m.whitelisted_email_domains,
        ["northwind.example.org", "nw-eu.example.org"]
    );
    assert_eq!(m.mfa_mode, s("notRequired"));
}

#[test]
fn me() {
    let m: proto::Me = round_trip("me");
    assert_eq!(m.creation_date, ts(1_518_272_551, 0));
    assert_eq!(m.github_name, s("ghopper"));
    assert_eq!(m.email_verified, Some(true));
    assert_eq!(m.needs_to_verify_email, Some(false));
    let limits = m.limits.unwrap();
    assert_eq!(limits.data_ttl, Some(31_536_000));
    assert_eq!(limits.application_flow_slots, Some(28));
    let summary = m.summary.unwrap();
    assert_eq!(summary.org_count, Some(3));
    assert_eq!(summary.instance_count, Some(1));
    assert_eq!(summary.app_count, Some(12));
    let payload = summary.payload_count.unwrap();
    assert_eq!(payload.webhook.get("POST"), Some(&2875.0));
    assert_eq!(summary.notebook_stats.unwrap().runs_this_period, Some(47));
    let apps = m.recent_applications.unwrap();
    assert_eq!(apps.item_type, s("application"));
    assert_eq!(apps.items.len(), 2);
    assert_eq!(apps.items[1].name, s("Leak Detection"));
    assert_eq!(
        m.recent_organizations.unwrap().items[0].id,
        s("575ed6e87ae143cd83dc4aa8")
    );
    assert_eq!(m.recent_dashboards.unwrap().item_type, s("dashboard"));
}

#[test]
fn me_patch() {
    let m: proto::MePatch = round_trip("mePatch");
    assert_eq!(m.token_cutoff, ts(1_716_208_200, 250_000_000));
    let credentials = m.current_credentials.unwrap();
    assert_eq!(credentials.two_factor_code, s("731904"));
    assert_eq!(credentials.password, s("old-Passw0rd!"));
    assert_eq!(m.password, s("Cobol&Compil3rs-1959"));
    assert_eq!(m.first_name, s("Grace B."));
}

#[test]
fn multi_factor_auth_disable() {
    let m: proto::MultiFactorAuthDisable = round_trip("multiFactorAuthDisable");
    assert_eq!(m.two_factor_code, s("905118"));
    assert_eq!(m.password, s("s3cret-Passw0rd"));
}

#[test]
fn multi_factor_auth_enable() {
    let m: proto::MultiFactorAuthEnable = round_trip("multiFactorAuthEnable");
    assert_eq!(m.two_factor_auth_key.as_deref().map(str::len), Some(52));
    assert_eq!(m.two_factor_code, s("266841"));
}

#[test]
fn multi_factor_auth_info() {
    let m: proto::MultiFactorAuthInfo = round_trip("multiFactorAuthInfo");
    assert!(m.key_uri.unwrap().starts_with("otpauth://totp/"));
    assert_eq!(m.key.as_deref().map(str::len), Some(52));
}

#[test]
fn notebook_minute_counts() {
    let m: proto::NotebookMinuteCounts = round_trip("notebookMinuteCounts");
    assert_eq!(m.end, ts(1_712_102_400, 0));
    let first = &m.counts[0];
    assert_eq!(
        (
            first.minutes,
            first.completed,
            first.canceled,
            first.errored,
            first.timeout
        ),
        (Some(48), Some(11), Some(1), Some(2), Some(3))
    );
    assert_eq!(m.counts[1].minutes, Some(0));
}

#[test]
fn org() {
    let m: proto::Org = round_trip("org");
    assert_eq!(m.creation_date, ts(1_465_790_400, 0));
    assert_eq!(m.last_updated, ts(1_710_783_729, 315_000_000));
    assert_eq!(m.current_period_end, ts(1_711_929_599, 999_000_000));
    let limits = m.limits.unwrap();
    assert_eq!(limits.data_ttl, Some(2_592_000));
    assert_eq!(limits.storage, Some(5_000_000_000));
    assert_eq!(limits.member, Some(75));
    let summary = m.summary.unwrap();
    assert_eq!(summary.device_count, Some(1843));
    assert_eq!(summary.member_count, Some(17));
    assert_eq!(
        summary.payload_count.unwrap().device_state.get("rest"),
        Some(&9150.0)
    );
    assert_eq!(
        m.disabled_at.unwrap().value,
        Some(proto::disabled_at::Value::Flag(false))
    );
    assert_eq!(m.members.len(), 2);
    let ada = &m.members[0];
    assert_eq!(ada.role, s("edit"));
    assert_eq!(ada.application_roles.len(), 2);
    assert_eq!(
        ada.application_roles[1].resource_id,
        s("6012ab34cd56ef7890ab12ce")
    );
    assert_eq!(ada.dashboard_roles[0].role, s("view"));
    assert_eq!(m.members[1].sso_linked, Some(true));
    assert_eq!(m.is_enterprise, Some(true));
    assert_eq!(m.banner.unwrap().level, s("warning"));
}

#[test]
fn org_invite_action_user() {
    let m: proto::OrgInviteActionUser = round_trip("orgInviteActionUser");
    assert_eq!(m.action, s("accept"));
}

#[test]
fn org_invite_post() {
    let m: proto::OrgInvitePost = round_trip("orgInvitePost");
    assert_eq!(m.role, s("collaborate"));
    assert_eq!(m.application_roles[1].role, s("collaborate"));
    assert_eq!(m.dashboard_roles[0].role, s("none"));
    assert_eq!(m.disallow_transfer, Some(true));
}

#[test]
fn org_invite_result_user() {
    let m: proto::OrgInviteResultUser = round_trip("orgInviteResultUser");
    assert_eq!(m.result, s("accepted"));
    assert_eq!(m.org_id, s("575ed6e87ae143cd83dc4aa8"));
}

#[test]
fn org_invite_user() {
    let m: proto::OrgInviteUser = round_trip("orgInviteUser");
    assert_eq!(m.requires_mfa, Some(true));
    assert_eq!(m.ttl, Some(604_800_000.0));
    assert_eq!(m.invite_date, ts(1_715_333_400, 0));
    assert_eq!(m.expired, Some(false));
    let by = m.invited_by.unwrap();
    assert_eq!(by.full_name, s("Ada Okafor"));
    assert_eq!(by.email, s("ada.okafor@example.com"));
}

#[test]
fn org_invites() {
    let m: proto::OrgInvites = round_trip("orgInvites");
    assert_eq!(m.items.len(), 2);
    let first = &m.items[0];
    assert_eq!(first.invite_date, ts(1_715_511_600, 0));
    assert_eq!(first.ttl, Some(604_800_000.0));
    assert_eq!(first.has_expired, Some(false));
    assert_eq!(first.dashboard_roles.len(), 2);
    assert_eq!(m.items[1].email, s("auditor@example.net"));
    assert_eq!(m.items[1].ttl, Some(86_400_000.0));
}

#[test]
fn org_invites_user() {
    let m: proto::OrgInvitesUser = round_trip("orgInvitesUser");
    assert_eq!(m.items.len(), 2);
    assert_eq!(m.items[0].org_name, s("Acme Water Monitoring"));
    assert_eq!(m.items[1].invite_date, ts(1_711_986_312, 345_000_000));
    assert_eq!(m.items[1].requires_mfa, Some(false));
    assert_eq!(
        m.items[1].invited_by.as_ref().unwrap().full_name,
        s("Bruno Lindqvist")
    );
}

#[test]
fn org_member_patch() {
    let m: proto::OrgMemberPatch = round_trip("orgMemberPatch");
    assert_eq!(m.user_id, s("5c9a3e7b1d2f4a6b8c0d1e2f"));
    assert_eq!(m.application_roles[0].role, s("none"));
    assert_eq!(
        m.dashboard_roles[1].resource_id,
        s("6012ab34cd56ef7890ab99f3")
    );
}

#[test]
fn org_patch() {
    let m: proto::OrgPatch = round_trip("orgPatch");
    assert_eq!(m.name, s("Acme Water & Power"));
    assert_eq!(m.card_token, s("tok_1PzY8bLkdIwHu7ixQ"));
    assert_eq!(m.mfa_mode, s("required"));
}

#[test]
fn org_post() {
    let m: proto::OrgPost = round_trip("orgPost");
    assert_eq!(m.name, s("Riverbend Sensors"));
    assert_eq!(m.plan_id, s("starter-monthly"));
    assert_eq!(m.icon_color, s("#16a085"));
}

#[test]
fn orgs() {
    let m: proto::Orgs = round_trip("orgs");
    assert_eq!(
        (m.count, m.total_count, m.per_page, m.page),
        (Some(2), Some(14), Some(2), Some(3))
    );
    assert_eq!(m.sort_direction, s("desc"));
    assert_eq!(m.filter, s("*a*"));
    assert_eq!(m.items.len(), 2);
    assert_eq!(m.items[0].limits.unwrap().data_ttl, Some(2_592_000));
    assert_eq!(
        m.items[0].disabled_at.unwrap().value,
        Some(proto::disabled_at::Value::Flag(false))
    );
    assert_eq!(
        m.items[1].disabled_at.unwrap().value,
        Some(proto::disabled_at::Value::At(Timestamp {
            seconds: 1_701_388_800,
            nanos: 0
        }))
    );
    assert_eq!(m.items[1].is_read_only, Some(true));
}

#[test]
fn payload_counts_breakdown() {
    let m: proto::PayloadCountsBreakdown = round_trip("payloadCountsBreakdown");
    assert_eq!(m.counts.len(), 3);
    assert_eq!(m.counts[0].value, Some(18_342));
    assert_eq!(m.counts[2].date, ts(1_714_528_800, 0));
    assert_eq!(m.counts[2].value, Some(0));
}

#[test]
fn payload_stats() {
    let m: proto::PayloadStats = round_trip("payloadStats");
    assert_eq!(m.device_state.get("mqtt"), Some(&481_207.0));
    assert_eq!(m.device_state.len(), 3);
    assert_eq!(m.integration.get("azureEventHub"), Some(&125.0));
    assert_eq!(m.virtual_button.get("flow"), Some(&18.0));
    assert_eq!(m.resource_job.get("iteration"), Some(&519.0));
}

#[test]
fn recent_item() {
    let m: proto::RecentItem = round_trip("recentItem");
    assert_eq!(m.item_type, s("device"));
    assert_eq!(m.parent_id, s("63a1b2c3d4e5f60718293a4c"));
    assert_eq!(m.item_id, s("64f1e2d3c4b5a69788796a5b"));
}

#[test]
fn recent_item_list() {
    let m: proto::RecentItemList = round_trip("recentItemList");
    assert_eq!(m.item_type, s("device"));
    assert_eq!(m.items.len(), 2);
    assert_eq!(m.items[1].name, s("Reservoir level gauge"));
}

#[test]
fn resource_transfer() {
    let m: proto::ResourceTransfer = round_trip("resourceTransfer");
    assert_eq!(m.destination_type, s("organization"));
    assert_eq!(
        m.application_ids,
        ["63a1b2c3d4e5f60718293a4c", "63a1b2c3d4e5f60718293a4d"]
    );
    assert_eq!(m.dashboard_ids, ["63a1b2c3d4e5f60718293a4b"]);
    assert_eq!(m.strict, Some(true));
}

#[test]
fn success() {
    let m: proto::Success = round_trip("success");
    assert_eq!(m.success, Some(true));
}

#[test]
fn user_credentials() {
    let m: proto::UserCredentials = round_trip("userCredentials");
    assert_eq!(m.token_ttl, Some(3600));
    assert_eq!(
        m.requested_scopes,
        ["all.User", "orgs.get", "me.refreshToken"]
    );
    assert_eq!(m.two_factor_code, s("118250"));
}

/// The fixtures and the inventory name the same 30 schemas.
#[test]
fn every_schema_has_a_fixture_and_an_inventory() {
    let fixtures: Vec<&str> = schemas::FIXTURES.iter().map(|(name, _)| *name).collect();
    let inventoried: Vec<&str> = schemas::inventory::SCHEMAS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(fixtures.len(), 30);
    assert_eq!(fixtures, inventoried);
}

/// The coverage check itself notices a missing path, a path outside the schema and an empty array
/// or map.
#[test]
fn the_inventory_check_reports_gaps() {
    let mut org = fixture("org");
    org["members"][0]
        .as_object_mut()
        .unwrap()
        .remove("ssoLinked");
    org["members"][1]
        .as_object_mut()
        .unwrap()
        .remove("ssoLinked");
    // Only the second application role of the first member has a role now.
    org["members"][0]["applicationRoles"][0]
        .as_object_mut()
        .unwrap()
        .remove("role");
    org["members"][1]["applicationRoles"][0]
        .as_object_mut()
        .unwrap()
        .remove("role");
    org["limits"]["novel"] = 1.into();
    org["whitelistedEmailDomains"] = Value::Array(Vec::new());
    org["summary"]["payloadCount"]["timer"] = Value::Object(Default::default());
    assert_eq!(
        schemas::inventory_gaps("org", &org),
        schemas::Gaps {
            missing: vec!["members[].ssoLinked".into()],
            missing_from_first_items: vec!["members[].applicationRoles[].role".into()],
            unknown: vec!["limits.novel".into()],
            empty: vec![
                "summary.payloadCount.timer{}".into(),
                "whitelistedEmailDomains[]".into()
            ],
        }
    );
}
