#!/usr/bin/env bash
# Checks the deployment material under deploy/:
#
#   1. every manifest in deploy/kubernetes/ against the Kubernetes JSON schemas, strictly (no
#      unknown fields), for the oldest and newest Kubernetes versions we support, with
#      kubernetes-validate (PyPI, installed into a cached venv); an unknown kind/apiVersion or a
#      deprecation warning fails too;
#   2. that the files agree with each other and with the code: kustomization.yaml lists every
#      manifest, the ConfigMap's WNOLOGY_* keys are real settings (src/config.rs; unknown ones
#      would be silently ignored) and do not enable the sandbox, the cache fits the memory limit,
#      the probes ask the gateway's health service about real services, the grace period covers
#      drain + shutdown, the Dockerfile runs the production build command below, the collector
#      config's pipelines name defined components;
#   3. with a gateway binary at hand (`--build`, WNOLOGY_GATEWAY_BIN, or a debug/release build in
#      the cargo target directory), that the gateway accepts the ConfigMap's settings.
#
#   bash .ci/manifests.sh           # checks 1-3 (3 only if a binary is already built)
#   bash .ci/manifests.sh --build   # also runs the Dockerfile's build command (release, no
#                                   # sandbox) in a copy of the image's build context (only
#                                   # what the Dockerfile COPYs), and checks 3 with that binary
#   bash .ci/manifests.sh --check   # the same with `cargo check` instead of the release
#                                   # build: proves the context and feature set compile, cheaply
#
# No Docker engine is needed or used: the image itself is not built here.
#
# Idempotent; exits non-zero on any failure. Needs python3 and the PyPI registry on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The production build: deploy/Dockerfile must run exactly this.
BUILD_COMMAND="cargo build --release --locked --no-default-features --bin wnology-gateway"
KUBERNETES_VALIDATE_VERSION="1.37.0"
# Oldest and newest Kubernetes versions the manifests must be valid for (the preStop `sleep`
# action of deployment.yaml needs 1.30).
KUBERNETES_VERSIONS=(1.30.0 1.37.0)

build=0
check=0
for arg in "$@"; do
  case "$arg" in
    --build) build=1 ;;
    --check) check=1 ;;
    -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

tools="${TMPDIR:-/tmp}/wnology-gateway-ci-tools"
venv="$tools/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
if [ ! -f "$venv/.installed" ]; then
  step "install kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p "$tools"
  timeout 300 python3 -m venv "$venv"
  timeout 600 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  touch "$venv/.installed"
fi
validate="$venv/bin/kubernetes-validate"

step "Kubernetes schemas (kubernetes-validate $("$validate" --version 2>&1 | tr -d '\n'), strict)"
shopt -s nullglob
manifests=()
# kube-prometheus custom resources (deploy/kubernetes/monitoring/): validated against their CRD
# schemas below, not here (kubernetes-validate knows only built-in kinds).
custom_resources=()
for file in deploy/kubernetes/*.yaml deploy/kubernetes/*.yml deploy/kubernetes/monitoring/*.yaml \
  deploy/kubernetes/components/*/*.yaml; do
  case "$(basename "$file")" in
    kustomization.yaml | kustomization.yml) ;; # not a Kubernetes object: checked below
    *)
      if grep -q '^apiVersion: monitoring.coreos.com/' "$file"; then
        custom_resources+=("$file")
      else
        manifests+=("$file")
      fi
      ;;
  esac
done
[ "${#manifests[@]}" -gt 0 ] || { echo "no manifests under deploy/kubernetes" >&2; exit 1; }
failures=0
for file in "${manifests[@]}"; do
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    status=0
    output="$("$validate" --strict --kubernetes-version "$version" "$file" 2>&1)" || status=$?
    printf '%s\n' "$output"
    # Any warning (unknown kind or apiVersion, deprecation) or error fails; so does a file in
    # which nothing was validated.
    if [ "$status" -ne 0 ] || grep -qE '(^| )(WARN|ERROR)( |$)' <<<"$output" ||
      ! grep -q ' passed for resource ' <<<"$output"; then
      echo "FAIL: $file against Kubernetes $version" >&2
      failures=$((failures + 1))
    fi
  done
