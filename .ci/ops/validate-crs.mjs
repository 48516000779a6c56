// Validates kube-prometheus custom resources (monitoring.coreos.com/v1: PrometheusRule,
// ServiceMonitor, ...) against the prometheus-operator CRD schemas that
// @kubernetes-models/prometheus-operator compiles (types, required fields, enumerations,
// patterns such as the duration format of `for:`). Those schemas, like the CRDs', accept unknown
// fields: .ci/manifests.sh checks field names separately (rules against the promtool-checked rule
// files, ServiceMonitor keys against an allow-list).
//
// Usage: node validate-crs.mjs FILE...   (run from the directory where package.json is installed;
// prints one line per resource, exits 1 on any failure)
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

let failures = 0;
let validated = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      console.log(`FAIL ${file}: ${doc.errors.map(String).join("; ")}`);
      failures++;
      continue;
    }
    const object = doc.toJS();
    if (object == null) continue;
    const { apiVersion, kind } = object;
    const name = `${kind} ${object.metadata?.name}`;
    if (apiVersion !== "monitoring.coreos.com/v1" || !/^[A-Za-z]+$/.test(kind ?? "")) {
      console.log(`FAIL ${file}: ${name}: not a monitoring.coreos.com/v1 resource (${apiVersion})`);
      failures++;
      continue;
    }
    let Model;
    try {
      ({ [kind]: Model } = await import(`@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`));
    } catch (error) {
      console.log(`FAIL ${file}: ${name}: no schema for kind ${kind} (${error.code ?? error.message})`);
      failures++;
      continue;
    }
    try {
      new Model(object).validate();
      if (!object.metadata?.name || !object.spec) throw new Error("metadata.name and spec are required");
      console.log(`PASS ${file}: ${name}`);
      validated++;
    } catch (error) {
      console.log(`FAIL ${file}: ${name}: ${error.message}`);
      failures++;
    }
  }
}
if (validated === 0 && failures === 0) {
  console.log("FAIL: no resource validated");
  failures++;
}
process.exit(failures ? 1 : 0);
