//! Declarative JSON templates: mapping profiles are data, compiled once at configure time.
//!
//! A template is JSON. Plain values are copied; an object with a `$from` key is an expression:
//! - `{"$from": "/payload/queue_name"}`: the value at that JSON pointer of the source. Inside
//!   `$each`, `"$item"` is the current element and `"$item/id"` a pointer into it. A missing
//!   value leaves the field out (the profile's defaults may then fill it).
//! - `"$map": {"LONGEST_IDLE_AGENT": "LONGESTIDLEAGENT"}`: enumeration mapping.
//! - `"$convert"`: `ms_to_iso8601` (120000 → "PT2M"), `iso8601_to_ms`, `ms_to_seconds`
//!   (exact, may be fractional), `ms_to_whole_seconds` (rounded up), `seconds_to_ms`,
//!   `number` ("11000" → 11000), `string`.
//! - `"$lookup": "genesys/queues"`: a name resolved to an id through a synced ID map; an
//!   unknown name is an error naming it (never a guess).
//! - `"$each": <template>`: for an array, the template applied to every element.
//!
//! Operations apply in the order `$map`, `$lookup`, `$convert`, then `$each`.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Literal(Value),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
    From(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    from: From,
    map: Option<BTreeMap<String, Value>>,
    lookup: Option<String>,
    convert: Option<Convert>,
    each: Option<Template>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum From {
    /// A JSON pointer into the source document.
    Root(String),
    /// A JSON pointer into the current `$each` element (empty: the element).
    Item(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convert {
    MsToIso8601,
    Iso8601ToMs,
    MsToSeconds,
    MsToWholeSeconds,
    SecondsToMs,
    Number,
    Text,
}

/// Why a template could not be applied to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A name with no id in the synced map (the consumer gets a 422 naming it).
    UnknownName { map: String, name: String },
    /// The ID map has not been synced yet.
    MapUnavailable { map: String },
    /// A value the profile cannot convert (`pointer` into the source).
    Unconvertible { pointer: String, reason: String },
}

/// What an ID map says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Id(String),
    Unknown,
    /// The map has not been synced.
    NoMap,
}

/// Resolves a name in an ID map (`genesys/queues`, `cxone/skills`...).
pub trait Lookup {
    fn lookup(&self, map: &str, name: &str) -> Found;
}

impl Template {
    /// Compiles a template; the error names the offending place (a JSON pointer into it).
    pub fn compile(v: &Value) -> Result<Template, (String, String)> {
        compile_at(v, "")
    }

    /// What the template yields from no source at all: its literals only.
    pub fn literals(&self) -> Option<Value> {
        struct Nothing;
        impl Lookup for Nothing {
            fn lookup(&self, _: &str, _: &str) -> Found {
                Found::NoMap
            }
        }
        self.apply(&Value::Null, &Nothing).ok().flatten()
    }

    /// Applies the template to `source`. `None`: nothing (a `$from` whose value is absent).
    pub fn apply(&self, source: &Value, lookup: &dyn Lookup) -> Result<Option<Value>, ApplyError> {
        self.eval(source, None, lookup)
    }

    fn eval(
        &self,
        root: &Value,
        item: Option<&Value>,
        lookup: &dyn Lookup,
    ) -> Result<Option<Value>, ApplyError> {
        match self {
            Template::Literal(v) => Ok(Some(v.clone())),
            Template::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for t in items {
                    if let Some(v) = t.eval(root, item, lookup)? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            Template::Object(fields) => {
                let mut out = Map::new();
                for (k, t) in fields {
                    if let Some(v) = t.eval(root, item, lookup)? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            Template::From(e) => e.eval(root, item, lookup),
        }
    }
}

impl Expr {
    fn eval(
        &self,
        root: &Value,
        item: Option<&Value>,
        lookup: &dyn Lookup,
    ) -> Result<Option<Value>, ApplyError> {
        let found = match &self.from {
            From::Root(p) => root.pointer(p),
            From::Item(p) => item.and_then(|i| i.pointer(p)),
        };
        let Some(found) = found.filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        // Only errors name the place; the value stays borrowed until an operation changes it
        // (a `$each` over a 48-item array used to clone the array first).
        let place = || match &self.from {
            From::Root(p) => p.clone(),
            From::Item(p) => format!("$item{p}"),
        };
        let mut v = Cow::Borrowed(found);
        if let Some(map) = &self.map {
            let key = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let mapped = map
                .get(&key)
                .cloned()
                .ok_or_else(|| ApplyError::Unconvertible {
                    pointer: place(),
                    reason: format!("{key} has no mapping"),
                })?;
            v = Cow::Owned(mapped);
        }
        if let Some(map) = &self.lookup {
            let name = v.as_str().ok_or_else(|| ApplyError::Unconvertible {
                pointer: place(),
                reason: "a name must be a string".into(),
            })?;
            let id = match lookup.lookup(map, name) {
                Found::Id(id) => Value::String(id),
                Found::Unknown => {
                    return Err(ApplyError::UnknownName {
                        map: map.clone(),
                        name: name.to_string(),
                    });
                }
                Found::NoMap => return Err(ApplyError::MapUnavailable { map: map.clone() }),
            };
            v = Cow::Owned(id);
        }
        if let Some(c) = self.convert {
            let converted = convert(c, &v).map_err(|reason| ApplyError::Unconvertible {
                pointer: place(),
                reason,
            })?;
            v = Cow::Owned(converted);
        }
        if let Some(each) = &self.each {
            let items = v.as_array().ok_or_else(|| ApplyError::Unconvertible {
                pointer: place(),
                reason: "$each needs an array".into(),
            })?;
            let mut out = Vec::with_capacity(items.len());
            for element in items {
                if let Some(x) = each.eval(root, Some(element), lookup)? {
                    out.push(x);
                }
            }
            v = Cow::Owned(Value::Array(out));
        }
        Ok(Some(v.into_owned()))
    }
}

fn compile_at(v: &Value, at: &str) -> Result<Template, (String, String)> {
    match v {
        Value::Object(o) if o.contains_key("$from") => compile_expr(o, at),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| k.starts_with('$')) {
                return Err((format!("{at}/{k}"), "an operation needs $from".into()));
            }
            let mut fields = Vec::with_capacity(o.len());
            for (k, v) in o {
                fields.push((k.clone(), compile_at(v, &format!("{at}/{k}"))?));
            }
            Ok(Template::Object(fields))
        }
        Value::Array(a) => {
            let mut items = Vec::with_capacity(a.len());
            for (i, v) in a.iter().enumerate() {
                items.push(compile_at(v, &format!("{at}/{i}"))?);
            }
            Ok(Template::Array(items))
        }
        other => Ok(Template::Literal(other.clone())),
    }
}

fn compile_expr(o: &Map<String, Value>, at: &str) -> Result<Template, (String, String)> {
    let bad = |k: &str, m: &str| Err((format!("{at}/{k}"), m.to_string()));
    let mut e = Expr {
        from: From::Item(String::new()),
        map: None,
        lookup: None,
        convert: None,
        each: None,
    };
    for (k, v) in o {
        match (k.as_str(), v) {
            ("$from", Value::String(p)) if p.is_empty() || p.starts_with('/') => {
                e.from = From::Root(p.clone());
            }
            ("$from", Value::String(p))
                if p.strip_prefix("$item")
                    .is_some_and(|r| r.is_empty() || r.starts_with('/')) =>
            {
                e.from = From::Item(p.trim_start_matches("$item").to_string());
            }
            ("$from", _) => {
                return bad(k, "a JSON pointer (\"/a/b\"), \"$item\" or \"$item/...\"");
            }
            ("$map", Value::Object(m)) => {
                e.map = Some(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
            }
            ("$map", _) => return bad(k, "an object of value → value"),
            ("$lookup", Value::String(m)) => e.lookup = Some(m.clone()),
            ("$lookup", _) => return bad(k, "an ID map name, e.g. \"genesys/queues\""),
            ("$convert", Value::String(c)) => {
                e.convert = Some(match c.as_str() {
                    "ms_to_iso8601" => Convert::MsToIso8601,
                    "iso8601_to_ms" => Convert::Iso8601ToMs,
                    "ms_to_seconds" => Convert::MsToSeconds,
                    "ms_to_whole_seconds" => Convert::MsToWholeSeconds,
                    "seconds_to_ms" => Convert::SecondsToMs,
                    "number" => Convert::Number,
                    "string" => Convert::Text,
                    _ => return bad(k, "unknown conversion"),
                });
            }
            ("$convert", _) => return bad(k, "a conversion name"),
            ("$each", t) => e.each = Some(compile_at(t, &format!("{at}/$each"))?),
            _ => return bad(k, "unknown operation"),
        }
    }
    Ok(Template::From(Box::new(e)))
}

fn as_u64(v: &Value) -> Result<u64, String> {
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        })
        .ok_or_else(|| format!("{v} is not a whole non-negative number"))
}

fn convert(c: Convert, v: &Value) -> Result<Value, String> {
    match c {
        Convert::MsToIso8601 => Ok(Value::String(ms_to_iso8601(as_u64(v)?))),
        Convert::Iso8601ToMs => v
            .as_str()
            .and_then(iso8601_to_ms)
            .map(Value::from)
            .ok_or_else(|| format!("{v} is not an ISO 8601 duration")),
        Convert::MsToSeconds => {
            let ms = as_u64(v)?;
            Ok(if ms % 1000 == 0 {
                Value::from(ms / 1000)
            } else {
                Value::from(ms as f64 / 1000.0)
            })
        }
        Convert::MsToWholeSeconds => Ok(Value::from(as_u64(v)?.div_ceil(1000))),
        Convert::SecondsToMs => Ok(Value::from(as_u64(v)?.saturating_mul(1000))),
        Convert::Number => match v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => s
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("{s} is not a number")),
            _ => Err(format!("{v} is not a number")),
        },
        Convert::Text => Ok(match v {
            Value::String(_) => v.clone(),
            other => Value::String(other.to_string()),
        }),
    }
}

