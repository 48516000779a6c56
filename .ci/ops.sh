#!/usr/bin/env bash
# Proves the operating material of deploy/prometheus/ and deploy/grafana/ with real parts, on
# loopback only:
#
#   1. installs Debian's `prometheus` (Prometheus and promtool) and `redis-server` when missing;
#   2. `promtool check rules`, `promtool test rules` (deploy/prometheus/tests/: every alert fires
#      on a series that should page and stays quiet on one that should not), `promtool check
#      config` on the example configuration;
#   3. .ci/ops/rules.py: every alert has a severity, summary, description and a runbook section,
#      every recording rule is described in RUNBOOK.md, every alert has a firing and a quiet test,
#      every test file fixes the groups' evaluation order (promtool's is random otherwise);
#      the kube-prometheus PrometheusRule carries exactly these rules;
#   4. .ci/ops/dashboard.py: the dashboard parses, every panel has a query and a unit, template
#      variables resolve;
#   5. starts a redis-server on a free loopback port (no persistence) and five gateways (debug
#      build): two on their sandboxes sharing that Redis as their shared cache tier (one with
#      --max-concurrency 2), one whose upstream and Redis are closed loopback ports (its
#      shared tier fails, times out and opens its breaker), one on a sandbox that load.py makes
#      fail (1 s TTLs, a quick upstream circuit breaker) and one with a tiny per-token rate
#      limit kept in that Redis; a real Prometheus on a free loopback port scrapes the five
#      every second and evaluates the rules every second;
#   6. .ci/ops/load.py: a few hundred calls, some failing (no token, unknown token, unknown
#      organization, malformed id, dead upstream, shed), the same reads on both sandbox
#      gateways (shared hits), identical cold reads on both at once (coalesced across replicas)
#      and writes (invalidations published and received); meanwhile the failing sandbox's
#      faults switched on and off (PUT /_sandbox/faults: stale answers of both reasons, the
#      breaker opening, refusing, probing, reopening and closing) and calls refused by the
#      rate limit; it checks on the gateways' /metrics that every one of those series moved;
#   7. .ci/ops/live.py: through Prometheus's HTTP API, every rule evaluates, every metric used is
#      exported (or listed in deploy/prometheus/pending-metrics.txt), and every recording rule,
#      panel expression and variable query returns data.
#
# Every process it starts is stopped by PID on every exit path. Run: bash .ci/ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

tools="${TMPDIR:-/tmp}/wnology-gateway-ci-tools"
work="$(mktemp -d "${TMPDIR:-/tmp}/wnology-ops.XXXXXX")"
pids=()
# The sandbox's documented demo token (every scope); a public test value, not a secret.
demo_token="wnology-sandbox-demo-all-scopes"

