//! A small JSON Schema (draft-07 subset) validator for request bodies, plus the string formats
//! the upstream's schemas use.
//!
//! The request bodies of the 42 actions only use: `type` (object, string, integer, boolean,
//! array), `properties`, `required`, `additionalProperties: false`, `enum`, `minLength`,
//! `maxLength`, `pattern`, `format` (`email`, `date-time`), `maxItems`, `minimum`, `maximum` and
//! one `oneOf` (`disabledAt`: a date-time or a boolean). [`Schema`] models exactly that, and the
//! schemas themselves are Rust constants in [`super::schemas`].
//!
//! Messages name the offending field with its JSON path, Joi style:
//! `"name" must be at most 255 characters`, `"applicationRoles[0].role" must be one of [...]`.
//! Validation stops at the first problem, like the upstream's `abortEarly` default.
//!
//! The upstream's patterns are implemented in code (Rust's `regex` has no look-around), see
//! [`Format`].

use serde_json::{Map, Value};

use super::error::ApiError;

/// How a string value is checked beyond its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Any string.
    Any,
    /// `^[A-Fa-f\d]{24}$`: the upstream's object ids.
    Id,
    /// `format: email`, checked loosely: `local@domain.tld`, no whitespace.
    Email,
    /// `format: date-time` (RFC 3339).
    DateTime,
    /// `^(?=.*[A-Z])(?=.*[^A-Za-z0-9])(?=.*[0-9])(?=.*[a-z]).{12,}$`: at least one upper case
    /// letter, one lower case letter, one digit and one symbol, 12 or more characters and no
    /// line breaks (JavaScript's `.` matches no line terminator).
    Password,
    /// `^[0-9a-zA-Z_-]{1,255}$`: instance organization tag keys.
    TagKey,
    /// A token scope name such as `all.User`, `me.*` or `org.get` (`userCredentials.requestedScopes`).
    /// The upstream lists ~450 names; the sandbox checks the shape only.
    Scope,
}

/// The subset of JSON Schema the upstream's request bodies use.
#[derive(Debug)]
pub(crate) enum Schema {
    /// `type: string` with its constraints.
    String {
        /// `minLength` in Unicode code points.
        min: usize,
        /// `maxLength` in Unicode code points.
        max: usize,
        /// `pattern` / `format`.
        format: Format,
        /// `enum`; empty means any value.
        allowed: &'static [&'static str],
    },
    /// `type: integer` with optional `minimum` / `maximum`.
    Integer {
        /// `minimum`.
        min: Option<i64>,
        /// `maximum`.
        max: Option<i64>,
    },
    /// `type: boolean`.
    Boolean,
    /// `oneOf: [{type: string, format: date-time}, {type: boolean}]` (`instanceOrgPatch.disabledAt`).
    DateTimeOrBoolean,
    /// `type: array`.
    Array {
        /// `items`.
        items: &'static Schema,
        /// `maxItems`.
        max_items: usize,
    },
    /// `type: object`.
    Object {
        /// `properties`, in schema order.
        properties: &'static [(&'static str, Schema)],
        /// `required`.
        required: &'static [&'static str],
        /// `additionalProperties`; `false` rejects any property not listed.
        additional: bool,
    },
}

impl Schema {
    /// A string of `min..=max` code points in the given format.
    pub(crate) const fn string(min: usize, max: usize, format: Format) -> Self {
        Schema::String {
            min,
            max,
            format,
            allowed: &[],
        }
    }

    /// A string that must be one of `allowed`.
    pub(crate) const fn one_of(allowed: &'static [&'static str]) -> Self {
        Schema::String {
            min: 0,
            max: usize::MAX,
            format: Format::Any,
            allowed,
        }
    }
}

/// Validates `value` against `schema`; the error names the first offending field.
pub(crate) fn validate_body(value: &Value, schema: &Schema) -> Result<(), ApiError> {
    if !value.is_object() {
        return Err(ApiError::validation(
            "the request body must be a JSON object",
        ));
    }
    validate(value, schema, "")
}

