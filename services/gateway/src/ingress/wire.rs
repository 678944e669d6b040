//! JSON helpers shared by the ingress modules: path-tracking field access that turns wrong shapes
//! into `ApiError::BadRequest` messages naming the field (`messages[2].content[0].type: ...`),
//! message merging, ids and the `retort` extension object.
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{
    error::{ApiError, FieldError, FieldProblem},
    types::{FailedAttempt, Message, Part, Role, ToolChoice},
};

/// Parses the body as JSON; syntax errors become `invalid JSON: ...` with line and column.
pub fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    json_from_bytes(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

/// `serde_json::from_slice`, but checking UTF-8 once for the whole body: `from_slice` validates each
/// string on its own (a third of its parsing time on small bodies, callgrind). Invalid UTF-8 still goes
/// through `from_slice`, whose error says where it is.
pub fn json_from_bytes<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// A serde-like description of a JSON value for error messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => {
            let mut short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                short.push('…');
            }
            format!("string {short:?}")
        }
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

pub fn body_error(path: &str, msg: impl std::fmt::Display) -> ApiError {
    field_error(path, FieldProblem::Other(msg.to_string()))
}

fn field_error(path: &str, problem: FieldProblem) -> ApiError {
    ApiError::Field(FieldError {
        path: path.to_string(),
        problem,
    })
}

pub fn type_error(path: &str, got: &Value, expected: &str) -> ApiError {
    field_error(
        path,
        FieldProblem::Type {
            got: describe(got),
            expected: expected.to_string(),
        },
    )
}

pub fn missing(path: &str) -> ApiError {
    field_error(path, FieldProblem::Missing)
}

pub fn unknown_variant(path: &str, got: &str, expected: &[&str]) -> ApiError {
    field_error(
        path,
        FieldProblem::Variant {
            got: got.to_string(),
            expected: expected.iter().map(|e| (*e).to_string()).collect(),
        },
    )
}

/// A JSON object and the path that leads to it.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    /// The request body itself, which must be an object.
    pub fn root(v: &'a Value) -> Result<Self, ApiError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                path: String::new(),
            }),
            other => Err(body_error(
                "",
                format!("expected a JSON object, got {}", describe(other)),
            )),
        }
    }

    /// `v`, found at `path`, which must be an object.
    pub fn new(v: &'a Value, path: String) -> Result<Self, ApiError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => Err(type_error(&path, other, "an object")),
        }
    }

    /// The path of `key` inside this object.
    pub fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; missing and `null` are both `None`.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(type_error(&self.path(key), other, "a string")),
        }
    }

    pub fn req_str(&self, key: &str) -> Result<&'a str, ApiError> {
        self.str(key)?.ok_or_else(|| missing(&self.path(key)))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(type_error(&self.path(key), other, "a boolean")),
        }
    }

    /// A number that must lie in `lo..=hi`.
    pub fn f32_in(&self, key: &str, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if !(f64::from(lo)..=f64::from(hi)).contains(&x) {
                    return Err(ApiError::BadRequest(format!(
                        "{} must be between {lo} and {hi}, got {n}",
                        self.path(key)
                    )));
                }
                Ok(Some(x as f32))
            }
            Some(other) => Err(type_error(&self.path(key), other, "a number")),
        }
    }

    /// An integer that must be at least 1 (token limits).
    pub fn u32_min1(&self, key: &str) -> Result<Option<u32>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let path = self.path(key);
        let Value::Number(n) = v else {
            return Err(type_error(&path, v, "an integer"));
        };
        let x = match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u as f64,
            (None, Some(i), _) => i as f64,
            (None, None, Some(f)) if f.fract() == 0.0 => f,
            _ => return Err(type_error(&path, v, "an integer")),
        };
        if x < 1.0 {
            return Err(ApiError::BadRequest(format!(
                "{path} must be at least 1, got {n}"
            )));
        }
        if x > f64::from(u32::MAX) {
            return Err(ApiError::BadRequest(format!(
                "{path} must be at most {}, got {n}",
                u32::MAX
            )));
        }
        Ok(Some(x as u32))
    }

    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, ApiError> {
        self.get(key)
            .map(|v| Obj::new(v, self.path(key)))
            .transpose()
    }

    pub fn req_obj(&self, key: &str) -> Result<Obj<'a>, ApiError> {
        self.obj(key)?.ok_or_else(|| missing(&self.path(key)))
    }

    pub fn arr(&self, key: &str) -> Result<Option<&'a [Value]>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a.as_slice())),
            Some(other) => Err(type_error(&self.path(key), other, "an array")),
        }
    }

    pub fn req_arr(&self, key: &str) -> Result<&'a [Value], ApiError> {
        self.arr(key)?.ok_or_else(|| missing(&self.path(key)))
    }

    /// An object whose values are all strings (`metadata`).
    pub fn string_map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>, ApiError> {
        let Some(o) = self.obj(key)? else {
            return Ok(None);
        };
        let mut out = BTreeMap::new();
        for (k, v) in o.map {
            match v {
                Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                Value::Null => {}
                other => return Err(type_error(&o.path(k), other, "a string")),
            }
        }
        Ok(Some(out))
    }

    /// A string or an array of strings (`stop`).
    pub fn str_or_list(&self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(type_error(
                        &format!("{}[{i}]", self.path(key)),
                        other,
                        "a string",
                    )),
                })
                .collect(),
            Some(other) => Err(type_error(
                &self.path(key),
                other,
                "a string or an array of strings",
            )),
        }
    }

    /// A JSON Schema object; missing means "no parameters".
    pub fn schema(&self, key: &str) -> Result<Value, ApiError> {
        match self.get(key) {
            None => Ok(json!({"type": "object", "properties": {}})),
            Some(v @ Value::Object(_)) => Ok(v.clone()),
            Some(other) => Err(type_error(&self.path(key), other, "a JSON Schema object")),
        }
    }
}

