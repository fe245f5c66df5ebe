//! What a CEL rule sees of a structural schema: the type of each node, how large its values can
//! be, and the fewest bytes a value takes in JSON (Kubernetes' `SchemaDeclType` in
//! `apiserver/pkg/cel/common/schemas.go`).

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The largest request the API server takes (3 MiB): what bounds a value no schema limit does.
pub const MAX_REQUEST_SIZE: u64 = 3 * 1024 * 1024;

/// JSON sizes the API server assumes for values of each kind (`apiserver/pkg/cel/limits.go`).
const MIN_STRING_SIZE: u64 = 2;
const MIN_BOOL_SIZE: u64 = 4;
const MIN_NUMBER_SIZE: u64 = 1;
const MIN_DURATION_SIZE: u64 = 3;
const MAX_DURATION_SIZE: u64 = 32;
const DATE_SIZE: u64 = 12;
const MIN_DATETIME_SIZE: u64 = 21;
const MAX_DATETIME_SIZE: u64 = 32;

/// The CEL type of a schema node, with the bounds the cost estimate reads.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclType {
    pub kind: DeclKind,
    /// The largest `size()` of a value: characters of a string (bytes for `format: byte`),
    /// items of a list, entries of a map. Zero for scalars and objects, as in Kubernetes.
    pub max_elements: u64,
    /// The fewest bytes a value takes in JSON.
    pub min_serialized_size: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeclKind {
    /// Fields by their CEL (escaped) names.
    Object(BTreeMap<String, DeclType>),
    List(Box<DeclType>),
    /// Keys are strings.
    Map(Box<DeclType>),
    String,
    Bytes,
    Duration,
    Timestamp,
    Int,
    Double,
    Bool,
    /// `x-kubernetes-int-or-string`: `dyn` in CEL.
    IntOrString,
}

impl DeclType {
    fn new(kind: DeclKind, max_elements: u64, min_serialized_size: u64) -> Self {
        Self { kind, max_elements, min_serialized_size }
    }

    /// A map key: a string of no declared size (Kubernetes' `StringType`).
    pub fn map_key() -> Self {
        Self::new(DeclKind::String, 0, MIN_STRING_SIZE)
    }

    /// The type of the field, item or value a size-estimation path step names.
    pub fn step(&self, step: &str) -> Option<&DeclType> {
        match (&self.kind, step) {
            (DeclKind::List(elem) | DeclKind::Map(elem), "@items" | "@values") => Some(elem),
            (DeclKind::Object(fields), name) => fields.get(name),
            _ => None,
        }
    }
}

/// The CEL type of `schema`, or `None` when CEL cannot see it (no type, or items or values of
/// no type). `resource_root` adds what every resource has: `apiVersion`, `kind` and
/// `metadata.name`/`generateName`.
pub fn decl_type(schema: &Value, resource_root: bool) -> Option<DeclType> {
    if flag(schema, "x-kubernetes-int-or-string") {
        let max = max_length(schema).map_or(MAX_REQUEST_SIZE - 2, |n| n * 4);
        return Some(DeclType::new(DeclKind::IntOrString, max, 1));
    }
    let with_meta;
    let schema = if resource_root {
        with_meta = with_type_and_object_meta(schema);
        &with_meta
    } else {
        schema
    };
    match schema.get("type").and_then(Value::as_str)? {
        "array" => array_type(schema),
        "object" => object_type(schema),
        "string" => Some(string_type(schema)),
        "boolean" => Some(DeclType::new(DeclKind::Bool, 0, MIN_BOOL_SIZE)),
        "number" => Some(DeclType::new(DeclKind::Double, 0, MIN_NUMBER_SIZE)),
        "integer" => Some(DeclType::new(DeclKind::Int, 0, MIN_NUMBER_SIZE)),
        _ => None,
    }
}

fn array_type(schema: &Value) -> Option<DeclType> {
    let items = schema.get("items")?;
    let item = decl_type(items, embedded(items))?;
    let max_items = uint(schema, "maxItems").unwrap_or((MAX_REQUEST_SIZE - 2) / (item.min_serialized_size + 1));
    Some(DeclType::new(DeclKind::List(Box::new(item)), max_items, 2))
}

fn object_type(schema: &Value) -> Option<DeclType> {
    if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        let value = decl_type(values, embedded(values))?;
        let max_properties =
            uint(schema, "maxProperties").unwrap_or((MAX_REQUEST_SIZE - 2) / (value.min_serialized_size + 6));
        return Some(DeclType::new(DeclKind::Map(Box::new(value)), max_properties, 2));
    }
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let mut fields = BTreeMap::new();
    // An object is at least `{}`, plus each required property the server does not default.
    let mut min_size = 2;
    for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let Some(field) = decl_type(property, embedded(property)) else { continue };
        if required.contains(&name.as_str()) && property.get("default").is_none() {
            min_size += name.len() as u64 + field.min_serialized_size + 4;
        }
        if let Some(escaped) = escape(name) {
            fields.insert(escaped, field);
        }
    }
    Some(DeclType::new(DeclKind::Object(fields), 0, min_size))
}