fn validate(value: &Value, schema: &Schema, path: &str) -> Result<(), ApiError> {
    match schema {
        Schema::String {
            min,
            max,
            format,
            allowed,
        } => {
            let Some(text) = value.as_str() else {
                return Err(invalid(path, "must be a string"));
            };
            check_string(text, *min, *max, *format, allowed).map_err(|why| invalid(path, &why))
        }
        Schema::Integer { min, max } => {
            let Some(number) = as_integer(value) else {
                return Err(invalid(path, "must be an integer"));
            };
            if let Some(min) = min.filter(|min| number < *min) {
                return Err(invalid(path, &format!("must be at least {min}")));
            }
            if let Some(max) = max.filter(|max| number > *max) {
                return Err(invalid(path, &format!("must be at most {max}")));
            }
            Ok(())
        }
        Schema::Boolean => match value {
            Value::Bool(_) => Ok(()),
            _ => Err(invalid(path, "must be a boolean")),
        },
        Schema::DateTimeOrBoolean => match value {
            Value::Bool(_) => Ok(()),
            Value::String(text) if is_date_time(text) => Ok(()),
            _ => Err(invalid(path, "must be a boolean or an ISO 8601 date-time")),
        },
        Schema::Array { items, max_items } => {
            let Some(list) = value.as_array() else {
                return Err(invalid(path, "must be an array"));
            };
            if list.len() > *max_items {
                return Err(invalid(
                    path,
                    &format!("must contain at most {max_items} items"),
                ));
            }
            for (index, item) in list.iter().enumerate() {
                validate(item, items, &format!("{path}[{index}]"))?;
            }
            Ok(())
        }
        Schema::Object {
            properties,
            required,
            additional,
        } => {
            let Some(object) = value.as_object() else {
                return Err(invalid(path, "must be an object"));
            };
            validate_object(object, properties, required, *additional, path)
        }
    }
}

