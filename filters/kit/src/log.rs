//! Structured log events: one JSON object per line, built field by field so no caller can
//! dump a whole struct (and a secret with it) into a log.

use serde_json::{Map, Value};

/// Log levels of the proxy-wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Where a core's log lines go: the proxy's log in a filter, a vector in tests.
pub trait Log {
    fn log(&mut self, level: Level, line: &str);

    fn event(&mut self, level: Level, event: &Event) {
        self.log(level, &event.render());
    }
}

/// Collects log lines (tests, and cores that hand their lines to a shell).
impl Log for Vec<(Level, String)> {
    fn log(&mut self, level: Level, line: &str) {
        self.push((level, line.to_string()));
    }
}

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
