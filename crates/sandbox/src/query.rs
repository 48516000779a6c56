//! Query string parsing and validation.
//!
//! Every query value arrives as a string (the official clients send numbers in decimal and flags
//! as `true`/`false`). Each action declares its parameters in [`super::actions::ACTIONS`]; the
//! parser checks them and fills in the documented defaults, so handlers read typed values.
//!
//! Sandbox choices where the upstream says nothing:
//! - The global parameters `_actions`, `_links` and `_embedded` are accepted and ignored
//!   everywhere. Any other parameter the action does not declare is rejected with 400
//!   (`"foo" is not allowed`), so misspelt parameters are caught rather than silently ignored.
//! - A parameter given twice is rejected with 400.
//! - An empty value (`?filter=`) counts as absent.

use std::collections::HashMap;

use percent_encoding::percent_decode_str;

use super::{
    error::ApiError,
    schemas::{ITEM_TYPES, ORG_SUMMARY_KEYS, USER_SUMMARY_KEYS},
    validate::is_id,
};

/// The global query parameters of every official client.
const GLOBAL_PARAMS: [&str; 3] = ["_actions", "_links", "_embedded"];

/// The type of one query parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum QueryKind {
    /// `true` or `false`.
    Flag,
    /// Milliseconds since the epoch, a decimal integer (negative values are relative to now,
    /// see [`super::usage`]).
    Millis,
    /// A decimal integer within bounds.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// One of a fixed list.
    Enum(&'static [&'static str]),
    /// A 24 character hex id.
    Id,
    /// Free text (the `filter` glob).
    Text,
    /// Comma-separated `summary` keys of the given list.
    SummaryKeys(&'static [&'static str]),
}

/// One declared query parameter.
#[derive(Debug)]
pub(crate) struct QueryParam {
    /// Name as sent on the wire.
    pub name: &'static str,
    /// Whether it must be present.
    pub required: bool,
    /// Its type.
    pub kind: QueryKind,
    /// The upstream's documented default, as the string a client would send.
    pub default: Option<&'static str>,
}

const fn optional(name: &'static str, kind: QueryKind) -> QueryParam {
    QueryParam {
        name,
        required: false,
        kind,
        default: None,
    }
}

const fn defaulted(name: &'static str, kind: QueryKind, default: &'static str) -> QueryParam {
    QueryParam {
        name,
        required: false,
        kind,
        default: Some(default),
    }
}

const fn required(name: &'static str, kind: QueryKind) -> QueryParam {
    QueryParam {
        name,
        required: true,
        kind,
        default: None,
    }
}

/// me get/patch/enableTwoFactorAuth/disableTwoFactorAuth/disconnectGithub.
pub(crate) const ME_SUMMARY: &[QueryParam] = &[
    optional("includeRecent", QueryKind::Flag),
    optional("summaryExclude", QueryKind::SummaryKeys(USER_SUMMARY_KEYS)),
    optional("summaryInclude", QueryKind::SummaryKeys(USER_SUMMARY_KEYS)),
];
/// orgs.post and org get/patch/modifyMember.
pub(crate) const ORG_SUMMARY: &[QueryParam] = &[
    optional("summaryExclude", QueryKind::SummaryKeys(ORG_SUMMARY_KEYS)),
    optional("summaryInclude", QueryKind::SummaryKeys(ORG_SUMMARY_KEYS)),
];
/// instanceOrg get/patch: `summaryInclude` only.
pub(crate) const INSTANCE_ORG_SUMMARY: &[QueryParam] = &[optional(
    "summaryInclude",
    QueryKind::SummaryKeys(ORG_SUMMARY_KEYS),
)];
/// deviceCounts and notebookMinuteCounts.
pub(crate) const RANGE: &[QueryParam] = &[
    optional("start", QueryKind::Millis),
    optional("end", QueryKind::Millis),
];
/// instanceOrg.deviceCounts, whose `end` alone has the documented default `0` (now).
pub(crate) const RANGE_END_DEFAULT_NOW: &[QueryParam] = &[
    optional("start", QueryKind::Millis),
    defaulted("end", QueryKind::Millis, "0"),
];
/// payloadCounts.
pub(crate) const PAYLOAD_COUNTS: &[QueryParam] = &[
    optional("start", QueryKind::Millis),
    optional("end", QueryKind::Millis),
    defaulted("asBytes", QueryKind::Flag, "false"),
];
/// payloadCountsBreakdown.
pub(crate) const BREAKDOWN: &[QueryParam] = &[
    optional("start", QueryKind::Millis),
    optional("end", QueryKind::Millis),
    defaulted(
        "resolution",
        QueryKind::Enum(&["86400000", "3600000"]),
        "86400000",
    ),
    defaulted("asBytes", QueryKind::Flag, "false"),
    defaulted("includeNonBillable", QueryKind::Flag, "false"),
];
/// me.fetchRecentItems.
pub(crate) const FETCH_RECENT: &[QueryParam] = &[
    optional("parentId", QueryKind::Id),
    required("itemType", QueryKind::Enum(ITEM_TYPES)),
];
/// The largest `perPage` the sandbox serves (the upstream documents none).
pub(crate) const MAX_PER_PAGE: i64 = 1000;
/// orgs.get.
pub(crate) const ORGS_LIST: &[QueryParam] = &[
    defaulted(
        "sortField",
        QueryKind::Enum(&["name", "id", "creationDate", "lastUpdated"]),
        "name",
    ),
    defaulted("sortDirection", QueryKind::Enum(&["asc", "desc"]), "asc"),
    defaulted(
        "page",
        QueryKind::Integer {
            min: 0,
            max: i32::MAX as i64,
        },
        "0",
    ),
    defaulted(
        "perPage",
        QueryKind::Integer {
            min: 1,
            max: MAX_PER_PAGE,
        },
        "100",
    ),
    optional("filterField", QueryKind::Enum(&["name"])),
    optional("filter", QueryKind::Text),
    optional("summaryExclude", QueryKind::SummaryKeys(ORG_SUMMARY_KEYS)),
    optional("summaryInclude", QueryKind::SummaryKeys(ORG_SUMMARY_KEYS)),
];
/// org.removeMember.
pub(crate) const REMOVE_MEMBER: &[QueryParam] = &[
    required("userId", QueryKind::Id),
    optional("summaryExclude", QueryKind::SummaryKeys(ORG_SUMMARY_KEYS)),
    optional("summaryInclude", QueryKind::SummaryKeys(ORG_SUMMARY_KEYS)),
];
/// org.revokeInvite.
pub(crate) const REVOKE_INVITE: &[QueryParam] = &[required("inviteId", QueryKind::Id)];

