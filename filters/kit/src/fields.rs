//! A config object read by hand: each field taken by name, any other field refused, and every
//! error naming its JSON pointer. It does what `#[derive(Deserialize)]` + [`crate::config::from_value`]
//! do, for stages whose module size matters: each derived type costs the module a few KB of
//! serde instantiations, this costs none per type.

use crate::config::pointer_token;
use crate::error::ConfigError;
use serde_json::{Map, Value};

pub struct Fields<'a> {
    at: String,
    map: &'a Map<String, Value>,
    taken: Vec<&'static str>,
}

fn wrong(at: &str, expected: &str) -> ConfigError {
    ConfigError::at(at, format!("must be {expected}"))
}

impl<'a> Fields<'a> {
    /// `v` must be an object; `at` is its pointer.
    pub fn of(v: &'a Value, at: &str) -> Result<Fields<'a>, ConfigError> {
        let map = v.as_object().ok_or_else(|| wrong(at, "an object"))?;
        Ok(Fields {
            at: at.to_string(),
            map,
            taken: Vec::new(),
        })
    }

    /// The pointer of one of this object's fields.
    pub fn at(&self, key: &str) -> String {
        format!("{}/{}", self.at, pointer_token(key))
    }

    /// The field's value; `null` counts as absent.
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.taken.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A field that must be there; the error points at the missing field itself.
    pub fn required(&mut self, key: &'static str) -> Result<&'a Value, ConfigError> {
        let at = self.at(key);
        self.get(key)
            .ok_or_else(|| ConfigError::at(at, format!("missing field `{key}`")))
    }

    pub fn required_str(&mut self, key: &'static str) -> Result<&'a str, ConfigError> {
        let at = self.at(key);
        self.required(key)?
            .as_str()
            .ok_or_else(|| wrong(&at, "a string"))
    }

    pub fn required_u64(&mut self, key: &'static str) -> Result<u64, ConfigError> {
        let at = self.at(key);
        self.required(key)?
            .as_u64()
            .ok_or_else(|| wrong(&at, "a whole number ≥ 0"))
    }

    pub fn object(&mut self, key: &'static str) -> Result<Option<Fields<'a>>, ConfigError> {
        let at = self.at(key);
        self.get(key).map(|v| Fields::of(v, &at)).transpose()
    }

    pub fn str(&mut self, key: &'static str) -> Result<Option<&'a str>, ConfigError> {
        let at = self.at(key);
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| wrong(&at, "a string")))
            .transpose()
    }

    pub fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        let at = self.at(key);
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| wrong(&at, "true or false")))
            .transpose()
    }

    pub fn u64(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        let at = self.at(key);
        self.get(key)
            .map(|v| v.as_u64().ok_or_else(|| wrong(&at, "a whole number ≥ 0")))
            .transpose()
    }

    /// A number (integer or not).
    pub fn f64(&mut self, key: &'static str) -> Result<Option<f64>, ConfigError> {
        let at = self.at(key);
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| wrong(&at, "a number")))
            .transpose()
    }

    /// An array of strings.
    pub fn strings(&mut self, key: &'static str) -> Result<Option<Vec<String>>, ConfigError> {
        let at = self.at(key);
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let items = v
            .as_array()
            .ok_or_else(|| wrong(&at, "an array of strings"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| wrong(&format!("{at}/{i}"), "a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Each entry of an object-valued field, read by `each` with the entry's own reader.
    pub fn entries<T>(
        &mut self,
        key: &'static str,
        mut each: impl FnMut(&str, Fields<'a>) -> Result<T, ConfigError>,
    ) -> Result<Option<Vec<(String, T)>>, ConfigError> {
        let Some(map) = self.object(key)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(map.map.len());
        for (name, v) in map.map {
            let entry = Fields::of(v, &map.at(name))?;
            out.push((name.clone(), each(name, entry)?));
        }
        Ok(Some(out))
    }

    /// Every field not taken is an error, pointed at the field itself.
    pub fn done(self) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !self.taken.contains(&k.as_str())) {
            Some(k) => Err(ConfigError::at(self.at(k), format!("unknown field `{k}`"))),
            None => Ok(()),
        }
    }
}