done
[ "$failures" -eq 0 ] || { echo "$failures schema check(s) failed" >&2; exit 1; }

step "kube-prometheus resources (PrometheusRule, ServiceMonitor) against prometheus-operator's CRD schemas"
# @kubernetes-models/prometheus-operator (npm, pinned by .ci/ops/package-lock.json) compiles the
# CRDs' OpenAPI schemas; installed into a cached directory outside the work tree.
[ "${#custom_resources[@]}" -gt 0 ] || { echo "no custom resources under deploy/kubernetes/monitoring" >&2; exit 1; }
crd_tools="$tools/ops-crs-$(cat .ci/ops/package.json .ci/ops/package-lock.json | sha256sum | cut -c1-16)"
if [ ! -f "$crd_tools/.installed" ]; then
  rm -rf "$crd_tools"
  mkdir -p "$crd_tools"
  cp .ci/ops/package.json .ci/ops/package-lock.json "$crd_tools/"
  (cd "$crd_tools" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
  touch "$crd_tools/.installed"
fi
cp .ci/ops/validate-crs.mjs "$crd_tools/"
resources_abs=("${custom_resources[@]/#/$PWD/}")
(cd "$crd_tools" && node validate-crs.mjs "${resources_abs[@]}")
# The PrometheusRule carries exactly the rule files' groups (which promtool checks strictly:
# an unknown field there is an error, while the CRD schema would accept it).
"$venv/bin/python" .ci/ops/rules.py manifest --check

step "consistency: kustomization, ConfigMap vs src/config.rs, sizing, probes, Dockerfile, collector, monitoring"
"$venv/bin/python" - "$BUILD_COMMAND" <<'EOF'
import glob, os, re, sys
import yaml

build_command = sys.argv[1]
problems = []
checked = []

def check(condition, what):
    (checked if condition else problems).append(what)

def load(path):
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]

kube = "deploy/kubernetes"
objects = {}
for path in sorted(glob.glob(f"{kube}/*.yaml")):
    name = os.path.basename(path)
    if name != "kustomization.yaml":
        for doc in load(path):
            objects[(doc["kind"], doc["metadata"]["name"])] = (name, doc)

# kustomization.yaml: lists exactly the manifests, one namespace for all.
[kustomization] = load(f"{kube}/kustomization.yaml")
check(kustomization.get("apiVersion") == "kustomize.config.k8s.io/v1beta1"
      and kustomization.get("kind") == "Kustomization", "kustomization.yaml is a v1beta1 Kustomization")
files = {name for name, _ in objects.values()}
listed = kustomization.get("resources", [])
check(len(listed) == len(set(listed)), "kustomization.yaml lists no file twice")
check(set(listed) == files, f"kustomization.yaml resources {sorted(set(listed) ^ files) or ''} "
      "match the manifests in deploy/kubernetes")
namespace = kustomization.get("namespace")
for (kind, name), (path, doc) in objects.items():
    if kind != "Namespace":
        check(doc["metadata"].get("namespace") == namespace, f"{path}: namespace {namespace}")
check(("Namespace", namespace) in objects, f"namespace.yaml creates {namespace}")

deployment = objects[("Deployment", "wnology-gateway")][1]
pod = deployment["spec"]["template"]
[container] = pod["spec"]["containers"]
image_name = container["image"].rsplit(":", 1)[0]
check(any(image.get("name") == image_name for image in kustomization.get("images", [])),
      f"kustomization.yaml sets the image {image_name}")

# The ConfigMap's settings are the gateway's (src/config.rs), the production ones.
config_rs = open("src/config.rs", encoding="utf-8").read()
settings_block = re.search(r"pub struct Settings \{(.*?)\n\}", config_rs, re.S).group(1)
flags = re.findall(r"^\s*pub (\w+):", settings_block, re.M)
known = {"WNOLOGY_" + flag.upper() for flag in flags}
check("WNOLOGY_LISTEN" in known and "WNOLOGY_CACHE_MAX_BYTES" in known,
      f"read {len(known)} settings from src/config.rs")
