#!/usr/bin/env python3
"""A short, bounded load on three gateways, so that every metric the rules and the dashboard read
has data (.ci/ops.sh runs it while a real Prometheus scrapes them):

  HEALTHY (the gateway on its sandbox, started with a low --max-concurrency):
    OK reads (cache hits and misses, bypassed reads), and caller errors: no token and an unknown
    token (UNAUTHENTICATED; the second is an upstream 401), an unknown organization (NOT_FOUND,
    an upstream 404), a malformed id (INVALID_ARGUMENT, no upstream call); then bursts of
    concurrent uncached reads beyond --max-concurrency, until some are shed (UNAVAILABLE).
  PEER (a second sandbox gateway sharing HEALTHY's Redis and cache secret: its shared cache tier):
    the same steady mix; reads HEALTHY made first (shared hits, `x-cache: shared-hit`); identical
    cold reads sent to both at once until one waited for the other's fill (coalesced across
    replicas); writes on both (each publishes invalidations, the other receives them).
  DEAD (a gateway whose upstream and Redis are closed loopback ports): reads that fail
    UNAVAILABLE after retries (upstream connect_error); its shared tier fails and is skipped.
  FLAKY (a gateway on its own sandbox with 1 s TTLs, no retries and a breaker that opens after
    4 calls and cools down for 1 s), meanwhile: reads fill its cache; past the TTL a usage read
    is answered stale while a background refresh runs; then the sandbox fails every call
    (`PUT /_sandbox/faults`): an entity read is answered stale in place of the 503, uncached
    reads fail until the breaker opens and refuses them, the cached read is answered stale in
    place of the refusal; after the cool-down a probe fails (the breaker reopens for 2 s); the
    faults stop and the next probe closes it.
  LIMITED (a sandbox gateway with --rate-limit-per-token 2/s, counted in the shared Redis),
    meanwhile: a quick run of uncached reads, most of them refused (RESOURCE_EXHAUSTED).

Then it reads the gateways' /metrics (the admin addresses) and checks that every shared-tier
series moved: hits, misses, writes, coalesced reads, invalidations published and received, round
trips, the feed trusted and the breaker closed on HEALTHY and PEER; errors, skipped operations,
the breaker open and the feed untrusted on DEAD; and that the upstream breaker went through
every transition and refused calls, stale answers of both reasons and a background refresh
happened on FLAKY, and calls were counted and refused by the rate limit on LIMITED.

Usage: load.py HEALTHY_ADDR PEER_ADDR DEAD_ADDR TOKEN --admin HEALTHY_ADMIN PEER_ADMIN DEAD_ADMIN
  --flaky FLAKY_ADDR FLAKY_ADMIN FLAKY_SANDBOX_URL --limited LIMITED_ADDR LIMITED_ADMIN
(the generated stubs on PYTHONPATH). Prints the codes it got and exits non-zero if a call ends
with a code it did not expect, if nothing was shed, or if a series named above did not move.
"""

import collections
import concurrent.futures
import json
import re
import sys
import time
import urllib.request

import grpc

from wnology.v1 import common_pb2, me_pb2, me_pb2_grpc, models_pb2, org_pb2, org_pb2_grpc

TIMEOUT_SECONDS = 10
UNKNOWN_ORG_ID = "0123456789abcdef01234567"
# Not a sandbox token: the upstream answers 401. A public test value, not a secret.
UNKNOWN_TOKEN = "wnology-ci-ops-unknown-token"
# A 30-day window of hourly points: an uncached read that keeps the gateway busy for a while.
END_MS = 1_702_592_000_000
START_MS = END_MS - 30 * 86_400_000
HOUR_MS = 3_600_000
# The sandbox's seed: a dashboard of the demo user (a recent item to add: a harmless write).
DEMO_DASHBOARD_ID = "665060000000000000000002"
SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# The admin addresses of HEALTHY, PEER and DEAD (from --admin).
ADMINS = []


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


def metrics(admin):
    """Metric name -> the sum of its samples, from a gateway's /metrics."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    sums = collections.Counter()
    for name, _, value in samples(text):
        sums[name] += value
    return sums


def samples(text):
    """(name, labels, value) of each sample of an exposition."""
    found = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            found.append((match.group(1), dict(LABEL.findall(match.group(2) or "")), float(match.group(3))))
    return found


def labelled(admin, name):
    """{frozenset of label pairs: value} of one metric on a gateway's /metrics."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {frozenset(labels.items()): value for metric, labels, value in samples(text) if metric == name}