fn string_type(schema: &Value) -> DeclType {
    match schema.get("format").and_then(Value::as_str) {
        Some("byte") => {
            DeclType::new(DeclKind::Bytes, max_length(schema).unwrap_or(MAX_REQUEST_SIZE - 2), MIN_STRING_SIZE)
        }
        Some("duration") => DeclType::new(DeclKind::Duration, MAX_DURATION_SIZE, MIN_DURATION_SIZE),
        Some("date") => DeclType::new(DeclKind::Timestamp, DATE_SIZE, DATE_SIZE),
        Some("date-time") => DeclType::new(DeclKind::Timestamp, MAX_DATETIME_SIZE, MIN_DATETIME_SIZE),
        _ => {
            // maxLength counts characters, of up to 4 bytes each; an enum bounds by its longest value.
            let longest_enum = || {
                let values = schema.get("enum").and_then(Value::as_array).filter(|e| !e.is_empty())?;
                Some(values.iter().filter_map(Value::as_str).map(|v| v.len() as u64).max().unwrap_or(0))
            };
            let max = max_length(schema).map(|n| n * 4).or_else(longest_enum).unwrap_or(MAX_REQUEST_SIZE - 2);
            DeclType::new(DeclKind::String, max, MIN_STRING_SIZE)
        }
    }
}

/// The root of a resource always shows `apiVersion`, `kind` and `metadata.name` and
/// `generateName` to rules, declared or not.
fn with_type_and_object_meta(schema: &Value) -> Value {
    let declares = |path: &str, kind: &str| schema.pointer(path).and_then(|t| t.get("type")) == Some(&json!(kind));
    if declares("/properties/kind", "string")
        && declares("/properties/apiVersion", "string")
        && declares("/properties/metadata", "object")
        && declares("/properties/metadata/properties/name", "string")
        && declares("/properties/metadata/properties/generateName", "string")
    {
        return schema.clone();
    }
    let mut result = schema.clone();
    let Some(object) = result.as_object_mut() else { return result };
    let properties = object.entry("properties").or_insert_with(|| Value::Object(Map::new()));
    if let Some(properties) = properties.as_object_mut() {
        properties.insert("kind".into(), json!({"type": "string"}));
        properties.insert("apiVersion".into(), json!({"type": "string"}));
        properties.insert(
            "metadata".into(),
            json!({"type": "object", "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}}}),
        );
    }
    result
}

/// Words CEL reserves: a property of that name is `__word__` in rules.
const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// A property's name as rules spell it (Kubernetes' `cel.Escape`), or `None` when rules
/// cannot name it.
pub fn escape(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')) {
        return None;
    }
    let mut escaped = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        let (replacement, taken) = match c {
            '_' if rest.starts_with("__") => ("__underscores__", 2),
            '.' => ("__dot__", 1),
            '-' => ("__dash__", 1),
            '/' => ("__slash__", 1),
            _ => {
                escaped.push(c);
                rest = &rest[c.len_utf8()..];
                continue;
            }
        };
        escaped.push_str(replacement);
        rest = &rest[taken..];
    }
    Some(escaped)
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn embedded(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-embedded-resource")
}

/// A non-negative integer setting (negative ones count as zero, as the API server does).
fn uint(schema: &Value, name: &str) -> Option<u64> {
    let value = schema.get(name)?;
    value.as_u64().or_else(|| value.as_i64().map(|_| 0))
}

fn max_length(schema: &Value) -> Option<u64> {
    uint(schema, "maxLength")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_bounded_by_max_length_enum_or_format() {
        let size = |schema: Value| decl_type(&schema, false).unwrap().max_elements;
        assert_eq!(size(json!({"type": "string", "maxLength": 253})), 1012);
        assert_eq!(size(json!({"type": "string", "enum": ["ECDSA", "Ed25519"]})), 7);
        assert_eq!(size(json!({"type": "string"})), MAX_REQUEST_SIZE - 2);
        assert_eq!(size(json!({"type": "string", "format": "date-time"})), 32);
        assert_eq!(size(json!({"type": "string", "format": "byte", "maxLength": 10})), 10);
    }

    #[test]
    fn unbounded_lists_hold_what_fits_in_a_request() {
        let list = decl_type(&json!({"type": "array", "items": {"type": "string"}}), false).unwrap();
        assert_eq!(list.max_elements, (MAX_REQUEST_SIZE - 2) / 3);
        let objects = json!({"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}});
        // {"name":""} is 2 + 4 + 2 + 4 bytes.
        assert_eq!(decl_type(&objects, false).unwrap().max_elements, (MAX_REQUEST_SIZE - 2) / 13);
    }

    #[test]
    fn property_names_are_escaped_as_rules_spell_them() {
        assert_eq!(escape("dnsNames").as_deref(), Some("dnsNames"));
        assert_eq!(escape("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(escape("x-y.z/w__v").as_deref(), Some("x__dash__y__dot__z__slash__w__underscores__v"));
        assert_eq!(escape("1st"), None);
        assert_eq!(escape("a b"), None);
    }

    #[test]
    fn resource_roots_show_api_version_kind_and_name() {
        let root = decl_type(&json!({"type": "object", "properties": {"spec": {"type": "object"}}}), true).unwrap();
        let DeclKind::Object(fields) = &root.kind else { panic!("an object: {root:?}") };
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["apiVersion", "kind", "metadata", "spec"]);
        assert!(root.step("metadata").and_then(|m| m.step("generateName")).is_some());
    }
}