/// A parsed, validated query value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum QueryValue {
    /// A flag.
    Flag(bool),
    /// An integer (`Millis` and `Integer` kinds).
    Int(i64),
    /// Text, an enum value or an id (ids lower-cased).
    Text(String),
    /// Summary keys.
    Keys(Vec<String>),
}

/// The validated query of one request, defaults applied.
#[derive(Debug, Default)]
pub(crate) struct Query {
    values: HashMap<&'static str, QueryValue>,
}

impl Query {
    /// A flag's value; absent flags are `false`.
    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(QueryValue::Flag(true)))
    }

    /// An integer value.
    pub(crate) fn int(&self, name: &str) -> Option<i64> {
        match self.values.get(name) {
            Some(QueryValue::Int(value)) => Some(*value),
            _ => None,
        }
    }

    /// A text, enum or id value.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(QueryValue::Text(value)) => Some(value),
            _ => None,
        }
    }

    /// A list of summary keys.
    pub(crate) fn keys(&self, name: &str) -> Option<&[String]> {
        match self.values.get(name) {
            Some(QueryValue::Keys(value)) => Some(value),
            _ => None,
        }
    }
}

/// Parses and validates `raw` (the URI's query, without `?`) against `params`.
pub(crate) fn parse_query(
    raw: Option<&str>,
    params: &'static [QueryParam],
) -> Result<Query, ApiError> {
    let mut given: HashMap<&'static str, String> = HashMap::new();
    for pair in raw
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let value = decode(value)?;
        if GLOBAL_PARAMS.contains(&name.as_str()) {
            continue;
        }
        let Some(param) = params.iter().find(|param| param.name == name) else {
            return Err(ApiError::validation(format!("\"{name}\" is not allowed")));
        };
        if given.insert(param.name, value).is_some() {
            return Err(ApiError::validation(format!(
                "\"{name}\" must be given at most once"
            )));
        }
    }

    let mut query = Query::default();
    for param in params {
        let value = given
            .get(param.name)
            .map(String::as_str)
            .filter(|value| !value.is_empty());
        let Some(value) = value.or(param.default) else {
            if param.required {
                return Err(ApiError::validation(format!(
                    "\"{}\" is required",
                    param.name
                )));
            }
            continue;
        };
        let parsed = parse_value(value, param.kind)
            .map_err(|why| ApiError::validation(format!("\"{}\" {why}", param.name)))?;
        query.values.insert(param.name, parsed);
    }
    Ok(query)
}

/// Form-style decoding: `+` is a space, then percent escapes.
fn decode(text: &str) -> Result<String, ApiError> {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|value| value.into_owned())
        .map_err(|_| ApiError::validation("the query string is not valid UTF-8"))
}

