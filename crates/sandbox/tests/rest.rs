//! End-to-end tests of the sandbox: each test starts a sandbox on `127.0.0.1:0` and talks to it
//! over plain HTTP with reqwest, the way the gateway's upstream client does.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use reqwest::{Client, Method};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use wnology_sandbox::{
    DEMO_EDIT_ORG_ID, DEMO_INSTANCE_ID, DEMO_INVITE_ID, DEMO_ORG_APPLICATION_ID, DEMO_ORG_ID,
    DEMO_ORG_INVITE_ID, DEMO_TOKEN, DEMO_USER_APPLICATION_ID, DEMO_USER_EMAIL, DEMO_USER_ID,
    DEMO_USER_PASSWORD, EXPIRED_INVITE_ID, INSTANCE_ADMIN_TOKEN, INSTANCE_ONLY_ORG_ID,
    INSTANCE_ORG_ID, ORG_READ_TOKEN, SECOND_USER_EMAIL, SECOND_USER_ID, SECOND_USER_ORG_ID,
    SECOND_USER_PASSWORD, SECOND_USER_TOKEN, Sandbox, SandboxError, SandboxOptions, Seed,
    THIRD_USER_ID, TWO_FACTOR_CODE, USER_READ_TOKEN,
    seed::{SeedToken, TokenSubject},
};

/// An id nobody has.
const UNKNOWN_ID: &str = "ffffffffffffffffffffffff";
/// "Delta Farms Telemetry": the demo user is the only (admin) member.
const DELTA_ORG_ID: &str = "665020000000000000000005";
/// "acme-labs": the demo user is the only (admin) member.
const ACME_LABS_ORG_ID: &str = "665020000000000000000002";
/// 2025-06-01T00:00:00.000Z and 2025-06-30T00:00:00.000Z, a fixed window in the past.
const JUNE_START: i64 = 1_748_736_000_000;
const JUNE_END: i64 = 1_751_241_600_000;
const DAY_MS: i64 = 86_400_000;

/// The 42 actions with a concrete path: `(name, method, path)`.
fn all_actions() -> Vec<(&'static str, &'static str, String)> {
    let org = format!("/orgs/{DEMO_ORG_ID}");
    let inst = format!("/instances/{DEMO_INSTANCE_ID}/orgs/{INSTANCE_ORG_ID}");
    vec![
        ("me.addRecentItem", "POST", "/me/recentItems".into()),
        ("me.changePassword", "PATCH", "/me/changePassword".into()),
        ("me.delete", "POST", "/me/delete".into()),
        ("me.deviceCounts", "GET", "/me/deviceCounts".into()),
        (
            "me.disableTwoFactorAuth",
            "PATCH",
            "/me/disableTwoFactorAuth".into(),
        ),
        (
            "me.disconnectGithub",
            "PATCH",
            "/me/disconnectGithub".into(),
        ),
        (
            "me.enableTwoFactorAuth",
            "PATCH",
            "/me/enableTwoFactorAuth".into(),
        ),
        (
            "me.fetchRecentItems",
            "GET",
            "/me/recentItems?itemType=application".into(),
        ),
        (
            "me.generateTwoFactorAuth",
            "PATCH",
            "/me/generateTwoFactorAuth".into(),
        ),
        ("me.get", "GET", "/me".into()),
        ("me.invite", "GET", format!("/me/invites/{DEMO_INVITE_ID}")),
        ("me.invites", "GET", "/me/invites".into()),
        (
            "me.notebookMinuteCounts",
            "GET",
            "/me/notebookMinuteCounts".into(),
        ),
        ("me.patch", "PATCH", "/me".into()),
        ("me.payloadCounts", "GET", "/me/payloadCounts".into()),
        (
            "me.payloadCountsBreakdown",
            "GET",
            "/me/payloadCountsBreakdown".into(),
        ),
        ("me.refreshToken", "GET", "/me/refreshToken".into()),
        (
            "me.respondToInvite",
            "POST",
            format!("/me/invites/{DEMO_INVITE_ID}"),
        ),
        (
            "me.transferResources",
            "PATCH",
            "/me/transferResources".into(),
        ),
        ("me.verifyEmail", "POST", "/me/verify-email".into()),
        ("orgs.get", "GET", "/orgs".into()),
        ("orgs.post", "POST", "/orgs".into()),
        ("org.delete", "DELETE", org.clone()),
        ("org.deviceCounts", "GET", format!("{org}/deviceCounts")),
        ("org.get", "GET", org.clone()),
        ("org.inviteMember", "POST", format!("{org}/invites")),
        ("org.modifyMember", "PATCH", format!("{org}/member")),
        (
            "org.notebookMinuteCounts",
            "GET",
            format!("{org}/notebookMinuteCounts"),
        ),
        ("org.patch", "PATCH", org.clone()),
        ("org.payloadCounts", "GET", format!("{org}/payloadCounts")),
        (
            "org.payloadCountsBreakdown",
            "GET",
            format!("{org}/payloadCountsBreakdown"),
        ),
        ("org.pendingInvites", "GET", format!("{org}/invites")),
        (
            "org.removeMember",
            "DELETE",
            format!("{org}/member?userId={THIRD_USER_ID}"),
        ),
        (
            "org.revokeInvite",
            "DELETE",
            format!("{org}/invites?inviteId={DEMO_ORG_INVITE_ID}"),
        ),
        (
            "org.transferResources",
            "PATCH",
            format!("{org}/transferResources"),
        ),
        ("instanceOrg.delete", "DELETE", inst.clone()),
        (
            "instanceOrg.deviceCounts",
            "GET",
            format!("{inst}/deviceCounts"),
        ),
        ("instanceOrg.get", "GET", inst.clone()),
        (
            "instanceOrg.notebookMinuteCounts",
            "GET",
            format!("{inst}/notebookMinuteCounts"),
        ),
        ("instanceOrg.patch", "PATCH", inst.clone()),
        (
            "instanceOrg.payloadCounts",
            "GET",
            format!("{inst}/payloadCounts"),
        ),
        (
            "instanceOrg.payloadCountsBreakdown",
            "GET",
            format!("{inst}/payloadCountsBreakdown"),
        ),
    ]
}

/// A sandbox served on a loopback port, stopped when dropped.
struct Server {
    base: String,
    client: Client,
    sandbox: Sandbox,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn start(options: SandboxOptions) -> Server {
    start_sandbox(Sandbox::new(options).expect("sandbox starts")).await
}

async fn start_default() -> Server {
    start(SandboxOptions::default()).await
}

async fn start_sandbox(sandbox: Sandbox) -> Server {
    // reqwest is built with `rustls-no-provider`: a client needs a process-wide provider even
    // for plain HTTP. Installing twice fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(sandbox.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    Server {
        base: format!("http://{address}"),
        client,
        sandbox,
        shutdown: Some(shutdown),
        task: Some(task),
    }
}

impl Server {
    /// Sends a request like the official JavaScript client (global query parameters, `{}` as
    /// the body of bodiless non-GET calls) and returns the status and JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{path}{separator}_actions=false&_links=true&_embedded=true",
            self.base
        );
        let mut request = self
            .client
            .request(method.clone(), url)
            .header("Accept", "application/json");
        request = request.header("Accept-Version", "^1.30.0");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match body {
            Some(body) => request = request.json(&body),
            None if method != Method::GET => request = request.json(&json!({})),
            None => {}
        }
        let response = request.send().await.expect("request is answered");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("body is not JSON ({error}): {text}"))
        };
        (status, value)
    }

    /// Like [`Server::call`], asserting the status.
    async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let (got, value) = self.call(method, path, token, body).await;
        assert_eq!(got, status, "{method} {path}: {value}");
        value
    }

    async fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        self.expect(200, method, path, Some(token), body).await
    }

    /// Asserts an error status with the given `type`, returning the message.
    async fn error(
        &self,
        status: u16,
        kind: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> String {
        let value = self.expect(status, method, path, token, body).await;
        assert_eq!(value["type"], kind, "{method} {path}: {value}");
        value["message"].as_str().expect("message").to_string()
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_string())
        .collect()
}