/// 120000 → "PT2M"; 90500 → "PT1M30.5S"; 0 → "PT0S".
pub fn ms_to_iso8601(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if frac > 0 {
        let f = format!("{frac:03}");
        out.push_str(&format!("{s}.{}S", f.trim_end_matches('0')));
    } else if s > 0 || (h == 0 && m == 0) {
        out.push_str(&format!("{s}S"));
    }
    out
}

/// "PT2M" → 120000 (time parts only: H, M, S with optional fraction).
pub fn iso8601_to_ms(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("PT")?;
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut number = String::new();
    for c in rest.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'H' | 'M' | 'S' => {
                let n: f64 = number.parse().ok()?;
                number.clear();
                total += n * match c {
                    'H' => 3_600_000.0,
                    'M' => 60_000.0,
                    _ => 1000.0,
                };
            }
            _ => return None,
        }
    }
    number.is_empty().then_some(total.round() as u64)
}

/// Sets `value` at `pointer` (creating objects on the way) unless something is there already.
pub fn fill_default(doc: &mut Value, pointer: &str, value: &Value) {
    if doc.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut cur = doc;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, path)) = parts.split_last() else {
        return;
    };
    for p in path {
        if !cur.is_object() {
            return;
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        cur = obj
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(last.clone(), value.clone());
    }
}
