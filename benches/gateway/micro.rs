//! The cache-hit path taken apart, in process and without a transport: the whole
//! `Gateway::call` on a warm key, the bare handler's equivalent, and each step of the wrapper
//! on its own, in nanoseconds and allocations per operation (single thread, so these are CPU
//! costs, not latencies under load).

use std::{future::Future, hint::black_box, time::Instant};

use bytes::BytesMut;
use prost::Message;
use tonic::{Request, Response, metadata::AsciiMetadataValue, metadata::MetadataMap};
use wnology_gateway::{
    cache::{CacheKey, Directive, Fetched},
    error::GatewayError,
    gateway::{Gateway, RequestId, bearer_authorization},
    json::{self, UpstreamJson},
    metrics::RpcLabels,
    proto::{MePayloadCountsRequest, PayloadStats},
    routes, upstream,
};

use crate::alloc::{self, Snapshot};

/// One measured operation.
pub struct Row {
    pub name: &'static str,
    pub ns: f64,
    pub allocs: f64,
    pub bytes: f64,
}

async fn measure<F, Fut>(name: &'static str, iters: u64, mut op: F) -> Row
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..iters.min(1_000) {
        op().await;
    }
    let before = Snapshot::now();
    alloc::enable(true);
    let started = Instant::now();
    for _ in 0..iters {
        op().await;
    }
    let elapsed = started.elapsed();
    alloc::enable(false);
    let delta = Snapshot::now().since(&before);
    Row {
        name,
        ns: elapsed.as_nanos() as f64 / iters as f64,
        allocs: delta.total_count() as f64 / iters as f64,
        bytes: delta.total_bytes() as f64 / iters as f64,
    }
}

/// Runs every row against `gateway`, whose cache must hold `request` for `authorization`.
pub async fn run(
    gateway: &Gateway,
    request: MePayloadCountsRequest,
    authorization: AsciiMetadataValue,
    stats: &PayloadStats,
    upstream_body: &[u8],
    iters: u64,
    only_call: bool,
) -> Vec<Row> {
    let route = &routes::ME_PAYLOAD_COUNTS;
    let cache = gateway.cache();
    let with_token = || {
        let mut call = Request::new(request);
        call.metadata_mut()
            .insert("authorization", authorization.clone());
        call
    };
    let probe = gateway
        .call::<_, PayloadStats>(route, with_token())
        .await
        .expect("warm key answers");
    assert_eq!(
        probe.metadata().get("x-cache").map(|v| v.as_bytes()),
        Some(&b"hit"[..]),
        "the micro-benchmark needs a warm key"
    );
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", authorization.clone());
    let header = bearer_authorization(&metadata).expect("bearer token");
    let key = CacheKey {
        route: route.action,
        token: cache.token_id(header.as_bytes()),
        org: None,
        me: true,
        org_list: false,
        request: request.encode_to_vec().into_boxed_slice(),
    };
    let ttl = cache
        .policy()
        .ttl(route.cache)
        .expect("usage reads are cached");
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let empty = MetadataMap::new();

    let mut rows = Vec::new();
    rows.push(
        measure(
            "Gateway::call, cache hit (whole wrapper)",
            iters,
            || async {
                let response = gateway
                    .call::<_, PayloadStats>(route, with_token())
                    .await
                    .expect("hit");
                black_box(response);
            },
        )
        .await,
    );
    if only_call {
        return rows;
    }
    rows.push(
        measure(
            "bare handler (Request + clone + Response)",
            iters,
            || async {
                let call = black_box(with_token());
                black_box(Response::new(stats.clone()));
                drop(call);
            },
        )
        .await,
    );
    rows.push(
        measure("  bearer_authorization", iters, || async {
            black_box(bearer_authorization(black_box(&metadata)).expect("token"));
        })
        .await,
    );
    rows.push(
        measure("  RequestId::from_metadata (minted)", iters, || async {
            black_box(RequestId::from_metadata(black_box(&empty)));
        })
        .await,
    );
    rows.push(
        measure(
            "  json::to_json_value + upstream::resolve",
            iters,
            || async {
                let value = json::to_json_value(black_box(&request)).expect("json");
                black_box(upstream::resolve(route, &value).expect("resolves"));
            },
        )
        .await,
    );
    rows.push(
        measure("  token_id (HMAC-SHA256 of the token)", iters, || async {
            black_box(cache.token_id(black_box(header.as_bytes())));
        })
        .await,
    );
    rows.push(
        measure(
            "  cache key request bytes (encode_to_vec)",
            iters,
            || async {
                black_box(black_box(&request).encode_to_vec().into_boxed_slice());
            },
        )
        .await,
    );
    rows.push(
        measure("  ResponseCache::get_or_load, hit", iters, || async {
            let served = cache
                .get_or_load(key.clone(), ttl, Directive::Default, || async {
                    Err::<Fetched, _>(GatewayError::Internal("unexpected load".into()))
                })
                .await
                .expect("hit");
            black_box(served);
        })
        .await,
    );
    rows.push(
        measure("  PayloadStats clone (downcast per hit)", iters, || async {
            black_box(black_box(stats).clone());
        })
        .await,
    );
    rows.push(
        measure("  PayloadStats encode (reused buffer)", iters, || {
            buffer.clear();
            black_box(stats).encode(&mut buffer).expect("encodes");
            black_box(&buffer);
            std::future::ready(())
        })
        .await,
    );
    rows.push(
        measure("  Metrics::rpc (histogram observe)", iters, || async {
            gateway.metrics().rpc(
                RpcLabels {
                    service: route.service.grpc_name(),
                    method: route.rpc,
                    code: "OK",
                },
                std::time::Duration::from_micros(50),
            );
        })
        .await,
    );
    let encoded = bytes::Bytes::from(stats.encode_to_vec());
    rows.push(
        measure("  PayloadStats decode from its encoding", iters, || async {
            black_box(PayloadStats::decode(black_box(encoded.clone())).expect("decodes"));
        })
        .await,
    );
    rows.push(
        measure(
            "miss only: PayloadStats::from_upstream_json",
            iters,
            || async {
                black_box(
                    PayloadStats::from_upstream_json(black_box(upstream_body)).expect("decodes"),
                );
            },
        )
        .await,
    );
    rows
}