step() { printf '\n==> %s\n' "$*"; }

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for log in "$work"/*.log; do
      [ -s "$log" ] || continue
      echo "--- last lines of $(basename "$log"):" >&2
      tail -n 20 "$log" >&2 || true
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Prometheus and promtool (Debian package prometheus), redis-server (Debian package redis-server)"
packages=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || packages+=(prometheus)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || packages+=(redis-server)
if [ "${#packages[@]}" -gt 0 ]; then
  timeout 300 apt-get update -qq
  # The packages' services are not started: there is no systemd here, and we start our own.
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
promtool --version | head -n 1
prometheus --version | head -n 1
redis-server --version

step "promtool check rules, test rules, check config"
promtool check rules deploy/prometheus/recording-rules.yml deploy/prometheus/alerting-rules.yml
# One promtool per test file, two at a time (the files are independent; promtool runs its
# arguments one after the other). xargs fails if any of them does.
(cd deploy/prometheus/tests && printf '%s\n' ./*.test.yml |
  timeout 600 xargs -P 2 -n 1 promtool test rules)
promtool check config --syntax-only deploy/prometheus/prometheus.example.yml

step "Python venv (.ci/ops/requirements.txt)"
requirements=".ci/ops/requirements.txt"
venv="$tools/ops-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$venv/.installed" ]; then
  rm -rf "$venv"
  timeout 300 python3 -m venv "$venv"
  timeout 900 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$venv/.installed"
fi
python="$venv/bin/python"

step "rules: annotations, runbook sections, firing and quiet tests; the PrometheusRule in step"
"$python" .ci/ops/rules.py check
"$python" .ci/ops/rules.py manifest --check

step "dashboard: parses, a query and a unit per panel, template variables resolve"
"$python" .ci/ops/dashboard.py

step "build the gateway (default features: the sandbox is in)"
timeout 2400 cargo build --locked --bin wnology-gateway
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
gateway="$target_dir/debug/wnology-gateway"
[ -x "$gateway" ] || { echo "no gateway binary at $gateway" >&2; exit 1; }
stubs="$work/stubs"
mkdir -p "$stubs"
timeout 120 "$python" -m grpc_tools.protoc -I proto --python_out="$stubs" --grpc_python_out="$stubs" \
  proto/wnology/v1/*.proto

# Free loopback ports, chosen by the kernel and released for the servers to bind.
free_ports() {
  "$python" - "$1" <<'PY'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in sockets))
for s in sockets:
    s.close()
PY
}

# Starts a gateway in the background (its PID joins those the trap stops), waits for its
# "serving" log line, and sets gateway_grpc and gateway_admin to the addresses it bound and
# gateway_upstream to its upstream's URL (with --sandbox: its sandbox's).
start_gateway() {
  local name=$1
  shift
  "$gateway" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json \
    --drain-delay 0s --shutdown-grace 2s "$@" >"$work/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  local addresses
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { echo "gateway $name exited at start-up" >&2; return 1; }
    if addresses="$("$python" - "$work/$name.log" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("message") == "wnology-gateway serving":
        print(event["listen"], event["admin"], event["upstream"])
        sys.exit(0)
sys.exit(1)
PY
)"; then
      read -r gateway_grpc gateway_admin gateway_upstream <<<"$addresses"
      return 0
    fi
    sleep 0.2
  done
  echo "gateway $name did not report its addresses within 20 s" >&2
  return 1
}

read -r redis_port closed_port closed_redis_port prometheus_port < <(free_ports 4)

step "start redis-server on 127.0.0.1:$redis_port (no persistence), the shared cache tier"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize no \
  --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do
  [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
  kill -0 "$redis_pid" 2>/dev/null || { echo "redis-server exited at start-up" >&2; exit 1; }
  sleep 0.1
done
[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ] ||
  { echo "redis-server is not answering after 10 s" >&2; exit 1; }
echo "ready"
# The secret every replica shares (48 random bytes; at least 32 are required).
head -c 48 /dev/urandom >"$work/cache-secret"
shared=(--cache-secret-file "$work/cache-secret")
# A busy CI machine can hold a debug build's round trip past the default 50 ms: the two
# sandboxes then skip their tier and nothing is shared. They get a second; the dead one keeps
# the default, so that its breaker opens at once.
redis_url="redis://127.0.0.1:$redis_port"
sharing=(--cache-redis-url "$redis_url" --cache-redis-timeout 1s "${shared[@]}")

step "start three gateways: two sandboxes sharing Redis (one with --max-concurrency 2), one with a dead upstream and a dead Redis"
start_gateway healthy --sandbox --max-concurrency 2 "${sharing[@]}"
healthy_grpc=$gateway_grpc healthy_admin=$gateway_admin
start_gateway peer --sandbox "${sharing[@]}"
peer_grpc=$gateway_grpc peer_admin=$gateway_admin
# Nothing listens on closed_port: every upstream call is a connect_error, retried, UNAVAILABLE.
# Nor on closed_redis_port: the shared tier's round trips fail, its breaker opens, its feed is
# untrusted (the gateway waits 2 s for Redis at start-up, then serves without it).
start_gateway dead --upstream-url "http://127.0.0.1:$closed_port" --upstream-timeout 2s \
  --cache-redis-url "redis://127.0.0.1:$closed_redis_port" "${shared[@]}"
dead_grpc=$gateway_grpc dead_admin=$gateway_admin
echo "healthy: gRPC $healthy_grpc, admin $healthy_admin; peer: gRPC $peer_grpc, admin $peer_admin;" \
  "dead upstream and Redis: gRPC $dead_grpc, admin $dead_admin"

step "start two more: a sandbox that load.py makes fail (1 s TTLs, a quick breaker), one with a tiny rate limit"
# Entries go stale a second after their fill; no retries, and a breaker that opens after 4
# calls and probes after 1 s (2 s after a failed probe): it opens, refuses, probes, reopens and
# closes within a few seconds of load.py's switching the sandbox's faults on and off.
start_gateway flaky --sandbox --cache-usage-ttl 1s --cache-entity-ttl 1s --upstream-retries 0 \
  --upstream-breaker-min-calls 4 --upstream-breaker-cooldown 1s
flaky_grpc=$gateway_grpc flaky_admin=$gateway_admin flaky_sandbox=$gateway_upstream
# 2 upstream calls a second per token, counted in the shared Redis (one limit across replicas).
start_gateway limited --sandbox --rate-limit-per-token 2/s --rate-limit-burst 2 "${sharing[@]}"
limited_grpc=$gateway_grpc limited_admin=$gateway_admin
echo "flaky: gRPC $flaky_grpc, admin $flaky_admin, sandbox $flaky_sandbox;" \
  "limited: gRPC $limited_grpc, admin $limited_admin"

step "start Prometheus on 127.0.0.1:$prometheus_port (scrape and rule evaluation every second)"
cat >"$work/prometheus.yml" <<EOF2
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/deploy/prometheus/recording-rules.yml
  - $root/deploy/prometheus/alerting-rules.yml
scrape_configs:
  - job_name: wnology-gateway
    static_configs:
      - targets: ["$healthy_admin", "$peer_admin", "$dead_admin", "$flaky_admin", "$limited_admin"]
EOF2
promtool check config "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
prometheus_url="http://127.0.0.1:$prometheus_port"
for _ in $(seq 100); do
  curl -fsS "$prometheus_url/-/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$prometheus_url/-/ready" >/dev/null || { echo "Prometheus is not ready after 20 s" >&2; exit 1; }
echo "ready"

step "load: a few hundred calls, some failing; shared hits, coalesced reads, invalidations; upstream faults, rate limits (.ci/ops/load.py)"
PYTHONPATH="$stubs" timeout 180 "$python" .ci/ops/load.py "$healthy_grpc" "$peer_grpc" "$dead_grpc" "$demo_token" \
  --admin "$healthy_admin" "$peer_admin" "$dead_admin" \
  --flaky "$flaky_grpc" "$flaky_admin" "$flaky_sandbox" --limited "$limited_grpc" "$limited_admin"

step "every rule, metric, panel and variable has data in Prometheus (.ci/ops/live.py)"
timeout 180 "$python" .ci/ops/live.py "$prometheus_url" --wait 60