fn validate_object(
    object: &Map<String, Value>,
    properties: &[(&str, Schema)],
    required: &[&str],
    additional: bool,
    path: &str,
) -> Result<(), ApiError> {
    for name in required {
        // `null` is not a value of any of these schemas' types, so it counts as missing.
        if object.get(*name).is_none_or(Value::is_null) {
            return Err(invalid(&join(path, name), "is required"));
        }
    }
    for (name, value) in object {
        match properties.iter().find(|(known, _)| known == name) {
            Some((_, schema)) => validate(value, schema, &join(path, name))?,
            None if additional => {}
            None => return Err(invalid(&join(path, name), "is not allowed")),
        }
    }
    Ok(())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn invalid(path: &str, why: &str) -> ApiError {
    if path.is_empty() {
        ApiError::validation(format!("the request body {why}"))
    } else {
        ApiError::validation(format!("\"{path}\" {why}"))
    }
}

/// JSON Schema counts numbers with a zero fraction (`3.0`) as integers.
fn as_integer(value: &Value) -> Option<i64> {
    let number = value.as_number()?;
    if let Some(int) = number.as_i64() {
        return Some(int);
    }
    let float = number.as_f64()?;
    // Checked bounds keep the cast exact; anything larger is out of every schema's range anyway.
    (float.fract() == 0.0 && float.abs() < 9.0e15).then_some(float as i64)
}

/// Checks a string's length, format and enum; the error is the phrase after the field name.
pub(crate) fn check_string(
    text: &str,
    min: usize,
    max: usize,
    format: Format,
    allowed: &[&str],
) -> Result<(), String> {
    if !allowed.is_empty() {
        if allowed.contains(&text) {
            return Ok(());
        }
        return Err(format!("must be one of [{}]", allowed.join(", ")));
    }
    let length = text.chars().count();
    if length < min {
        return Err(if min == 1 {
            "is not allowed to be empty".to_string()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if length > max {
        return Err(format!("must be at most {max} characters"));
    }
    match format {
        Format::Any => Ok(()),
        Format::Id if is_id(text) => Ok(()),
        Format::Id => {
            Err("must match the pattern ^[A-Fa-f\\d]{24}$ (a 24 character hex id)".into())
        }
        Format::Email if is_email(text) => Ok(()),
        Format::Email => Err("must be a valid email".into()),
        Format::DateTime if is_date_time(text) => Ok(()),
        Format::DateTime => Err("must be a valid ISO 8601 date-time".into()),
        Format::Password => check_password(text),
        Format::TagKey if is_tag_key(text) => Ok(()),
        Format::TagKey => Err("must match the pattern ^[0-9a-zA-Z_-]{1,255}$".into()),
        Format::Scope if is_scope(text) => Ok(()),
        Format::Scope => Err("must be a scope name such as all.User or me.get".into()),
    }
}

/// `^[A-Fa-f\d]{24}$`.
pub(crate) fn is_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A loose `format: email`: one `@`, a non-empty local part, a dotted domain, no whitespace.
pub(crate) fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let labels_ok = domain.split('.').all(|label| !label.is_empty());
    !local.is_empty()
        && domain.contains('.')
        && labels_ok
        && !domain.contains('@')
        && !text.chars().any(char::is_whitespace)
}

/// RFC 3339 date-time, as JSON Schema's `format: date-time`.
pub(crate) fn is_date_time(text: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

fn is_tag_key(text: &str) -> bool {
    (1..=255).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `word(.word)*` where the last part may be `*`, e.g. `all.User.read`, `me.*`.
fn is_scope(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() >= 2
        && parts.iter().enumerate().all(|(index, part)| {
            (*part == "*" && index == parts.len() - 1)
                || (!part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()))
        })
}

/// The upstream's password rule, `^(?=.*[A-Z])(?=.*[^A-Za-z0-9])(?=.*[0-9])(?=.*[a-z]).{12,}$`,
/// without look-around.
pub(crate) fn check_password(text: &str) -> Result<(), String> {
    // JavaScript's `.` does not match line terminators, so `^.{12,}$` rejects them anywhere.
    let line_break = |c: char| matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}');
    if text.chars().any(line_break) {
        return Err("must not contain line breaks".into());
    }
    if text.chars().count() < 12 {
        return Err("must be at least 12 characters".into());
    }
    let mut missing = Vec::new();
    if !text.chars().any(|c| c.is_ascii_uppercase()) {
        missing.push("an upper case letter");
    }
    if !text.chars().any(|c| c.is_ascii_lowercase()) {
        missing.push("a lower case letter");
    }
    if !text.chars().any(|c| c.is_ascii_digit()) {
        missing.push("a digit");
    }
    if !text.chars().any(|c| !c.is_ascii_alphanumeric()) {
        missing.push("a symbol");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("must contain {}", missing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::schemas;
    use super::*;

    fn message(result: Result<(), ApiError>) -> String {
        match result {
            Ok(()) => "ok".into(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn ids() {
        assert!(is_id("575ec8687ae143cd83dc4a97"));
        assert!(is_id("575EC8687AE143CD83DC4A97"));
        assert!(!is_id("575ec8687ae143cd83dc4a9"));
        assert!(!is_id("575ec8687ae143cd83dc4a9z"));
        assert!(!is_id("575ec8687ae143cd83dc4a977"));
    }

    #[test]
    fn emails_are_checked_loosely() {
        assert!(is_email("example@weg.net"));
        assert!(is_email("first.last+tag@sub.example.co"));
        assert!(!is_email("example.weg.net"));
        assert!(!is_email("@weg.net"));
        assert!(!is_email("a@localhost"));
        assert!(!is_email("a b@weg.net"));
        assert!(!is_email("a@weg..net"));
    }

    #[test]
    fn password_rule_matches_the_upstream_pattern() {
        assert_eq!(check_password("yourNewPassword1!"), Ok(()));
        assert_eq!(check_password("My new password!!1"), Ok(()));
        assert!(check_password("Short1!a").is_err());
        assert_eq!(
            check_password("alllowercase1!x"),
            Err("must contain an upper case letter".into())
        );
        assert_eq!(
            check_password("NoDigitsHere!!"),
            Err("must contain a digit".into())
        );
        assert_eq!(
            check_password("NoSymbols12345"),
            Err("must contain a symbol".into())
        );
        assert_eq!(
            check_password("ALLUPPER123!!"),
            Err("must contain a lower case letter".into())
        );
        assert!(check_password("Line\nbreak12345!").is_err());
    }

    #[test]
    fn scope_shapes() {
        assert!(is_scope("all.User"));
        assert!(is_scope("all.User.read"));
        assert!(is_scope("me.*"));
        assert!(!is_scope("me"));
        assert!(!is_scope("*.me"));
        assert!(!is_scope("me..get"));
    }

    #[test]
    fn required_unknown_and_types() {
        let schema = &schemas::ORG_POST;
        assert_eq!(message(validate_body(&json!({"name": "x"}), schema)), "ok");
        assert_eq!(
            message(validate_body(&json!({}), schema)),
            "\"name\" is required"
        );
        assert_eq!(
            message(validate_body(&json!({"name": null}), schema)),
            "\"name\" is required"
        );
        assert_eq!(
            message(validate_body(&json!({"name": "x", "color": "red"}), schema)),
            "\"color\" is not allowed"
        );
        assert_eq!(
            message(validate_body(&json!({"name": 5}), schema)),
            "\"name\" must be a string"
        );
        assert_eq!(
            message(validate_body(&json!({"name": ""}), schema)),
            "\"name\" is not allowed to be empty"
        );
        assert_eq!(
            message(validate_body(&json!({"name": "x".repeat(256)}), schema)),
            "\"name\" must be at most 255 characters"
        );
        // Length counts code points, not bytes.
        assert_eq!(
            message(validate_body(&json!({"name": "é".repeat(255)}), schema)),
            "ok"
        );
        assert_eq!(
            message(validate_body(
                &json!({"name": "x", "mfaMode": "sometimes"}),
                schema
            )),
            "\"mfaMode\" must be one of [notRequired, adminRequired, required]"
        );
        assert_eq!(
            message(validate_body(&json!([1]), schema)),
            "the request body must be a JSON object"
        );
    }

    #[test]
    fn nested_paths_name_the_field() {
        let body = json!({
            "email": "new@example.com",
            "role": "edit",
            "applicationRoles": [{"resourceId": "575ec8687ae143cd83dc4a97", "role": "owner"}]
        });
        assert_eq!(
            message(validate_body(&body, &schemas::ORG_INVITE_POST)),
            "\"applicationRoles[0].role\" must be one of [collaborate, view, none]"
        );
        let too_many: Vec<_> = (0..101)
            .map(|_| json!({"resourceId": "575ec8687ae143cd83dc4a97", "role": "view"}))
            .collect();
        let body = json!({"email": "new@example.com", "role": "edit", "dashboardRoles": too_many});
        assert_eq!(
            message(validate_body(&body, &schemas::ORG_INVITE_POST)),
            "\"dashboardRoles\" must contain at most 100 items"
        );
        let body = json!({"limits": {"systemInterval": 4}});
        assert_eq!(
            message(validate_body(&body, &schemas::INSTANCE_ORG_PATCH)),
            "\"limits.systemInterval\" must be at least 5"
        );
        let body = json!({"limits": {"member": 2.5}});
        assert_eq!(
            message(validate_body(&body, &schemas::INSTANCE_ORG_PATCH)),
            "\"limits.member\" must be an integer"
        );
        assert_eq!(
            message(validate_body(
                &json!({"limits": {"member": 5.0}}),
                &schemas::INSTANCE_ORG_PATCH
            )),
            "ok"
        );
        let body = json!({"tags": [{"key": "bad key", "value": "v"}]});
        assert_eq!(
            message(validate_body(&body, &schemas::INSTANCE_ORG_PATCH)),
            "\"tags[0].key\" must match the pattern ^[0-9a-zA-Z_-]{1,255}$"
        );
    }

    #[test]
    fn formats_in_bodies() {
        let body = json!({"destinationId": "xyz", "destinationType": "organization"});
        assert_eq!(
            message(validate_body(&body, &schemas::RESOURCE_TRANSFER)),
            "\"destinationId\" must match the pattern ^[A-Fa-f\\d]{24}$ (a 24 character hex id)"
        );
        let body = json!({"password": "current-password", "newPassword": "weakpassword"});
        assert_eq!(
            message(validate_body(&body, &schemas::CHANGE_PASSWORD)),
            "\"newPassword\" must contain an upper case letter, a digit, a symbol"
        );
        let body = json!({"tokenCutoff": "yesterday"});
        assert_eq!(
            message(validate_body(&body, &schemas::ME_PATCH)),
            "\"tokenCutoff\" must be a valid ISO 8601 date-time"
        );
        assert_eq!(
            message(validate_body(
                &json!({"disabledAt": true}),
                &schemas::INSTANCE_ORG_PATCH
            )),
            "ok"
        );
        assert_eq!(
            message(validate_body(
                &json!({"disabledAt": "2026-01-01T00:00:00.000Z"}),
                &schemas::INSTANCE_ORG_PATCH
            )),
            "ok"
        );
        assert_eq!(
            message(validate_body(
                &json!({"disabledAt": 3}),
                &schemas::INSTANCE_ORG_PATCH
            )),
            "\"disabledAt\" must be a boolean or an ISO 8601 date-time"
        );
        // `recentItem` does not set `additionalProperties: false`.
        let body = json!({"itemType": "device", "itemId": "575ecf887ae143cd83dc4aa2", "extra": 1});
        assert_eq!(message(validate_body(&body, &schemas::RECENT_ITEM)), "ok");
        let body = json!({"email": "a@b.co", "password": "12345678", "requestedScopes": ["all.User", "nope"]});
        assert_eq!(
            message(validate_body(&body, &schemas::USER_CREDENTIALS)),
            "\"requestedScopes[1]\" must be a scope name such as all.User or me.get"
        );
    }
}
