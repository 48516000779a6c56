//! The upstream's JSON ⇄ the generated messages.
//!
//! pbjson gives every message canonical proto3 JSON with the upstream's key names. Two things
//! differ from what the upstream speaks, and are mended here, guided by the message
//! descriptors: proto3 JSON writes 64-bit integers as strings (the upstream wants numbers), and
//! Timestamps as `…+00:00` (the upstream writes JavaScript's `toISOString()`,
//! `2016-06-13T04:00:00.000Z`). Top-level upstream arrays (`orgInvites`, `orgInvitesUser`) map
//! to a message's `items`.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::proto;

/// Why a message could not be read from or written to the upstream's JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The JSON does not have the message's shape.
    #[error("{0}")]
    Decode(#[from] serde_json::Error),
    /// The message has no descriptor (a build defect, never caller input).
    #[error("no descriptor for message {0}")]
    UnknownMessage(String),
}

/// The embedded descriptor set, decoded once.
static POOL: LazyLock<Result<DescriptorPool, prost_reflect::DescriptorError>> =
    LazyLock::new(|| DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET));

/// The descriptors of every message the gateway knows, from the embedded descriptor set.
/// [`crate::gateway::Gateway::new`] refuses to start when the set does not decode
/// ([`check_descriptors`]), so a running gateway never sees the empty pool returned then.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static EMPTY: LazyLock<DescriptorPool> = LazyLock::new(DescriptorPool::new);
    POOL.as_ref().unwrap_or(&EMPTY)
}

/// Whether the embedded descriptor set decodes (a build defect if not): why not, if not.
pub fn check_descriptors() -> Result<(), String> {
    POOL.as_ref().map(|_| ()).map_err(ToString::to_string)
}

/// A number read from JSON as a number or as a string, as proto3 JSON allows (what pbjson's
/// `NumberDeserialize` accepts, and with the same results): the generated deserializers use it
/// (build.rs) because it reads a JSON number directly instead of failing as a string first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number<T>(pub T);

impl<'de, T> serde::Deserialize<'de> for Number<T>
where
    T: std::str::FromStr + serde::Deserialize<'de>,
    <T as std::str::FromStr>::Err: std::fmt::Display,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(NumberVisitor(std::marker::PhantomData))
            .map(Number)
    }
}

