//! Structured log events: one JSON object per line, built field by field so no caller can
//! dump a whole struct (and a secret with it) into a log.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    fields: Map<String, Value>,
}

impl Event {
    pub fn new(event: &str) -> Self {
        let mut fields = Map::new();
        fields.insert("event".into(), Value::from(event));
        Event { fields }
    }

    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.fields.insert(key.into(), Value::from(value));
        self
    }

    pub fn num(mut self, key: &str, value: u64) -> Self {
        self.fields.insert(key.into(), Value::from(value));
        self
    }

    pub fn flag(mut self, key: &str, value: bool) -> Self {
        self.fields.insert(key.into(), Value::from(value));
        self
    }

    pub fn render(&self) -> String {
        Value::Object(self.fields.clone()).to_string()
    }
}