configmap = objects[("ConfigMap", "wnology-gateway")][1]
data = configmap["data"]
for key, value in data.items():
    check(isinstance(value, str) and value.strip() != "", f"configmap.yaml: {key} is a non-empty string")
    if key.startswith("WNOLOGY_"):
        check(key in known, f"configmap.yaml: {key} is a setting of src/config.rs")
        check(not key.startswith("WNOLOGY_SANDBOX"), f"configmap.yaml: {key} is not a sandbox setting")
check(data.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") in ("grpc", "http/protobuf"),
      "configmap.yaml: OTEL_EXPORTER_OTLP_PROTOCOL is grpc or http/protobuf")
check(data.get("OTEL_TRACES_SAMPLER", "parentbased_always_on") in (
    "always_on", "always_off", "traceidratio", "parentbased_always_on",
    "parentbased_always_off", "parentbased_traceidratio"), "configmap.yaml: OTEL_TRACES_SAMPLER is supported")
if "OTEL_TRACES_SAMPLER_ARG" in data:
    check(0.0 <= float(data["OTEL_TRACES_SAMPLER_ARG"]) <= 1.0, "configmap.yaml: sampler ratio in [0, 1]")
check(any(source.get("configMapRef", {}).get("name") == configmap["metadata"]["name"]
          for source in container.get("envFrom", [])), "deployment.yaml: envFrom the ConfigMap")

def port_of(address):
    return int(address.rsplit(":", 1)[1])

grpc_port = port_of(data.get("WNOLOGY_LISTEN", "0.0.0.0:50051"))
admin_port = port_of(data.get("WNOLOGY_ADMIN_LISTEN", "0.0.0.0:9090"))

# Memory: the cache is bounded by WNOLOGY_CACHE_MAX_BYTES; keep it within half the limit.
def quantity(text):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i?)?", str(text))
    return int(match.group(1)) * units.get(match.group(2), 1)

limits, requests = container["resources"]["limits"], container["resources"]["requests"]
memory_limit = quantity(limits["memory"])
cache_bytes = int(data["WNOLOGY_CACHE_MAX_BYTES"])
check(cache_bytes * 2 <= memory_limit,
      f"cache {cache_bytes >> 20} MiB is at most half the memory limit {memory_limit >> 20} MiB")
check(quantity(requests["memory"]) == memory_limit, "memory request = limit")
check("cpu" in requests, "a CPU request (the HPA's base)")

# Security context: non-root, read-only root fs, no capabilities.
security = container["securityContext"]
check(pod["spec"]["securityContext"].get("runAsNonRoot") is True, "pod runs as non-root")
check(security.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
check(security.get("allowPrivilegeEscalation") is False, "no privilege escalation")
check(security.get("capabilities", {}).get("drop") == ["ALL"], "drops ALL capabilities")

# Probes: gRPC health on the gRPC port, about services the server reports.
services = set()
for proto in glob.glob("proto/wnology/v1/*.proto"):
    text = open(proto, encoding="utf-8").read()
    package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
    services |= {f"{package}.{name}" for name in re.findall(r"^service (\w+)", text, re.M)}
for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
    probe = container.get(kind, {}).get("grpc")
    check(probe is not None and probe["port"] == grpc_port, f"{kind}: grpc on port {grpc_port}")
    if probe is not None:
        service = probe.get("service", "")
        check(service == "" or service in services, f"{kind}: service {service!r} is reported by the server")
check(container["livenessProbe"]["grpc"].get("service", "") == "", "liveness asks about the whole server")
ports = {port["name"]: port["containerPort"] for port in container["ports"]}
check(ports.get("grpc") == grpc_port and ports.get("http-admin") == admin_port, "container ports match the listeners")

# Shutdown budget: the gateway's drain delay + shutdown grace (from the ConfigMap) plus any
# preStop pause < terminationGracePeriodSeconds.
def seconds(text):
    text = str(text).strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)
pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
drain = seconds(data.get("WNOLOGY_DRAIN_DELAY", "5s"))
shutdown = seconds(data.get("WNOLOGY_SHUTDOWN_GRACE", "30s"))
grace = pod["spec"]["terminationGracePeriodSeconds"]
check(grace > pre_stop + drain + shutdown,
      f"terminationGracePeriodSeconds {grace} > preStop {pre_stop} s + drain {drain} s + shutdown {shutdown} s")

