//! Across randomized interleavings of reads and writes by several tokens on several
//! organizations, no caller ever receives another token's answer, and no read that starts after
//! a write completes sees data from before it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::support::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use tokio::sync::Semaphore;
use wnology_gateway::proto;

const TOKENS: [&str; 4] = ["alice-full", "alice-read-only", "bob", "carol"];
const ORGS: u32 = 4;
const OPERATIONS: usize = 10_000;
const CONCURRENCY: usize = 32;

/// An upstream whose answers name the calling token, the organization and its version.
async fn naming_upstream() -> RecordingUpstream {
    let versions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    RecordingUpstream::start_with(move |request| {
        let token = request
            .header("authorization")
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
            .to_string();
        let path = request
            .path_and_query
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut versions = versions.lock().unwrap();
        if let Some(org) = path.strip_prefix("/orgs/") {
            let version = versions.entry(org.to_string()).or_default();
            if request.method == "PATCH" {
                *version += 1;
            }
            Answer::json(
                200,
                &json!({"id": org, "name": format!("{token}|{org}|{version}")}),
            )
        } else if path == "/orgs" {
            Answer::json(
                200,
                &json!({"items": [{"name": format!("{token}|list")}], "count": 1}),
            )
        } else {
            Answer::json(200, &json!({"email": format!("{token}@example.com")}))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_ever_reads_another_tokens_answer_and_reads_follow_writes() {
    let upstream = naming_upstream().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let channel = gateway.channel().await;
    let completed_versions: Arc<Vec<AtomicU64>> =
        Arc::new((0..ORGS).map(|_| AtomicU64::new(0)).collect());
    let leaks = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut rng = StdRng::seed_from_u64(0x5eed_cafe);
    let mut tasks = Vec::with_capacity(OPERATIONS);

    for _ in 0..OPERATIONS {
        let token = TOKENS[rng.random_range(0..TOKENS.len())];
        let org_index = rng.random_range(0..ORGS);
        let operation = rng.random_range(0..100);
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let (channel, versions, leaks, stale) = (
            channel.clone(),
            completed_versions.clone(),
            leaks.clone(),
            stale.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let org_id = id(org_index + 1);
            let mut org = proto::org_service_client::OrgServiceClient::new(channel.clone());
            let mut me = proto::me_service_client::MeServiceClient::new(channel);
            match operation {
                0..=9 => {
                    let patch = proto::OrgPatchRequest {
                        org_id: org_id.clone(),
                        body: Some(proto::OrgPatch {
                            description: Some("x".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let answer = org
                        .patch(with_token(patch, token))
                        .await
                        .unwrap()
                        .into_inner();
                    let version: u64 = answer
                        .name
                        .unwrap()
                        .rsplit('|')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    versions[org_index as usize].fetch_max(version, Ordering::SeqCst);
                }
                10..=69 => {
                    let floor = versions[org_index as usize].load(Ordering::SeqCst);
                    let request = proto::OrgGetRequest {
                        org_id: org_id.clone(),
                        ..Default::default()
                    };
                    let name = org
                        .get(with_token(request, token))
                        .await
                        .unwrap()
                        .into_inner()
                        .name
                        .unwrap();
                    let mut parts = name.split('|');
                    let (who, which, version) = (
                        parts.next().unwrap(),
                        parts.next().unwrap(),
                        parts.next().unwrap(),
                    );
                    if who != token || which != org_id {
                        leaks.fetch_add(1, Ordering::SeqCst);
                    }
                    if version.parse::<u64>().unwrap() < floor {
                        stale.fetch_add(1, Ordering::SeqCst);
                    }
                }
                70..=84 => {
                    let orgs = org
                        .list(with_token(proto::OrgListRequest::default(), token))
                        .await
                        .unwrap()
                        .into_inner();
                    if orgs.items[0].name.as_deref() != Some(&format!("{token}|list")) {
                        leaks.fetch_add(1, Ordering::SeqCst);
                    }
                }
                _ => {
                    let answer = me
                        .get(with_token(proto::MeGetRequest::default(), token))
                        .await
                        .unwrap()
                        .into_inner();
                    if answer.email.as_deref() != Some(&format!("{token}@example.com")) {
                        leaks.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        leaks.load(Ordering::SeqCst),
        0,
        "answers served to another token"
    );
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "reads that started after a write saw data from before it"
    );
    let figures = gateway.gateway.cache().figures();
    assert!(figures.hits > 1000, "the cache was exercised: {figures:?}");
    assert!(figures.invalidations > 0, "{figures:?}");
}
