//! One request as every stage sees it: its headers (read from the proxy once), the route and
//! consumer resolved once, the trace id, the platform once known, the body once buffered, and
//! the response once it arrives.

use crate::body::parse_json;
use crate::model::{Consumer, Model, Route};
use crate::stream_host::StreamHost;
use cxgate_kit::HostError;
use cxgate_kit::host::Headers;
use cxgate_kit::problem::{LocalReply, MARKER_HEADER, Problem};
use serde_json::Value;

/// Set on every reply the gateway makes itself (value: the stage that made it), so later
/// stages and other filters can tell the gateway's answers from the platform's.
pub const REPLY_HEADER: &str = "x-cxgate-reply";
/// Set by the proxy's own reply when the platform could not be reached or timed out (Envoy's
/// local reply mapper, `envoy/envoy.yaml`): the platform's failure, but not its answer.
pub const UPSTREAM_FAILURE_HEADER: &str = "x-cxgate-upstream-failure";

/// A header map as read once from the proxy: lowercase names, in order, all in one string
/// (two allocations per map, not two per header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderView {
    text: String,
    /// (name start, name end, value start, value end) in `text`; an empty name is removed.
    spans: Vec<(u32, u32, u32, u32)>,
}

impl HeaderView {
    /// From the proxy-wasm wire format (count, sizes, then NUL-terminated names and values);
    /// `None` when it is malformed.
    pub fn from_wire(bytes: &[u8]) -> Option<HeaderView> {
        let read_u32 = |at: usize| -> Option<usize> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
        };
        if bytes.is_empty() {
            return Some(HeaderView::default());
        }
        let count = read_u32(0)?;
        if count.checked_mul(10)? > bytes.len() {
            return None;
        }
        let mut view = HeaderView {
            text: String::with_capacity(bytes.len()),
            spans: Vec::with_capacity(count),
        };
        let mut at = 4 + count * 8;
        for i in 0..count {
            let (ks, vs) = (read_u32(4 + i * 8)?, read_u32(8 + i * 8)?);
            let key = bytes.get(at..at + ks)?;
            at += ks + 1;
            let value = bytes.get(at..at + vs)?;
            at += vs + 1;
            view.push(
                &String::from_utf8_lossy(key),
                &String::from_utf8_lossy(value),
            );
        }
        Some(view)
    }

    /// Header names are lowercased (Kong keeps their case).
    pub fn new(pairs: Vec<(String, String)>) -> HeaderView {
        let mut view = HeaderView::default();
        for (k, v) in &pairs {
            view.push(k, v);
        }
        view
    }

    fn push(&mut self, name: &str, value: &str) {
        let n0 = self.text.len();
        self.text.push_str(name);
        let n1 = self.text.len();
        if let Some(pushed) = self.text.get_mut(n0..n1) {
            pushed.make_ascii_lowercase();
        }
        self.text.push_str(value);
        let v1 = self.text.len();
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.spans.push((at(n0), at(n1), at(n1), at(v1)));
    }

    fn piece(&self, from: u32, to: u32) -> &str {
        self.text
            .get(from as usize..to as usize)
            .unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.spans
            .iter()
            .find(|(n0, n1, _, _)| n1 > n0 && self.piece(*n0, *n1).eq_ignore_ascii_case(name))
            .map(|(_, _, v0, v1)| self.piece(*v0, *v1))
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.push(name, value);
    }

    pub fn remove(&mut self, name: &str) {
        let text = &self.text;
        for span in &mut self.spans {
            let (n0, n1) = (span.0 as usize, span.1 as usize);
            if n1 > n0
                && text
                    .get(n0..n1)
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            {
                span.1 = span.0;
            }
        }
    }

    /// The headers in order (removed ones left out).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .filter(|(n0, n1, _, _)| n1 > n0)
            .map(|(n0, n1, v0, v1)| (self.piece(*n0, *n1), self.piece(*v0, *v1)))
    }
}

impl From<Vec<(String, String)>> for HeaderView {
    fn from(pairs: Vec<(String, String)>) -> Self {
        HeaderView::new(pairs)
    }
}

/// The platform's (or another filter's) response, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseView {
    pub status: u16,
    pub headers: HeaderView,
    /// Made by the gateway itself (this pipeline, or another cxgate filter): no stage treats
    /// it as the platform's answer.
    pub gateway: bool,
    /// The proxy answered for a platform it could not reach in time ([`UPSTREAM_FAILURE_HEADER`]):
    /// a platform failure (the breaker counts it), with no body of the platform's to read.
    pub upstream_failure: bool,
}

