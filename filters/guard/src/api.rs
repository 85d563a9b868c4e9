//! The LLM operations a guarded route understands, told apart by method and path (below the
//! route's prefix). The guard forwards only these: anything else on a guarded route is refused
//! (`unsupported-llm-operation`), because a request it cannot read is a prompt it cannot screen
//! and an answer it cannot redact.

/// An operation whose prompt and answer the guard reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI `POST /v1/chat/completions`.
    Chat,
    /// OpenAI `POST /v1/responses` (the Responses API).
    Responses,
    /// OpenAI `POST /v1/completions` (legacy completions).
    Completions,
    /// OpenAI `POST /v1/embeddings`: a prompt, no answer text.
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

impl Api {
    /// The name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Responses => "responses",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
        }
    }
}

/// What a request on a guarded route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Guarded(Api),
    /// `GET /v1/models` or `GET /v1/models/{id}`: no prompt, no answer text.
    Models,
}

/// The operation at `path` (the part below the route's prefix, query removed), or `None`.
pub fn classify(method: &str, path: &str) -> Option<Operation> {
    let rest = path.strip_prefix("/v1/")?;
    match (method, rest) {
        ("POST", "chat/completions") => Some(Operation::Guarded(Api::Chat)),
        ("POST", "responses") => Some(Operation::Guarded(Api::Responses)),
        ("POST", "completions") => Some(Operation::Guarded(Api::Completions)),
        ("POST", "embeddings") => Some(Operation::Guarded(Api::Embeddings)),
        ("POST", "messages") => Some(Operation::Guarded(Api::Messages)),
        ("GET", "models") => Some(Operation::Models),
        ("GET", id) => {
            let id = id.strip_prefix("models/")?;
            let plain = !id.is_empty() && !id.contains('/');
            plain.then_some(Operation::Models)
        }
        _ => None,
    }
}

/// Is `path` in a route's `unguarded` list? An entry is an exact path, or a prefix when it
/// ends with `*`.
pub fn listed(unguarded: &[String], path: &str) -> bool {
    unguarded.iter().any(|u| match u.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == u,
    })
}