# Prometheus annotations point at the admin listener.
annotations = pod["metadata"].get("annotations", {})
check(annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") == str(admin_port)
      and annotations.get("prometheus.io/path") == "/metrics", "prometheus.io annotations on the admin port")

# Services: gRPC port declared as gRPC.
for service_name in ("wnology-gateway", "wnology-gateway-headless"):
    service = objects[("Service", service_name)][1]
    grpc_ports = [port for port in service["spec"]["ports"] if port["name"] == "grpc"]
    check(len(grpc_ports) == 1 and grpc_ports[0].get("appProtocol") == "grpc"
          and grpc_ports[0]["port"] == grpc_port, f"{service_name}: port grpc with appProtocol grpc")
    check(service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"],
          f"{service_name}: selects the Deployment's pods")
admin = [port for port in objects[("Service", "wnology-gateway")][1]["spec"]["ports"] if port["port"] == admin_port]
check(len(admin) == 1 and admin[0].get("appProtocol") == "http", "admin port with appProtocol http")

# HPA, PDB and NetworkPolicy select / target the Deployment.
hpa = objects[("HorizontalPodAutoscaler", "wnology-gateway")][1]
check(hpa["spec"]["scaleTargetRef"]["name"] == "wnology-gateway" and hpa["spec"]["minReplicas"] >= 2,
      "HPA targets the Deployment with at least 2 replicas")
check("replicas" not in deployment["spec"], "the Deployment leaves replicas to the HPA")
for kind in ("PodDisruptionBudget", "NetworkPolicy"):
    spec = objects[(kind, "wnology-gateway")][1]["spec"]
    selector = spec.get("selector", spec.get("podSelector"))
    check(selector["matchLabels"] == deployment["spec"]["selector"]["matchLabels"], f"{kind} selects the pods")
policy = objects[("NetworkPolicy", "wnology-gateway")][1]["spec"]
ingress_ports = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
check(ingress_ports == {grpc_port, admin_port}, "NetworkPolicy admits the gRPC and admin ports only")

# Dockerfile: the production build command, non-root runtime, both ports, the binary as entrypoint.
dockerfile = open("deploy/Dockerfile", encoding="utf-8").read()
check(re.search(r"^\s*" + re.escape(build_command) + r"(\s|\\|$)", dockerfile, re.M) is not None,
      f"deploy/Dockerfile runs `{build_command}`")
stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
check(len(stages) >= 2 and "nonroot" in stages[-1], f"runtime stage is a non-root image ({stages[-1]})")
check(re.search(r"^USER\s+(65532|nonroot)", dockerfile, re.M) is not None, "USER non-root")
exposed = {int(port) for port in re.findall(r"^EXPOSE\s+(\d+)", dockerfile, re.M)}
check(exposed == {grpc_port, admin_port}, f"EXPOSE {sorted(exposed)}")
check(re.search(r'^ENTRYPOINT \["/usr/local/bin/wnology-gateway"\]', dockerfile, re.M) is not None,
      "ENTRYPOINT is the binary")
ignore = open("deploy/Dockerfile.dockerignore", encoding="utf-8").read().split()
for needed in ("Cargo.toml", "Cargo.lock", "build.rs", "proto", "src", "benches", "crates"):
    check(f"!{needed}" in ignore, f"Dockerfile.dockerignore keeps {needed}")

# The collector config: every pipeline names defined components.
[collector] = load("deploy/otel-collector.yaml")
for pipeline, spec in collector["service"]["pipelines"].items():
    for section in ("receivers", "processors", "exporters"):
        for component in spec.get(section, []):
            check(component in (collector.get(section) or {}), f"otel-collector.yaml {pipeline}: {section[:-1]} {component} is defined")
for extension in collector["service"].get("extensions", []):
    check(extension in (collector.get("extensions") or {}), f"otel-collector.yaml: extension {extension} is defined")
receivers = collector["receivers"]["otlp"]["protocols"]
check(receivers["grpc"]["endpoint"].endswith(":4317") and receivers["http"]["endpoint"].endswith(":4318"),
      "otel-collector.yaml: OTLP on 4317 (gRPC) and 4318 (HTTP)")

