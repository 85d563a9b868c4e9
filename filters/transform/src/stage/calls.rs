//! The transform's own calls to the platform: a merge update's read and write, and the direct
//! call that sends the mapped request where the proxy cannot route it again (Kong). The
//! platform's last answer stands for the proxied response (`Flow::Answered`).

use super::{Ended, TransformStream};
use crate::config::Call;
use cxgate_kit::credential::Unavailable;
use cxgate_kit::host::Callout;
use cxgate_kit::problem::Problem;
use cxgate_model::{CallAnswer, Exchange, Flow, Io};

/// Which call of the request is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A merge update reads the object.
    Read,
    /// A merge update writes it back.
    Write,
    /// The mapped request itself.
    Send,
}

/// The call awaited, and whether a merge write was already refused once for a stale version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    token: u32,
    step: Step,
    retried: bool,
}

impl TransformStream {
    /// The profile's call endpoint, and its timeout (the route's, else the call's own).
    fn endpoint(&self) -> Option<(Call, u32)> {
        let s = &self.shared;
        let call = s
            .config
            .profiles
            .get(self.forward.as_ref()?.profile)?
            .direct()?
            .clone();
        let timeout_ms = self
            .route
            .and_then(|r| s.config.routes.get(r))
            .and_then(|r| r.timeout_ms)
            .map_or(call.timeout_ms, |t| u32::try_from(t).unwrap_or(u32::MAX));
        Some((call, timeout_ms))
    }

    /// Makes one call straight to the platform's upstream (in Envoy its cluster's token filter
    /// authenticates it, as it does a proxied request; in Kong the call carries the synced
    /// token itself) and waits for it.
    fn dispatch(
        &mut self,
        x: &Exchange,
        io: &mut Io<'_>,
        (step, method, path): (Step, &str, &str),
        body: Option<&[u8]>,
        retried: bool,
    ) -> Flow {
        let Some((call, timeout_ms)) = self.endpoint() else {
            return self.error(x, io, "no call endpoint for the profile");
        };
        let credential = match &call.credential {
            None => None,
            Some(c) => match c.header(&*io.store, io.now.ms()) {
                Ok(h) => Some(h),
                Err(why) => return self.no_credential(x, io, &c.platform, why),
            },
        };
        let mut headers = vec![("accept", "application/json")];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        if let Some((k, v)) = &credential {
            headers.push((k.as_str(), v.as_str()));
        }
        // The platform's calls belong to the consumer's request and trace.
        for name in ["x-request-id", "traceparent"] {
            if let Some(v) = x.header(name) {
                headers.push((name, v));
            }
        }
        let sent = io.callout.dispatch(&Callout {
            upstream: &call.upstream,
            method,
            path,
            authority: &call.authority,
            scheme: &call.scheme,
            headers,
            body,
            timeout_ms,
        });
        match sent {
            Ok(token) => {
                self.pending = Some(Pending {
                    token,
                    step,
                    retried,
                });
                Flow::Wait(token)
            }
            Err(_) => self.error(x, io, "the platform could not be called"),
        }
    }

    /// The platform's token is not there to call with: retry shortly, nothing was sent.
    fn no_credential(
        &mut self,
        x: &Exchange,
        io: &mut Io<'_>,
        platform: &str,
        why: Unavailable,
    ) -> Flow {
        self.give_up_claim(io);
        let state = match why {
            Unavailable::Missing => "not synced yet",
            Unavailable::Expired => "expired or rejected",
        };
        let p = Problem::new(
            503,
            "token-unavailable",
            "Platform token unavailable",
            format!("The {platform} token is {state}; nothing was sent. Retry shortly."),
        )
        .with_header("retry-after", "1");
        Flow::Reply(x.reply(p))
    }

    /// Sends the mapped request itself.
    pub(super) fn send(&mut self, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let Some(fwd) = self.forward.take() else {
            return self.error(x, io, "nothing to send");
        };
        let own = s
            .config
            .profiles
            .get(fwd.profile)
            .and_then(|p| fwd.path.get(p.platform.len() + 1..))
            .unwrap_or_default()
            .to_string();
        let (method, body) = (fwd.method.clone(), fwd.body.clone());
        self.forward = Some(fwd);
        self.dispatch(x, io, (Step::Send, &method, &own), body.as_deref(), false)
    }

    /// Reads the object to update.
    pub(super) fn read(&mut self, x: &Exchange, io: &mut Io<'_>, retried: bool) -> Flow {
        let Some(path) = self
            .forward
            .as_ref()
            .and_then(|f| f.merge.as_ref())
            .map(|m| m.path.clone())
        else {
            return self.error(x, io, "no merge for the update");
        };
        self.dispatch(x, io, (Step::Read, "GET", &path), None, retried)
    }

    /// Merges the consumer's fields into the object read, and writes it back.
    fn write(&mut self, x: &Exchange, io: &mut Io<'_>, current: &[u8], retried: bool) -> Flow {
        let s = self.shared.clone();
        let merged = self.forward.as_ref().and_then(|fwd| {
            let profile = s.config.profiles.get(fwd.profile)?;
            let (merge, call) = (profile.merge.as_ref()?, fwd.merge.as_ref()?);
            Some((
                call.path.clone(),
                crate::merge::update_body(
                    profile,
                    &merge.version,
                    &fwd.platform,
                    current,
                    &call.patch,
                    x.trace_id.as_deref(),
                ),
            ))
        });
        match merged {
            Some((path, Ok(body))) => {
                self.dispatch(x, io, (Step::Write, "PUT", &path), Some(&body), retried)
            }
            Some((_, Err(p))) => {
                self.give_up_claim(io);
                self.answer(io, x.reply(*p))
            }
            None => self.error(x, io, "no merge profile for the update"),
        }
    }

    /// One of the stage's calls answered.
    pub(super) fn call_answered(
        &mut self,
        token: u32,
        answer: &CallAnswer,
        x: &Exchange,
        io: &mut Io<'_>,
    ) -> Flow {
        let Some(p) = self.pending.take_if(|p| p.token == token) else {
            return Flow::Continue;
        };
        match (answer.status, p.step) {
            (None, step) => self.unanswered(x, io, step),
            (Some(200), Step::Read) => self.write(x, io, &answer.body, p.retried),
            // Someone changed the object since it was read: read it again, once.
            (Some(409), Step::Write) if !p.retried => self.read(x, io, true),
            // The platform's own answer, normalized as a proxied one would be.
            (Some(_), _) => Flow::Answered(answer.clone()),
        }
    }

    /// A call got no answer (refused, reset, timed out).
    fn unanswered(&mut self, x: &Exchange, io: &mut Io<'_>, step: Step) -> Flow {
        self.give_up_claim(io);
        self.ended(io, Ended::PlatformError);
        let (platform, method) = self
            .forward
            .as_ref()
            .map(|f| (f.platform.clone(), f.method.clone()))
            .unwrap_or_default();
        let detail = match step {
            Step::Read => format!(
                "{platform} did not answer the read of the object to update; nothing was written."
            ),
            Step::Write => format!(
                "{platform} did not answer the update, which may or may not have been applied; a retry reads the object again."
            ),
            Step::Send if method == "GET" => format!("{platform} did not answer."),
            Step::Send => format!(
                "{platform} did not answer the {method}, which may or may not have been applied."
            ),
        };
        Flow::Reply(x.reply(Problem::new(
            502,
            "platform-unreachable",
            "Platform unreachable",
            detail,
        )))
    }
}
