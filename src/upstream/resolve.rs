//! Resolving a routed request: the HTTP method, the path and query string the official
//! clients send (global parameters first, then the route's in order), and the JSON body; every
//! check that can fail locally fails here, before any upstream call.

use bytes::Bytes;
use http::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use prost_reflect::Kind;
use serde_json::{Map, Value};

use crate::{
    error::GatewayError,
    json,
    routes::{ParamKind, Route, enum_query_value},
};

/// The global query parameters every official client adds.
pub const GLOBAL_QUERY: &str = "_actions=false&_links=true&_embedded=true";

/// What RFC 3986 query encoding (the JavaScript client's `qs`) leaves as-is: `A-Za-z0-9-._~`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The longest upstream path and query string sent: servers and proxies commonly refuse request
/// lines past 8–16 KiB, and the HTTP client cannot even build some of them, so a longer one is
/// the caller's error, refused before anything is sent.
pub const MAX_PATH_AND_QUERY_BYTES: usize = 16 * 1024;

/// A request resolved to its upstream form, validated, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path and query string, `/orgs/…?_actions=false&…`.
    pub path_and_query: String,
    /// The JSON body (none for GET).
    pub body: Option<Bytes>,
}

/// Resolves `route` for a request message given as its upstream-flavoured JSON (see
/// [`crate::json::to_json_value`]); every check that can fail locally fails here.
pub fn resolve(route: &Route, request: &Value) -> Result<UpstreamRequest, GatewayError> {
    let empty = Map::new();
    let fields = request.as_object().unwrap_or(&empty);
    let path = path(route, fields)?;
    let (query, longest) = query(route, fields)?;
    if path.len() + 1 + query.len() > MAX_PATH_AND_QUERY_BYTES {
        let field = longest.map_or_else(|| "request".to_string(), field_name);
        return Err(GatewayError::invalid(
            field,
            format!(
                "makes the upstream URL longer than {MAX_PATH_AND_QUERY_BYTES} bytes; send less"
            ),
        ));
    }
    Ok(UpstreamRequest {
        method: route.method.clone(),
        path_and_query: format!("{path}?{query}"),
        body: body(route, fields)?,
    })
}

/// The path template with each `{id}` filled from its (checked) request field.
fn path(route: &Route, fields: &Map<String, Value>) -> Result<String, GatewayError> {
    let mut path = String::with_capacity(route.path.len() + 48);
    for segment in route.path.split('/').skip(1) {
        path.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let id = fields.get(name).and_then(Value::as_str).unwrap_or_default();
                check_id(name, id)?;
                path.push_str(id);
            }
            None => path.push_str(segment),
        }
    }
    Ok(path)
}

/// The global parameters, then the route's in order; and the parameter that added most (to
/// name it when the URL is too long).
fn query<'r>(
    route: &'r Route,
    fields: &Map<String, Value>,
) -> Result<(String, Option<&'r str>), GatewayError> {
    let mut query = String::from(GLOBAL_QUERY);
    let mut longest: Option<(&str, usize)> = None;
    for param in route.query {
        let value = fields.get(param.name);
        let Some(text) = query_value(param.name, param.kind, value)? else {
            if param.required {
                return Err(GatewayError::invalid(field_name(param.name), "is required"));
            }
            continue;
        };
        let before = query.len();
        query.push('&');
        query.push_str(param.name);
        query.push('=');
        query.extend(utf8_percent_encode(&text, QUERY_VALUE));
        let added = query.len() - before;
        if longest.is_none_or(|(_, most)| added > most) {
            longest = Some((param.name, added));
        }
    }
    Ok((query, longest.map(|(name, _)| name)))
}

