//! The roster: who cordon let into each incident room. It is the guard's ground truth:
//! a member or invitee without an `invited` entry is an intruder, whatever the event
//! claims about who invited them. Entries are written before the invite is sent.

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, append_in, audit, decode, encode, tables};
use crate::domain::incident::IncidentId;

/// Where one person stands in one incident room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum RosterStatus {
    /// cordon invited them (or is about to): they may be invited and join.
    Invited,
    /// A holder cordon did not invite (unverified, identity changed, revoked …).
    Pending {
        /// Why, as the commander reads it.
        why: String,
    },
    /// Taken out (`remove`, or an identity change under the `remove` policy).
    Removed {
        /// Why.
        why: String,
    },
}

/// One person in one incident room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The incident.
    pub incident: IncidentId,
    /// The playbook's room key.
    pub room_key: String,
    /// The Matrix room id.
    pub room_id: String,
    /// The person.
    pub user: String,
    /// The roles that put them here (empty for the commander's moderator seat).
    pub roles: Vec<String>,
    /// Where they stand.
    pub status: RosterStatus,
    /// Admitted without a verified identity (`verification: warn` or `admit --unverified`).
    pub unverified: bool,
    /// When the entry last changed.
    pub at: DateTime<Utc>,
}

impl RosterEntry {
    /// True when the guard lets this person be invited to or joined in the room.
    pub fn is_allowed(&self) -> bool {
        self.status == RosterStatus::Invited
    }
}

/// An audit entry to write in the same transaction as a roster change.
#[derive(Debug, Clone)]
pub struct RosterAudit<'a> {
    /// Who made the change.
    pub actor: &'a str,
    /// The action (`roster.added`, `roster.removed`, `roster.admitted` …).
    pub action: &'a str,
    /// Details.
    pub details: serde_json::Value,
}

impl Store {
    /// Inserts or replaces roster entries in one transaction, with an optional audit
    /// entry in the same transaction.
    pub fn roster_put(
        &self,
        entries: &[RosterEntry],
        audit_entry: Option<RosterAudit<'_>>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut table = tx.open_table(tables::ROSTER)?;
            for entry in entries {
                let bytes = encode("roster entry", entry)?;
                table.insert(
                    (entry.room_id.as_str(), entry.user.as_str()),
                    bytes.as_slice(),
                )?;
            }
        }
        if let Some(a) = audit_entry {
            let incident = entries.first().map(|e| &e.incident);
            append_in(
                &tx,
                audit::NewEntry {
                    actor: a.actor,
                    action: a.action,
                    incident,
                    details: &a.details,
                    at,
                },
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// `user`'s entry in room `room_id`, if any.
    pub fn roster_entry(
        &self,
        room_id: &str,
        user: &str,
    ) -> Result<Option<RosterEntry>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::ROSTER)?;
        match table.get((room_id, user))? {
            Some(bytes) => decode("roster", &format!("{room_id}/{user}"), bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every entry of room `room_id`, by user id.
    pub fn roster_for_room(&self, room_id: &str) -> Result<Vec<RosterEntry>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::ROSTER)?;
        let mut out = Vec::new();
        for item in table.range((room_id, "")..)? {
            let (key, value) = item?;
            let (room, user) = key.value();
            if room != room_id {
                break;
            }
            out.push(decode("roster", &format!("{room}/{user}"), value.value())?);
        }
        Ok(out)
    }

    /// Every entry of `incident`, across its rooms.
    pub fn roster_for_incident(
        &self,
        incident: &IncidentId,
    ) -> Result<Vec<RosterEntry>, StoreError> {
        self.roster_where(|e| &e.incident == incident)
    }

    /// Every entry of `user`, across incidents.
    pub fn roster_for_user(&self, user: &str) -> Result<Vec<RosterEntry>, StoreError> {
        self.roster_where(|e| e.user == user)
    }

    fn roster_where(
        &self,
        keep: impl Fn(&RosterEntry) -> bool,
    ) -> Result<Vec<RosterEntry>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::ROSTER)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (key, value) = item?;
            let (room, user) = key.value();
            let entry: RosterEntry = decode("roster", &format!("{room}/{user}"), value.value())?;
            if keep(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }
}
