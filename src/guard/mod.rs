//! The guard: watches every incident room all the time and reconciles what the server
//! shows against cordon's own records (the roster and each room's desired state),
//! whatever sender an event claims.

use std::sync::Arc;

use crate::bot::Bot;

/// Registers the guard's event handlers on the bot's client.
pub fn register(_bot: &Arc<Bot>) {}

/// Reconciles every open incident room once (at start-up, after the first sync).
pub async fn reconcile_all(_bot: &Arc<Bot>) {}
