#!/usr/bin/env python3
"""Checks deploy/grafana/wnology-gateway.json, the Grafana dashboard, without Grafana:

  - it parses, and has the fields Grafana's dashboard schema requires (title, uid, schemaVersion,
    panels, templating);
  - the data source is a variable (`datasource`, of type datasource, Prometheus), and every panel
    and query uses it; `service` and `method` are query variables;
  - every panel but a row has at least one query with an expression, a refId unique in the panel,
    and a unit; panel ids are unique; panels fit the 24-column grid and do not overlap;
  - every variable used (`$name`, `${name}`, `${name:fmt}`, `[[name]]`) in an expression, a legend, a
    title or a variable's query is defined, or a Grafana built-in; a variable's query uses only
    variables defined before it (Grafana resolves them in order).

`queries(path)` also serves .ci/ops/live.py: every panel expression and variable query with the
variables substituted as the live check runs them (regex variables as `.*`).

Usage: dashboard.py [PATH]   (exits non-zero on any problem)
"""

import json
import re
import sys

DEFAULT = "deploy/grafana/wnology-gateway.json"
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__all": ".*"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
GRID_COLUMNS = 24


def used_variables(text):
    return [next(group for group in match.groups() if group) for match in VARIABLE.finditer(text)]


def substitutions(dashboard):
    """Variable name -> the text the live check puts in its place."""
    values = dict(BUILTINS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] in ("textbox", "constant", "custom"):
            values[variable["name"]] = str(variable["current"]["value"])
        else:
            values[variable["name"]] = ".*"
    return values


def substitute(text, values):
    def replace(match):
        name = next(group for group in match.groups() if group)
        return values[name]
    return VARIABLE.sub(replace, text)


def panels_of(dashboard):
    """Every panel, rows' collapsed children included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def check(dashboard):
    problems = []
    for field in ("title", "uid", "schemaVersion", "panels", "templating"):
        if field not in dashboard:
            problems.append(f"dashboard: no {field}")
    if problems:
        return problems
    if not isinstance(dashboard["schemaVersion"], int) or dashboard["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dashboard['schemaVersion']}: expected 36 or later")

    variables = dashboard["templating"]["list"]
    names = [variable["name"] for variable in variables]
    if len(names) != len(set(names)):
        problems.append(f"variables defined twice: {names}")
    by_name = {variable["name"]: variable for variable in variables}
    source = by_name.get("datasource")
    if not source or source["type"] != "datasource" or source.get("query") != "prometheus":
        problems.append("no `datasource` variable of type datasource for Prometheus")
    for name in ("service", "method"):
        if by_name.get(name, {}).get("type") != "query":
            problems.append(f"no `{name}` query variable")
    defined = set(BUILTINS)
    for variable in variables:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        if variable["type"] == "query":
            if not text.strip():
                problems.append(f"variable {variable['name']}: empty query")
            if variable.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"variable {variable['name']}: data source is not ${{datasource}}")
        for name in used_variables(text):
            if name not in defined:
                problems.append(f"variable {variable['name']}: uses ${name}, not defined before it")
        if variable["type"] in ("textbox", "constant") and not str(variable.get("current", {}).get("value", "")):
            problems.append(f"variable {variable['name']}: no value")
        defined.add(variable["name"])

    ids = set()
    cells = {}
    for panel in panels_of(dashboard):
        title = panel.get("title") or f"panel {panel.get('id')}"
        if panel.get("id") in ids:
            problems.append(f"{title}: id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(key), int) for key in ("h", "w", "x", "y")):
            problems.append(f"{title}: gridPos needs integer h, w, x, y")
        else:
            if grid["x"] < 0 or grid["w"] <= 0 or grid["x"] + grid["w"] > GRID_COLUMNS:
                problems.append(f"{title}: gridPos outside the {GRID_COLUMNS}-column grid")
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        problems.append(f"{title}: overlaps {cells[(x, y)]}")
                        break
                    cells[(x, y)] = title
                else:
                    continue
                break
        for name in used_variables(title):
            if name not in defined:
                problems.append(f"{title}: title uses undefined ${name}")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{title}: data source is not ${{datasource}}")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if not unit:
            problems.append(f"{title}: no unit")
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{title}: no query")
        refs = [target.get("refId") for target in targets]
        if len(refs) != len(set(refs)) or not all(refs):
            problems.append(f"{title}: refIds missing or not unique: {refs}")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                problems.append(f"{title} {target.get('refId')}: empty expression")
            if target.get("datasource", panel.get("datasource", {})).get("uid") != "${datasource}":
                problems.append(f"{title} {target.get('refId')}: data source is not ${{datasource}}")
            for name in used_variables(expr + " " + target.get("legendFormat", "")):
                if name not in defined:
                    problems.append(f"{title} {target.get('refId')}: uses undefined ${name}")
    return problems


def queries(path=DEFAULT):
    """(what, PromQL or label_values query) pairs, variables substituted, for the live check."""
    with open(path, encoding="utf-8") as handle:
        dashboard = json.load(handle)
    values = substitutions(dashboard)
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", substitute(variable["query"]["query"], values)))
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel \"{panel['title']}\" {target['refId']}", substitute(target["expr"], values)))
    return found


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    try:
        with open(path, encoding="utf-8") as handle:
            dashboard = json.load(handle)
    except (OSError, ValueError) as error:
        sys.exit(f"FAIL: {path}: {error}")
    problems = check(dashboard)
    for problem in problems:
        print(f"FAIL: {path}: {problem}", file=sys.stderr)
    panels = [panel for panel in panels_of(dashboard) if panel.get("type") != "row"]
    targets = sum(len(panel.get("targets", [])) for panel in panels)
    print(f"{path}: {len(panels)} panels, {targets} queries, "
          f"{len(dashboard['templating']['list'])} variables; {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