/// The JSON body: the request's `body` (checked, with `clear_mask`'s lists added), `{}` for
/// an action without one, none for GET.
fn body(route: &Route, fields: &Map<String, Value>) -> Result<Option<Bytes>, GatewayError> {
    let Some(spec) = route.body else {
        return Ok((route.method != Method::GET).then(|| Bytes::from_static(b"{}")));
    };
    let Some(body) = fields.get("body").filter(|b| b.is_object()) else {
        return Err(GatewayError::invalid("body", "is required"));
    };
    if let Some(path) = null_path(body, "body") {
        return Err(GatewayError::invalid(
            path,
            "is set but empty (a oneof with no member)",
        ));
    }
    for required in spec.required_fields {
        if body.get(required).is_none_or(Value::is_null) {
            return Err(GatewayError::invalid(
                format!("body.{}", field_name(required)),
                "is required",
            ));
        }
    }
    let clear = mask_paths(fields.get("clearMask"));
    if clear.is_empty() {
        return Ok(Some(Bytes::from(body.to_string())));
    }
    let mut body = body.clone();
    clear_lists(route, &clear, &mut body)?;
    Ok(Some(Bytes::from(body.to_string())))
}

/// The paths of a `FieldMask` in a request's JSON form (`{"paths": [...]}` as pbjson writes it,
/// or the canonical comma-joined string).
fn mask_paths(mask: Option<&Value>) -> Vec<&str> {
    match mask {
        Some(Value::String(joined)) => joined.split(',').filter(|p| !p.is_empty()).collect(),
        Some(Value::Object(mask)) => mask
            .get("paths")
            .and_then(Value::as_array)
            .map(|paths| paths.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Adds the lists `clear_mask` names (`paths`, as proto or JSON field names) to `body` as `[]`
/// (a map as `{}`): proto3 has no presence for them, so an empty list is otherwise left out and
/// cannot clear the list upstream.
fn clear_lists(route: &Route, paths: &[&str], body: &mut Value) -> Result<(), GatewayError> {
    let invalid = |reason: String| GatewayError::invalid("clear_mask", reason);
    let body_message = json::descriptor_pool()
        .get_service_by_name(route.service.grpc_name())
        .and_then(|service| service.methods().find(|m| m.name() == route.rpc))
        .and_then(|method| method.input().get_field_by_name("body"))
        .and_then(|field| match field.kind() {
            Kind::Message(message) => Some(message),
            _ => None,
        })
        .ok_or_else(|| GatewayError::Internal(format!("{}: no body message", route.action)))?;
    let Some(object) = body.as_object_mut() else {
        return Ok(());
    };
    for &path in paths {
        let field = body_message
            .get_field_by_json_name(path)
            .or_else(|| body_message.get_field_by_name(path));
        let Some(field) = field else {
            return Err(invalid(if path.contains('.') {
                format!("`{path}`: only lists of `body` itself can be cleared")
            } else {
                format!("`{path}` is not a field of {}", body_message.name())
            }));
        };
        let empty = if field.is_map() {
            Value::Object(Map::new())
        } else if field.is_list() {
            Value::Array(Vec::new())
        } else {
            return Err(invalid(format!(
                "`{}` is not a list (only lists and maps can be cleared)",
                field.name()
            )));
        };
        let name = field.json_name();
        if object.get(name).is_some_and(|value| value != &empty) {
            return Err(invalid(format!(
                "`{}` is cleared and given items at once",
                field.name()
            )));
        }
        object.insert(name.to_string(), empty);
    }
    Ok(())
}

/// The first null in a body: pbjson writes none but for a `DisabledAt` whose oneof is unset,
/// which the upstream would refuse.
fn null_path(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Null => Some(path.to_string()),
        Value::Object(object) => object
            .iter()
            .find_map(|(key, v)| null_path(v, &format!("{path}.{}", field_name(key)))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| null_path(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// The query text of one parameter; `None` when the caller left it out.
fn query_value(
    name: &str,
    kind: ParamKind,
    value: Option<&Value>,
) -> Result<Option<String>, GatewayError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let text = match (kind, value) {
        (ParamKind::Id, Value::String(id)) if id.is_empty() => return Ok(None),
        (ParamKind::Id, Value::String(id)) => {
            check_id(name, id)?;
            id.clone()
        }
        (ParamKind::Text, Value::String(text)) if text.is_empty() => return Ok(None),
        (ParamKind::Text, Value::String(text)) => text.clone(),
        (ParamKind::Integer, Value::Number(n)) => n.to_string(),
        (ParamKind::Flag, Value::Bool(flag)) => flag.to_string(),
        (ParamKind::List, Value::Array(items)) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(item) if !item.is_empty() && !item.contains(',') => names.push(item),
                    _ => {
                        return Err(GatewayError::invalid(
                            field_name(name),
                            "each item must be a non-empty name without commas",
                        ));
                    }
                }
            }
            if names.is_empty() {
                return Ok(None);
            }
            names.join(",")
        }
        (ParamKind::Enum, Value::String(proto_name)) => match enum_query_value(proto_name) {
            Some(upstream) => upstream.to_string(),
            None => return Ok(None),
        },
        (_, other) => {
            return Err(GatewayError::Internal(format!(
                "query parameter {name} has unexpected JSON {other}"
            )));
        }
    };
    Ok(Some(text))
}

/// Ids are 24 hexadecimal characters everywhere upstream; checking them also keeps a caller
/// from steering a call to another path (`org_id = "../me"`).
fn check_id(name: &str, id: &str) -> Result<(), GatewayError> {
    if id.is_empty() {
        return Err(GatewayError::invalid(field_name(name), "is required"));
    }
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GatewayError::invalid(
            field_name(name),
            "must be 24 hexadecimal characters",
        ));
    }
    Ok(())
}