def x_cache(call):
    """Runs a unary call with_call and returns its x-cache metadata (or the code on failure)."""
    try:
        _, outcome = call()
    except grpc.RpcError as error:
        return error.code().name
    return dict(outcome.initial_metadata()).get("x-cache", "")


def shared_hits(first, second, token, window):
    """Reads `first` fills, then the same reads on `second`: its local misses, shared hits.
    Returns the x-cache values of each side."""
    md = bearer(token)
    sides = []
    for channel in (first, second):
        me = me_pb2_grpc.MeServiceStub(channel)
        orgs = org_pb2_grpc.OrgServiceStub(channel)
        sides.append([
            lambda orgs=orgs: orgs.List.with_call(
                org_pb2.OrgListRequest(per_page=window), metadata=md, timeout=TIMEOUT_SECONDS),
            lambda me=me: me.PayloadCounts.with_call(me_pb2.MePayloadCountsRequest(
                start=START_MS - window * HOUR_MS, end=END_MS), metadata=md, timeout=TIMEOUT_SECONDS),
        ])
    filled = [x_cache(call) for call in sides[0]]
    time.sleep(0.5)  # the fill is written in the background
    return filled, [x_cache(call) for call in sides[1]]


def coalesce(healthy, peer, token):
    """Identical cold reads on both at once (a new window each time), until one replica waited
    for the other's fill. Returns the codes and whether it happened."""
    md = bearer(token)
    stubs = [me_pb2_grpc.MeServiceStub(channel) for channel in (healthy, peer)]
    codes = []
    for attempt in range(20):
        request = me_pb2.MePayloadCountsBreakdownRequest(
            start=START_MS - (attempt + 2) * HOUR_MS, end=END_MS, resolution=common_pb2.RESOLUTION_HOUR)
        futures = [stub.PayloadCountsBreakdown.future(request, metadata=md, timeout=TIMEOUT_SECONDS)
                   for stub in stubs]
        codes += [code_of(future.result) for future in futures]
        if sum(metrics(admin)["wnology_gateway_shared_cache_coalesced_total"] for admin in ADMINS[:2]):
            return codes, True
    return codes, False


def writes(healthy, peer, token):
    """A recent item added through each: a write whose invalidation the other receives."""
    request = me_pb2.MeAddRecentItemRequest(body=models_pb2.RecentItem(
        item_type="dashboard", item_id=DEMO_DASHBOARD_ID))
    codes = []
    for channel in (healthy, peer, healthy, peer):
        me = me_pb2_grpc.MeServiceStub(channel)
        codes.append(code_of(lambda: me.AddRecentItem(request, metadata=bearer(token), timeout=TIMEOUT_SECONDS)))
    return codes