fn parse_value(value: &str, kind: QueryKind) -> Result<QueryValue, String> {
    match kind {
        QueryKind::Flag => match value {
            "true" => Ok(QueryValue::Flag(true)),
            "false" => Ok(QueryValue::Flag(false)),
            _ => Err("must be true or false".into()),
        },
        QueryKind::Millis => value
            .parse::<i64>()
            .map(QueryValue::Int)
            .map_err(|_| "must be an integer number of milliseconds since the epoch".into()),
        QueryKind::Integer { min, max } => {
            let number = value
                .parse::<i64>()
                .map_err(|_| "must be an integer".to_string())?;
            if number < min {
                return Err(format!("must be at least {min}"));
            }
            if number > max {
                return Err(format!("must be at most {max}"));
            }
            Ok(QueryValue::Int(number))
        }
        QueryKind::Enum(allowed) if allowed.contains(&value) => {
            Ok(QueryValue::Text(value.to_string()))
        }
        QueryKind::Enum(allowed) => Err(format!("must be one of [{}]", allowed.join(", "))),
        QueryKind::Id if is_id(value) => Ok(QueryValue::Text(value.to_ascii_lowercase())),
        QueryKind::Id => {
            Err("must match the pattern ^[A-Fa-f\\d]{24}$ (a 24 character hex id)".into())
        }
        QueryKind::Text => Ok(QueryValue::Text(value.to_string())),
        QueryKind::SummaryKeys(known) => {
            let mut keys = Vec::new();
            for key in value
                .split(',')
                .map(str::trim)
                .filter(|key| !key.is_empty())
            {
                if !known.contains(&key) {
                    return Err(format!(
                        "contains unknown summary field {key}; known fields: {}",
                        known.join(", ")
                    ));
                }
                keys.push(key.to_string());
            }
            Ok(QueryValue::Keys(keys))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(raw: &str, params: &'static [QueryParam]) -> String {
        match parse_query(Some(raw), params) {
            Ok(query) => format!("ok {query:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn defaults_and_types() {
        let query = parse_query(Some("_actions=false&_links=true&_embedded=true"), ORGS_LIST)
            .expect("valid");
        assert_eq!(query.text("sortField"), Some("name"));
        assert_eq!(query.text("sortDirection"), Some("asc"));
        assert_eq!(query.int("page"), Some(0));
        assert_eq!(query.int("perPage"), Some(100));
        assert_eq!(query.text("filter"), None);

        let query = parse_query(
            Some("filterField=name&filter=my%2Aorg+1&perPage=5"),
            ORGS_LIST,
        )
        .expect("valid");
        assert_eq!(query.text("filter"), Some("my*org 1"));
        assert_eq!(query.int("perPage"), Some(5));

        let query = parse_query(None, BREAKDOWN).expect("valid");
        assert_eq!(query.text("resolution"), Some("86400000"));
        assert!(!query.flag("asBytes"));
        let query = parse_query(Some("asBytes=true&start=-86400000"), BREAKDOWN).expect("valid");
        assert!(query.flag("asBytes"));
        assert_eq!(query.int("start"), Some(-86_400_000));

        let query = parse_query(
            Some("summaryInclude=payloadCount%2CdeviceCount"),
            ORG_SUMMARY,
        )
        .expect("valid");
        assert_eq!(
            query.keys("summaryInclude"),
            Some(&["payloadCount".to_string(), "deviceCount".to_string()][..])
        );

        let query =
            parse_query(Some("userId=575ED6E87AE143CD83DC4AA9"), REMOVE_MEMBER).expect("valid");
        assert_eq!(query.text("userId"), Some("575ed6e87ae143cd83dc4aa9"));
    }

    #[test]
    fn rejections_name_the_parameter() {
        assert_eq!(
            error("sortField=size", ORGS_LIST),
            "\"sortField\" must be one of [name, id, creationDate, lastUpdated]"
        );
        assert_eq!(error("page=-1", ORGS_LIST), "\"page\" must be at least 0");
        assert_eq!(
            error("perPage=1001", ORGS_LIST),
            "\"perPage\" must be at most 1000"
        );
        assert_eq!(
            error("perPage=ten", ORGS_LIST),
            "\"perPage\" must be an integer"
        );
        assert_eq!(error("color=red", ORGS_LIST), "\"color\" is not allowed");
        assert_eq!(
            error("page=1&page=2", ORGS_LIST),
            "\"page\" must be given at most once"
        );
        assert_eq!(
            error("asBytes=yes", PAYLOAD_COUNTS),
            "\"asBytes\" must be true or false"
        );
        assert_eq!(
            error("resolution=60000", BREAKDOWN),
            "\"resolution\" must be one of [86400000, 3600000]"
        );
        assert_eq!(
            error("start=1.5", RANGE),
            "\"start\" must be an integer number of milliseconds since the epoch"
        );
        assert_eq!(error("", FETCH_RECENT), "\"itemType\" is required");
        assert_eq!(
            error("itemType=device&parentId=123", FETCH_RECENT),
            "\"parentId\" must match the pattern ^[A-Fa-f\\d]{24}$ (a 24 character hex id)"
        );
        assert!(
            error("summaryExclude=memberCount", ME_SUMMARY)
                .starts_with("\"summaryExclude\" contains unknown summary field memberCount")
        );
        assert_eq!(error("", REVOKE_INVITE), "\"inviteId\" is required");
    }
}
