//! Matrix request latency, taken from matrix-sdk's own tracing: every request it makes
//! runs inside a `send` span (target `matrix_sdk::http_client`) that records the
//! request's `uri`, query string already removed. This layer times those spans from
//! creation to close, and labels each with [`endpoint`], a few fixed words of the path.
//!
//! It also counts matrix-sdk's warning that an encrypted send waited out its five
//! seconds for a pending `/keys/query` ([`super::Metrics::key_query_timeout`]; why
//! cordon keeps those at zero: `crate::matrix::rooms::hold_sends`).
//!
//! The layer carries its own filter, so it sees those spans and that warning whatever
//! `RUST_LOG` says about matrix-sdk's logging.

use std::time::Instant;

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The span matrix-sdk wraps each request in.
const SPAN_NAME: &str = "send";
/// Its target.
const SPAN_TARGET: &str = "matrix_sdk::http_client";
/// Where matrix-sdk-crypto 0.18 warns that a wait for a pending key query timed out.
const KEY_QUERY_TARGET: &str = "matrix_sdk_crypto::store";
/// The start of that warning's message.
const KEY_QUERY_TIMEOUT: &str = "The user has a pending `/keys/query` request which did not finish";

/// Path words kept in an endpoint label; everything else (ids, event types, versions)
/// is dropped, so the labels form a small fixed set.
const WORDS: &[&str] = &[
    "account",
    "account_data",
    "admin",
    "ban",
    "capabilities",
    "claim",
    "config",
    "context",
    "createRoom",
    "delete",
    "delete_devices",
    "delete_status",
    "devices",
    "directory",
    "download",
    "event",
    "filter",
    "forget",
    "invite",
    "join",
    "joined_members",
    "joined_rooms",
    "keys",
    "kick",
    "leave",
    "login",
    "logout",
    "media",
    "members",
    "messages",
    "override_ratelimit",
    "pinned_events",
    "profile",
    "purge_history",
    "pushrules",
    "query",
    "read_markers",
    "receipt",
    "redact",
    "relations",
    "room_keys",
    "rooms",
    "send",
    "sendToDevice",
    "signatures",
    "state",
    "sync",
    "thumbnail",
    "typing",
    "unban",
    "upload",
    "user",
    "users",
    "versions",
    "whoami",
];

/// The label for a request to `path`: up to three known words of it, joined by `/`
/// (`rooms/send`, `keys/query`, `sync`, `admin/rooms/delete_status`), or `other`.
pub fn endpoint(path: &str) -> String {
    let words: Vec<&str> = path
        .split('/')
        .filter(|s| *s != "_synapse" && *s != "_matrix")
        .filter(|s| WORDS.contains(s))
        .take(3)
        .collect();
    if words.is_empty() {
        "other".to_owned()
    } else {
        words.join("/")
    }
}

/// When a request span started and which endpoint it is for.
struct Timing {
    started: Instant,
    endpoint: Option<String>,
}

struct UriVisitor<'a>(&'a mut Option<String>);

