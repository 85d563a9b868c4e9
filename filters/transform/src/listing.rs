//! A listing's first request: the page it fetches comes from the consumer's signed cursor, or
//! from `page_size` when the listing starts.

use crate::config::{Config, Paging, Profile, Route};
use crate::outcome::{Forward, Incoming, Outcome, problem, reply};
use crate::page::{self, Cursor};
use crate::paths::{platform_path, route_headers};
use cxgate_model::model::query_param;

#[allow(clippy::too_many_arguments)]
pub(crate) fn listing(
    cfg: &Config,
    route: &Route,
    inc: &Incoming<'_>,
    profile: &Profile,
    profile_index: usize,
    paging: &Paging,
    platform: &str,
    params: Vec<(String, String)>,
) -> Outcome {
    let trace = inc.trace_id;
    let _ = cfg;
    let (default_size, max_size, first) = match paging {
        Paging::PageNumber {
            default_size,
            max_size,
            ..
        } => (*default_size, *max_size, 1),
        Paging::SkipTop {
            default_size,
            max_size,
            ..
        } => (*default_size, *max_size, 0),
    };
    let cursor = match query_param(inc.path, "cursor") {
        Some(text) => match Cursor::decode(text, inc.cursor_key, inc.consumer, inc.now_ms) {
            Ok(c) if c.route == route.name && c.platform == platform => c,
            Err(page::Refused::Expired) => {
                return reply(
                    problem(
                        400,
                        "cursor-expired",
                        "Cursor expired",
                        format!(
                            "Cursors are valid for {} s; start the listing again without a cursor.",
                            cfg.cursor_ttl_ms / 1000
                        ),
                        trace,
                    )
                    .with_error("?cursor", "expired"),
                );
            }
            _ => {
                return reply(
                    problem(
                        400,
                        "invalid-cursor",
                        "Invalid cursor",
                        "The cursor was not issued to you for this listing, or was altered.",
                        trace,
                    )
                    .with_error("?cursor", "not a cursor of this listing"),
                );
            }
        },
        None => {
            let size = match query_param(inc.path, "page_size").map(str::parse::<u32>) {
                None => default_size,
                Some(Ok(n)) if (1..=max_size).contains(&n) => n,
                Some(_) => {
                    return reply(
                        problem(
                            400,
                            "validation",
                            "Invalid request",
                            format!("page_size must be within 1..={max_size}."),
                            trace,
                        )
                        .with_error("?page_size", format!("within 1..={max_size}")),
                    );
                }
            };
            Cursor::first(&route.name, platform, inc.consumer, first, size)
        }
    };
    let mut path = platform_path(profile, &params);
    let (a, b) = match paging {
        Paging::PageNumber {
            page_param,
            size_param,
            ..
        } => (
            (page_param, cursor.next),
            (size_param, u64::from(cursor.size)),
        ),
        Paging::SkipTop {
            skip_param,
            top_param,
            ..
        } => (
            (skip_param, cursor.next),
            (top_param, u64::from(cursor.size)),
        ),
    };
    path.push(if path.contains('?') { '&' } else { '?' });
    path.push_str(&format!("{}={}&{}={}", a.0, a.1, b.0, b.1));
    Outcome::Forward(Forward {
        method: profile.method.clone(),
        path,
        body: None,
        headers: route_headers(route),
        profile: profile_index,
        platform: platform.to_string(),
        cursor: Some(cursor),
        idempotency: None,
        merge: None,
    })
}