# deploy/kubernetes/monitoring: its kustomization lists every file, one namespace; the
# ServiceMonitor scrapes the Service's admin port and uses only fields the operator knows (its
# CRD schema does not refuse unknown ones); the RoleBinding grants the Role to kube-prometheus.
monitoring = f"{kube}/monitoring"
[mon_kustomization] = load(f"{monitoring}/kustomization.yaml")
mon_objects = {}
for path in sorted(glob.glob(f"{monitoring}/*.yaml")):
    if os.path.basename(path) != "kustomization.yaml":
        for doc in load(path):
            mon_objects[(doc["kind"], doc["metadata"]["name"])] = (os.path.basename(path), doc)
mon_listed = mon_kustomization.get("resources", [])
mon_files = {name for name, _ in mon_objects.values()}
check(set(mon_listed) == mon_files and len(mon_listed) == len(set(mon_listed)),
      f"monitoring/kustomization.yaml resources {sorted(set(mon_listed) ^ mon_files) or ''} match the files")
for (kind, name), (path, doc) in mon_objects.items():
    check(doc["metadata"].get("namespace") == namespace == mon_kustomization.get("namespace"),
          f"monitoring/{path}: namespace {namespace}")
monitor = mon_objects[("ServiceMonitor", "wnology-gateway")][1]
main_service = objects[("Service", "wnology-gateway")][1]
check(set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
      and set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
      and all(set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"} for endpoint in monitor["spec"]["endpoints"]),
      "ServiceMonitor uses known fields only")
check(all(main_service["metadata"]["labels"].get(key) == value
          for key, value in monitor["spec"]["selector"]["matchLabels"].items()),
      "ServiceMonitor selects the wnology-gateway Service")
[endpoint] = monitor["spec"]["endpoints"]
check(any(port["name"] == endpoint["port"] and port["port"] == admin_port for port in main_service["spec"]["ports"])
      and endpoint["path"] == "/metrics", "ServiceMonitor scrapes /metrics on the Service's admin port")
for service_name in ("wnology-gateway-headless",):
    check(all(port["name"] != endpoint["port"] for port in objects[("Service", service_name)][1]["spec"]["ports"]),
          f"{service_name} has no {endpoint['port']} port (no second scrape of each pod)")
binding = mon_objects[("RoleBinding", "prometheus-k8s")][1]
check(binding["roleRef"]["name"] in {name for kind, name in mon_objects if kind == "Role"},
      "RoleBinding grants a Role of monitoring/")
check(any(rule.get("port") == admin_port for rule in policy["ingress"] for rule in rule["ports"]),
      "NetworkPolicy admits the scrape port")

for what in problems:
    print(f"FAIL: {what}", file=sys.stderr)
print(f"{len(checked)} consistency checks passed, {len(problems)} failed")
sys.exit(1 if problems else 0)
EOF

step "the shared cache component (deploy/kubernetes/components/redis) against the base and src/cache/shared"
"$venv/bin/python" - <<'EOF'
import glob, os, re, sys
import yaml

problems, checked = [], []
def check(condition, what):
    (checked if condition else problems).append(what)
def load(path):
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]

base = "deploy/kubernetes"
component = f"{base}/components/redis"
[kustomization] = load(f"{component}/kustomization.yaml")
check(kustomization.get("apiVersion") == "kustomize.config.k8s.io/v1alpha1"
      and kustomization.get("kind") == "Component", "components/redis is a kustomize Component")
objects = {}
for path in sorted(glob.glob(f"{component}/*.yaml")):
    if os.path.basename(path) != "kustomization.yaml":
        for doc in load(path):
            objects[(doc["kind"], doc["metadata"]["name"])] = (os.path.basename(path), doc)
listed = kustomization.get("resources", [])
check(set(listed) == {name for name, _ in objects.values()} and len(listed) == len(set(listed)),
      "components/redis/kustomization.yaml lists exactly its manifests")
base_objects = {}
for path in glob.glob(f"{base}/*.yaml"):
    if os.path.basename(path) != "kustomization.yaml":
        for doc in load(path):
            base_objects[(doc["kind"], doc["metadata"]["name"])] = doc
namespace = load(f"{base}/kustomization.yaml")[0]["namespace"]
for (kind, name), (path, doc) in objects.items():
    check(doc["metadata"].get("namespace") == namespace, f"components/redis/{path}: namespace {namespace}")

