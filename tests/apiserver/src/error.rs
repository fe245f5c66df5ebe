//! Kubernetes `Status` failures, shaped as the real API server sends them.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// A failed request: HTTP code, `reason`, message and optional causes.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None, retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
            .with_details(json!({"name": name, "kind": resource}))
    }
    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists"))
            .with_details(json!({"name": name, "kind": resource}))
    }
    pub fn conflict(resource: &str, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"))
            .with_details(json!({"name": name, "kind": resource}))
    }
    pub fn stale(resource: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        Self::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {content_type}"
            ),
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        e.retry_after = Some(retry_after);
        e
    }
    /// 422 Invalid with one cause per field error, message formatted like the API server's.
    pub fn invalid(kind_group: &str, name: &str, errors: &[FieldError]) -> Self {
        let joined = errors.iter().map(FieldError::to_string).collect::<Vec<_>>();
        let body = if joined.len() == 1 { joined[0].clone() } else { format!("[{}]", joined.join(", ")) };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason.cause(), "message": e.detail_message(), "field": e.field}))
            .collect();
        Self::new(422, "Invalid", format!("{kind_group} \"{name}\" is invalid: {body}"))
            .with_details(json!({"name": name, "kind": kind_group, "causes": causes}))
    }
    /// The `reason` the API server gives a failure with this HTTP code.
    pub fn reason_for_code(code: u16) -> &'static str {
        match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            406 => "NotAcceptable",
            409 => "Conflict",
            410 => "Expired",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        }
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, axum::Json(self.to_status())).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Why one field failed validation (the API server's `CauseType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldReason {
    Invalid,
    Required,
    Unsupported,
    Forbidden,
    TooLong,
    TooMany,
    Duplicate,
}

impl FieldReason {
    fn cause(self) -> &'static str {
        match self {
            Self::Invalid => "FieldValueInvalid",
            Self::Required => "FieldValueRequired",
            Self::Unsupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Duplicate => "FieldValueDuplicate",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Self::Invalid => "Invalid value",
            Self::Required => "Required value",
            Self::Unsupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Duplicate => "Duplicate value",
        }
    }
}

/// One field validation error: `spec.dnsNames[0]: Invalid value: "x": message`.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub reason: FieldReason,
    pub value: Option<String>,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: FieldReason, message: impl Into<String>) -> Self {
        Self { field: field.into(), reason, value: None, message: message.into() }
    }
    pub fn invalid(field: impl Into<String>, value: &Value, message: impl Into<String>) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            Value::Object(_) => "\"object\"".to_string(),
            Value::Array(_) => "\"array\"".to_string(),
            other => other.to_string(),
        };
        Self { field: field.into(), reason: FieldReason::Invalid, value: Some(shown), message: message.into() }
    }
    /// `Invalid value: "x": message`; the API server leaves out an empty message and its colon
    /// (`eventTime: Required value`).
    fn detail_message(&self) -> String {
        let mut detail = self.reason.label().to_string();
        if let Some(value) = &self.value {
            detail = format!("{detail}: {value}");
        }
        if !self.message.is_empty() {
            detail = format!("{detail}: {}", self.message);
        }
        detail
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.detail_message())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn not_found_plain(message: impl Into<String>) -> Self {
        Self::new(404, "NotFound", message)
    }
}