impl Visit for UriVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "uri" {
            *self.0 = Some(endpoint(uri_path(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "uri" {
            *self.0 = Some(endpoint(uri_path(&format!("{value:?}"))));
        }
    }
}

/// The path of `uri` (`https://hs/_matrix/client/v3/sync` → `/_matrix/client/v3/sync`).
fn uri_path(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split_once('?').map_or(path, |(path, _)| path)
}

/// The layer that times matrix-sdk's requests into [`super::Metrics`].
pub struct MatrixLatency;

impl<S> Layer<S> for MatrixLatency
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut endpoint = None;
        attrs.record(&mut UriVisitor(&mut endpoint));
        span.extensions_mut().insert(Timing {
            started: Instant::now(),
            endpoint,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(timing) = extensions.get_mut::<Timing>() {
            values.record(&mut UriVisitor(&mut timing.endpoint));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !is_key_query_warning(event.metadata()) {
            return;
        }
        let mut message = MessageVisitor(false);
        event.record(&mut message);
        if message.0 {
            super::global().key_query_timeout();
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        if let Some(timing) = extensions.get::<Timing>() {
            let endpoint = timing.endpoint.as_deref().unwrap_or("other");
            super::global().matrix_request(endpoint, timing.started.elapsed().as_secs_f64());
        }
    }
}

/// Whether the event's message is the key-query timeout warning.
struct MessageVisitor(bool);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 |= value.starts_with(KEY_QUERY_TIMEOUT);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 |= format!("{value:?}").starts_with(KEY_QUERY_TIMEOUT);
        }
    }
}

/// Whether `metadata` is matrix-sdk's request span.
fn is_request_span(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span() && metadata.name() == SPAN_NAME && metadata.target() == SPAN_TARGET
}

/// Whether `metadata` is a warning where matrix-sdk-crypto reports a key-query timeout.
fn is_key_query_warning(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_event()
        && *metadata.level() == tracing::Level::WARN
        && metadata.target() == KEY_QUERY_TARGET
}

/// What [`MatrixLatency`] is shown: matrix-sdk's request spans and the key-query warning.
fn wanted(metadata: &tracing::Metadata<'_>) -> bool {
    is_request_span(metadata) || is_key_query_warning(metadata)
}

/// The filter that lets only what [`MatrixLatency`] uses through to it.
pub type RequestSpans = FilterFn<fn(&tracing::Metadata<'_>) -> bool>;

/// [`MatrixLatency`] with its own filter: only matrix-sdk's request spans and the
/// key-query warning.
pub fn layer<S>() -> Filtered<MatrixLatency, RequestSpans, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    MatrixLatency.with_filter(FilterFn::new(wanted as fn(&tracing::Metadata<'_>) -> bool))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_fixed_words_only() {
        for (path, want) in [
            ("/_matrix/client/v3/sync", "sync"),
            (
                "/_matrix/client/v3/rooms/!abc:hs/send/m.room.encrypted/txn-1",
                "rooms/send",
            ),
            ("/_matrix/client/v3/createRoom", "createRoom"),
            ("/_matrix/client/v3/keys/query", "keys/query"),
            (
                "/_matrix/client/v3/rooms/!abc:hs/state/m.room.power_levels/",
                "rooms/state",
            ),
            (
                "/_synapse/admin/v2/rooms/delete_status/abcdef",
                "admin/rooms/delete_status",
            ),
            ("/_matrix/client/v3/user/@alice:hs/filter", "user/filter"),
            ("/_matrix/client/v3/profile/@patient-name:hs", "profile"),
            ("/totally/unknown", "other"),
            ("", "other"),
        ] {
            assert_eq!(endpoint(path), want, "{path}");
        }
    }

    #[test]
    fn endpoint_labels_never_carry_ids() {
        // Room ids, user ids, event types and transaction ids are all dropped.
        let label = endpoint("/_matrix/client/v3/rooms/!secret:hs/send/m.room.message/send");
        assert_eq!(label, "rooms/send/send");
        assert!(!label.contains('!') && !label.contains('@') && !label.contains(':'));
    }

    #[test]
    fn uris_lose_scheme_host_and_query() {
        assert_eq!(
            uri_path("http://127.0.0.1:8008/_matrix/client/v3/sync?since=s1"),
            "/_matrix/client/v3/sync"
        );
        assert_eq!(uri_path("https://hs"), "");
    }

    #[test]
    fn the_layer_times_matrix_sdk_request_spans_only() {
        use tracing_subscriber::layer::SubscriberExt;
        let before = crate::metrics::global().render(None);
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "matrix_sdk::http_client", "send", uri = tracing::field::Empty);
            span.record("uri", "http://hs/_matrix/client/v3/joined_rooms");
            drop(span);
            // Another span of the same name elsewhere is not a request.
            let other = tracing::info_span!(target: "cordon::x", "send", uri = "http://hs/_matrix/client/v3/joined_members");
            drop(other);
        });
        let after = crate::metrics::global().render(None);
        let count = |text: &str, endpoint: &str| {
            let needle =
                format!("cordon_matrix_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&needle))
                .map_or(0, |n| n.trim().parse::<u64>().unwrap())
        };
        assert_eq!(
            count(&after, "joined_rooms"),
            count(&before, "joined_rooms") + 1
        );
        assert_eq!(
            count(&after, "joined_members"),
            count(&before, "joined_members")
        );
    }

    #[test]
    fn the_layer_counts_matrix_sdk_key_query_timeouts() {
        use tracing_subscriber::layer::SubscriberExt;
        let count = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("cordon_encryption_key_query_timeouts_total "))
                .map_or(0, |n| n.trim().parse::<u64>().unwrap())
        };
        let before = count(&crate::metrics::global().render(None));
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            // As matrix-sdk-crypto 0.18 says it (store/mod.rs).
            tracing::warn!(
                target: "matrix_sdk_crypto::store",
                user_id = "@cordon:hs",
                "The user has a pending `/keys/query` request which did \
                not finish yet, some devices might be missing."
            );
            // Other warnings there, and the same words elsewhere, are not counted.
            tracing::warn!(target: "matrix_sdk_crypto::store", "something else");
            tracing::info!(
                target: "matrix_sdk_crypto::store",
                "The user has a pending `/keys/query` request which did not finish yet"
            );
            tracing::warn!(
                target: "cordon::x",
                "The user has a pending `/keys/query` request which did not finish yet"
            );
        });
        let after = count(&crate::metrics::global().render(None));
        assert_eq!(after, before + 1);
    }
}
