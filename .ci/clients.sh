#!/usr/bin/env bash
# End-to-end check of the example clients (examples/python, examples/node) against the gateway
# on its embedded sandbox upstream, on loopback only:
#
#   1. build the gateway with default features (the sandbox is in);
#   2. set up the Python venv (examples/python/requirements.txt), generate the stubs into a
#      temporary directory, `npm ci` in examples/node;
#   3. start `wnology-gateway --sandbox` on OS-chosen free loopback ports, wait until the admin
#      /healthz answers and grpc.health.v1 reports SERVING for the services the Kubernetes
#      probes ask about;
#   4. run client.py and client.js with the sandbox demo token.
#
# The gateway is stopped on every exit path; any failure fails the script. Every step is bounded
# in time. Run: bash .ci/clients.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

tools="${TMPDIR:-/tmp}/wnology-gateway-ci-tools"
work="$(mktemp -d "${TMPDIR:-/tmp}/wnology-clients.XXXXXX")"
gateway_pid=""
# The sandbox's documented demo token (every scope); a public test value, not a secret.
demo_token="wnology-sandbox-demo-all-scopes"

step() { printf '\n==> %s\n' "$*"; }

stop_gateway() {
  if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill -TERM "$gateway_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$gateway_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$gateway_pid" 2>/dev/null || true
    wait "$gateway_pid" 2>/dev/null || true
  fi
  gateway_pid=""
}

cleanup() {
  local status=$?
  stop_gateway
  if [ "$status" -ne 0 ] && [ -s "$work/gateway.log" ]; then
    echo "--- last lines of the gateway's log:" >&2
    tail -n 40 "$work/gateway.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "build the gateway (default features: the sandbox is in)"
timeout 2400 cargo build --locked --bin wnology-gateway
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
gateway="$target_dir/debug/wnology-gateway"
[ -x "$gateway" ] || { echo "no gateway binary at $gateway" >&2; exit 1; }

step "Python: venv with examples/python/requirements.txt, stubs from proto/"
requirements="examples/python/requirements.txt"
venv="$tools/python-clients-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$venv/.installed" ]; then
  rm -rf "$venv"
  timeout 300 python3 -m venv "$venv"
  timeout 900 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  touch "$venv/.installed"
fi
python="$venv/bin/python"
"$python" -m pip list --disable-pip-version-check 2>/dev/null | grep -Ei '^(grpcio|protobuf|googleapis)' || true
stubs="$work/python-stubs"
mkdir -p "$stubs"
timeout 120 "$python" -m grpc_tools.protoc -I proto --python_out="$stubs" --grpc_python_out="$stubs" \
  proto/wnology/v1/*.proto
ls "$stubs/wnology/v1"

step "Node.js: npm ci in examples/node"
node --version
(cd examples/node && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
# The google/rpc protos (proto/google/rpc/: reflection serves them, client.js and the browser
# page decode error details with them) are copies of googleapis' files: they must not drift from
# the ones the pinned googleapis-common-protos ships.
site="$("$python" -c 'import os; from google.rpc import status_pb2; print(os.path.dirname(status_pb2.__file__))')"
for file in status.proto error_details.proto; do
  cmp "proto/google/rpc/$file" "$site/$file" ||
    { echo "proto/google/rpc/$file differs from googleapis-common-protos'" >&2; exit 1; }
done
echo "proto/google/rpc/*.proto match googleapis-common-protos"

step "start wnology-gateway --sandbox on loopback"
# Port 0: the kernel picks free ports; the gateway logs the addresses it bound.
"$gateway" --sandbox --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!
addresses=""
for _ in $(seq 100); do
  kill -0 "$gateway_pid" 2>/dev/null || { echo "the gateway exited at start-up" >&2; exit 1; }
  addresses="$("$python" - "$work/gateway.log" <<'EOF'
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get("message") == "wnology-gateway serving":
        print(event["listen"], event["admin"])
        break
EOF
)"
  [ -n "$addresses" ] && break
  sleep 0.2
done
[ -n "$addresses" ] || { echo "the gateway did not report its addresses within 20 s" >&2; exit 1; }
read -r grpc_addr admin_addr <<<"$addresses"
echo "gRPC on $grpc_addr, admin on $admin_addr (pid $gateway_pid)"

step "wait until it is healthy (admin /healthz, grpc.health.v1 as the Kubernetes probes ask)"
timeout 60 "$python" - "$grpc_addr" "$admin_addr" <<'EOF'
import sys, time, urllib.request
import grpc

grpc_addr, admin_addr = sys.argv[1:3]
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(f"http://{admin_addr}/healthz", timeout=2) as reply:
            body = reply.read().decode()
            if reply.status == 200 and body.strip() == "ok":
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"http://{admin_addr}/healthz did not answer 200 ok")
    time.sleep(0.2)
print(f"GET /healthz: 200 {body.strip()}")

# grpc.health.v1.Health/Check by hand (no extra package): HealthCheckRequest is field 1
# `service` (string); HealthCheckResponse is field 1 `status` (enum, SERVING = 1).
def encode_request(service):
    data = service.encode()
    assert len(data) < 128
    return (b"\x0a" + bytes([len(data)]) + data) if data else b""

with grpc.insecure_channel(grpc_addr) as channel:
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=encode_request,
                                response_deserializer=lambda data: data)
    # "" is the liveness probe's service, wnology.v1.OrgService the readiness probe's.
    for service in ["", "wnology.v1.OrgService", "wnology.v1.MeService", "wnology.v1.InstanceOrgService"]:
        reply = check(service, timeout=5, wait_for_ready=True)
        if reply != b"\x08\x01":
            sys.exit(f"Health/Check({service!r}) is not SERVING: {reply!r}")
        print(f"grpc.health.v1.Health/Check({service!r}): SERVING")
EOF

step "examples/python/client.py"
WNOLOGY_GATEWAY_ADDR="$grpc_addr" WNOLOGY_TOKEN="$demo_token" PYTHONPATH="$stubs" \
  timeout 120 "$python" examples/python/client.py

step "examples/node/client.js"
WNOLOGY_GATEWAY_ADDR="$grpc_addr" WNOLOGY_TOKEN="$demo_token" \
  timeout 120 node examples/node/client.js

step "stop the gateway"
kill -TERM "$gateway_pid"
for _ in $(seq 50); do
  kill -0 "$gateway_pid" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$gateway_pid" 2>/dev/null; then
  echo "the gateway did not stop within 10 s of SIGTERM" >&2
  exit 1
fi
gateway_status=0
wait "$gateway_pid" || gateway_status=$?
gateway_pid=""
[ "$gateway_status" -eq 0 ] || { echo "the gateway exited with status $gateway_status after SIGTERM" >&2; exit 1; }
echo "stopped cleanly on SIGTERM"

echo
echo "clients: 2 passed, 0 failed"