def set_faults(sandbox, mode):
    """Makes FLAKY's sandbox fail every call with 503 (`mode` "503") or none ("off")."""
    body = json.dumps({"mode": mode, "share": 1}).encode()
    request = urllib.request.Request(f"{sandbox}/_sandbox/faults", data=body, method="PUT",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


def upstream_trouble(channel, admin, sandbox, token):
    """FLAKY's run through upstream trouble (see the module's doc). Returns the codes of its
    uncached calls, the x-cache values of its cached reads, and what did not happen."""
    me = me_pb2_grpc.MeServiceStub(channel)
    md = bearer(token)
    t = TIMEOUT_SECONDS
    usage = lambda: me.PayloadCounts.with_call(  # noqa: E731
        me_pb2.MePayloadCountsRequest(start=START_MS - 99 * HOUR_MS, end=END_MS), metadata=md, timeout=t)
    entity = lambda: me.Get.with_call(me_pb2.MeGetRequest(), metadata=md, timeout=t)  # noqa: E731
    uncached = lambda: me.Get(  # noqa: E731
        me_pb2.MeGetRequest(), metadata=md + (("cache-control", "no-store"),), timeout=t)
    ttl = 1.3  # FLAKY's --cache-usage-ttl and --cache-entity-ttl (1 s), and a margin
    set_faults(sandbox, "off")
    seen = [x_cache(usage), x_cache(entity)]
    time.sleep(ttl)
    seen.append(x_cache(usage))  # stale while its background refresh runs (and succeeds)
    time.sleep(0.3)
    set_faults(sandbox, "503")
    time.sleep(ttl)
    seen += [x_cache(entity), x_cache(usage)]  # stale on the 503; stale, its refresh fails
    codes = []
    for _ in range(10):  # 503s until the breaker opens, then refusals
        codes.append(code_of(uncached))
        if labelled(admin, "wnology_gateway_upstream_breaker_refused_total").get(frozenset(), 0):
            break
    seen.append(x_cache(entity))  # stale in place of the open breaker's refusal
    time.sleep(1.2)  # the cool-down (1 s): the next call is a probe, which fails
    codes.append(code_of(uncached))
    set_faults(sandbox, "off")
    closed = False
    for _ in range(20):  # the reopened breaker's cool-down is 2 s; then a probe succeeds
        time.sleep(0.5)
        code = code_of(uncached)
        codes.append(code)
        if code == "OK":
            closed = True
            break
    problems = [] if closed else ["FLAKY's breaker did not close within 10 s of the faults' end"]
    transitions = labelled(admin, "wnology_gateway_upstream_breaker_transitions_total")
    for step in (("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("half_open", "closed")):
        if not transitions.get(frozenset({("from", step[0]), ("to", step[1])})):
            problems.append(f"FLAKY's breaker never went {step[0]} -> {step[1]}")
    stale = labelled(admin, "wnology_gateway_cache_stale_answers_total")
    for reason in ("revalidate", "error"):
        if not stale.get(frozenset({("reason", reason)})):
            problems.append(f"FLAKY answered nothing stale of reason {reason}")
    found = metrics(admin)
    for name in ("wnology_gateway_upstream_breaker_refused_total", "wnology_gateway_cache_background_refreshes_total"):
        if not found.get(name):
            problems.append(f"FLAKY: {name} is {found.get(name)}, expected > 0")
    if found.get("wnology_gateway_upstream_breaker_state") != 0:
        problems.append(f"FLAKY's breaker state is {found.get('wnology_gateway_upstream_breaker_state')}, expected 0 (closed)")
    return codes, seen, problems


def rate_limited(channel, admin, token):
    """A quick run of uncached reads on LIMITED (2 a second, burst 2): most are refused.
    Returns their codes and what did not happen."""
    me = me_pb2_grpc.MeServiceStub(channel)
    md = bearer(token) + (("cache-control", "no-store"),)
    codes = [code_of(lambda: me.Get(me_pb2.MeGetRequest(), metadata=md, timeout=TIMEOUT_SECONDS))
             for _ in range(12)]
    problems = [] if "RESOURCE_EXHAUSTED" in codes else ["LIMITED refused no call"]
    limited = labelled(admin, "wnology_gateway_rate_limited_total")
    if not limited.get(frozenset({("reason", "RATE_LIMITED")})):
        problems.append(f"LIMITED: wnology_gateway_rate_limited_total is {limited}, expected RATE_LIMITED > 0")
    checks = labelled(admin, "wnology_gateway_rate_limit_checks_total")
    if not checks.get(frozenset({("store", "redis")})):
        problems.append(f"LIMITED: wnology_gateway_rate_limit_checks_total is {checks}, expected redis > 0")
    fallback = metrics(admin).get("wnology_gateway_rate_limit_fallback")
    if fallback != 0:
        problems.append(f"LIMITED: wnology_gateway_rate_limit_fallback is {fallback}, expected 0 (Redis used)")
    return codes, problems


# (metric, what it must be; "moved" is > 0) on each sandbox gateway, and on DEAD.
ON_SANDBOXES = [(f"wnology_gateway_shared_cache_{name}", "moved") for name in (
    "hits_total", "misses_total", "writes_total", "invalidations_published_total",
    "invalidations_received_total", "latency_seconds_count")] + [
    ("wnology_gateway_shared_cache_feed_trusted", 1), ("wnology_gateway_shared_cache_breaker_open", 0)]
ON_DEAD = [("wnology_gateway_shared_cache_errors_total", "moved"),
           ("wnology_gateway_shared_cache_skipped_total", "moved"),
           ("wnology_gateway_shared_cache_breaker_open", 1),
           ("wnology_gateway_shared_cache_feed_trusted", 0)]


def shared_tier_problems():
    """What did not move on the gateways' /metrics (coalesced reads are checked by coalesce)."""
    problems = []
    for name, admin, expected in zip(("healthy", "peer", "dead"), ADMINS, (ON_SANDBOXES, ON_SANDBOXES, ON_DEAD)):
        found = metrics(admin)
        for metric, want in expected:
            got = found.get(metric)
            if got is None or (want == "moved" and got <= 0) or (want != "moved" and got != want):
                problems.append(f"{name}: {metric} is {got}, expected {want}")
    return problems


def main():
    healthy_addr, peer_addr, dead_addr, token = sys.argv[1:5]
    ADMINS.extend(sys.argv[sys.argv.index("--admin") + 1:][:3])
    flaky_addr, flaky_admin, flaky_sandbox = sys.argv[sys.argv.index("--flaky") + 1:][:3]
    limited_addr, limited_admin = sys.argv[sys.argv.index("--limited") + 1:][:2]
    tally = collections.Counter()
    unexpected = []
    started = time.monotonic()
    with grpc.insecure_channel(healthy_addr) as healthy, \
            grpc.insecure_channel(peer_addr) as peer, \
            grpc.insecure_channel(dead_addr) as dead, \
            grpc.insecure_channel(flaky_addr) as flaky, \
            grpc.insecure_channel(limited_addr) as limited, \
            concurrent.futures.ThreadPoolExecutor(max_workers=2) as side, \
            concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        # FLAKY and LIMITED are gateways of their own: their runs go on beside the rest.
        trouble = side.submit(upstream_trouble, flaky, flaky_admin, flaky_sandbox, token)
        limiting = side.submit(rate_limited, limited, limited_admin, token)
        # Both ways, so that each gateway has shared misses, writes and hits. A new window per
        # attempt: the first round trips of a cold client (scripts not loaded yet, a busy
        # machine) may exceed --cache-redis-timeout and skip the tier.
        for name, first, second, windows in (("peer", healthy, peer, range(3, 8)),
                                              ("healthy", peer, healthy, range(8, 13))):
            for window in windows:
                filled, served = shared_hits(first, second, token, window)
                print(f"shared tier: x-cache {filled} on the filling gateway, {served} on {name}")
                if "shared-hit" in served:
                    break
            else:
                unexpected.append(f"no shared-hit on {name} in {len(windows)} attempts")
        print(f"shared hits: {time.monotonic() - started:.1f} s")
        codes, coalesced = coalesce(healthy, peer, token)
        tally.update(codes)
        unexpected += [code for code in codes if code != "OK"]
        if not coalesced:
            unexpected.append("no read coalesced across the two gateways in 20 attempts")
        print(f"coalesced: {time.monotonic() - started:.1f} s")
        codes = writes(healthy, peer, token)
        tally.update(codes)
        unexpected += [code for code in codes if code != "OK"]
        for _ in range(30):
            unexpected += run(pool, healthy_calls(healthy, token), tally, shed_allowed=True)
            unexpected += run(pool, healthy_calls(peer, token), tally, shed_allowed=False)
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
        codes, seen, trouble_problems = trouble.result()
        tally.update(codes)
        unexpected += [code for code in codes if code not in ("OK", "UNAVAILABLE")]
        print(f"upstream trouble on flaky: x-cache {seen}, uncached calls {codes}")
        codes, limit_problems = limiting.result()
        tally.update(codes)
        unexpected += [code for code in codes if code not in ("OK", "RESOURCE_EXHAUSTED")]
        print(f"rate limit on limited: {codes}")
    total = sum(tally.values())
    print(f"{total} calls in {time.monotonic() - started:.1f} s: "
          + ", ".join(f"{code} {count}" for code, count in sorted(tally.items())))
    if unexpected:
        sys.exit(f"unexpected outcomes: {collections.Counter(unexpected)}")
    if not shed:
        sys.exit("no call was shed: the shedding burst did not exceed --max-concurrency")
    problems = shared_tier_problems()
    for problem in problems:
        print(f"FAIL shared tier: {problem}", file=sys.stderr)
    if problems:
        sys.exit("a shared-tier series did not move")
    print("shared tier: every series moved (hits, misses, writes, coalesced, invalidations, errors, skipped, breaker, feed)")
    for problem in trouble_problems + limit_problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if trouble_problems or limit_problems:
        sys.exit("an upstream-resilience or rate-limit series did not move")
    print("upstream resilience: every breaker transition, refused calls, stale answers (revalidate, error), "
          "background refreshes; rate limit: calls counted in Redis and refused")


if __name__ == "__main__":
    main()
