//! Where the text is in each operation's request and answer: every text field, with its JSON
//! pointer and (in a request) the role it speaks for. Screening, redaction and the safety
//! check all go through these lists, so a field is either read by all of them or refused.
//!
//! A request part the guard cannot read (an image, audio, a file, token ids) is refused by
//! default ([`Walk::Uninspectable`]); a route with `pass_media` forwards media parts unread.

use crate::api::Api;
use serde_json::Value;

/// One text field of a request.
pub struct Slot<'a> {
    pub pointer: String,
    /// `system`, `user`, `assistant`, `tool`, … (`developer` reads as `system`).
    pub role: String,
    /// A JSON string.
    pub text: &'a mut Value,
}

/// The request's text fields, or the first part that cannot be read.
pub enum Walk<'a> {
    Slots(Vec<Slot<'a>>),
    Uninspectable { pointer: String, what: String },
}

/// Content part types that carry no prompt text and are the model's own (skipped).
const MODEL_PARTS: [&str; 6] = [
    "tool_use",
    "server_tool_use",
    "thinking",
    "redacted_thinking",
    "refusal",
    "function_call",
];

/// Content part types that carry media (refused, or skipped with `pass_media`).
const MEDIA_PARTS: [&str; 8] = [
    "image_url",
    "input_audio",
    "file",
    "input_image",
    "input_file",
    "image",
    "document",
    "input_audio_url",
];

struct Walker<'a> {
    out: Vec<Slot<'a>>,
    refused: Option<(String, String)>,
    pass_media: bool,
}

impl<'a> Walker<'a> {
    fn push(&mut self, pointer: String, role: &str, text: &'a mut Value) {
        let role = if role == "developer" { "system" } else { role };
        self.out.push(Slot {
            pointer,
            role: role.to_string(),
            text,
        });
    }

    fn refuse(&mut self, pointer: String, what: impl Into<String>) {
        if self.refused.is_none() {
            self.refused = Some((pointer, what.into()));
        }
    }

    /// A string, or an array of parts with `text` (the shape every API shares for content).
    fn content(&mut self, v: &'a mut Value, pointer: String, role: &str) {
        if v.is_string() {
            return self.push(pointer, role, v);
        }
        if !v.is_array() {
            if !v.is_null() {
                self.refuse(pointer, "content that is neither text nor a list of parts");
            }
            return;
        }
        let Some(parts) = v.as_array_mut() else {
            return;
        };
        for (j, part) in parts.iter_mut().enumerate() {
            self.part(part, format!("{pointer}/{j}"), role);
        }
    }

    fn part(&mut self, part: &'a mut Value, pointer: String, role: &str) {
        let kind = part
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("text")
            .to_string();
        if kind == "tool_result" {
            // Anthropic: a tool's result, inside a user message.
            if let Some(c) = part.get_mut("content") {
                self.content(c, format!("{pointer}/content"), "tool");
            }
            return;
        }
        if MODEL_PARTS.contains(&kind.as_str()) {
            return;
        }
        if MEDIA_PARTS.contains(&kind.as_str()) {
            if !self.pass_media {
                self.refuse(pointer, format!("a {kind} part"));
            }
            return;
        }
        match part.get_mut("text") {
            Some(t) if t.is_string() => self.push(format!("{pointer}/text"), role, t),
            _ => self.refuse(pointer, format!("a {kind} part")),
        }
    }

    /// A list of prompts that must be text (completions' `prompt`, embeddings' `input`):
    /// token ids cannot be screened.
    fn prompts(&mut self, v: &'a mut Value, pointer: String) {
        if v.is_string() {
            return self.push(pointer, "user", v);
        }
        if !v.is_array() {
            if !v.is_null() {
                self.refuse(pointer, "a prompt that is not text");
            }
            return;
        }
        let Some(items) = v.as_array_mut() else {
            return;
        };
        for (i, item) in items.iter_mut().enumerate() {
            if item.is_string() {
                self.push(format!("{pointer}/{i}"), "user", item);
            } else {
                self.refuse(format!("{pointer}/{i}"), "token ids (send text)");
            }
        }
    }