fn names(orgs: &Value) -> Vec<String> {
    orgs["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|org| org["name"].as_str().expect("name").to_string())
        .collect()
}

fn member_role(org: &Value, user_id: &str) -> Option<String> {
    org["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|member| member["userId"] == user_id)
        .map(|member| member["role"].as_str().expect("role").to_string())
}

fn is_iso(text: &Value) -> bool {
    let text = text.as_str().unwrap_or_default();
    text.len() == 24
        && text.ends_with('Z')
        && text.as_bytes()[10] == b'T'
        && text.as_bytes()[19] == b'.'
}

fn sum_counts(counts: &Value, field: &str) -> u64 {
    counts["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|point| point[field].as_u64().expect("number"))
        .sum()
}

#[tokio::test]
async fn every_action_succeeds() {
    let server = start_default().await;
    let mut covered = BTreeSet::new();
    let mut hit = |name: &'static str| assert!(covered.insert(name), "{name} twice");
    let org = format!("/orgs/{DEMO_ORG_ID}");
    let inst = format!("/instances/{DEMO_INSTANCE_ID}/orgs/{INSTANCE_ORG_ID}");
    let t = DEMO_TOKEN;

    // --- me: profile
    let me = server.ok("GET", "/me?includeRecent=true", t, None).await;
    hit("me.get");
    assert_eq!(me["id"], DEMO_USER_ID);
    assert_eq!(me["userId"], DEMO_USER_ID);
    assert_eq!(me["email"], DEMO_USER_EMAIL);
    assert_eq!(me["fullName"], "Dana Demo");
    assert_eq!(me["githubName"], "dana-demo");
    assert!(is_iso(&me["creationDate"]) && is_iso(&me["currentPeriodStart"]));
    assert!(me["limits"]["device"].is_i64());
    assert_eq!(me["summary"]["orgCount"], 8);
    assert_eq!(me["summary"]["appCount"], 1);
    assert!(me["summary"]["payloadCount"]["deviceState"]["mqtt"].is_u64());
    assert_eq!(
        ids(&me["recentApplications"]["items"])[0],
        DEMO_ORG_APPLICATION_ID
    );
    assert_eq!(
        me["recentOrganizations"]["items"][0]["name"],
        "Acme Industrial IoT"
    );
    assert!(me.get("recentDashboards").is_some());
    let plain = server.ok("GET", "/me", t, None).await;
    assert!(
        plain.get("recentApplications").is_none(),
        "includeRecent defaults to false"
    );

    let me = server
        .ok(
            "PATCH",
            "/me",
            t,
            Some(json!({"firstName": "Dana-Updated", "title": "Chief Sandbox Officer"})),
        )
        .await;
    hit("me.patch");
    assert_eq!(me["firstName"], "Dana-Updated");
    assert_eq!(me["title"], "Chief Sandbox Officer");

    assert_eq!(
        server.ok("POST", "/me/verify-email", t, None).await,
        json!({"success": true})
    );
    hit("me.verifyEmail");

    let mfa = server
        .ok("PATCH", "/me/generateTwoFactorAuth", t, None)
        .await;
    hit("me.generateTwoFactorAuth");
    assert_eq!(mfa["key"].as_str().map(str::len), Some(52));
    assert!(
        mfa["keyUri"]
            .as_str()
            .expect("uri")
            .starts_with("otpauth://totp/")
    );
    let credentials = json!({"password": DEMO_USER_PASSWORD, "twoFactorCode": TWO_FACTOR_CODE});
    let me = server
        .ok(
            "PATCH",
            "/me/enableTwoFactorAuth",
            t,
            Some(credentials.clone()),
        )
        .await;
    hit("me.enableTwoFactorAuth");
    assert_eq!(me["twoFactorAuthEnabled"], true);
    let me = server
        .ok("PATCH", "/me/disableTwoFactorAuth", t, Some(credentials))
        .await;
    hit("me.disableTwoFactorAuth");
    assert_eq!(me["twoFactorAuthEnabled"], false);

    let me = server.ok("PATCH", "/me/disconnectGithub", t, None).await;
    hit("me.disconnectGithub");
    assert!(me.get("githubName").is_none());

    // --- me: recent items
    let device = "665070000000000000000002";
    let body = json!({"itemType": "device", "parentId": DEMO_ORG_APPLICATION_ID, "itemId": device});
    let list = server.ok("POST", "/me/recentItems", t, Some(body)).await;
    hit("me.addRecentItem");
    assert_eq!(list["itemType"], "device");
    assert_eq!(list["parentId"], DEMO_ORG_APPLICATION_ID);
    assert_eq!(
        list["items"][0],
        json!({"id": device, "name": "Line 2 Vibration Sensor"})
    );
    let path = format!("/me/recentItems?itemType=device&parentId={DEMO_ORG_APPLICATION_ID}");
    let list = server.ok("GET", &path, t, None).await;
    hit("me.fetchRecentItems");
    assert_eq!(
        ids(&list["items"]),
        vec![device, "665070000000000000000001"]
    );

    // --- me: invitations
    let invites = server.ok("GET", "/me/invites", t, None).await;
    hit("me.invites");
    let listed = ids(&invites);
    assert!(
        listed.contains(&DEMO_INVITE_ID.to_string())
            && listed.contains(&EXPIRED_INVITE_ID.to_string())
    );
    let invite = server
        .ok("GET", &format!("/me/invites/{DEMO_INVITE_ID}"), t, None)
        .await;
    hit("me.invite");
    assert_eq!(invite["orgName"], "Northwind Cold Chain");
    assert_eq!(invite["role"], "edit");
    assert_eq!(invite["expired"], false);
    assert_eq!(invite["invitedBy"]["email"], SECOND_USER_EMAIL);
    let body = json!({"action": "accept"});
    let result = server
        .ok(
            "POST",
            &format!("/me/invites/{DEMO_INVITE_ID}"),
            t,
            Some(body),
        )
        .await;
    hit("me.respondToInvite");
    assert_eq!(
        result,
        json!({"result": "accepted", "orgId": SECOND_USER_ORG_ID})
    );

    // --- me: usage
    let window = format!("start={JUNE_START}&end={JUNE_END}");
    let counts = server
        .ok("GET", &format!("/me/deviceCounts?{window}"), t, None)
        .await;
    hit("me.deviceCounts");
    assert_eq!(counts["counts"].as_array().map(Vec::len), Some(30));
    assert_eq!(counts["start"], "2025-06-01T00:00:00.000Z");
    let notebook = server
        .ok(
            "GET",
            &format!("/me/notebookMinuteCounts?{window}"),
            t,
            None,
        )
        .await;
    hit("me.notebookMinuteCounts");
    assert!(notebook["counts"][0]["timeout"].is_u64());
    let stats = server
        .ok("GET", &format!("/me/payloadCounts?{window}"), t, None)
        .await;
    hit("me.payloadCounts");
    assert_eq!(stats.as_object().map(|o| o.len()), Some(19));
    let breakdown = server
        .ok(
            "GET",
            &format!("/me/payloadCountsBreakdown?{window}"),
            t,
            None,
        )
        .await;
    hit("me.payloadCountsBreakdown");
    assert!(breakdown["counts"][0]["value"].is_u64());

    // --- me: transfer and tokens
    let body = json!({"destinationId": DEMO_ORG_ID, "destinationType": "organization", "applicationIds": [DEMO_USER_APPLICATION_ID]});
    assert_eq!(
        server
            .ok("PATCH", "/me/transferResources", t, Some(body))
            .await,
        json!({"success": true})
    );
    hit("me.transferResources");
    let acme = server
        .ok("GET", &format!("{org}?summaryInclude=appCount"), t, None)
        .await;
    assert_eq!(acme["summary"], json!({"appCount": 3}));

    let refreshed = server.ok("GET", "/me/refreshToken", t, None).await;
    hit("me.refreshToken");
    assert_eq!(refreshed["userId"], DEMO_USER_ID);
    let new_token = refreshed["token"].as_str().expect("token").to_string();
    assert_ne!(new_token, DEMO_TOKEN);
    assert_eq!(
        server.ok("GET", "/me", &new_token, None).await["id"],
        DEMO_USER_ID
    );

    // --- orgs
    let orgs = server.ok("GET", "/orgs", t, None).await;
    hit("orgs.get");
    assert_eq!(
        orgs["totalCount"], 9,
        "8 seeded memberships plus the accepted invitation"
    );
    let (status, created) = server
        .call("POST", "/orgs", Some(t), Some(json!({"name": "Sandbox Test Org", "description": "made by a test", "mfaMode": "required"})))
        .await;
    hit("orgs.post");
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "Sandbox Test Org");
    assert_eq!(created["mfaMode"], "required");
    assert_eq!(created["disabledAt"], false);
    assert_eq!(
        member_role(&created, DEMO_USER_ID).as_deref(),
        Some("admin")
    );
    let created_id = created["id"].as_str().expect("id").to_string();
    assert_eq!(created["orgId"], created_id.as_str());

    // --- org
    let acme = server.ok("GET", &org, t, None).await;
    hit("org.get");
    assert_eq!(acme["name"], "Acme Industrial IoT");
    assert_eq!(acme["banner"]["level"], "info");
    assert_eq!(acme["limits"]["member"], 50);
    assert_eq!(acme["summary"]["memberCount"], 3);
    let body = json!({"name": "Acme Industrial IoT (renamed)", "description": "Description of my updated organization"});
    let acme = server.ok("PATCH", &org, t, Some(body)).await;
    hit("org.patch");
    assert_eq!(acme["name"], "Acme Industrial IoT (renamed)");

    let pending = server.ok("GET", &format!("{org}/invites"), t, None).await;
    hit("org.pendingInvites");
    assert_eq!(pending.as_array().map(Vec::len), Some(2));
    assert_eq!(pending[0]["hasExpired"], false);
    assert_eq!(pending[0]["ttl"], 604_800_000);
    let body = json!({"email": "field.tech@example.com", "role": "view", "dashboardRoles": [{"resourceId": "665060000000000000000001", "role": "view"}]});
    let pending = server
        .ok("POST", &format!("{org}/invites"), t, Some(body))
        .await;
    hit("org.inviteMember");
    assert_eq!(pending.as_array().map(Vec::len), Some(3));
    assert_eq!(pending[2]["email"], "field.tech@example.com");
    assert_eq!(pending[2]["dashboardRoles"][0]["role"], "view");
    let pending = server
        .ok(
            "DELETE",
            &format!("{org}/invites?inviteId={DEMO_ORG_INVITE_ID}"),
            t,
            None,
        )
        .await;
    hit("org.revokeInvite");
    assert!(!ids(&pending).contains(&DEMO_ORG_INVITE_ID.to_string()));

    let acme = server
        .ok(
            "PATCH",
            &format!("{org}/member"),
            t,
            Some(json!({"userId": SECOND_USER_ID, "role": "edit"})),
        )
        .await;
    hit("org.modifyMember");
    assert_eq!(member_role(&acme, SECOND_USER_ID).as_deref(), Some("edit"));
    let acme = server
        .ok(
            "DELETE",
            &format!("{org}/member?userId={THIRD_USER_ID}"),
            t,
            None,
        )
        .await;
    hit("org.removeMember");
    assert_eq!(member_role(&acme, THIRD_USER_ID), None);

    let body = json!({"destinationId": DEMO_USER_ID, "destinationType": "user", "applicationIds": [DEMO_ORG_APPLICATION_ID], "strict": true});
    assert_eq!(
        server
            .ok("PATCH", &format!("{org}/transferResources"), t, Some(body))
            .await,
        json!({"success": true})
    );
    hit("org.transferResources");
    assert_eq!(
        server
            .ok("GET", "/me?summaryInclude=appCount", t, None)
            .await["summary"],
        json!({"appCount": 1})
    );

    let counts = server
        .ok("GET", &format!("{org}/deviceCounts?{window}"), t, None)
        .await;
    hit("org.deviceCounts");
    assert!(counts["counts"][29]["total"].as_i64().expect("total") > 0);
    server
        .ok(
            "GET",
            &format!("{org}/notebookMinuteCounts?{window}"),
            t,
            None,
        )
        .await;
    hit("org.notebookMinuteCounts");
    server
        .ok(
            "GET",
            &format!("{org}/payloadCounts?{window}&asBytes=true"),
            t,
            None,
        )
        .await;
    hit("org.payloadCounts");
    server
        .ok(
            "GET",
            &format!(
                "{org}/payloadCountsBreakdown?{window}&resolution=3600000&includeNonBillable=true"
            ),
            t,
            None,
        )
        .await;
    hit("org.payloadCountsBreakdown");

    assert_eq!(
        server
            .ok("DELETE", &format!("/orgs/{created_id}"), t, None)
            .await,
        json!({"success": true})
    );
    hit("org.delete");
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/orgs/{created_id}"),
            Some(t),
            None,
        )
        .await;

    // --- instanceOrg
    let zeta = server.ok("GET", &inst, t, None).await;
    hit("instanceOrg.get");
    assert_eq!(zeta["instanceId"], DEMO_INSTANCE_ID);
    assert_eq!(zeta["tags"][0], json!({"key": "region", "value": "emea"}));
    assert_eq!(zeta["auditLogEnabled"], true);
    assert!(
        zeta.get("members").is_none(),
        "instanceOrg has additionalProperties: false"
    );
    let body = json!({"name": "My Org", "limits": {"member": 500}, "auditLogEnabled": false, "tags": [{"key": "env", "value": "test"}], "disabledAt": true});
    let zeta = server.ok("PATCH", &inst, t, Some(body)).await;
    hit("instanceOrg.patch");
    assert_eq!(zeta["name"], "My Org");
    assert_eq!(zeta["limits"]["member"], 500);
    assert_eq!(zeta["limits"]["device"], 5000, "other limits are kept");
    assert_eq!(zeta["tags"], json!([{"key": "env", "value": "test"}]));
    assert!(is_iso(&zeta["disabledAt"]));
    server
        .ok("GET", &format!("{inst}/deviceCounts?{window}"), t, None)
        .await;
    hit("instanceOrg.deviceCounts");
    server
        .ok(
            "GET",
            &format!("{inst}/notebookMinuteCounts?{window}"),
            t,
            None,
        )
        .await;
    hit("instanceOrg.notebookMinuteCounts");
    server
        .ok("GET", &format!("{inst}/payloadCounts?{window}"), t, None)
        .await;
    hit("instanceOrg.payloadCounts");
    server
        .ok(
            "GET",
            &format!("{inst}/payloadCountsBreakdown?{window}"),
            t,
            None,
        )
        .await;
    hit("instanceOrg.payloadCountsBreakdown");
    let omega = format!("/instances/{DEMO_INSTANCE_ID}/orgs/{INSTANCE_ONLY_ORG_ID}");
    assert_eq!(
        server.ok("DELETE", &omega, t, None).await,
        json!({"success": true})
    );
    hit("instanceOrg.delete");
    server
        .error(404, "NotFound", "GET", &omega, Some(t), None)
        .await;

    // --- credentials last: they change tokens
    let body = json!({"password": DEMO_USER_PASSWORD, "newPassword": "Brand-New-Passw0rd!"});
    let authed = server
        .ok("PATCH", "/me/changePassword", t, Some(body))
        .await;
    hit("me.changePassword");
    assert_eq!(authed["userId"], DEMO_USER_ID);
    assert!(
        authed["token"]
            .as_str()
            .is_some_and(|token| !token.is_empty())
    );
    server.ok("GET", "/me", t, None).await; // Without invalidateExistingTokens the old token lives on.

    let body = json!({"email": SECOND_USER_EMAIL, "password": SECOND_USER_PASSWORD});
    assert_eq!(
        server
            .ok("POST", "/me/delete", SECOND_USER_TOKEN, Some(body))
            .await,
        json!({"success": true})
    );
    hit("me.delete");
    server
        .error(
            401,
            "Unauthorized",
            "GET",
            "/me",
            Some(SECOND_USER_TOKEN),
            None,
        )
        .await;
    let acme = server.ok("GET", &org, t, None).await;
    assert_eq!(
        member_role(&acme, SECOND_USER_ID),
        None,
        "a deleted user leaves their organizations"
    );

    let expected: BTreeSet<&str> = all_actions().iter().map(|(name, _, _)| *name).collect();
    assert_eq!(covered, expected);
    assert_eq!(covered.len(), 42);
}

#[tokio::test]
async fn token_and_scope_matrix() {
    // A token whose only scope is valid but belongs to none of the 42 actions.
    let mut seed = Seed::demo();
    seed.tokens.push(SeedToken {
        token: "wnology-sandbox-unrelated-scope".into(),
        description: "scope of another resource".into(),
        subject: TokenSubject::User(DEMO_USER_ID.into()),
        scopes: vec!["applications.get".into()],
        issued_at: chrono::Utc::now(),
        expires_at: None,
    });
    let server =
        start_sandbox(Sandbox::from_seed(seed, Duration::from_secs(3600)).expect("seed")).await;

    for (name, method, path) in all_actions() {
        let message = server
            .error(401, "Unauthorized", method, &path, None, None)
            .await;
        assert!(message.contains("Bearer"), "{name}: {message}");
        server
            .error(
                401,
                "Unauthorized",
                method,
                &path,
                Some("no-such-token"),
                None,
            )
            .await;
        let message = server
            .error(
                403,
                "Forbidden",
                method,
                &path,
                Some("wnology-sandbox-unrelated-scope"),
                None,
            )
            .await;
        assert!(message.contains(name), "{name}: {message}");
    }
    let response = server
        .client
        .get(format!("{}/me", server.base))
        .basic_auth("user", Some("pw"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    // Read-only user token.
    let org = format!("/orgs/{DEMO_ORG_ID}");
    server.ok("GET", "/me", USER_READ_TOKEN, None).await;
    server.ok("GET", "/orgs", USER_READ_TOKEN, None).await;
    server.ok("GET", &org, USER_READ_TOKEN, None).await;
    server
        .ok(
            "GET",
            &format!("/instances/{DEMO_INSTANCE_ID}/orgs/{INSTANCE_ORG_ID}"),
            USER_READ_TOKEN,
            None,
        )
        .await;
    server
        .error(
            403,
            "Forbidden",
            "PATCH",
            "/me",
            Some(USER_READ_TOKEN),
            Some(json!({"title": "x"})),
        )
        .await;
    server
        .error(
            403,
            "Forbidden",
            "POST",
            "/orgs",
            Some(USER_READ_TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    server
        .error(
            403,
            "Forbidden",
            "PATCH",
            &org,
            Some(USER_READ_TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    server
        .error(
            403,
            "Forbidden",
            "GET",
            "/me/refreshToken",
            Some(USER_READ_TOKEN),
            None,
        )
        .await;

    // Organization API token: only its own organization, read only.
    server.ok("GET", &org, ORG_READ_TOKEN, None).await;
    server
        .ok("GET", &format!("{org}/invites"), ORG_READ_TOKEN, None)
        .await;
    server
        .ok("GET", &format!("{org}/payloadCounts"), ORG_READ_TOKEN, None)
        .await;
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/orgs/{DELTA_ORG_ID}"),
            Some(ORG_READ_TOKEN),
            None,
        )
        .await;
    server
        .error(
            403,
            "Forbidden",
            "PATCH",
            &org,
            Some(ORG_READ_TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    server
        .error(403, "Forbidden", "GET", "/me", Some(ORG_READ_TOKEN), None)
        .await;
    server
        .error(403, "Forbidden", "GET", "/orgs", Some(ORG_READ_TOKEN), None)
        .await;

    // Instance API token: only its instance's organizations.
    let zeta = format!("/instances/{DEMO_INSTANCE_ID}/orgs/{INSTANCE_ORG_ID}");
    server.ok("GET", &zeta, INSTANCE_ADMIN_TOKEN, None).await;
    server
        .ok(
            "PATCH",
            &zeta,
            INSTANCE_ADMIN_TOKEN,
            Some(json!({"description": "patched by the instance"})),
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/instances/{DEMO_INSTANCE_ID}/orgs/{DEMO_ORG_ID}"),
            Some(INSTANCE_ADMIN_TOKEN),
            None,
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/instances/{UNKNOWN_ID}/orgs/{INSTANCE_ORG_ID}"),
            Some(INSTANCE_ADMIN_TOKEN),
            None,
        )
        .await;
    server
        .error(
            403,
            "Forbidden",
            "GET",
            &format!("/orgs/{INSTANCE_ORG_ID}"),
            Some(INSTANCE_ADMIN_TOKEN),
            None,
        )
        .await;
    server
        .error(
            403,
            "Forbidden",
            "GET",
            "/me",
            Some(INSTANCE_ADMIN_TOKEN),
            None,
        )
        .await;

    // Second user: a viewer of the demo organization, a stranger elsewhere.
    server.ok("GET", &org, SECOND_USER_TOKEN, None).await;
    let message = server
        .error(
            403,
            "Forbidden",
            "PATCH",
            &org,
            Some(SECOND_USER_TOKEN),
            Some(json!({"name": "x"})),
        )
        .await;
    assert!(message.contains("admin"), "{message}");
    server
        .error(
            403,
            "Forbidden",
            "POST",
            &format!("{org}/invites"),
            Some(SECOND_USER_TOKEN),
            Some(json!({"email": "a@b.co", "role": "view"})),
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/orgs/{DEMO_EDIT_ORG_ID}"),
            Some(SECOND_USER_TOKEN),
            None,
        )
        .await;
    server
        .error(404, "NotFound", "GET", &zeta, Some(SECOND_USER_TOKEN), None)
        .await;
    // The demo user is only an `edit` member of Blue River.
    server
        .ok(
            "GET",
            &format!("/orgs/{DEMO_EDIT_ORG_ID}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    server
        .error(
            403,
            "Forbidden",
            "DELETE",
            &format!("/orgs/{DEMO_EDIT_ORG_ID}"),
            Some(DEMO_TOKEN),
            None,
        )
        .await;
}

#[tokio::test]
async fn unknown_ids_paths_and_methods() {
    let server = start_default().await;
    let t = Some(DEMO_TOKEN);
    let org = format!("/orgs/{DEMO_ORG_ID}");
    let message = server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/orgs/{UNKNOWN_ID}"),
            t,
            None,
        )
        .await;
    assert!(message.contains(UNKNOWN_ID), "{message}");
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/orgs/{SECOND_USER_ORG_ID}"),
            t,
            None,
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/me/invites/{UNKNOWN_ID}"),
            t,
            None,
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "POST",
            &format!("/me/invites/{UNKNOWN_ID}"),
            t,
            Some(json!({"action": "accept"})),
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "DELETE",
            &format!("{org}/invites?inviteId={UNKNOWN_ID}"),
            t,
            None,
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "PATCH",
            &format!("{org}/member"),
            t,
            Some(json!({"userId": UNKNOWN_ID, "role": "view"})),
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "DELETE",
            &format!("{org}/member?userId={UNKNOWN_ID}"),
            t,
            None,
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/instances/{UNKNOWN_ID}/orgs/{INSTANCE_ORG_ID}"),
            t,
            None,
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/instances/{DEMO_INSTANCE_ID}/orgs/{UNKNOWN_ID}"),
            t,
            None,
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "POST",
            "/me/recentItems",
            t,
            Some(json!({"itemType": "application", "itemId": UNKNOWN_ID})),
        )
        .await;
    let body = json!({"destinationId": UNKNOWN_ID, "destinationType": "user"});
    server
        .error(
            404,
            "NotFound",
            "PATCH",
            "/me/transferResources",
            t,
            Some(body),
        )
        .await;
    let body = json!({"destinationId": SECOND_USER_ORG_ID, "destinationType": "organization"});
    server
        .error(
            404,
            "NotFound",
            "PATCH",
            "/me/transferResources",
            t,
            Some(body),
        )
        .await;
    // Transfers skip ids the source does not own, or refuse them all when strict.
    let foreign = "665050000000000000000004"; // The second user's application.
    let body = json!({"destinationId": DEMO_ORG_ID, "destinationType": "organization",
        "applicationIds": [DEMO_USER_APPLICATION_ID, foreign], "strict": true});
    let message = server
        .error(
            400,
            "Validation",
            "PATCH",
            "/me/transferResources",
            t,
            Some(body),
        )
        .await;
    assert!(message.contains(foreign), "{message}");
    let summary = format!("/orgs/{DEMO_ORG_ID}?summaryInclude=appCount");
    assert_eq!(
        server.ok("GET", &summary, DEMO_TOKEN, None).await["summary"]["appCount"],
        2
    );
    let body = json!({"destinationId": DEMO_ORG_ID, "destinationType": "organization",
        "applicationIds": [DEMO_USER_APPLICATION_ID, foreign]});
    server
        .ok("PATCH", "/me/transferResources", DEMO_TOKEN, Some(body))
        .await;
    assert_eq!(
        server.ok("GET", &summary, DEMO_TOKEN, None).await["summary"]["appCount"],
        3
    );
    // Ids compare case-insensitively, like the upstream's pattern allows.
    server
        .ok(
            "GET",
            &format!("/orgs/{}", DEMO_ORG_ID.to_uppercase()),
            DEMO_TOKEN,
            None,
        )
        .await;

    let message = server
        .error(404, "NotFound", "GET", "/applications", t, None)
        .await;
    assert!(message.contains("/applications"));
    server.error(404, "NotFound", "GET", "/me/", t, None).await;
    let response = server
        .client
        .delete(format!("{}/me", server.base))
        .bearer_auth(DEMO_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("GET, PATCH")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["type"], "MethodNotAllowed");
    server
        .error(405, "MethodNotAllowed", "PUT", &org, t, None)
        .await;
}

#[tokio::test]
async fn validation_errors_name_the_problem() {
    let server = start_default().await;
    let t = Some(DEMO_TOKEN);
    let org = format!("/orgs/{DEMO_ORG_ID}");
    let check = |expected: &'static str| move |message: String| assert_eq!(message, expected);

    // Bodies.
    check("\"colour\" is not allowed")(
        server
            .error(
                400,
                "Validation",
                "POST",
                "/orgs",
                t,
                Some(json!({"name": "x", "colour": "red"})),
            )
            .await,
    );
    check("\"mfaMode\" must be one of [notRequired, adminRequired, required]")(
        server
            .error(
                400,
                "Validation",
                "PATCH",
                &org,
                t,
                Some(json!({"mfaMode": "sometimes"})),
            )
            .await,
    );
    check("\"name\" must be at most 255 characters")(
        server
            .error(
                400,
                "Validation",
                "POST",
                "/orgs",
                t,
                Some(json!({"name": "n".repeat(256)})),
            )
            .await,
    );
    check("\"name\" is required")(
        server
            .error(
                400,
                "Validation",
                "POST",
                "/orgs",
                t,
                Some(json!({"description": "d"})),
            )
            .await,
    );
    check("\"name\" must be a string")(
        server
            .error(
                400,
                "Validation",
                "POST",
                "/orgs",
                t,
                Some(json!({"name": 42})),
            )
            .await,
    );
    check("\"role\" is required")(
        server
            .error(
                400,
                "Validation",
                "POST",
                &format!("{org}/invites"),
                t,
                Some(json!({"email": "a@b.co"})),
            )
            .await,
    );
    check("\"email\" must be a valid email")(
        server
            .error(
                400,
                "Validation",
                "POST",
                &format!("{org}/invites"),
                t,
                Some(json!({"email": "not-an-email", "role": "view"})),
            )
            .await,
    );
    check("\"userId\" must match the pattern ^[A-Fa-f\\d]{24}$ (a 24 character hex id)")(
        server
            .error(
                400,
                "Validation",
                "PATCH",
                &format!("{org}/member"),
                t,
                Some(json!({"userId": "1234"})),
            )
            .await,
    );
    let weak = json!({"password": DEMO_USER_PASSWORD, "newPassword": "weakpassword12"});
    check("\"newPassword\" must contain an upper case letter, a symbol")(
        server
            .error(
                400,
                "Validation",
                "PATCH",
                "/me/changePassword",
                t,
                Some(weak),
            )
            .await,
    );
    let short = json!({"password": DEMO_USER_PASSWORD, "newPassword": "Sh0rt!"});
    check("\"newPassword\" must be at least 12 characters")(
        server
            .error(
                400,
                "Validation",
                "PATCH",
                "/me/changePassword",
                t,
                Some(short),
            )
            .await,
    );
    let wrong = json!({"password": "not-the-password", "newPassword": "Brand-New-Passw0rd!"});
    server
        .error(
            400,
            "InvalidCredentials",
            "PATCH",
            "/me/changePassword",
            t,
            Some(wrong),
        )
        .await;
    check("\"applicationRoles[0].role\" must be one of [collaborate, view, none]")(
        server
            .error(
                400,
                "Validation",
                "POST",
                &format!("{org}/invites"),
                t,
                Some(json!({"email": "a@b.co", "role": "view", "applicationRoles": [{"resourceId": DEMO_ORG_APPLICATION_ID, "role": "owner"}]})),
            )
            .await,
    );
    let many: Vec<Value> = (0..1001).map(|_| json!(DEMO_USER_APPLICATION_ID)).collect();
    check("\"applicationIds\" must contain at most 1000 items")(
        server
            .error(400, "Validation", "PATCH", "/me/transferResources", t, Some(json!({"destinationId": DEMO_ORG_ID, "destinationType": "organization", "applicationIds": many})))
            .await,
    );
    check("\"limits.systemInterval\" must be at most 3600")(
        server
            .error(
                400,
                "Validation",
                "PATCH",
                &format!("/instances/{DEMO_INSTANCE_ID}/orgs/{INSTANCE_ORG_ID}"),
                t,
                Some(json!({"limits": {"systemInterval": 3601}})),
            )
            .await,
    );
    check("\"currentCredentials\" is required to change the email or password")(
        server
            .error(
                400,
                "Validation",
                "PATCH",
                "/me",
                t,
                Some(json!({"email": "new.address@example.com"})),
            )
            .await,
    );
    check("An organization must keep at least one admin member")(
        server
            .error(
                400,
                "Validation",
                "PATCH",
                &format!("/orgs/{DELTA_ORG_ID}/member"),
                t,
                Some(json!({"userId": DEMO_USER_ID, "role": "view"})),
            )
            .await,
    );
    let response = server
        .client
        .post(format!("{}/orgs", server.base))
        .bearer_auth(DEMO_TOKEN)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(
        response.json::<Value>().await.expect("json")["type"],
        "InvalidJson"
    );
    let response = server
        .client
        .post(format!("{}/orgs", server.base))
        .bearer_auth(DEMO_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response.status().as_u16(),
        400,
        "a body action without a body"
    );
    let huge = "x".repeat(2 * 1024 * 1024);
    let response = server
        .client
        .post(format!("{}/orgs", server.base))
        .bearer_auth(DEMO_TOKEN)
        .body(huge)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 413);

    // Path and query values.
    check("\"orgId\" must match the pattern ^[A-Fa-f\\d]{24}$ (a 24 character hex id)")(
        server
            .error(400, "Validation", "GET", "/orgs/123", t, None)
            .await,
    );
    check("\"userId\" must match the pattern ^[A-Fa-f\\d]{24}$ (a 24 character hex id)")(
        server
            .error(
                400,
                "Validation",
                "DELETE",
                &format!("{org}/member?userId=xyz"),
                t,
                None,
            )
            .await,
    );
    check("\"userId\" is required")(
        server
            .error(
                400,
                "Validation",
                "DELETE",
                &format!("{org}/member"),
                t,
                None,
            )
            .await,
    );
    check("\"sortField\" must be one of [name, id, creationDate, lastUpdated]")(
        server
            .error(400, "Validation", "GET", "/orgs?sortField=size", t, None)
            .await,
    );
    check("\"sortDirection\" must be one of [asc, desc]")(
        server
            .error(400, "Validation", "GET", "/orgs?sortDirection=up", t, None)
            .await,
    );
    check("\"perPage\" must be at least 1")(
        server
            .error(400, "Validation", "GET", "/orgs?perPage=0", t, None)
            .await,
    );
    check("\"page\" must be an integer")(
        server
            .error(400, "Validation", "GET", "/orgs?page=first", t, None)
            .await,
    );
    check("\"colour\" is not allowed")(
        server
            .error(400, "Validation", "GET", "/orgs?colour=red", t, None)
            .await,
    );
    check("\"itemType\" is required")(
        server
            .error(400, "Validation", "GET", "/me/recentItems", t, None)
            .await,
    );
    check("\"itemType\" must be one of [application, device, flow, dashboard, organization]")(
        server
            .error(
                400,
                "Validation",
                "GET",
                "/me/recentItems?itemType=widget",
                t,
                None,
            )
            .await,
    );
    check("\"resolution\" must be one of [86400000, 3600000]")(
        server
            .error(
                400,
                "Validation",
                "GET",
                "/me/payloadCountsBreakdown?resolution=60000",
                t,
                None,
            )
            .await,
    );
    check("\"asBytes\" must be true or false")(
        server
            .error(
                400,
                "Validation",
                "GET",
                "/me/payloadCounts?asBytes=1",
                t,
                None,
            )
            .await,
    );
    check("\"includeRecent\" must be true or false")(
        server
            .error(400, "Validation", "GET", "/me?includeRecent=yes", t, None)
            .await,
    );
    check("\"start\" must not be after \"end\"")(
        server
            .error(
                400,
                "Validation",
                "GET",
                &format!("/me/deviceCounts?start={JUNE_END}&end={JUNE_START}"),
                t,
                None,
            )
            .await,
    );
    let message = server
        .error(
            400,
            "Validation",
            "GET",
            "/me/payloadCountsBreakdown?start=0&end=1465790400000&resolution=3600000",
            t,
            None,
        )
        .await;
    assert!(message.contains("at most 25000"), "{message}");
    let message = server
        .error(
            400,
            "Validation",
            "GET",
            &format!("{org}?summaryInclude=orgCount"),
            t,
            None,
        )
        .await;
    assert!(
        message.starts_with("\"summaryInclude\" contains unknown summary field orgCount"),
        "{message}"
    );
    // Validation happens after authentication.
    server
        .error(401, "Unauthorized", "GET", "/orgs/123", None, None)
        .await;
}

#[tokio::test]
async fn orgs_list_filters_sorts_and_pages() {
    let server = start_default().await;
    let t = DEMO_TOKEN;
    let all = [
        "Acme Industrial IoT",
        "acme-labs",
        "Blue River Water Utility",
        "Contoso Smart Buildings",
        "Delta Farms Telemetry",
        "Edge Gateway Pilot",
        "Fabrikam Fleet Tracking",
        "Zeta Mining Operations",
    ];
    let list = server.ok("GET", "/orgs", t, None).await;
    assert_eq!(names(&list), all);
    assert_eq!(list["count"], 8);
    assert_eq!(list["totalCount"], 8);
    assert_eq!(list["perPage"], 100);
    assert_eq!(list["page"], 0);
    assert_eq!(list["sortField"], "name");
    assert_eq!(list["sortDirection"], "asc");
    assert!(list.get("filter").is_none());

    let list = server.ok("GET", "/orgs?sortDirection=desc", t, None).await;
    let mut reversed = all.to_vec();
    reversed.reverse();
    assert_eq!(names(&list), reversed);

    let list = server
        .ok("GET", "/orgs?filterField=name&filter=ACME*", t, None)
        .await;
    assert_eq!(names(&list), ["Acme Industrial IoT", "acme-labs"]);
    assert_eq!(
        (list["count"].clone(), list["totalCount"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(list["filter"], "ACME*");
    assert_eq!(list["filterField"], "name");
    let list = server
        .ok("GET", "/orgs?filterField=name&filter=acme%3Flabs", t, None)
        .await;
    assert_eq!(names(&list), ["acme-labs"]);
    let list = server
        .ok("GET", "/orgs?filterField=name&filter=*TELE*", t, None)
        .await;
    assert_eq!(names(&list), ["Delta Farms Telemetry"]);
    let list = server
        .ok("GET", "/orgs?filterField=name&filter=nothing*", t, None)
        .await;
    assert_eq!(list["totalCount"], 0);
    // Without filterField there is no filtering ("Blank or not provided means no filtering").
    let list = server.ok("GET", "/orgs?filter=acme*", t, None).await;
    assert_eq!(list["totalCount"], 8);

    let list = server.ok("GET", "/orgs?perPage=3&page=1", t, None).await;
    assert_eq!(names(&list), &all[3..6]);
    assert_eq!(
        (list["count"].clone(), list["totalCount"].clone()),
        (json!(3), json!(8))
    );
    assert_eq!(
        (list["page"].clone(), list["perPage"].clone()),
        (json!(1), json!(3))
    );
    let list = server.ok("GET", "/orgs?perPage=3&page=2", t, None).await;
    assert_eq!(names(&list), &all[6..]);
    let list = server.ok("GET", "/orgs?perPage=3&page=9", t, None).await;
    assert_eq!(
        (list["count"].clone(), list["totalCount"].clone()),
        (json!(0), json!(8))
    );

    let list = server
        .ok("GET", "/orgs?sortField=creationDate", t, None)
        .await;
    assert_eq!(names(&list)[0], "Contoso Smart Buildings");
    let dates: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["creationDate"].as_str().expect("date"))
        .collect();
    assert!(dates.windows(2).all(|pair| pair[0] <= pair[1]), "{dates:?}");
    let list = server
        .ok(
            "GET",
            "/orgs?sortField=lastUpdated&sortDirection=desc",
            t,
            None,
        )
        .await;
    assert_eq!(names(&list)[0], "Fabrikam Fleet Tracking");
    let list = server.ok("GET", "/orgs?sortField=id", t, None).await;
    let org_ids = ids(&list["items"]);
    let mut sorted = org_ids.clone();
    sorted.sort();
    assert_eq!(org_ids, sorted);

    let list = server
        .ok(
            "GET",
            "/orgs?perPage=1&summaryInclude=memberCount,pendingInviteCount",
            t,
            None,
        )
        .await;
    assert_eq!(
        list["items"][0]["summary"],
        json!({"memberCount": 3, "pendingInviteCount": 2})
    );
    let list = server
        .ok(
            "GET",
            "/orgs?perPage=1&summaryInclude=memberCount,appCount&summaryExclude=appCount",
            t,
            None,
        )
        .await;
    assert_eq!(list["items"][0]["summary"], json!({"memberCount": 3}));
    let list = server
        .ok(
            "GET",
            "/orgs?perPage=1&summaryExclude=payloadCount",
            t,
            None,
        )
        .await;
    let summary = list["items"][0]["summary"].as_object().expect("summary");
    assert!(!summary.contains_key("payloadCount") && summary.contains_key("storageStats"));
    assert_eq!(summary.len(), 29);

    // Another user sees only their own organizations.
    let list = server.ok("GET", "/orgs", SECOND_USER_TOKEN, None).await;
    assert_eq!(
        names(&list),
        ["Acme Industrial IoT", "Northwind Cold Chain"]
    );
}

#[tokio::test]
async fn invite_accept_reject_dismiss_and_revoke() {
    let server = start_default().await;
    let delta = format!("/orgs/{DELTA_ORG_ID}");
    server
        .error(
            404,
            "NotFound",
            "GET",
            &delta,
            Some(SECOND_USER_TOKEN),
            None,
        )
        .await;

    let body = json!({"email": SECOND_USER_EMAIL.to_uppercase(), "role": "edit", "applicationRoles": [], "disallowTransfer": true});
    let pending = server
        .ok("POST", &format!("{delta}/invites"), DEMO_TOKEN, Some(body))
        .await;
    assert_eq!(pending.as_array().map(Vec::len), Some(1));
    assert_eq!(pending[0]["hasExpired"], false);
    assert_eq!(pending[0]["disallowTransfer"], true);
    assert!(is_iso(&pending[0]["inviteDate"]));
    let invite_id = pending[0]["id"].as_str().expect("id").to_string();

    let mine = server
        .ok("GET", "/me/invites", SECOND_USER_TOKEN, None)
        .await;
    assert_eq!(ids(&mine), vec![invite_id.clone()]);
    assert_eq!(mine[0]["orgName"], "Delta Farms Telemetry");
    assert_eq!(
        mine[0]["invitedBy"],
        json!({"fullName": "Dana Demo", "email": DEMO_USER_EMAIL})
    );
    assert_eq!(mine[0]["requiresMFA"], false);
    // The invitation is not the demo user's business.
    server
        .error(
            404,
            "NotFound",
            "GET",
            &format!("/me/invites/{invite_id}"),
            Some(DEMO_TOKEN),
            None,
        )
        .await;

    let result = server
        .ok(
            "POST",
            &format!("/me/invites/{invite_id}"),
            SECOND_USER_TOKEN,
            Some(json!({"action": "accept"})),
        )
        .await;
    assert_eq!(result, json!({"result": "accepted", "orgId": DELTA_ORG_ID}));
    let org = server.ok("GET", &delta, SECOND_USER_TOKEN, None).await;
    assert_eq!(member_role(&org, SECOND_USER_ID).as_deref(), Some("edit"));
    assert_eq!(
        server
            .ok("GET", &format!("{delta}/invites"), DEMO_TOKEN, None)
            .await,
        json!([])
    );
    assert_eq!(
        server
            .ok("GET", "/me/invites", SECOND_USER_TOKEN, None)
            .await,
        json!([])
    );
    server
        .error(
            404,
            "NotFound",
            "POST",
            &format!("/me/invites/{invite_id}"),
            Some(SECOND_USER_TOKEN),
            Some(json!({"action": "accept"})),
        )
        .await;
    // Inviting a member is refused.
    let body = json!({"email": SECOND_USER_EMAIL, "role": "view"});
    server
        .error(
            400,
            "Validation",
            "POST",
            &format!("{delta}/invites"),
            Some(DEMO_TOKEN),
            Some(body),
        )
        .await;

    // Reject: the organization no longer sees the invitation.
    let labs = format!("/orgs/{ACME_LABS_ORG_ID}");
    let body = json!({"email": SECOND_USER_EMAIL, "role": "view"});
    let pending = server
        .ok(
            "POST",
            &format!("{labs}/invites"),
            DEMO_TOKEN,
            Some(body.clone()),
        )
        .await;
    let rejected = pending[0]["id"].as_str().expect("id").to_string();
    let result = server
        .ok(
            "POST",
            &format!("/me/invites/{rejected}"),
            SECOND_USER_TOKEN,
            Some(json!({"action": "reject"})),
        )
        .await;
    assert_eq!(
        result,
        json!({"result": "rejected", "orgId": ACME_LABS_ORG_ID})
    );
    assert_eq!(
        server
            .ok("GET", &format!("{labs}/invites"), DEMO_TOKEN, None)
            .await,
        json!([])
    );
    server
        .error(404, "NotFound", "GET", &labs, Some(SECOND_USER_TOKEN), None)
        .await;

    // Dismiss: hidden from the invitee, still pending for the organization.
    let pending = server
        .ok(
            "POST",
            &format!("{labs}/invites"),
            DEMO_TOKEN,
            Some(body.clone()),
        )
        .await;
    let dismissed = pending[0]["id"].as_str().expect("id").to_string();
    let result = server
        .ok(
            "POST",
            &format!("/me/invites/{dismissed}"),
            SECOND_USER_TOKEN,
            Some(json!({"action": "dismiss"})),
        )
        .await;
    assert_eq!(result["result"], "dismissed");
    assert_eq!(
        server
            .ok("GET", "/me/invites", SECOND_USER_TOKEN, None)
            .await,
        json!([])
    );
    assert_eq!(
        ids(&server
            .ok("GET", &format!("{labs}/invites"), DEMO_TOKEN, None)
            .await),
        vec![dismissed.clone()]
    );

    // Re-inviting replaces the pending invitation; revoking removes it.
    let pending = server
        .ok("POST", &format!("{labs}/invites"), DEMO_TOKEN, Some(body))
        .await;
    assert_eq!(pending.as_array().map(Vec::len), Some(1));
    let replacement = pending[0]["id"].as_str().expect("id").to_string();
    assert_ne!(replacement, dismissed);
    let remaining = server
        .ok(
            "DELETE",
            &format!("{labs}/invites?inviteId={replacement}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    assert_eq!(remaining, json!([]));
    server
        .error(
            404,
            "NotFound",
            "DELETE",
            &format!("{labs}/invites?inviteId={replacement}"),
            Some(DEMO_TOKEN),
            None,
        )
        .await;

    // A member may leave; the last admin may not.
    let org = server
        .ok(
            "DELETE",
            &format!("{delta}/member?userId={SECOND_USER_ID}"),
            SECOND_USER_TOKEN,
            None,
        )
        .await;
    assert_eq!(member_role(&org, SECOND_USER_ID), None);
    server
        .error(
            400,
            "Validation",
            "DELETE",
            &format!("{delta}/member?userId={DEMO_USER_ID}"),
            Some(DEMO_TOKEN),
            None,
        )
        .await;
}

#[tokio::test]
async fn expired_invitations_are_gone() {
    // The seeded invitation expired in January 2025.
    let server = start_default().await;
    let invite = server
        .ok(
            "GET",
            &format!("/me/invites/{EXPIRED_INVITE_ID}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    assert_eq!(invite["expired"], true);
    for action in ["accept", "reject"] {
        let message = server
            .error(
                410,
                "InvitationExpired",
                "POST",
                &format!("/me/invites/{EXPIRED_INVITE_ID}"),
                Some(DEMO_TOKEN),
                Some(json!({"action": action})),
            )
            .await;
        assert!(message.contains(EXPIRED_INVITE_ID));
    }
    let result = server
        .ok(
            "POST",
            &format!("/me/invites/{EXPIRED_INVITE_ID}"),
            DEMO_TOKEN,
            Some(json!({"action": "dismiss"})),
        )
        .await;
    assert_eq!(result["result"], "dismissed");
    drop(server);

    // A tiny invite_ttl makes fresh invitations expire too.
    let options = SandboxOptions {
        invite_ttl: Duration::from_millis(150),
        ..SandboxOptions::default()
    };
    let server = start(options).await;
    let delta = format!("/orgs/{DELTA_ORG_ID}");
    let pending = server
        .ok(
            "POST",
            &format!("{delta}/invites"),
            DEMO_TOKEN,
            Some(json!({"email": SECOND_USER_EMAIL, "role": "view"})),
        )
        .await;
    assert_eq!(pending[0]["ttl"], 150);
    let invite_id = pending[0]["id"].as_str().expect("id").to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = server
        .ok("GET", &format!("{delta}/invites"), DEMO_TOKEN, None)
        .await;
    assert_eq!(pending[0]["hasExpired"], true);
    assert_eq!(
        server
            .ok("GET", "/me/invites", SECOND_USER_TOKEN, None)
            .await[0]["expired"],
        true
    );
    server
        .error(
            410,
            "InvitationExpired",
            "POST",
            &format!("/me/invites/{invite_id}"),
            Some(SECOND_USER_TOKEN),
            Some(json!({"action": "accept"})),
        )
        .await;
    server
        .error(
            410,
            "InvitationExpired",
            "POST",
            &format!("/me/invites/{DEMO_INVITE_ID}"),
            Some(DEMO_TOKEN),
            Some(json!({"action": "accept"})),
        )
        .await;
    server
        .error(
            404,
            "NotFound",
            "GET",
            &delta,
            Some(SECOND_USER_TOKEN),
            None,
        )
        .await;
}

#[tokio::test]
async fn password_change_can_invalidate_existing_tokens() {
    let server = start_default().await;
    let before = server.ok("GET", "/me", DEMO_TOKEN, None).await;
    assert!(before.get("tokenCutoff").is_none());
    server.ok("GET", "/me", USER_READ_TOKEN, None).await;

    let body = json!({"password": DEMO_USER_PASSWORD, "newPassword": "Brand-New-Passw0rd!", "invalidateExistingTokens": true});
    let authed = server
        .ok("PATCH", "/me/changePassword", DEMO_TOKEN, Some(body))
        .await;
    assert_eq!(authed["userId"], DEMO_USER_ID);
    let token = authed["token"].as_str().expect("token").to_string();

    server
        .error(401, "Unauthorized", "GET", "/me", Some(DEMO_TOKEN), None)
        .await;
    server
        .error(
            401,
            "Unauthorized",
            "GET",
            "/me",
            Some(USER_READ_TOKEN),
            None,
        )
        .await;
    let me = server.ok("GET", "/me", &token, None).await;
    assert!(is_iso(&me["tokenCutoff"]));
    assert_ne!(me["passwordLastUpdated"], before["passwordLastUpdated"]);
    // The new token carries the old token's scopes.
    server
        .expect(
            201,
            "POST",
            "/orgs",
            Some(&token),
            Some(json!({"name": "Made with the new token"})),
        )
        .await;
    // Other users' tokens are untouched.
    server.ok("GET", "/me", SECOND_USER_TOKEN, None).await;

    // The old password is gone, the new one works.
    let old = json!({"password": DEMO_USER_PASSWORD, "twoFactorCode": TWO_FACTOR_CODE});
    server
        .error(
            400,
            "InvalidCredentials",
            "PATCH",
            "/me/enableTwoFactorAuth",
            Some(&token),
            Some(old),
        )
        .await;
    server
        .ok("PATCH", "/me/generateTwoFactorAuth", &token, None)
        .await;
    let new = json!({"password": "Brand-New-Passw0rd!", "twoFactorCode": TWO_FACTOR_CODE});
    server
        .ok("PATCH", "/me/enableTwoFactorAuth", &token, Some(new))
        .await;
    // With two-factor authentication on, password checks need the code as well.
    let body = json!({"password": "Brand-New-Passw0rd!", "newPassword": "Another-Passw0rd!"});
    server
        .error(
            400,
            "InvalidCredentials",
            "PATCH",
            "/me/changePassword",
            Some(&token),
            Some(body),
        )
        .await;
    let body = json!({"password": "Brand-New-Passw0rd!", "newPassword": "Another-Passw0rd!", "twoFactorCode": TWO_FACTOR_CODE});
    server
        .ok("PATCH", "/me/changePassword", &token, Some(body))
        .await;
    server.ok("GET", "/me", &token, None).await;

    // Deleting the account ends every token.
    let body = json!({"email": DEMO_USER_EMAIL, "password": "Another-Passw0rd!", "twoFactorCode": TWO_FACTOR_CODE});
    server.ok("POST", "/me/delete", &token, Some(body)).await;
    server
        .error(401, "Unauthorized", "GET", "/me", Some(&token), None)
        .await;
    let list = server
        .ok(
            "GET",
            &format!("/orgs/{DEMO_ORG_ID}"),
            SECOND_USER_TOKEN,
            None,
        )
        .await;
    assert_eq!(member_role(&list, DEMO_USER_ID), None);
}

#[tokio::test]
async fn usage_is_deterministic_and_per_caller() {
    let server = start_default().await;
    let window = format!("start={JUNE_START}&end={JUNE_END}");
    let mine = server
        .ok(
            "GET",
            &format!("/me/payloadCounts?{window}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    let again = server
        .ok(
            "GET",
            &format!("/me/payloadCounts?{window}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    let theirs = server
        .ok(
            "GET",
            &format!("/me/payloadCounts?{window}"),
            SECOND_USER_TOKEN,
            None,
        )
        .await;
    assert_eq!(mine, again);
    assert_ne!(mine, theirs);
    for kind in [
        "appFile",
        "dataTable",
        "deviceState",
        "mqttIn",
        "webhook",
        "virtualButton",
    ] {
        assert!(mine[kind].is_object(), "{kind} in {mine}");
    }
    let state = mine["deviceState"]["mqtt"].as_u64().expect("count");
    let bytes = server
        .ok(
            "GET",
            &format!("/me/payloadCounts?{window}&asBytes=true"),
            DEMO_TOKEN,
            None,
        )
        .await;
    assert!(bytes["deviceState"]["mqtt"].as_u64().expect("bytes") > state);

    let my_devices = server
        .ok(
            "GET",
            &format!("/me/deviceCounts?{window}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    let their_devices = server
        .ok(
            "GET",
            &format!("/me/deviceCounts?{window}"),
            SECOND_USER_TOKEN,
            None,
        )
        .await;
    assert_ne!(my_devices["counts"], their_devices["counts"]);
    assert_eq!(my_devices["counts"][0]["date"], "2025-06-01T00:00:00.000Z");
    assert_eq!(my_devices["counts"][29]["date"], "2025-06-30T00:00:00.000Z");
    assert_eq!(my_devices["end"], "2025-06-30T00:00:00.000Z");

    // Organizations differ from each other; an instance organization reports the same numbers
    // through both paths.
    let acme = server
        .ok(
            "GET",
            &format!("/orgs/{DEMO_ORG_ID}/payloadCountsBreakdown?{window}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    let northwind = server
        .ok(
            "GET",
            &format!("/orgs/{SECOND_USER_ORG_ID}/payloadCountsBreakdown?{window}"),
            SECOND_USER_TOKEN,
            None,
        )
        .await;
    assert_ne!(acme["counts"], northwind["counts"]);
    let direct = server
        .ok(
            "GET",
            &format!("/orgs/{INSTANCE_ORG_ID}/deviceCounts?{window}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    let via_instance = server
        .ok(
            "GET",
            &format!("/instances/{DEMO_INSTANCE_ID}/orgs/{INSTANCE_ORG_ID}/deviceCounts?{window}"),
            INSTANCE_ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(direct, via_instance);

    // Hourly resolution splits each day exactly; non-billable payloads only add.
    let day = format!("start={JUNE_START}&end={}", JUNE_START + DAY_MS - 1);
    let daily = server
        .ok(
            "GET",
            &format!("/me/payloadCountsBreakdown?{day}"),
            DEMO_TOKEN,
            None,
        )
        .await;
    let hourly = server
        .ok(
            "GET",
            &format!("/me/payloadCountsBreakdown?{day}&resolution=3600000"),
            DEMO_TOKEN,
            None,
        )
        .await;
    assert_eq!(daily["counts"].as_array().map(Vec::len), Some(1));
    assert_eq!(hourly["counts"].as_array().map(Vec::len), Some(24));
    assert_eq!(hourly["counts"][1]["date"], "2025-06-01T01:00:00.000Z");
    assert_eq!(sum_counts(&hourly, "value"), sum_counts(&daily, "value"));
    let everything = server
        .ok(
            "GET",
            &format!("/me/payloadCountsBreakdown?{day}&includeNonBillable=true"),
            DEMO_TOKEN,
            None,
        )
        .await;
    assert!(sum_counts(&everything, "value") > sum_counts(&daily, "value"));

    // Default window: the last 30 days up to now, one point per day.
    let recent = server.ok("GET", "/me/deviceCounts", DEMO_TOKEN, None).await;
    assert_eq!(recent["counts"].as_array().map(Vec::len), Some(31));
    let recent = server
        .ok(
            "GET",
            &format!("/instances/{DEMO_INSTANCE_ID}/orgs/{INSTANCE_ORG_ID}/deviceCounts"),
            DEMO_TOKEN,
            None,
        )
        .await;
    assert_eq!(recent["counts"].as_array().map(Vec::len), Some(31));
    // Relative start: the last 7 days.
    let week = server
        .ok(
            "GET",
            "/me/notebookMinuteCounts?start=-604800000",
            DEMO_TOKEN,
            None,
        )
        .await;
    assert!(matches!(
        week["counts"].as_array().map(Vec::len),
        Some(7 | 8)
    ));
    // The documented example window works (nothing before the account existed).
    let old = server
        .ok(
            "GET",
            "/me/deviceCounts?start=0&end=1465790400000",
            DEMO_TOKEN,
            None,
        )
        .await;
    assert_eq!(sum_counts(&old, "total"), 0);
    // The summary agrees with the usage endpoints.
    let me = server
        .ok(
            "GET",
            "/me?summaryInclude=deviceCount,notebookStats",
            DEMO_TOKEN,
            None,
        )
        .await;
    assert!(me["summary"]["deviceCount"].as_i64().expect("devices") > 0);
    assert!(me["summary"]["notebookStats"]["minutesThisPeriod"].is_u64());
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = std::env::temp_dir().join(format!(
        "wnology-sandbox-{}-{nanos}-{name}",
        std::process::id()
    ));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

#[tokio::test]
async fn seed_file_replaces_the_built_in_seed() {
    let seed = json!({
        "users": [{
            "id": "aaaaaaaaaaaaaaaaaaaaaaa1",
            "email": "solo@example.org",
            "password": "Solo-Passw0rd!",
            "firstName": "Solo",
            "creationDate": "2023-01-01T00:00:00.000Z",
            "usage": {"devices": 7, "payloadsPerDay": 100, "notebookMinutesPerDay": 0}
        }],
        "organizations": [{
            "id": "bbbbbbbbbbbbbbbbbbbbbbb1",
            "name": "Solo Org",
            "creationDate": "2024-01-01T00:00:00.000Z",
            "members": [{"userId": "aaaaaaaaaaaaaaaaaaaaaaa1", "role": "admin"}]
        }],
        "invites": [{
            "id": "ccccccccccccccccccccccc1",
            "orgId": "bbbbbbbbbbbbbbbbbbbbbbb1",
            "email": "friend@example.org",
            "role": "view",
            "inviteDate": "2024-02-01T00:00:00.000Z",
            "ttlMs": 1000
        }],
        "tokens": [{
            "token": "custom-seed-token",
            "description": "the only user",
            "subject": {"user": "aaaaaaaaaaaaaaaaaaaaaaa1"},
            "scopes": ["all.User"]
        }]
    });
    let path = temp_file("seed.json", &seed.to_string());
    let sandbox = Sandbox::new(SandboxOptions {
        seed: Some(path.clone()),
        ..SandboxOptions::default()
    })
    .expect("seed loads");
    let _ = std::fs::remove_file(&path);
    let tokens = sandbox.tokens();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].token, "custom-seed-token");
    assert_eq!(tokens[0].scopes, ["all.User"]);
    let server = start_sandbox(sandbox).await;

    server
        .error(401, "Unauthorized", "GET", "/me", Some(DEMO_TOKEN), None)
        .await;
    let me = server.ok("GET", "/me", "custom-seed-token", None).await;
    assert_eq!(me["email"], "solo@example.org");
    assert_eq!(me["emailVerified"], true);
    let orgs = server.ok("GET", "/orgs", "custom-seed-token", None).await;
    assert_eq!(names(&orgs), ["Solo Org"]);
    let invites = server
        .ok(
            "GET",
            "/orgs/bbbbbbbbbbbbbbbbbbbbbbb1/invites",
            "custom-seed-token",
            None,
        )
        .await;
    assert_eq!(invites[0]["ttl"], 1000);
    assert_eq!(invites[0]["hasExpired"], true);
    let window = format!("start={JUNE_START}&end={JUNE_END}");
    let devices = server
        .ok(
            "GET",
            &format!("/me/deviceCounts?{window}"),
            "custom-seed-token",
            None,
        )
        .await;
    assert!(
        devices["counts"][0]["total"]
            .as_i64()
            .is_some_and(|total| (6..=7).contains(&total))
    );

    // The built-in seed is expressible in the format: dump it, load it back.
    let demo = serde_json::to_string_pretty(&Seed::demo()).expect("serializes");
    let path = temp_file("demo.json", &demo);
    let sandbox = Sandbox::new(SandboxOptions {
        seed: Some(path.clone()),
        ..SandboxOptions::default()
    })
    .expect("demo seed loads");
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        sandbox.tokens(),
        Sandbox::new(SandboxOptions::default())
            .expect("default")
            .tokens()
    );
    let server = start_sandbox(sandbox).await;
    assert_eq!(
        server.ok("GET", "/me", DEMO_TOKEN, None).await["id"],
        DEMO_USER_ID
    );

    // Broken seeds are reported, not served.
    let missing = std::env::temp_dir().join("wnology-sandbox-no-such-seed.json");
    let error = Sandbox::new(SandboxOptions {
        seed: Some(missing),
        ..SandboxOptions::default()
    })
    .expect_err("missing file");
    assert!(matches!(error, SandboxError::ReadSeed { .. }), "{error}");
    let path = temp_file("bad.json", "{\"users\": [], \"colour\": 1}");
    let error = Sandbox::new(SandboxOptions {
        seed: Some(path.clone()),
        ..SandboxOptions::default()
    })
    .expect_err("unknown key");
    let _ = std::fs::remove_file(&path);
    assert!(matches!(error, SandboxError::ParseSeed { .. }), "{error}");
    let dangling = json!({"users": [], "tokens": [{"token": "t", "subject": {"user": "aaaaaaaaaaaaaaaaaaaaaaa1"}, "scopes": ["all.User"]}]});
    let path = temp_file("dangling.json", &dangling.to_string());
    let error = Sandbox::new(SandboxOptions {
        seed: Some(path.clone()),
        ..SandboxOptions::default()
    })
    .expect_err("dangling");
    let _ = std::fs::remove_file(&path);
    assert!(matches!(error, SandboxError::InvalidSeed(_)), "{error}");
    assert!(
        error.to_string().contains("aaaaaaaaaaaaaaaaaaaaaaa1"),
        "{error}"
    );
}

#[tokio::test]
async fn tokens_and_request_count() {
    let server = start_default().await;
    let tokens = server.sandbox.tokens();
    let demo = tokens
        .iter()
        .find(|token| token.token == DEMO_TOKEN)
        .expect("demo token listed");
    assert!(demo.scopes.contains(&"all.User".to_string()));
    for token in [
        USER_READ_TOKEN,
        ORG_READ_TOKEN,
        SECOND_USER_TOKEN,
        INSTANCE_ADMIN_TOKEN,
    ] {
        assert!(
            tokens
                .iter()
                .any(|listed| listed.token == token && !listed.description.is_empty()),
            "{token}"
        );
    }
    let before = server.sandbox.request_count();
    server.ok("GET", "/me", DEMO_TOKEN, None).await;
    server
        .expect(404, "GET", "/nowhere", Some(DEMO_TOKEN), None)
        .await;
    server.expect(401, "GET", "/me", None, None).await;
    assert_eq!(server.sandbox.request_count(), before + 3);

    // HTTP/2 with prior knowledge works too (the gateway may use it).
    let client = Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = client
        .get(format!("{}/me", server.base))
        .bearer_auth(DEMO_TOKEN)
        .send()
        .await
        .expect("h2");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn serve_returns_after_shutdown() {
    let mut server = start_default().await;
    server.ok("GET", "/me", DEMO_TOKEN, None).await;
    let shutdown = server.shutdown.take().expect("shutdown sender");
    let task = server.task.take().expect("server task");
    let _ = shutdown.send(());
    let result = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "serve did not stop cleanly: {result:?}"
    );
}

/// The `wnology-sandbox` binary, a child process stopped by its PID when dropped.
struct SandboxBinary(std::process::Child);

impl Drop for SandboxBinary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_the_seed_it_is_given_and_prints_its_address_and_tokens() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = std::env::temp_dir().join(format!("wnology-sandbox-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let seed_path = dir.join("seed.json");
    let mut seed = Seed::demo();
    seed.tokens.retain(|token| token.token == DEMO_TOKEN);
    std::fs::write(&seed_path, serde_json::to_string(&seed).expect("seed JSON")).expect("seed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wnology-sandbox"))
        .args(["--listen", "127.0.0.1:0", "--sandbox-invite-ttl", "90s"])
        .arg("--sandbox-seed")
        .arg(&seed_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let _child = SandboxBinary(child);
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|line| line.expect("a line"))
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .expect("the banner within 30 s")
        .expect("reader");
    let base = lines[0]
        .rsplit_once(" at ")
        .map(|(_, url)| url.to_string())
        .unwrap_or_else(|| panic!("no address in {lines:?}"));
    assert!(base.starts_with("http://127.0.0.1:"), "{lines:?}");
    assert!(lines[2].contains(DEMO_TOKEN), "{lines:?}");
    assert_eq!(lines.len(), 3, "one token in the seed: {lines:?}");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::builder().no_proxy().build().expect("client");
    let me = client
        .get(format!("{base}/me"))
        .bearer_auth(DEMO_TOKEN)
        .send()
        .await
        .expect("GET /me");
    assert_eq!(me.status().as_u16(), 200);
    let removed = client
        .get(format!("{base}/me"))
        .bearer_auth(USER_READ_TOKEN)
        .send()
        .await
        .expect("GET /me");
    assert_eq!(
        removed.status().as_u16(),
        401,
        "the seed file replaced the demo seed"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Faults on demand: `--sandbox-faults` (here its option) fails the exact share of calls asked
/// for, `PUT /_sandbox/faults` changes it at run time (refusing a share outside 0..1), `GET`
/// shows it, and `hang` answers nothing within a client's patience.
#[tokio::test]
async fn faults_on_demand() {
    use wnology_sandbox::faults::{FaultMode, Faults};
    let server = start(SandboxOptions {
        faults: "503:0.5".parse().expect("faults"),
        ..SandboxOptions::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(server.call("GET", "/me", Some(DEMO_TOKEN), None).await.0);
    }
    assert_eq!(statuses, [200, 503, 200, 503]);
    let shown = server
        .expect(200, "GET", "/_sandbox/faults", None, None)
        .await;
    assert_eq!(shown, json!({"mode": "503", "share": 0.5}));

    server
        .expect(
            400,
            "PUT",
            "/_sandbox/faults",
            None,
            Some(json!({"mode": "503", "share": 2})),
        )
        .await;
    server
        .expect(
            200,
            "PUT",
            "/_sandbox/faults",
            None,
            Some(json!({"mode": "off"})),
        )
        .await;
    for _ in 0..3 {
        server.ok("GET", "/me", DEMO_TOKEN, None).await;
    }

    server
        .expect(
            200,
            "PUT",
            "/_sandbox/faults",
            None,
            Some(json!({"mode": "hang"})),
        )
        .await;
    assert_eq!(
        server.sandbox.faults().get(),
        Faults {
            mode: FaultMode::Hang,
            share: 1.0
        }
    );
    let impatient = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let hung = impatient
        .get(format!("{}/me", server.base))
        .bearer_auth(DEMO_TOKEN)
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()), "no answer");
}
