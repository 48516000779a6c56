//! The per-schema fixtures (`tests/fixtures/<schema>.json`, embedded from there), the inventory
//! of every schema's property paths, and the check that a fixture fills exactly those paths.
#![allow(dead_code)]

pub(crate) mod inventory;

use std::collections::BTreeSet;

use serde_json::Value;

macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        /// Every fixture, by schema name, embedded at build time.
        pub(crate) const FIXTURES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../fixtures/", $name, ".json")))),*
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
pub(crate) fn fixture_text(schema: &str) -> &'static str {
    FIXTURES
        .iter()
        .find(|(name, _)| *name == schema)
        .unwrap_or_else(|| panic!("no fixture for schema {schema}"))
        .1
}

/// The fixture of `schema`, as bytes (what the upstream sends).
pub(crate) fn fixture_bytes(schema: &str) -> &'static [u8] {
    fixture_text(schema).as_bytes()
}

/// The fixture of `schema`, parsed.
pub(crate) fn fixture(schema: &str) -> Value {
    serde_json::from_str(fixture_text(schema))
        .unwrap_or_else(|e| panic!("fixture {schema} is not JSON: {e}"))
}

/// The property paths of `schema`.
pub(crate) fn inventory(schema: &str) -> &'static [&'static str] {
    inventory::SCHEMAS
        .iter()
        .find(|(name, _)| *name == schema)
        .unwrap_or_else(|| panic!("no inventory for schema {schema}"))
        .1
}

/// Collects the property paths a JSON document fills, in the inventory's notation.
struct Walker<'a> {
    /// The paths (without their `{}`) whose objects are free-keyed maps.
    maps: &'a BTreeSet<String>,
    /// Whether to look only at the first item of every array.
    first_items_only: bool,
    found: BTreeSet<String>,
    /// Arrays and maps with no entry.
    empty: Vec<String>,
}

impl Walker<'_> {
    fn document(&mut self, json: &Value) {
        match json {
            Value::Array(items) => self.array(items, "[]".to_string()),
            other => self.object(other, ""),
        }
    }

    fn object(&mut self, json: &Value, prefix: &str) {
        if let Value::Object(object) = json {
            for (key, value) in object {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                self.property(value, path);
            }
        }
    }

    fn array(&mut self, items: &[Value], path: String) {
        if items.is_empty() {
            self.empty.push(path.clone());
        }
        let take = if self.first_items_only {
            1
        } else {
            items.len()
        };
        for item in items.iter().take(take) {
            self.object(item, &path);
        }
        self.found.insert(path);
    }

    fn property(&mut self, value: &Value, path: String) {
        match value {
            Value::Array(items) => self.array(items, format!("{path}[]")),
            Value::Object(entries) if self.maps.contains(&path) => {
                let path = format!("{path}{{}}");
                if entries.is_empty() {
                    self.empty.push(path.clone());
                }
                self.found.insert(path);
            }
            Value::Object(_) => {
                self.object(value, &path);
                self.found.insert(path);
            }
            _ => {
                self.found.insert(path);
            }
        }
    }
}

/// How a fixture departs from its schema's inventory.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Gaps {
    /// Inventory paths the fixture does not fill.
    pub missing: Vec<String>,
    /// Inventory paths that no *first* array item fills (every array's first item is meant to
    /// be complete, recursively).
    pub missing_from_first_items: Vec<String>,
    /// Paths the fixture fills that the schema does not have.
    pub unknown: Vec<String>,
    /// Arrays and free-keyed maps the fixture leaves empty.
    pub empty: Vec<String>,
}

/// Compares the paths `json` fills with the inventory of `schema`.
pub(crate) fn inventory_gaps(schema: &str, json: &Value) -> Gaps {
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
    let walk = |first_items_only| {
        let mut walker = Walker {
            maps: &maps,
            first_items_only,
            found: BTreeSet::new(),
            empty: Vec::new(),
        };
        walker.document(json);
        walker
    };
    let all = walk(false);
    let first = walk(true);
    let mut empty = all.empty;
    empty.sort();
    let missing: Vec<String> = expected.difference(&all.found).cloned().collect();
    Gaps {
        missing_from_first_items: expected
            .difference(&first.found)
            .filter(|p| !missing.contains(p))
            .cloned()
            .collect(),
        missing,
        unknown: all.found.difference(&expected).cloned().collect(),
        empty,
    }
}

/// Checks that `json` fills every path of `schema`'s inventory (arrays and maps non-empty, the
/// first item of every array complete) and no path outside it; panics with the differences.
#[track_caller]
pub(crate) fn assert_covers_inventory(schema: &str, json: &Value) {
    let gaps = inventory_gaps(schema, json);
    assert_eq!(
        gaps,
        Gaps::default(),
        "fixture {schema} departs from the schema"
    );
}