# The settings the ConfigMap patch adds are the shared tier's flags.
settings_rs = open("src/cache/shared/settings.rs", encoding="utf-8").read()
block = re.search(r"pub struct SharedTierSettings \{(.*?)\n\}", settings_rs, re.S).group(1)
known = {"WNOLOGY_" + field.upper() for field in re.findall(r"^\s*pub (\w+):", block, re.M)}
check({"WNOLOGY_CACHE_REDIS_URL", "WNOLOGY_CACHE_SECRET_FILE"} <= known, f"read {len(known)} shared-tier settings")
patches = {p["target"]["kind"]: yaml.safe_load(p["patch"]) for p in kustomization["patches"]}
check(set(patches) == {"ConfigMap", "Deployment", "NetworkPolicy"}, "patches the ConfigMap, Deployment and NetworkPolicy")
for p in kustomization["patches"]:
    target = p["target"]
    check((target["kind"], target["name"]) in base_objects, f"patch target {target['kind']}/{target['name']} exists in the base")
data = {op["path"].rsplit("/", 1)[1]: op["value"] for op in patches["ConfigMap"]}
for key in data:
    check(key in known, f"ConfigMap patch: {key} is a setting of src/cache/shared/settings.rs")
url = data.get("WNOLOGY_CACHE_REDIS_URL", "")
match = re.fullmatch(r"rediss?://([\w.-]+):(\d+)", url)
check(match is not None, f"WNOLOGY_CACHE_REDIS_URL {url!r} is redis://host:port")
service = objects[("Service", "wnology-gateway-valkey")][1]
[service_port] = service["spec"]["ports"]
statefulset = objects[("StatefulSet", "wnology-gateway-valkey")][1]
if match:
    host = match.group(1)
    check(host in (service["metadata"]["name"], f"{statefulset['metadata']['name']}-0.{service['metadata']['name']}"),
          f"the URL's host {host} is the Valkey Service or its first pod")
    check(int(match.group(2)) == service_port["port"], "the URL's port is the Service's")
