#!/usr/bin/env python3
"""A short, bounded load on two gateways, so that every metric the rules and the dashboard read has
data (.ci/ops.sh runs it while a real Prometheus scrapes both):

  HEALTHY (the gateway on its sandbox, started with a low --max-concurrency):
    OK reads (cache hits and misses, bypassed reads), and caller errors: no token and an unknown
    token (UNAUTHENTICATED; the second is an upstream 401), an unknown organization (NOT_FOUND,
    an upstream 404), a malformed id (INVALID_ARGUMENT, no upstream call); then bursts of
    concurrent uncached reads beyond --max-concurrency, until some are shed (UNAVAILABLE).
  DEAD (a gateway whose upstream is a closed loopback port): reads that fail UNAVAILABLE after
    retries (upstream connect_error).

Usage: load.py HEALTHY_ADDR DEAD_ADDR TOKEN (the generated stubs on PYTHONPATH). Prints the codes
it got and exits non-zero if a call ends with a code it did not expect, or if nothing was shed.
"""

import collections
import concurrent.futures
import sys
import time

import grpc

from wnology.v1 import common_pb2, me_pb2, me_pb2_grpc, org_pb2, org_pb2_grpc

TIMEOUT_SECONDS = 10
UNKNOWN_ORG_ID = "0123456789abcdef01234567"
# Not a sandbox token: the upstream answers 401. A public test value, not a secret.
UNKNOWN_TOKEN = "wnology-ci-ops-unknown-token"
# A 30-day window of hourly points: an uncached read that keeps the gateway busy for a while.
END_MS = 1_702_592_000_000
START_MS = END_MS - 30 * 86_400_000


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


def code_of(call):
    """Runs a unary call and returns the name of the gRPC code it ended with."""
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def healthy_calls(channel, token):
    """(expected codes, call) pairs: one round of the steady mix."""
    me = me_pb2_grpc.MeServiceStub(channel)
    orgs = org_pb2_grpc.OrgServiceStub(channel)
    md = bearer(token)
    no_store = md + (("cache-control", "no-store"),)
    t = TIMEOUT_SECONDS
    return [
        ({"OK"}, lambda: me.Get(me_pb2.MeGetRequest(), metadata=md, timeout=t)),
        ({"OK"}, lambda: orgs.List(org_pb2.OrgListRequest(per_page=2), metadata=md, timeout=t)),
        ({"OK"}, lambda: me.PayloadCounts(
            me_pb2.MePayloadCountsRequest(start=START_MS, end=END_MS), metadata=md, timeout=t)),
        ({"OK"}, lambda: me.Get(me_pb2.MeGetRequest(), metadata=no_store, timeout=t)),
        ({"NOT_FOUND"}, lambda: orgs.Get(
            org_pb2.OrgGetRequest(org_id=UNKNOWN_ORG_ID), metadata=md, timeout=t)),
        ({"UNAUTHENTICATED"}, lambda: me.Get(me_pb2.MeGetRequest(), timeout=t)),
        ({"UNAUTHENTICATED"}, lambda: me.Get(
            me_pb2.MeGetRequest(), metadata=bearer(UNKNOWN_TOKEN), timeout=t)),
        ({"INVALID_ARGUMENT"}, lambda: orgs.Get(
            org_pb2.OrgGetRequest(org_id="not-an-id"), metadata=md, timeout=t)),
    ]


def run(pool, calls, tally, shed_allowed):
    """Runs (expected, call) pairs on the pool; counts codes; returns the unexpected ones."""
    futures = [(expected, pool.submit(code_of, call)) for expected, call in calls]
    unexpected = []
    for expected, future in futures:
        code = future.result()
        tally[code] += 1
        # Beyond --max-concurrency any call may be shed: UNAVAILABLE is then expected too.
        if code not in expected and not (shed_allowed and code == "UNAVAILABLE"):
            unexpected.append(code)
    return unexpected


def shed_burst(channel, token, size):
    """`size` concurrent uncached reads, all started before any is awaited."""
    me = me_pb2_grpc.MeServiceStub(channel)
    md = bearer(token) + (("cache-control", "no-store"),)
    request = me_pb2.MePayloadCountsBreakdownRequest(
        start=START_MS, end=END_MS, resolution=common_pb2.RESOLUTION_HOUR)
    futures = [me.PayloadCountsBreakdown.future(request, metadata=md, timeout=TIMEOUT_SECONDS)
               for _ in range(size)]
    return [code_of(future.result) for future in futures]


def main():
    healthy_addr, dead_addr, token = sys.argv[1:4]
    tally = collections.Counter()
    unexpected = []
    started = time.monotonic()
    with grpc.insecure_channel(healthy_addr) as healthy, \
            grpc.insecure_channel(dead_addr) as dead, \
            concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(30):
            unexpected += run(pool, healthy_calls(healthy, token), tally, shed_allowed=True)
        dead_me = me_pb2_grpc.MeServiceStub(dead)
        dead_calls = [({"UNAVAILABLE"}, lambda: dead_me.Get(
            me_pb2.MeGetRequest(), metadata=bearer(token), timeout=TIMEOUT_SECONDS))] * 30
        unexpected += run(pool, dead_calls, tally, shed_allowed=False)
        shed = 0
        for _ in range(10):
            codes = shed_burst(healthy, token, 24)
            tally.update(codes)
            unexpected += [code for code in codes if code not in ("OK", "UNAVAILABLE")]
            shed += codes.count("UNAVAILABLE")
            if shed:
                break
    total = sum(tally.values())
    print(f"{total} calls in {time.monotonic() - started:.1f} s: "
          + ", ".join(f"{code} {count}" for code, count in sorted(tally.items())))
    if unexpected:
        sys.exit(f"unexpected codes: {collections.Counter(unexpected)}")
    if not shed:
        sys.exit("no call was shed: the shedding burst did not exceed --max-concurrency")


if __name__ == "__main__":
    main()