struct NumberVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T> serde::de::Visitor<'de> for NumberVisitor<T>
where
    T: std::str::FromStr + serde::Deserialize<'de>,
    <T as std::str::FromStr>::Err: std::fmt::Display,
{
    type Value = T;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a number or a string holding one")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }

    // Numbers go to `T`'s own deserializer, so range and type rules are exactly its own.
    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<T, E> {
        T::deserialize(serde::de::value::U64Deserializer::new(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<T, E> {
        T::deserialize(serde::de::value::I64Deserializer::new(value))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<T, E> {
        T::deserialize(serde::de::value::F64Deserializer::new(value))
    }
}

/// A map whose values are [`Number`]s, read straight into the map of the message's field
/// (build.rs): pbjson reads a map of wrappers and copies it.
#[derive(Debug, Clone)]
pub struct NumberMap<K, V>(pub std::collections::HashMap<K, V>);

impl<'de, K, V> serde::Deserialize<'de> for NumberMap<K, V>
where
    K: serde::Deserialize<'de> + Eq + std::hash::Hash,
    V: std::str::FromStr + serde::Deserialize<'de>,
    <V as std::str::FromStr>::Err: std::fmt::Display,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(NumberMapVisitor(std::marker::PhantomData))
    }
}

struct NumberMapVisitor<K, V>(std::marker::PhantomData<(K, V)>);

impl<'de, K, V> serde::de::Visitor<'de> for NumberMapVisitor<K, V>
where
    K: serde::Deserialize<'de> + Eq + std::hash::Hash,
    V: std::str::FromStr + serde::Deserialize<'de>,
    <V as std::str::FromStr>::Err: std::fmt::Display,
{
    type Value = NumberMap<K, V>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a map of numbers")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> Result<Self::Value, A::Error> {
        let mut map = std::collections::HashMap::with_capacity(access.size_hint().unwrap_or(0));
        while let Some((key, Number(value))) = access.next_entry::<K, Number<V>>()? {
            map.insert(key, value);
        }
        Ok(NumberMap(map))
    }
}

/// A message that is written to, or read from, the upstream's JSON.
pub trait UpstreamJson:
    prost::Message + prost::Name + Serialize + DeserializeOwned + Default
{
    /// Whether the upstream JSON is a bare array of this message's `items`.
    const TOP_LEVEL_ARRAY: bool = false;

    /// Decodes the upstream's JSON; unknown properties are ignored.
    fn from_upstream_json(json: &[u8]) -> Result<Self, JsonError> {
        if Self::TOP_LEVEL_ARRAY {
            let mut wrapped = Vec::with_capacity(json.len() + 10);
            wrapped.extend_from_slice(b"{\"items\":");
            wrapped.extend_from_slice(json);
            wrapped.push(b'}');
            Ok(serde_json::from_slice(&wrapped)?)
        } else {
            Ok(serde_json::from_slice(json)?)
        }
    }

    /// Encodes the message as the upstream's JSON.
    fn to_upstream_json(&self) -> Result<Value, JsonError> {
        let mut json = to_json_value(self)?;
        if Self::TOP_LEVEL_ARRAY {
            json = match json {
                Value::Object(mut object) => {
                    object.remove("items").unwrap_or(Value::Array(Vec::new()))
                }
                other => other,
            };
        }
        Ok(json)
    }
}

/// Encodes any generated message as upstream-flavoured JSON (numbers for 64-bit integers,
/// `toISOString()` dates).
pub fn to_json_value<M: prost::Name + Serialize>(message: &M) -> Result<Value, JsonError> {
    let mut json = serde_json::to_value(message)?;
    let name = M::full_name();
    let descriptor = descriptor_pool()
        .get_message_by_name(&name)
        .ok_or(JsonError::UnknownMessage(name))?;
    normalize_message(&mut json, &descriptor);
    Ok(json)
}

macro_rules! upstream_json {
    ($($message:ident),* $(,)?) => { $(impl UpstreamJson for proto::$message {})* };
}

upstream_json!(
    AuthedUser,
    DeviceCounts,
    Error,
    InstanceOrg,
    Me,
    MultiFactorAuthInfo,
    NotebookMinuteCounts,
    Org,
    OrgInviteResultUser,
    OrgInviteUser,
    Orgs,
    PayloadCountsBreakdown,
    PayloadStats,
    RecentItemList,
    Success,
    // Bodies.
    ChangePassword,
    InstanceOrgPatch,
    MePatch,
    MultiFactorAuthDisable,
    MultiFactorAuthEnable,
    OrgInviteActionUser,
    OrgInvitePost,
    OrgMemberPatch,
    OrgPatch,
    OrgPost,
    RecentItem,
    ResourceTransfer,
    UserCredentials,
);

impl UpstreamJson for proto::OrgInvites {
    const TOP_LEVEL_ARRAY: bool = true;
}

impl UpstreamJson for proto::OrgInvitesUser {
    const TOP_LEVEL_ARRAY: bool = true;
}

const TIMESTAMP: &str = "google.protobuf.Timestamp";
const DISABLED_AT: &str = "wnology.v1.DisabledAt";

/// Rewrites, in place, the values of `json` (the pbjson encoding of a `descriptor` message)
/// that the upstream writes differently.
pub fn normalize_message(json: &mut Value, descriptor: &MessageDescriptor) {
    let Value::Object(object) = json else { return };
    for (key, value) in object.iter_mut() {
        let Some(field) = descriptor.get_field_by_json_name(key) else {
            continue;
        };
        normalize_field(value, &field);
    }
}

fn normalize_field(value: &mut Value, field: &FieldDescriptor) {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return;
        };
        let value_kind = entry.map_entry_value_field().kind();
        if let Value::Object(map) = value {
            map.values_mut()
                .for_each(|v| normalize_value(v, &value_kind));
        }
    } else if field.is_list() {
        if let Value::Array(items) = value {
            let kind = field.kind();
            items.iter_mut().for_each(|v| normalize_value(v, &kind));
        }
    } else {
        normalize_value(value, &field.kind());
    }
}

fn normalize_value(value: &mut Value, kind: &Kind) {
    match kind {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            if let Some(n) = value.as_str().and_then(|s| s.parse::<i64>().ok()) {
                *value = n.into();
            }
        }
        Kind::Uint64 | Kind::Fixed64 => {
            if let Some(n) = value.as_str().and_then(|s| s.parse::<u64>().ok()) {
                *value = n.into();
            }
        }
        // Counts typed `number` upstream are whole numbers in practice; write them as the
        // upstream does (`5`, not `5.0`).
        Kind::Double | Kind::Float => {
            if let Some(f) = value.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9_007_199_254_740_992.0
            {
                *value = (f as i64).into();
            }
        }
        Kind::Message(message) => match message.full_name() {
            TIMESTAMP | DISABLED_AT => {
                if let Some(iso) = value.as_str().and_then(to_iso_string) {
                    *value = Value::String(iso);
                }
            }
            _ => normalize_message(value, message),
        },
        _ => {}
    }
}

