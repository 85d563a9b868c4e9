//! `Flow::Answered`: a stage called the platform itself (a read-modify-write, say), so there is
//! no proxied response. The response phase runs over the platform's answer as if the proxy had
//! forwarded the request: every stage that ran sees its status and headers and rewrites its
//! body, and the result is sent as the reply. Stages count it as the platform's answer (the
//! breaker records it, nothing is refunded); the proxy then passes the reply through them.

use super::{Phase, Request, Step};
use crate::exchange::{HeaderView, REPLY_HEADER, ResponseView};
use crate::stage::{CallAnswer, Io, StreamHost};
use cxgate_kit::HostError;
use cxgate_kit::problem::LocalReply;

/// Headers of the platform's answer that do not carry over to a reply the proxy frames anew,
/// and the gateway's own markers, which a platform may not set.
fn carried(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    !(n.starts_with(':')
        || n.starts_with("x-cxgate-")
        || matches!(
            n.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ))
}

/// The reply's headers as the stages set them: there is no proxied response to change.
struct Captured<'a> {
    headers: &'a mut HeaderView,
}

impl StreamHost for Captured<'_> {
    fn set_request_header(&mut self, _: &str, _: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn remove_request_header(&mut self, _: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn set_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.headers.set(name, value);
        Ok(())
    }
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        self.headers.remove(name);
        Ok(())
    }
    fn replace_request_body(&mut self, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn clear_route_cache(&mut self) -> bool {
        false
    }
}

impl Request {
    pub(super) fn answered(&mut self, from: usize, answer: CallAnswer, io: &mut Io<'_>) -> Step {
        self.phase = Phase::Past;
        let status = answer.status.unwrap_or(502);
        let pairs: Vec<(String, String)> = answer
            .headers
            .into_iter()
            .filter(|(k, _)| carried(k))
            .collect();
        let mut out = HeaderView::new(pairs.clone());
        self.x.response = Some(ResponseView {
            status,
            headers: HeaderView::new(pairs),
            gateway: false,
            upstream_failure: false,
        });
        let mut capture = Captured { headers: &mut out };
        let mut inner = Io {
            now: io.now.share(),
            store: &mut *io.store,
            entropy: &mut *io.entropy,
            callout: &mut *io.callout,
            stream: &mut capture,
            metrics: &mut *io.metrics,
            log: &mut *io.log,
        };
        for i in (0..self.streams.len()).rev() {
            if !self.ran.get(i).copied().unwrap_or(false) {
                continue;
            }
            let Some(s) = self.streams.get_mut(i) else {
                continue;
            };
            if let Some(mut reply) = s.on_response(&mut self.x, &mut inner) {
                self.x.replied = true;
                let name = self.names.get(i).copied().unwrap_or("pipeline");
                reply
                    .headers
                    .push((REPLY_HEADER.to_string(), name.to_string()));
                return Step::Reply(reply);
            }
        }
        let mut body = answer.body;
        if let Some(b) = self.rewrite(
            &body,
            |s, x| s.wants_response_body(x),
            |s, x, seen| s.on_response_body(x, &mut inner, seen),
        ) {
            body = b;
        }
        if let Some(b) = self.rewrite(
            &body,
            |s, x| s.streams_response(x),
            |s, x, seen| s.on_response_chunk(x, &mut inner, seen, true),
        ) {
            body = b;
        }
        // A stage that changed the status from the body said so as the proxied path does.
        let status = match out
            .get(":status")
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            Some(changed) => changed,
            None => status,
        };
        out.remove(":status");
        self.x.replied = true;
        let name = self.names.get(from).copied().unwrap_or("pipeline");
        let mut headers: Vec<(String, String)> = out
            .pairs()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.push((REPLY_HEADER.to_string(), name.to_string()));
        Step::Reply(LocalReply {
            status: u32::from(status),
            headers,
            body,
        })
    }
}
