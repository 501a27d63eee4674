//! Members' devices and identities.
//!
//! matrix-sdk reports every device and cross-signing identity it learns about (on
//! streams fed by key queries, which follow each member's device-list changes). A new
//! device or identity of an incident member triggers a check of that person (see
//! [`super::check_person`]): an identity change or revocation is handled in
//! [`super::members`], and a device its owner has not cross-signed raises one alert per
//! device and incident ([`check`]). The periodic pass repeats the check for everyone,
//! so updates that arrived while cordon was down, or that the streams dropped, are
//! caught too.

use std::sync::{Arc, Weak};

use futures_util::StreamExt;
use matrix_sdk::ruma::UserId;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Seats;
use super::alert;
use crate::app::ctx::{ACTOR, Ctx, millis_to_utc};

/// Starts the two watchers, on the bot's tasks; each stops when they stop (or when the
/// bot is gone).
pub(super) fn start(ctx: &Arc<Ctx>) {
    ctx.spawn(watch_devices(Arc::downgrade(ctx), ctx.tasks.stop_token()));
    ctx.spawn(watch_identities(
        Arc::downgrade(ctx),
        ctx.tasks.stop_token(),
    ));
}

/// The next item of `stream`, or `None` once `stop` is cancelled or the stream ends.
async fn next_or_stop<S: futures_util::Stream + Unpin>(
    stream: &mut S,
    stop: &CancellationToken,
) -> Option<S::Item> {
    tokio::select! {
        () = stop.cancelled() => None,
        next = stream.next() => next,
    }
}

async fn watch_devices(weak: Weak<Ctx>, stop: CancellationToken) {
    let stream = {
        let Some(ctx) = weak.upgrade() else { return };
        match ctx.client.encryption().devices_stream().await {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "guard: cannot watch devices; only the periodic check runs");
                return;
            }
        }
    };
    futures_util::pin_mut!(stream);
    while let Some(updates) = next_or_stop(&mut stream, &stop).await {
        let Some(ctx) = weak.upgrade() else { return };
        // Every update first enforces the person's standing: a device that appears
        // after a revocation is blacklisted before cordon shares a key with it.
        let people: std::collections::BTreeSet<_> = updates
            .new
            .keys()
            .chain(updates.changed.keys())
            .filter(|u| *u != ctx.user_id())
            .cloned()
            .collect();
        for user in people {
            super::check_standing(&ctx, &user).await;
        }
        for (user, devices) in updates.new {
            if user == *ctx.user_id() || devices.values().all(|d| d.is_cross_signed_by_owner()) {
                continue;
            }
            let b = ctx.clone();
            ctx.spawn(async move { super::check_person(&b, &user).await });
        }
    }
}

async fn watch_identities(weak: Weak<Ctx>, stop: CancellationToken) {
    let stream = {
        let Some(ctx) = weak.upgrade() else { return };
        match ctx.client.encryption().user_identities_stream().await {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "guard: cannot watch identities; only the periodic check runs");
                return;
            }
        }
    };
    futures_util::pin_mut!(stream);
    while let Some(updates) = next_or_stop(&mut stream, &stop).await {
        let Some(ctx) = weak.upgrade() else { return };
        for user in updates.new.into_keys().chain(updates.changed.into_keys()) {
            if user == *ctx.user_id() {
                continue;
            }
            super::check_standing(&ctx, &user).await;
            let b = ctx.clone();
            ctx.spawn(async move { super::check_person(&b, &user).await });
        }
    }
}

/// Alerts once per device and incident about each of `user`'s devices that they have
/// not cross-signed. cordon never shares room keys with such a device (it is not
/// trusted), so the alert is about the account, not about what the device can read.
pub(super) async fn check(ctx: &Ctx, user: &UserId, all: &[Seats]) {
    let devices = match ctx.client.encryption().get_user_devices(user).await {
        Ok(d) => d,
        Err(e) => {
            warn!(user = %user, error = %e, "could not list a member's devices");
            return;
        }
    };
    for device in devices.devices() {
        if device.is_cross_signed_by_owner() || device.is_deleted() {
            continue;
        }
        let seen = millis_to_utc(device.first_time_seen_ts().get().into());
        for seats in all {
            let key = format!(
                "guard/{}/device/{user}/{}",
                seats.incident.id,
                device.device_id()
            );
            match ctx.store.outbox_get(&key) {
                Ok(None) => {}
                Ok(Some(existing)) => {
                    alert::deliver(ctx, &existing).await;
                    continue;
                }
                Err(e) => {
                    error!(error = %e, "store: reading a guard alert");
                    continue;
                }
            }
            let now = ctx.now();
            let body = alert::device_body(
                &seats.incident,
                user.as_str(),
                device.device_id().as_str(),
                device.display_name(),
                seen,
                ctx.config.time_zone,
            );
            let Some(entry) = alert::record(ctx, &seats.incident, &key, &body) else {
                continue;
            };
            warn!(incident = %seats.incident.id, user = %user, device = %device.device_id(),
                  "a member has a device they have not verified");
            if let Err(e) = ctx.store.audit(
                ACTOR,
                "guard.device-alert",
                Some(&seats.incident.id),
                json!({
                    "user": user,
                    "device": device.device_id(),
                    "event_at": seen,
                    "detected_at": now,
                }),
                now,
            ) {
                error!(error = %e, "store: auditing a device alert");
            }
            alert::deliver(ctx, &entry).await;
        }
    }
}
