//! The cache-hit path taken apart, in process and without a transport: the whole
//! `Gateway::call` on a warm key, the bare handler's equivalent, and each step of the wrapper
//! on its own, in nanoseconds and allocations per operation (single thread, so these are CPU
//! costs, not latencies under load).

use std::{future::Future, hint::black_box, time::Instant};

use bytes::{BufMut, BytesMut};
use prost::Message;
use tonic::{Request, Response, metadata::AsciiMetadataValue, metadata::MetadataMap};
use wnology_gateway::{
    cache::{CacheControl, CacheKey},
    gateway::{Gateway, RequestId, bearer_authorization},
    json::{self, UpstreamJson},
    metrics::RpcLabels,
    proto::{MePayloadCountsRequest, PayloadStats},
    reply::Encoded,
    routes, upstream,
};

use crate::alloc::{self, Snapshot};

/// One measured operation.
pub(crate) struct Row {
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
pub(crate) async fn run(
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
        request: request.encode_to_vec().into_boxed_slice(),
    };
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let empty = MetadataMap::new();
    let wire = std::cell::RefCell::new(BytesMut::with_capacity(8 * 1024));

    let mut rows = Vec::new();
    // Both whole rows include what the codec does with the answer (the gateway copies its
    // cached bytes, the bare server encodes its clone) and the drop of everything.
    rows.push(
        measure(
            "Gateway::call, cache hit, + copy to the wire buffer",
            iters,
            || async {
                let response = gateway
                    .call::<_, PayloadStats>(route, with_token())
                    .await
                    .expect("hit");
                let mut buffer = wire.borrow_mut();
                buffer.clear();
                buffer.put_slice(response.get_ref().bytes());
                black_box(&*buffer);
            },
        )
        .await,
    );
    if only_call {
        return rows;
    }
    rows.push(
        measure(
            "bare handler: Request + clone + Response + encode",
            iters,
            || {
                let call = black_box(with_token());
                let response = Response::new(stats.clone());
                buffer.clear();
                response.get_ref().encode(&mut buffer).expect("encodes");
                black_box(&buffer);
                drop(call);
                std::future::ready(())
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
        measure("  ResponseCache::lookup, hit", iters, || async {
            let control = CacheControl::default();
            black_box(cache.lookup(black_box(&key), &control).await.expect("hit"));
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
    let encoded = Encoded::encode(stats);
    rows.push(
        measure("  copy the cached answer to the wire buffer", iters, || {
            buffer.clear();
            buffer.put_slice(black_box(&encoded).bytes());
            black_box(&buffer);
            std::future::ready(())
        })
        .await,
    );
    rows.push(
        measure("bare only: PayloadStats clone", iters, || async {
            black_box(black_box(stats).clone());
        })
        .await,
    );
    rows.push(
        measure(
            "bare only: PayloadStats encode (reused buffer)",
            iters,
            || {
                buffer.clear();
                black_box(stats).encode(&mut buffer).expect("encodes");
                black_box(&buffer);
                std::future::ready(())
            },
        )
        .await,
    );
    rows.push(
        measure(
            "miss only: json::to_json_value + upstream::resolve",
            iters,
            || async {
                let value = json::to_json_value(black_box(&request)).expect("json");
                black_box(upstream::resolve(route, &value).expect("resolves"));
            },
        )
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
    rows.push(
        measure(
            "miss only: Encoded::encode (once per load)",
            iters,
            || async {
                black_box(Encoded::encode(black_box(stats)));
            },
        )
        .await,
    );
    rows
}