    fn chat(&mut self, v: &'a mut Value) {
        let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) else {
            return;
        };
        for (i, m) in messages.iter_mut().enumerate() {
            let role = role_of(m, "user");
            if let Some(c) = m.get_mut("content") {
                self.content(c, format!("/messages/{i}/content"), &role);
            }
        }
    }

    fn responses(&mut self, v: &'a mut Value) {
        let Some(o) = v.as_object_mut() else {
            return;
        };
        let mut input = None;
        let mut prompt = None;
        for (k, val) in o.iter_mut() {
            match k.as_str() {
                "instructions" if val.is_string() => {
                    self.push("/instructions".into(), "system", val);
                }
                "input" => input = Some(val),
                "prompt" => prompt = Some(val),
                _ => {}
            }
        }
        if let Some(vars) = prompt
            .and_then(|p| p.get_mut("variables"))
            .and_then(Value::as_object_mut)
        {
            for (k, val) in vars.iter_mut() {
                let at = format!("/prompt/variables/{}", cxgate_kit::config::pointer_token(k));
                match val.is_string() {
                    true => self.push(at, "user", val),
                    false => self.part(val, at, "user"),
                }
            }
        }
        let Some(input) = input else {
            return;
        };
        if input.is_string() {
            return self.push("/input".into(), "user", input);
        }
        let Some(items) = input.as_array_mut() else {
            return self.refuse("/input".into(), "input that is neither text nor a list");
        };
        for (i, item) in items.iter_mut().enumerate() {
            self.response_item(item, format!("/input/{i}"));
        }
    }

    fn response_item(&mut self, item: &'a mut Value, at: String) {
        let kind = item.get("type").and_then(Value::as_str).map(str::to_string);
        match kind.as_deref() {
            None | Some("message") if item.get("role").is_some() => {
                let role = role_of(item, "user");
                if let Some(c) = item.get_mut("content") {
                    self.content(c, format!("{at}/content"), &role);
                }
            }
            Some("function_call_output" | "custom_tool_call_output") => {
                if let Some(o) = item.get_mut("output") {
                    self.content(o, format!("{at}/output"), "tool");
                }
            }
            Some("function_call" | "custom_tool_call" | "reasoning" | "item_reference") => {}
            // A bare content part as an item.
            Some(_) if item.get("text").is_some_and(Value::is_string) => {
                self.part(item, at, "user");
            }
            Some(k) if MEDIA_PARTS.contains(&k) => self.part(item, at, "user"),
            other => {
                let what = format!("an input item of type {}", other.unwrap_or("(none)"));
                self.refuse(at, what);
            }
        }
    }

    fn messages(&mut self, v: &'a mut Value) {
        let Some(o) = v.as_object_mut() else {
            return;
        };
        for (k, val) in o.iter_mut() {
            match k.as_str() {
                "system" => self.content(val, "/system".into(), "system"),
                "messages" => {
                    let Some(list) = val.as_array_mut() else {
                        continue;
                    };
                    for (i, m) in list.iter_mut().enumerate() {
                        let role = role_of(m, "user");
                        if let Some(c) = m.get_mut("content") {
                            self.content(c, format!("/messages/{i}/content"), &role);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn role_of(m: &Value, default: &str) -> String {
    m.get("role")
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

/// Every text field of a request body of `api`.
pub fn request(api: Api, v: &mut Value, pass_media: bool) -> Walk<'_> {
    let mut w = Walker {
        out: Vec::new(),
        refused: None,
        pass_media,
    };
    match api {
        Api::Chat => w.chat(v),
        Api::Responses => w.responses(v),
        Api::Completions | Api::Embeddings => {
            if let Some(o) = v.as_object_mut() {
                for (k, val) in o.iter_mut() {
                    match k.as_str() {
                        "prompt" | "input" => w.prompts(val, format!("/{k}")),
                        "suffix" if val.is_string() => w.push("/suffix".into(), "user", val),
                        _ => {}
                    }
                }
            }
        }
        Api::Messages => w.messages(v),
    }
    match w.refused {
        Some((pointer, what)) => Walk::Uninspectable { pointer, what },
        None => Walk::Slots(w.out),
    }
}

/// Every text field of a whole answer of `api` (JSON strings), in order.
pub fn answer(api: Api, v: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    match api {
        Api::Chat => {
            for c in array(v, "choices") {
                if let Some(content) = c.get_mut("message").and_then(|m| m.get_mut("content")) {
                    text_parts(content, &mut out);
                }
            }
        }
        Api::Completions => {
            for c in array(v, "choices") {
                if let Some(t) = c.get_mut("text").filter(|t| t.is_string()) {
                    out.push(t);
                }
            }
        }
        Api::Responses => response_output(v, &mut out),
        Api::Messages => {
            if let Some(c) = v.get_mut("content") {
                text_parts(c, &mut out);
            }
        }
        Api::Embeddings => {}
    }
    out
}

/// The text of a Responses API answer: each message item's `output_text` and `refusal` parts.
pub fn response_output<'a>(v: &'a mut Value, out: &mut Vec<&'a mut Value>) {
    for item in array(v, "output") {
        if let Some(content) = item.get_mut("content") {
            text_parts(content, out);
        }
    }
}

fn array<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// A string, or the `text` (or `refusal`) of each part of a list.
fn text_parts<'a>(v: &'a mut Value, out: &mut Vec<&'a mut Value>) {
    if v.is_string() {
        out.push(v);
        return;
    }
    for part in v.as_array_mut().into_iter().flatten() {
        let Some(o) = part.as_object_mut() else {
            continue;
        };
        for (k, t) in o.iter_mut() {
            if (k == "text" || k == "refusal") && t.is_string() {
                out.push(t);
            }
        }
    }
}