impl ResponseView {
    pub fn new(headers: HeaderView) -> ResponseView {
        let status = headers
            .get(":status")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let gateway = headers.get(MARKER_HEADER).is_some() || headers.get(REPLY_HEADER).is_some();
        let upstream_failure = headers.get(UPSTREAM_FAILURE_HEADER).is_some();
        ResponseView {
            status,
            headers,
            gateway,
            upstream_failure,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub method: String,
    /// With its query.
    pub path: String,
    pub request: HeaderView,
    /// Index into `Model::routes`; `None` only for unmatched requests let through.
    pub route: Option<usize>,
    /// The verified consumer id (`anonymous` when the proxy sent none).
    pub consumer: String,
    pub trace_id: Option<String>,
    /// Lowercase platform id, once known (at headers, or in the body phase).
    pub platform: Option<String>,
    /// The buffered request body (body phase), as the host holds it.
    pub body: Vec<u8>,
    json: Option<Result<Value, Box<Problem>>>,
    pub response: Option<ResponseView>,
    /// This pipeline answered the request itself.
    pub replied: bool,
}

impl Exchange {
    /// A request from its header map; the route and consumer are resolved by the caller.
    pub fn new(request: HeaderView, model: &Model) -> Exchange {
        let method = request.get(":method").unwrap_or_default().to_string();
        let path = request.get(":path").unwrap_or_default().to_string();
        let consumer = request
            .get(&model.consumer_header)
            .filter(|c| !c.is_empty())
            .unwrap_or("anonymous")
            .to_string();
        let trace_id = request.get(&model.trace_header).map(str::to_string);
        Exchange {
            method,
            path,
            request,
            route: None,
            consumer,
            trace_id,
            platform: None,
            body: Vec::new(),
            json: None,
            response: None,
            replied: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.request.get(name)
    }

    pub fn route<'m>(&self, model: &'m Model) -> Option<&'m Route> {
        self.route.and_then(|i| model.route(i))
    }

    pub fn consumer<'m>(&self, model: &'m Model) -> &'m Consumer {
        model.consumer(&self.consumer)
    }

    /// The body as JSON, parsed once however many stages ask.
    pub fn json(&mut self, model: &Model) -> Result<&Value, Box<Problem>> {
        if self.json.is_none() {
            let ct = self.request.get("content-type");
            self.json = Some(parse_json(model.max_body_bytes, ct, &self.body));
        }
        match &self.json {
            Some(Ok(v)) => Ok(v),
            Some(Err(p)) => Err(p.clone()),
            None => Err(Box::new(Problem::new(
                500,
                "gateway-error",
                "Gateway error",
                "no body",
            ))),
        }
    }

    /// The parsed body, if a stage has parsed it already.
    pub fn parsed_json(&self) -> Option<&Value> {
        self.json.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// Sets a request header on the proxy and in this view.
    pub fn set_request_header(
        &mut self,
        host: &mut dyn StreamHost,
        name: &str,
        value: &str,
    ) -> Result<(), HostError> {
        host.set_request_header(name, value)?;
        self.request.set(name, value);
        if name == ":path" {
            self.path = value.to_string();
        } else if name == ":method" {
            self.method = value.to_string();
        }
        Ok(())
    }

    pub fn remove_request_header(
        &mut self,
        host: &mut dyn StreamHost,
        name: &str,
    ) -> Result<(), HostError> {
        if self.request.get(name).is_none() {
            return Ok(());
        }
        host.remove_request_header(name)?;
        self.request.remove(name);
        Ok(())
    }

    /// A problem with this request's trace id.
    pub fn problem(
        &self,
        status: u16,
        slug: &str,
        title: &str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem::new(status, slug, title, detail).with_trace_id(self.trace_id.as_deref())
    }

    /// The local reply for a problem of this request.
    pub fn reply(&self, problem: Problem) -> LocalReply {
        problem.with_trace_id(self.trace_id.as_deref()).into_reply()
    }
}

/// A stage's view of the request headers as a kit [`Headers`] map: reads from the view (no
/// host call), writes to the proxy and the view. Lets header-level cores stay generic.
pub struct RequestHeaders<'a> {
    pub x: &'a mut Exchange,
    pub host: &'a mut dyn StreamHost,
}

impl Headers for RequestHeaders<'_> {
    fn get(&self, name: &str) -> Result<Option<String>, HostError> {
        Ok(self.x.request.get(name).map(str::to_string))
    }
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.x.set_request_header(self.host, name, value)
    }
    fn remove(&mut self, name: &str) -> Result<(), HostError> {
        self.x.remove_request_header(self.host, name)
    }
}
