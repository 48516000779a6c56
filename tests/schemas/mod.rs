//! The per-schema fixtures (`tests/fixtures/<schema>.json`), the inventory of every schema's
//! property paths, and the check that a fixture fills exactly those paths.
#![allow(dead_code)]

pub mod inventory;

use std::collections::BTreeSet;

use serde_json::Value;

macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        /// Every fixture, by schema name, embedded at build time.
        pub const FIXTURES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../fixtures/", $name, ".json")))),*
        ];
    };
}

fixtures!(
    "authedUser",
    "changePassword",
    "deviceCounts",
    "error",
    "instanceOrg",
    "instanceOrgPatch",
    "me",
    "mePatch",
    "multiFactorAuthDisable",
    "multiFactorAuthEnable",
    "multiFactorAuthInfo",
    "notebookMinuteCounts",
    "org",
    "orgInviteActionUser",
    "orgInvitePost",
    "orgInviteResultUser",
    "orgInviteUser",
    "orgInvites",
    "orgInvitesUser",
    "orgMemberPatch",
    "orgPatch",
    "orgPost",
    "orgs",
    "payloadCountsBreakdown",
    "payloadStats",
    "recentItem",
    "recentItemList",
    "resourceTransfer",
    "success",
    "userCredentials",
);

/// The raw text of the fixture of `schema`.
pub fn fixture_text(schema: &str) -> &'static str {
    FIXTURES
        .iter()
        .find(|(name, _)| *name == schema)
        .unwrap_or_else(|| panic!("no fixture for schema {schema}"))
        .1
}

/// The fixture of `schema`, as bytes (what the upstream sends).
pub fn fixture_bytes(schema: &str) -> &'static [u8] {
    fixture_text(schema).as_bytes()
}

/// The fixture of `schema`, parsed.
pub fn fixture(schema: &str) -> Value {
    serde_json::from_str(fixture_text(schema))
        .unwrap_or_else(|e| panic!("fixture {schema} is not JSON: {e}"))
}

/// The property paths of `schema`.
pub fn inventory(schema: &str) -> &'static [&'static str] {
    inventory::SCHEMAS
        .iter()
        .find(|(name, _)| *name == schema)
        .unwrap_or_else(|| panic!("no inventory for schema {schema}"))
        .1
}

/// The property paths `json` fills, in the inventory's notation; `maps` names the paths (without
/// their `{}`) whose objects are free-keyed maps. Empty arrays and maps are reported in `empty`.
fn walk(
    json: &Value,
    prefix: &str,
    maps: &BTreeSet<String>,
    found: &mut BTreeSet<String>,
    empty: &mut Vec<String>,
) {
    if let Value::Object(object) = json {
        for (key, value) in object {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            walk_property(value, path, maps, found, empty);
        }
    }
}

fn walk_property(
    value: &Value,
    path: String,
    maps: &BTreeSet<String>,
    found: &mut BTreeSet<String>,
    empty: &mut Vec<String>,
) {
    match value {
        Value::Array(items) => {
            let path = format!("{path}[]");
            if items.is_empty() {
                empty.push(path.clone());
            }
            for item in items {
                walk(item, &path, maps, found, empty);
            }
            found.insert(path);
        }
        Value::Object(entries) if maps.contains(&path) => {
            let path = format!("{path}{{}}");
            if entries.is_empty() {
                empty.push(path.clone());
            }
            found.insert(path);
        }
        Value::Object(_) => {
            walk(value, &path, maps, found, empty);
            found.insert(path);
        }
        _ => {
            found.insert(path);
        }
    }
}

/// Checks that `json` fills every path of `schema`'s inventory (arrays and maps non-empty) and
/// no path outside it; panics with the differences.
pub fn assert_covers_inventory(schema: &str, json: &Value) {
    let expected: BTreeSet<String> = inventory(schema).iter().map(|p| p.to_string()).collect();
    assert_eq!(
        expected.len(),
        inventory(schema).len(),
        "{schema}: duplicate inventory paths"
    );
    let maps: BTreeSet<String> = expected
        .iter()
        .filter_map(|p| p.strip_suffix("{}").map(str::to_string))
        .collect();
    let mut found = BTreeSet::new();
    let mut empty = Vec::new();
    match json {
        Value::Array(items) => {
            if items.is_empty() {
                empty.push("[]".to_string());
            }
            found.insert("[]".to_string());
            for item in items {
                walk(item, "[]", &maps, &mut found, &mut empty);
            }
        }
        other => walk(other, "", &maps, &mut found, &mut empty),
    }
    let missing: Vec<&String> = expected.difference(&found).collect();
    let unknown: Vec<&String> = found.difference(&expected).collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && empty.is_empty(),
        "fixture {schema}: missing paths {missing:?}; paths outside the schema {unknown:?}; empty arrays/maps {empty:?}"
    );
}
