//! The axum router: one route per upstream path (built from [`ACTIONS`]), JSON 404 for
//! unknown paths, JSON 405 (with `Allow`) for known paths with another method, and a request
//! counter.
//!
//! Each request goes through the same pipeline: authenticate the bearer token (401),
//! check the action's scopes (403), validate path ids, query and body (400), then run the
//! handler under the store's lock. Bodies of bodiless actions are ignored (the JavaScript client
//! sends `{}`); a body action's body must be JSON (its `Content-Type` is not checked, the Ruby
//! and Python clients differ on it).

use std::{collections::BTreeMap, sync::Arc, sync::atomic::Ordering};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Request, State},
    http::{Method, Uri, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter},
};
use chrono::Utc;
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::{
    Inner,
    actions::{ACTIONS, ActionSpec},
    auth::{authenticate, authorize},
    error::ApiError,
    handlers::{Ctx, Reply, handle},
    query::parse_query,
    validate::{is_id, validate_body},
};

/// The largest request body accepted (413 beyond). The largest valid upstream body is far
/// smaller (a `userCredentials` with every scope is ~20 KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Builds the router for `inner`.
pub(super) fn router(inner: Arc<Inner>) -> Router {
    let mut by_path: BTreeMap<&'static str, Vec<&'static ActionSpec>> = BTreeMap::new();
    for spec in &ACTIONS {
        by_path.entry(spec.path).or_default().push(spec);
    }
    let mut router = Router::new();
    for (path, specs) in by_path {
        let allow = specs
            .iter()
            .map(|spec| spec.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let mut methods = MethodRouter::<()>::new();
        for spec in specs {
            let inner = Arc::clone(&inner);
            methods = methods.on(method_filter(&spec.method), move |request: Request| {
                serve_action(Arc::clone(&inner), spec, request)
            });
        }
        methods = methods.fallback(move |method: Method, uri: Uri| {
            let allow = allow.clone();
            async move {
                ApiError::MethodNotAllowed {
                    message: format!(
                        "Method {method} is not allowed on {}; allowed: {allow}",
                        uri.path()
                    ),
                    allow,
                }
            }
        });
        router = router.route(path, methods);
    }
    router
        .fallback(|uri: Uri| async move {
            ApiError::NotFound(format!("Path {} was not found", uri.path()))
        })
        .merge(super::faults::admin(inner.faults.clone()))
        .layer(middleware::from_fn_with_state(
            inner.faults.clone(),
            super::faults::inject,
        ))
        .layer(middleware::from_fn_with_state(inner, count_requests))
}

/// Counts every request, whatever its outcome.
async fn count_requests(State(inner): State<Arc<Inner>>, request: Request, next: Next) -> Response {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    next.run(request).await
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::POST => MethodFilter::POST,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        Method::PUT => MethodFilter::PUT,
        _ => MethodFilter::GET,
    }
}

async fn serve_action(inner: Arc<Inner>, spec: &'static ActionSpec, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "The request body must be at most {MAX_BODY_BYTES} bytes"
        ))
    };
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return too_large().into_response();
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        // Without a (too big) Content-Length, the usual cause is a chunked body over the limit.
        Err(_) => return too_large().into_response(),
    };
    let response = run(&inner, spec, &parts, &bytes).unwrap_or_else(IntoResponse::into_response);
    tracing::debug!(action = spec.name, method = %parts.method, path = %parts.uri.path(), status = %response.status(), "sandbox request");
    response
}

/// The request pipeline (see the module docs).
fn run(
    inner: &Inner,
    spec: &'static ActionSpec,
    parts: &Parts,
    bytes: &Bytes,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let reply = {
        let mut store = inner.lock();
        let caller = authenticate(&store, &parts.headers, now)?;
        authorize(&caller, spec)?;
        let path = path_params(spec.path, parts.uri.path())?;
        let query = parse_query(parts.uri.query(), spec.query)?;
        let body = parse_body(spec, bytes)?;
        let ctx = Ctx {
            spec,
            caller: &caller,
            path: &path,
            query: &query,
            body: &body,
            now,
        };
        handle(&mut store, &ctx)?
    };
    // Usage series can be large; they are computed after the lock is released.
    let body = match reply {
        Reply::Json(value) => value,
        Reply::Usage(request) => request.render(),
    };
    Ok((spec.success, Json(body)).into_response())
}

/// Extracts the `{name}` segments of `template` from `path`; every path parameter of the
/// upstream is an id, so each must match `^[A-Fa-f\d]{24}$` (400) and is lower-cased.
fn path_params(
    template: &'static str,
    path: &str,
) -> Result<Vec<(&'static str, String)>, ApiError> {
    let mut params = Vec::new();
    for (pattern, segment) in template.split('/').zip(path.split('/')) {
        let Some(name) = pattern
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        else {
            continue;
        };
        let value = percent_decode_str(segment).decode_utf8_lossy();
        if !is_id(&value) {
            return Err(ApiError::validation(format!(
                "\"{name}\" must match the pattern ^[A-Fa-f\\d]{{24}}$ (a 24 character hex id)"
            )));
        }
        params.push((name, value.to_ascii_lowercase()));
    }
    Ok(params)
}

/// The validated JSON body of a body action; `Value::Null` for bodiless actions.
fn parse_body(spec: &ActionSpec, bytes: &Bytes) -> Result<Value, ApiError> {
    let Some(schema) = spec.body else {
        return Ok(Value::Null);
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation("the request body is required"));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::InvalidJson(format!("The request body is not valid JSON: {error}"))
    })?;
    validate_body(&value, schema)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters() {
        let params = path_params(
            "/instances/{instanceId}/orgs/{orgId}",
            "/instances/575EC8687AE143CD83DC4A97/orgs/575ed6e87ae143cd83dc4aa8",
        )
        .expect("valid");
        assert_eq!(
            params,
            vec![
                ("instanceId", "575ec8687ae143cd83dc4a97".to_string()),
                ("orgId", "575ed6e87ae143cd83dc4aa8".to_string())
            ]
        );
        let error = path_params("/orgs/{orgId}", "/orgs/not-an-id").expect_err("invalid");
        assert_eq!(
            error.to_string(),
            "\"orgId\" must match the pattern ^[A-Fa-f\\d]{24}$ (a 24 character hex id)"
        );
    }
}
