#!/usr/bin/env python3
"""The live half of .ci/ops.sh: asks a real Prometheus, which scrapes the gateway and evaluates
deploy/prometheus/recording-rules.yml and alerting-rules.yml, whether the rules and the dashboard
work on the gateway's real metrics:

  - every rule (recording and alerting) evaluates without error;
  - every metric a rule, a panel or a dashboard variable uses is one the gateway exports (or, for
    a recording rule's name, one the rules define); a metric listed in
    deploy/prometheus/pending-metrics.txt may be missing, but must not be exported (then it is no
    longer pending: remove it from the list);
  - every recording rule, every panel expression and every variable query returns data (template
    variables substituted: regex variables as `.*`), except one that needs a pending metric.

Retries for up to --wait seconds while the rules catch up with the scrapes. Prints one line per
check; exits non-zero on any failure.

Usage: live.py PROMETHEUS_URL [--wait SECONDS]
"""

import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dashboard  # noqa: E402  (the dashboard checker beside this file)

RULE_FILES = ["deploy/prometheus/recording-rules.yml", "deploy/prometheus/alerting-rules.yml"]
PENDING = "deploy/prometheus/pending-metrics.txt"
IDENTIFIER = re.compile(r"(?<![\w:])[A-Za-z_:][\w:]*")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


def get(base, path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def names_in(expr):
    """The metric and recording-rule names an expression uses."""
    bare = QUOTED.sub('""', expr)
    return {name for name in IDENTIFIER.findall(bare) if ":" in name or name.startswith("wnology_gateway_")}


def load_rules():
    rules = []
    for path in RULE_FILES:
        with open(path, encoding="utf-8") as handle:
            for group in yaml.safe_load(handle)["groups"]:
                rules.extend(group["rules"])
    return rules


def pending_metrics():
    with open(PENDING, encoding="utf-8") as handle:
        return {line.strip() for line in handle if line.strip() and not line.startswith("#")}


def selector(rule):
    matchers = [f'__name__="{rule["record"]}"'] + [f'{key}="{value}"' for key, value in rule.get("labels", {}).items()]
    return "{" + ", ".join(matchers) + "}"


def has_data(base, query):
    match = LABEL_VALUES.match(query)
    if match:
        return bool(get(base, f"/api/v1/label/{match.group(2)}/values", **{"match[]": match.group(1)}))
    return bool(get(base, "/api/v1/query", query=query)["result"])


def run_checks(base, rules, panel_queries, pending):
    """(failures, lines, pending count) of one pass over every check."""
    failures, lines, waived = [], [], 0
    exported = set(get(base, "/api/v1/label/__name__/values"))
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for group in get(base, "/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            if rule.get("health") != "ok":
                failures.append(f"rule {rule['name']}: health {rule.get('health')} {rule.get('lastError', '')}")
    exprs = [(f"rule {rule.get('record') or rule.get('alert')}", rule["expr"]) for rule in rules] + panel_queries
    used = set().union(*(names_in(expr) for _, expr in exprs))
    for name in sorted(used):
        if ":" in name:
            if name not in recorded:
                failures.append(f"{name}: used, but no recording rule defines it")
        elif name in pending:
            if name in exported:
                failures.append(f"{name}: exported now: remove it from {PENDING}")
        elif name not in exported:
            failures.append(f"{name}: used, but the gateway does not export it (renamed?)")
    for name in sorted(pending - used):
        failures.append(f"{name}: listed in {PENDING} but used by no rule or panel")
    checks = [(f"recording rule {rule['record']}{rule.get('labels') or ''}", selector(rule), rule["expr"])
              for rule in rules if "record" in rule]
    checks += [(what, query, query) for what, query in panel_queries]
    for what, query, source in checks:
        if has_data(base, query):
            lines.append(f"PASS {what}")
        elif names_in(source) & pending:
            lines.append(f"PENDING {what}: needs {', '.join(sorted(names_in(source) & pending))}")
            waived += 1
        else:
            failures.append(f"{what}: no data for {query}")
    return failures, lines, waived


def main():
    base = sys.argv[1].rstrip("/")
    wait = float(sys.argv[sys.argv.index("--wait") + 1]) if "--wait" in sys.argv else 60
    rules, pending = load_rules(), pending_metrics()
    panel_queries = dashboard.queries()
    deadline = time.monotonic() + wait
    while True:
        failures, lines, waived = run_checks(base, rules, panel_queries, pending)
        if not failures or time.monotonic() > deadline:
            break
        time.sleep(2)
    for line in lines:
        print(line)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    firing = [alert["labels"]["alertname"] for alert in get(base, "/api/v1/alerts")["alerts"]]
    print(f"alerts active on this short load (informational): {', '.join(sorted(set(firing))) or 'none'}")
    passed = len(lines) - waived
    print(f"live: {passed} passed, {len(failures)} failed, {waived} skipped (pending metrics)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