/// The required, non-empty `model` field.
pub fn model(o: &Obj<'_>) -> Result<String, ApiError> {
    let model = o.req_str("model")?;
    if model.trim().is_empty() {
        return Err(ApiError::BadRequest("model must not be empty".into()));
    }
    Ok(model.to_string())
}

/// OpenAI's `tool_choice`: `"auto"|"none"|"required"`, `{"type":"function","function":{"name"}}`
/// (Chat) or `{"type":"function","name"}` (Responses). Hosted-tool choices fall back to auto.
pub fn tool_choice(o: &Obj<'_>, key: &str) -> Result<Option<ToolChoice>, ApiError> {
    let path = o.path(key);
    match o.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(unknown_variant(&path, other, &["auto", "none", "required"])),
        },
        Some(v @ Value::Object(_)) => {
            let to = Obj::new(v, path)?;
            match to.req_str("type")? {
                ty @ ("function" | "custom") => {
                    let name = match to.obj(ty)? {
                        Some(inner) => inner.req_str("name")?,
                        None => to.req_str("name")?,
                    };
                    Ok(Some(ToolChoice::Tool(name.to_string())))
                }
                "allowed_tools" => {
                    let mode = match to.obj("allowed_tools")? {
                        Some(inner) => inner.str("mode")?,
                        None => to.str("mode")?,
                    };
                    match mode.unwrap_or("auto") {
                        "required" => Ok(Some(ToolChoice::Required)),
                        _ => Ok(Some(ToolChoice::Auto)),
                    }
                }
                other => {
                    tracing::debug!(
                        tool_choice = other,
                        "hosted tool choice not supported; using auto"
                    );
                    Ok(Some(ToolChoice::Auto))
                }
            }
        }
        Some(other) => Err(type_error(&path, other, "a string or an object")),
    }
}

/// Appends `parts` as a `role` message, merging into the previous message when it has the same
/// role (so tool results after an assistant tool call land in one user message).
pub fn push_message(messages: &mut Vec<Message>, role: Role, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => messages.push(Message { role, parts }),
    }
}

/// Tool-call arguments, with an empty string normalised to `{}`.
pub fn non_empty_args(arguments: &str) -> String {
    if arguments.trim().is_empty() {
        "{}".to_string()
    } else {
        arguments.to_string()
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `{prefix}{random hex}`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// `id` with the protocol's id prefix (kept when already there; a fresh id when `id` is empty).
pub fn prefixed_id(prefix: &str, id: &str) -> String {
    if id.is_empty() {
        new_id(prefix)
    } else if id.starts_with(prefix) {
        id.to_string()
    } else {
        format!("{prefix}{id}")
    }
}

/// The `retort` extension object naming who served the answer.
#[derive(serde::Serialize)]
pub struct Served<'a> {
    provider: &'a str,
    model: &'a str,
    failed_attempts: &'a [FailedAttempt],
}

pub fn served<'a>(provider: &'a str, model: &'a str, failed: &'a [FailedAttempt]) -> Served<'a> {
    Served {
        provider,
        model,
        failed_attempts: failed,
    }
}

/// [`Served`] as a JSON value.
pub fn retort(provider: &str, model: &str, failed: &[FailedAttempt]) -> Value {
    serde_json::to_value(served(provider, model, failed)).unwrap_or(Value::Null)
}
