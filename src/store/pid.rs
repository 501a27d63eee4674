//! Nudges about patient-identifiable data (`domain::pid`): per incident and sender, when
//! cordon last nudged them and how often, so that a sender hears it at most once an
//! hour. Never what the message held: ids, times and kinds only.

use chrono::{DateTime, TimeDelta, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError, append_in, audit, decode, encode, tables};
use crate::domain::incident::IncidentId;

/// One sender's nudges in one incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidNudges {
    /// When cordon last nudged them.
    pub last_at: DateTime<Utc>,
    /// How many nudges they had.
    pub count: u64,
}

/// One message that held patient identifiers, as the store is told of it.
#[derive(Debug, Clone, Copy)]
pub struct PidSighting<'a> {
    /// The incident.
    pub incident: &'a IncidentId,
    /// The playbook's room key.
    pub room_key: &'a str,
    /// Who sent it.
    pub sender: &'a str,
    /// Its event id.
    pub event_id: &'a str,
    /// What it held, as kinds (`nhs-number`, `date-of-birth`).
    pub kinds: &'a [&'static str],
    /// When cordon saw it.
    pub at: DateTime<Utc>,
}

impl Store {
    /// Records that `seen.sender` is nudged about `seen`, and audits it (`pid.nudged`,
    /// with the kinds found and the event id, never the values), in one transaction;
    /// unless they were nudged in this incident less than `quiet` ago, when nothing is
    /// written. True when they are to be nudged now.
    pub fn record_pid_nudge(
        &self,
        seen: &PidSighting<'_>,
        quiet: TimeDelta,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let key = (seen.incident.as_str(), seen.sender);
        let count = {
            let mut table = tx.open_table(tables::PID_NUDGES)?;
            let before: Option<PidNudges> = match table.get(key)? {
                Some(v) => Some(decode("pid nudges", seen.sender, v.value())?),
                None => None,
            };
            if before.as_ref().is_some_and(|b| seen.at - b.last_at < quiet) {
                return Ok(false);
            }
            let now = PidNudges {
                last_at: seen.at,
                count: before.map_or(0, |b| b.count) + 1,
            };
            table.insert(key, encode("pid nudges", &now)?.as_slice())?;
            now.count
        };
        append_in(
            &tx,
            audit::NewEntry {
                actor: "cordon",
                action: "pid.nudged",
                incident: Some(seen.incident),
                details: &json!({
                    "room": seen.room_key,
                    "sender": seen.sender,
                    "event": seen.event_id,
                    "found": seen.kinds,
                    "count": count,
                }),
                at: seen.at,
            },
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// How many nudges the senders of `incident` had, in all.
    pub fn pid_nudge_count(&self, incident: &IncidentId) -> Result<u64, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::PID_NUDGES)?;
        let id = incident.as_str();
        let mut total = 0;
        for item in table.range((id, "")..)? {
            let (k, v) = item?;
            let (found, sender) = k.value();
            if found != id {
                break;
            }
            let nudges: PidNudges = decode("pid nudges", sender, v.value())?;
            total += nudges.count;
        }
        Ok(total)
    }
}
