//! Checks real responses against the coordinator's OpenAPI document: that the operation and
//! status are documented, and that the body matches the schema (types, required properties,
//! no undocumented properties where the schema closes them, enums, patterns of hashes,
//! `$ref`s). Enough of JSON Schema for the document we write; a keyword it does not know
//! fails the check rather than passing silently.

use serde_json::Value;

/// The parsed document.
#[derive(Debug)]
pub struct OpenApi(Value);

impl OpenApi {
    /// Parses the document text.
    pub fn parse(text: &str) -> Self {
        Self(serde_json::from_str(text).expect("the OpenAPI document is JSON"))
    }

    /// Checks a response of `method` on the documented `path` (with `{id}` placeholders).
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
        let operation = &self.0["paths"][path][method.to_ascii_lowercase()];
        if operation.is_null() {
            return Err(format!("{method} {path} is not documented"));
        }
        let response = &operation["responses"][status.to_string()];
        if response.is_null() {
            return Err(format!("{method} {path} does not document status {status}"));
        }
        match response["content"]["application/json"]["schema"].as_object() {
            Some(_) => self.validate(
                body,
                &response["content"]["application/json"]["schema"],
                "$",
            ),
            None => Ok(()),
        }
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> Result<&'a Value, String> {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let name = reference
                    .strip_prefix("#/components/schemas/")
                    .ok_or_else(|| format!("unsupported $ref {reference}"))?;
                let target = &self.0["components"]["schemas"][name];
                if target.is_null() {
                    return Err(format!("$ref to a missing schema {name}"));
                }
                Ok(target)
            }
            None => Ok(schema),
        }
    }

    fn validate(&self, value: &Value, schema: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        const KNOWN: &[&str] = &[
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "enum",
            "format",
            "description",
            "minimum",
            "maximum",
            "default",
            "pattern",
            "maxLength",
        ];
        if let Some(object) = schema.as_object()
            && let Some(unknown) = object.keys().find(|k| !KNOWN.contains(&k.as_str()))
        {
            return Err(format!(
                "{at}: the checker does not know schema keyword {unknown:?}"
            ));
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type keyword")),
            };
            let actual = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            let integer_as_number = actual == "integer" && allowed.contains(&"number");
            if !(allowed.contains(&actual) || integer_as_number) {
                return Err(format!("{at}: {actual}, but the document says {allowed:?}"));
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {options:?}"));
        }
        if let (Some(pattern), Some(text)) = (
            schema.get("pattern").and_then(Value::as_str),
            value.as_str(),
        ) {
            // The only pattern the document uses: 64 lowercase hex digits.
            if pattern != "^[0-9a-f]{64}$" {
                return Err(format!("{at}: the checker does not know pattern {pattern}"));
            }
            if text.len() != 64
                || !text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!("{at}: {text:?} does not match {pattern}"));
            }
        }
        if let Value::Object(fields) = value {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = required.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    return Err(format!("{at}: required property {name:?} is missing"));
                }
            }
            for (name, field) in fields {
                match (
                    properties.and_then(|p| p.get(name)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(sub), _) => self.validate(field, sub, &format!("{at}.{name}"))?,
                    (None, Some(Value::Bool(false))) => {
                        return Err(format!("{at}: property {name:?} is not documented"));
                    }
                    (None, Some(sub @ Value::Object(_))) => {
                        self.validate(field, sub, &format!("{at}.{name}"))?;
                    }
                    (None, _) => {}
                }
            }
        }
        if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.validate(item, item_schema, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}