/// The caller's (snake_case) name of an upstream (lowerCamelCase) field: `orgId` → `org_id`.
pub fn field_name(upstream: &str) -> String {
    heck::ToSnakeCase::to_snake_case(upstream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{proto, routes};
    use serde_json::json;

    #[test]
    fn path_query_and_body() {
        let call = resolve(
            &routes::ORG_REMOVE_MEMBER,
            &json!({"orgId": "575ed6e87ae143cd83dc4aa8", "userId": "575ED6E87AE143CD83DC4AA9", "summaryInclude": ["payloadCount", "deviceCount"]}),
        )
        .unwrap();
        assert_eq!(call.method, Method::DELETE);
        assert_eq!(
            call.path_and_query,
            "/orgs/575ed6e87ae143cd83dc4aa8/member?_actions=false&_links=true&_embedded=true&userId=575ED6E87AE143CD83DC4AA9&summaryInclude=payloadCount%2CdeviceCount"
        );
        assert_eq!(call.body.as_deref(), Some(&b"{}"[..]));
    }

    /// The request as the gateway resolves it: through its JSON form.
    fn resolve_message<M: prost::Name + serde::Serialize>(
        route: &Route,
        message: &M,
    ) -> Result<UpstreamRequest, GatewayError> {
        resolve(route, &crate::json::to_json_value(message).unwrap())
    }

    fn modify_member(paths: &[&str], body: proto::OrgMemberPatch) -> proto::OrgModifyMemberRequest {
        proto::OrgModifyMemberRequest {
            org_id: "575ed6e87ae143cd83dc4aa8".into(),
            body: Some(body),
            clear_mask: Some(pbjson_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
            ..Default::default()
        }
    }

    fn member() -> proto::OrgMemberPatch {
        proto::OrgMemberPatch {
            user_id: Some("575ed6e87ae143cd83dc4aa9".into()),
            ..Default::default()
        }
    }

    #[test]
    fn clear_mask_sends_empty_lists() {
        let call = resolve_message(
            &routes::ORG_MODIFY_MEMBER,
            &modify_member(&["application_roles", "dashboardRoles"], member()),
        )
        .unwrap();
        let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"userId": "575ed6e87ae143cd83dc4aa9", "applicationRoles": [], "dashboardRoles": []})
        );
        // Without a mask an empty list is left out, as before.
        let call =
            resolve_message(&routes::ORG_MODIFY_MEMBER, &modify_member(&[], member())).unwrap();
        assert_eq!(
            call.body.as_deref(),
            Some(&br#"{"userId":"575ed6e87ae143cd83dc4aa9"}"#[..])
        );
    }

    #[test]
    fn clear_mask_names_only_empty_lists_of_the_body() {
        let with_roles = proto::OrgMemberPatch {
            application_roles: vec![proto::ResourceRole::default()],
            ..member()
        };
        for (paths, body, reason) in [
            (&["role"][..], member(), "`role` is not a list"),
            (
                &["nope"][..],
                member(),
                "`nope` is not a field of OrgMemberPatch",
            ),
            (
                &["limits.tags"][..],
                member(),
                "only lists of `body` itself",
            ),
            (
                &["application_roles"][..],
                with_roles,
                "is cleared and given items at once",
            ),
        ] {
            let error = resolve_message(&routes::ORG_MODIFY_MEMBER, &modify_member(paths, body))
                .unwrap_err();
            let GatewayError::InvalidArgument {
                field,
                description: got,
            } = &error
            else {
                panic!("{paths:?}: {error:?}");
            };
            assert_eq!(field, "clear_mask");
            assert!(got.contains(reason), "{paths:?}: {got}");
        }
    }

    #[test]
    fn ids_are_checked() {
        for bad in [
            "../me",
            "575ed6e87ae143cd83dc4aa",
            "575ed6e87ae143cd83dc4aaZ",
            "575ed6e87ae143cd83dc4aa8/x",
        ] {
            let error = resolve(&routes::ORG_GET, &json!({"orgId": bad})).unwrap_err();
            assert!(
                matches!(error, GatewayError::InvalidArgument { ref field, .. } if field == "org_id"),
                "{bad}: {error}"
            );
        }
        let error = resolve(&routes::ORG_GET, &json!({})).unwrap_err();
        assert_eq!(error.to_string(), "invalid `org_id`: is required");
        let error = resolve(
            &routes::ORG_REVOKE_INVITE,
            &json!({"orgId": "575ed6e87ae143cd83dc4aa8"}),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "invalid `invite_id`: is required");
    }

    #[test]
    fn an_over_long_url_is_refused_naming_the_field() {
        let filter = "a".repeat(70_000);
        let error = resolve(&routes::ORG_LIST, &json!({"filter": filter})).unwrap_err();
        assert!(
            matches!(error, GatewayError::InvalidArgument { ref field, .. } if field == "filter"),
            "{error}"
        );
        let items: Vec<String> = (0..100_000).map(|i| format!("s{i}")).collect();
        let error = resolve(&routes::ORG_LIST, &json!({"summaryInclude": items})).unwrap_err();
        assert!(
            matches!(error, GatewayError::InvalidArgument { ref field, .. } if field == "summary_include"),
            "{error}"
        );
        let near = "a".repeat(MAX_PATH_AND_QUERY_BYTES - 200);
        assert!(resolve(&routes::ORG_LIST, &json!({"filter": near})).is_ok());
    }

    #[test]
    fn enums_integers_and_text() {
        let call = resolve(
            &routes::ORG_LIST,
            &json!({"sortField": "SORT_FIELD_CREATION_DATE", "sortDirection": "SORT_DIRECTION_DESC", "page": 0, "perPage": 5, "filterField": "FILTER_FIELD_NAME", "filter": "my*org 1"}),
        )
        .unwrap();
        assert_eq!(
            call.path_and_query,
            "/orgs?_actions=false&_links=true&_embedded=true&sortField=creationDate&sortDirection=desc&page=0&perPage=5&filterField=name&filter=my%2Aorg%201"
        );
        assert_eq!(call.body, None);
    }

    #[test]
    fn bodies_and_their_required_fields() {
        assert_eq!(
            resolve(&routes::ORG_CREATE, &json!({}))
                .unwrap_err()
                .to_string(),
            "invalid `body`: is required"
        );
        assert_eq!(
            resolve(&routes::ORG_CREATE, &json!({"body": {"description": "x"}}))
                .unwrap_err()
                .to_string(),
            "invalid `body.name`: is required"
        );
        assert_eq!(
            resolve(&routes::INSTANCE_ORG_PATCH, &json!({"instanceId": "575ed6e87ae143cd83dc4aa8", "orgId": "575ed6e87ae143cd83dc4aa8", "body": {"disabledAt": null}}))
                .unwrap_err()
                .to_string(),
            "invalid `body.disabled_at`: is set but empty (a oneof with no member)"
        );
        let call = resolve(&routes::ORG_CREATE, &json!({"body": {"name": "x"}})).unwrap();
        assert_eq!(call.body.as_deref(), Some(&br#"{"name":"x"}"#[..]));
    }
}
