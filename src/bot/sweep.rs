//! The retention sweep job: redacts a room's messages older than the playbook's window
//! ([`crate::retention`]), then arms the room's next sweep for when its oldest remaining
//! message reaches the window. Paused while a legal hold is set.

use std::sync::Arc;

use super::{Bot, BotError};
use crate::store::Timer;

/// A sweep timer's job.
pub(crate) async fn on_sweep(_bot: &Arc<Bot>, _timer: &Timer) -> Result<(), BotError> {
    // Filled in with the retention engine.
    Ok(())
}
