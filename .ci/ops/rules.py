#!/usr/bin/env python3
"""Checks the Prometheus rules of deploy/prometheus/ beyond what promtool checks, and keeps the
kube-prometheus PrometheusRule in deploy/kubernetes/monitoring/ in step with them.

  rules.py check             every alert has a severity (critical or warning), a summary, a
                             description and a runbook_url naming a section of RUNBOOK.md; every
                             recording rule is described in RUNBOOK.md; every alert has a promtool
                             test in which it fires and one in which it stays quiet; every test
                             file names its groups in group_eval_order, recording groups first
  rules.py manifest --check  the PrometheusRule carries exactly the rule files' groups
  rules.py manifest --write  (re)writes it from the rule files

Needs PyYAML. Exits non-zero on any problem.
"""

import glob
import os
import re
import sys

import yaml

RULE_FILES = ["deploy/prometheus/recording-rules.yml", "deploy/prometheus/alerting-rules.yml"]
RUNBOOK = "deploy/prometheus/RUNBOOK.md"
TESTS = "deploy/prometheus/tests/*.test.yml"
MANIFEST = "deploy/kubernetes/monitoring/prometheusrule.yaml"
METADATA = {
    "name": "wnology-gateway",
    "namespace": "wnology-gateway",
    "labels": {
        "app.kubernetes.io/name": "wnology-gateway",
        "app.kubernetes.io/part-of": "wnology",
        # kube-prometheus's Prometheus selects every PrometheusRule by default; these are the
        # labels its own rules carry, for Prometheus objects that select on them.
        "prometheus": "k8s",
        "role": "alert-rules",
    },
}
HEADER = """\
# The Prometheus rules of deploy/prometheus/ (recording-rules.yml, alerting-rules.yml) as a
# kube-prometheus PrometheusRule. Generated: edit the rule files, then run
#   python3 .ci/ops/rules.py manifest --write
# (.ci/manifests.sh fails when this file and the rule files differ). Apply with
#   kubectl apply -k deploy/kubernetes/monitoring
"""


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def groups():
    return [group for path in RULE_FILES for group in load(path)["groups"]]


def anchors(markdown):
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -."""
    found = set()
    for heading in re.findall(r"^#+\s+(.*?)\s*$", markdown, re.M):
        text = re.sub(r"[`*]", "", heading).lower()
        found.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text)))
    return found


def eval_order_problems(path, unit):
    """promtool evaluates the groups of one evaluation in random order unless group_eval_order
    names them all: an alert that reads another group's recording rules then sees this
    evaluation's value or the last one's, and the test is flaky."""
    loaded = [group for rule_file in unit.get("rule_files", [])
              for group in load(os.path.join(os.path.dirname(path), rule_file))["groups"]]
    if len(loaded) < 2:
        return []
    names = [group["name"] for group in loaded]
    order = unit.get("group_eval_order", [])
    if sorted(order) != sorted(names):
        return [f"{path}: group_eval_order must name every group of its rule files "
                f"({', '.join(names)}) once"]
    alerting = {group["name"] for group in loaded if any("alert" in rule for rule in group["rules"])}
    first_alerting = min((i for i, name in enumerate(order) if name in alerting), default=len(order))
    if any(name not in alerting for name in order[first_alerting:]):
        return [f"{path}: group_eval_order must put the recording groups before the alerting ones"]
    return []


def check():
    problems = []
    runbook = open(RUNBOOK, encoding="utf-8").read()
    sections = anchors(runbook)
    rules = [rule for group in groups() for rule in group["rules"]]
    alerts = [rule for rule in rules if "alert" in rule]
    for rule in rules:
        if "record" in rule and f"`{rule['record']}`" not in runbook:
            problems.append(f"recording rule {rule['record']} is not described in {RUNBOOK}")
    for rule in alerts:
        name, annotations = rule["alert"], rule.get("annotations", {})
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            problems.append(f"{name}: severity label is not critical or warning")
        for key in ("summary", "description", "runbook_url"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key} annotation")
        url = annotations.get("runbook_url", "")
        path, _, anchor = url.partition("#")
        if path != RUNBOOK or anchor not in sections or anchor != name.lower():
            problems.append(f"{name}: runbook_url {url!r} is not {RUNBOOK}#{name.lower()} "
                            "or that section does not exist")
    fires, quiet = set(), set()
    for path in sorted(glob.glob(TESTS)):
        problems.extend(eval_order_problems(path, load(path)))
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    for rule in alerts:
        if rule["alert"] not in fires:
            problems.append(f"{rule['alert']}: no promtool test in which it fires")
        if rule["alert"] not in quiet:
            problems.append(f"{rule['alert']}: no promtool test in which it stays quiet")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"rules: {len(rules) - len(alerts)} recording rules and {len(alerts)} alerts checked "
          f"(annotations, runbook sections, tests that fire and stay quiet); {len(problems)} problems")
    return not problems


def manifest():
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": METADATA,
        "spec": {"groups": groups()},
    }


class Dumper(yaml.SafeDumper):
    pass


def _text(dumper, value):
    # Multi-line expressions as literal blocks, as in the rule files.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _text)


def write():
    text = yaml.dump(manifest(), Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)
    with open(MANIFEST, "w", encoding="utf-8") as handle:
        handle.write(HEADER + text)
    print(f"wrote {MANIFEST}")


def check_manifest():
    try:
        current = load(MANIFEST)
    except OSError as error:
        print(f"FAIL: {error}", file=sys.stderr)
        return False
    if current != manifest():
        print(f"FAIL: {MANIFEST} does not carry exactly the groups of {', '.join(RULE_FILES)}; "
              "run: python3 .ci/ops/rules.py manifest --write", file=sys.stderr)
        return False
    print(f"{MANIFEST} matches {', '.join(RULE_FILES)}")
    return True


def main():
    args = sys.argv[1:]
    if args == ["check"]:
        ok = check()
    elif args == ["manifest", "--check"]:
        ok = check_manifest()
    elif args == ["manifest", "--write"]:
        write()
        ok = True
    else:
        sys.exit(__doc__)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