/// An RFC 3339 date-time as JavaScript's `Date.prototype.toISOString()` writes it.
fn to_iso_string(rfc3339: &str) -> Option<String> {
    let parsed = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(
        parsed
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Maps of numbers are read straight into the field's map, numbers or strings alike.
    #[test]
    fn maps_of_numbers_are_read_directly() {
        let stats = proto::PayloadStats::from_upstream_json(
            br#"{"appFile": {"GET": 1527, "HEAD": "21", "PUT": 2.5}, "timer": {}}"#,
        )
        .unwrap();
        let expected = [("GET", 1527.0), ("HEAD", 21.0), ("PUT", 2.5)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
        assert_eq!(stats.app_file, expected);
        assert!(stats.timer.is_empty());
        assert!(proto::PayloadStats::from_upstream_json(br#"{"appFile": {"GET": true}}"#).is_err());
    }

    /// `Number` reads every input as pbjson's `NumberDeserialize` does (same value, or an
    /// error for both).
    #[test]
    fn numbers_read_as_pbjson_reads_them() {
        fn same<T>(input: &str)
        where
            T: std::str::FromStr + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
            <T as std::str::FromStr>::Err: std::error::Error,
        {
            let ours = serde_json::from_str::<Number<T>>(input).map(|n| n.0).ok();
            let theirs = serde_json::from_str::<pbjson::private::NumberDeserialize<T>>(input)
                .map(|n| n.0)
                .ok();
            let same = match (&ours, &theirs) {
                // NaN is never equal to itself: compare how both print.
                (Some(a), Some(b)) => format!("{a:?}") == format!("{b:?}"),
                (a, b) => a == b,
            };
            assert!(
                same,
                "{input} as {}: {ours:?} vs {theirs:?}",
                std::any::type_name::<T>()
            );
        }
        let inputs = [
            "0",
            "1",
            "-1",
            "1.5",
            "-2.5",
            "1e3",
            "\"1\"",
            "\"-7\"",
            "\"1.5\"",
            "\"1e3\"",
            "\"NaN\"",
            "\"Infinity\"",
            "\"-Infinity\"",
            "\"abc\"",
            "\"\"",
            "true",
            "null",
            "[]",
            "{}",
            "4294967296",
            "-2147483649",
            "9223372036854775807",
            "18446744073709551615",
            "-9223372036854775808",
            "\"18446744073709551616\"",
            "1.7976931348623157e308",
        ];
        for input in inputs {
            same::<i32>(input);
            same::<i64>(input);
            same::<u32>(input);
            same::<u64>(input);
            same::<f32>(input);
            same::<f64>(input);
        }
    }

    #[test]
    fn int64_fields_are_numbers_and_dates_are_iso_strings() {
        let org = proto::Org {
            id: Some("575ed6e87ae143cd83dc4aa8".into()),
            limits: Some(proto::OrgLimits {
                storage: Some(5_000_000_000),
                data_ttl: Some(86400),
                ..Default::default()
            }),
            creation_date: Some(pbjson_types::Timestamp {
                seconds: 1_465_790_400,
                nanos: 5_000_000,
            }),
            disabled_at: Some(proto::DisabledAt {
                value: Some(proto::disabled_at::Value::At(pbjson_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                })),
            }),
            ..Default::default()
        };
        let json = org.to_upstream_json().unwrap();
        assert_eq!(
            json["limits"],
            json!({"storage": 5_000_000_000_i64, "dataTTL": 86400})
        );
        assert_eq!(json["creationDate"], "2016-06-13T04:00:00.005Z");
        assert_eq!(json["disabledAt"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn top_level_arrays_map_to_items() {
        let invites = proto::OrgInvites::from_upstream_json(
            br#"[{"id":"575ed6e87ae143cd83dc4aa8","ttl":5}]"#,
        )
        .unwrap();
        assert_eq!(invites.items.len(), 1);
        assert_eq!(
            invites.to_upstream_json().unwrap(),
            json!([{"id": "575ed6e87ae143cd83dc4aa8", "ttl": 5}])
        );
    }

    #[test]
    fn unknown_properties_are_ignored_and_false_disabled_at_round_trips() {
        let org =
            proto::Org::from_upstream_json(br#"{"name":"a","novel":{"x":1},"disabledAt":false}"#)
                .unwrap();
        assert_eq!(org.name.as_deref(), Some("a"));
        assert_eq!(
            org.to_upstream_json().unwrap(),
            json!({"name": "a", "disabledAt": false})
        );
    }
}