check(statefulset["spec"]["serviceName"] == service["metadata"]["name"], "the StatefulSet's serviceName is the headless Service")
check(service["spec"].get("clusterIP") == "None", "the Valkey Service is headless")
[container] = statefulset["spec"]["template"]["spec"]["containers"]
check(any(port["containerPort"] == service_port["port"] for port in container["ports"]), "Valkey listens on the Service's port")
check(service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"], "the Service selects the Valkey pods")

# The secret: mounted read-only where WNOLOGY_CACHE_SECRET_FILE points.
deployment_ops = {op["path"]: op["value"] for op in patches["Deployment"]}
[volume] = deployment_ops["/spec/template/spec/volumes"]
[mount] = deployment_ops["/spec/template/spec/containers/0/volumeMounts"]
check("secret" in volume and mount["name"] == volume["name"] and mount.get("readOnly") is True,
      "the cache secret is a Secret volume mounted read-only")
secret_file = data.get("WNOLOGY_CACHE_SECRET_FILE", "")
check(os.path.dirname(secret_file) == mount["mountPath"], f"{secret_file} is in the mount {mount['mountPath']}")
base_pod = base_objects[("Deployment", "wnology-gateway")]["spec"]["template"]["spec"]
check("volumeMounts" not in base_pod["containers"][0] and "volumes" not in base_pod,
      "the base Deployment has no volumes for the patch to replace")

# Network: the gateway may reach Valkey's port; Valkey admits the gateway's pods only.
gateway_labels = base_objects[("Deployment", "wnology-gateway")]["spec"]["selector"]["matchLabels"]
[egress] = [op["value"] for op in patches["NetworkPolicy"]]
check(egress["to"][0]["podSelector"]["matchLabels"] == statefulset["spec"]["selector"]["matchLabels"]
      and [port["port"] for port in egress["ports"]] == [service_port["port"]],
      "the gateway's NetworkPolicy gains egress to Valkey's pods on its port")
policy = objects[("NetworkPolicy", "wnology-gateway-valkey")][1]["spec"]
check(policy["podSelector"]["matchLabels"] == statefulset["spec"]["selector"]["matchLabels"], "the Valkey NetworkPolicy selects Valkey")
check(len(policy["ingress"]) == 1 and policy["ingress"][0]["from"] == [{"podSelector": {"matchLabels": gateway_labels}}]
      and [port["port"] for port in policy["ingress"][0]["ports"]] == [service_port["port"]],
      "Valkey admits only the gateway's pods, on its port")

# A cache: bounded memory, LRU eviction, no persistence.
conf = objects[("ConfigMap", "wnology-gateway-valkey")][1]["data"]["valkey.conf"]
check(re.search(r"^maxmemory \d+[kmg]b?$", conf, re.M | re.I) is not None, "valkey.conf sets maxmemory")
check(re.search(r"^maxmemory-policy (allkeys|volatile)-lru$", conf, re.M) is not None, "valkey.conf evicts by LRU")

for what in problems:
    print(f"FAIL: {what}", file=sys.stderr)
print(f"{len(checked)} shared-cache component checks passed, {len(problems)} failed")
sys.exit(1 if problems else 0)
EOF

# Prints the ConfigMap's data as NAME=VALUE lines, one per key.
configmap_env() {
  "$venv/bin/python" - <<'EOF'
import yaml
[configmap] = [doc for doc in yaml.safe_load_all(open("deploy/kubernetes/configmap.yaml")) if doc]
for key, value in configmap["data"].items():
    assert "\n" not in value
    print(f"{key}={value}")
EOF
}

target_dir="$(cargo metadata --format-version 1 --no-deps --locked 2>/dev/null |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || true)"

if [ "$build" -eq 1 ] || [ "$check" -eq 1 ]; then
  [ -n "$target_dir" ] || { echo "cargo metadata failed" >&2; exit 1; }
  # The image's build context as the builder stage sees it: only what its COPY lines copy
  # (every `COPY` without --from, sources relative to the repository root).
  context="$(mktemp -d "${TMPDIR:-/tmp}/wnology-image-context.XXXXXX")"
  trap 'rm -rf "$context"' EXIT
  while read -r -a words; do
    [ "${words[0]:-}" = "COPY" ] || continue
    case "${words[1]}" in --from=*) continue ;; esac
    for source in "${words[@]:1:${#words[@]}-2}"; do
      cp -r --parents "$source" "$context/"
    done
  done <deploy/Dockerfile
  echo "image build context: $(cd "$context" && find . -maxdepth 1 -mindepth 1 | sort | tr '\n' ' ')"
  if [ "$build" -eq 1 ]; then
    command="$BUILD_COMMAND"
  else
    command="${BUILD_COMMAND/cargo build --release/cargo check}"
  fi
  step "in the image's build context: $command"
  # The shared target directory keeps dependencies compiled between runs.
  (cd "$context" && CARGO_TARGET_DIR="$target_dir" timeout 3600 $command)
fi

gateway=""
if [ -n "${WNOLOGY_GATEWAY_BIN:-}" ]; then
  gateway="$WNOLOGY_GATEWAY_BIN"
elif [ "$build" -eq 1 ]; then
  gateway="$target_dir/release/wnology-gateway"
else
  for candidate in "$target_dir/release/wnology-gateway" "$target_dir/debug/wnology-gateway"; do
    if [ -n "$target_dir" ] && [ -x "$candidate" ]; then gateway="$candidate"; break; fi
  done
fi

step "the gateway accepts the ConfigMap's settings"
if [ -z "$gateway" ]; then
  echo "skipped: no gateway binary built (run with --build, or set WNOLOGY_GATEWAY_BIN)"
else
  [ -x "$gateway" ] || { echo "no gateway binary at $gateway" >&2; exit 1; }
  mapfile -t settings < <(configmap_env)
  # `routes` reads every setting from the environment exactly as serving does (a bad value is
  # an error), then prints the RPC table instead of serving.
  if ! env -i PATH="$PATH" "${settings[@]}" timeout 30 "$gateway" routes >/dev/null; then
    echo "FAIL: $gateway refuses the settings of deploy/kubernetes/configmap.yaml" >&2
    exit 1
  fi
  echo "$gateway accepts the ${#settings[@]} settings of configmap.yaml"
fi

echo
echo "manifests: $((${#manifests[@]} + ${#custom_resources[@]})) passed, 0 failed"
