//! What the running bot keeps beside incidents: the control rooms operators invited it
//! into, and each incident's playbook exactly as it was declared.

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::incidents::insert_new_incident;
use super::{Store, StoreError, append_in, audit, decode, encode, tables};
use crate::domain::incident::{Incident, IncidentId, NewIncident};

/// A control room an operator invited cordon into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRoom {
    /// The Matrix room id.
    pub room_id: String,
    /// The operator who invited cordon.
    pub invited_by: String,
    /// When cordon joined.
    pub since: DateTime<Utc>,
}

/// The playbook an incident was declared with, so that every later step (including
/// after a restart) uses exactly that version, even if the file changes on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybookSnapshot {
    /// The file it was read from.
    pub path: String,
    /// SHA-256 of `text`, hex.
    pub sha256: String,
    /// The YAML text.
    pub text: String,
}

impl Store {
    /// Records `room_id` as a control room joined at an operator's invitation, and
    /// audits it. Returns false if it was one already.
    pub fn add_control_room(
        &self,
        room_id: &str,
        invited_by: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let added = {
            let mut rooms = tx.open_table(tables::CONTROL_ROOMS)?;
            if rooms.get(room_id)?.is_some() {
                false
            } else {
                let record = ControlRoom {
                    room_id: room_id.to_owned(),
                    invited_by: invited_by.to_owned(),
                    since: at,
                };
                rooms.insert(room_id, encode("control room", &record)?.as_slice())?;
                append_in(
                    &tx,
                    audit::NewEntry {
                        actor: invited_by,
                        action: "control-room.joined",
                        incident: None,
                        details: &json!({ "room": room_id }),
                        at,
                    },
                )?;
                true
            }
        };
        tx.commit()?;
        Ok(added)
    }

    /// Whether `room_id` is a recorded control room.
    pub fn is_control_room(&self, room_id: &str) -> Result<bool, StoreError> {
        let read = self.read()?;
        let rooms = read.open_table(tables::CONTROL_ROOMS)?;
        Ok(rooms.get(room_id)?.is_some())
    }

    /// The recorded control rooms' ids.
    pub fn control_rooms(&self) -> Result<Vec<String>, StoreError> {
        let read = self.read()?;
        let rooms = read.open_table(tables::CONTROL_ROOMS)?;
        let mut out = Vec::new();
        for item in rooms.iter()? {
            let (key, _) = item?;
            out.push(key.value().to_owned());
        }
        Ok(out)
    }

    /// Declares an incident for the command event `event_id`, in one transaction with
    /// marking that event processed and storing the playbook snapshot. Returns `None`
    /// (and writes nothing) when the event was processed already, so a command replayed
    /// after a crash never declares twice.
    pub fn create_incident_for_command(
        &self,
        event_id: &str,
        new: NewIncident,
        snapshot: &PlaybookSnapshot,
        next_random: &mut dyn FnMut() -> u64,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Incident>, StoreError> {
        let tx = self.write()?;
        let incident = {
            let mut processed = tx.open_table(tables::PROCESSED)?;
            if processed.get(event_id)?.is_some() {
                return Ok(None);
            }
            processed.insert(event_id, at.timestamp_millis())?;
            let incident = insert_new_incident(&tx, new, next_random, actor, at)?;
            let mut snapshots = tx.open_table(tables::PLAYBOOK_SNAPSHOTS)?;
            snapshots.insert(
                incident.id.as_str(),
                encode("playbook snapshot", snapshot)?.as_slice(),
            )?;
            incident
        };
        tx.commit()?;
        Ok(Some(incident))
    }

    /// The playbook incident `id` was declared with.
    pub fn playbook_snapshot(
        &self,
        id: &IncidentId,
    ) -> Result<Option<PlaybookSnapshot>, StoreError> {
        let read = self.read()?;
        let snapshots = read.open_table(tables::PLAYBOOK_SNAPSHOTS)?;
        match snapshots.get(id.as_str())? {
            None => Ok(None),
            Some(bytes) => decode("playbook_snapshots", id.as_str(), bytes.value()).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::incident::State;

    fn new_incident() -> NewIncident {
        NewIncident {
            playbook: "mass-casualty".into(),
            display_name: "Tram crash".into(),
            control_room: "!control:hs".into(),
            commander: "@boss:hs".into(),
            expires_at: Utc::now(),
            exercise: false,
        }
    }

    fn snapshot() -> PlaybookSnapshot {
        PlaybookSnapshot {
            path: "playbooks/mass-casualty.yaml".into(),
            sha256: "00".into(),
            text: "id: mass-casualty\n".into(),
        }
    }

    #[test]
    fn a_replayed_declare_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut n = 0u64;
        let mut next = || {
            n += 1;
            n
        };
        let first = store
            .create_incident_for_command(
                "$e1",
                new_incident(),
                &snapshot(),
                &mut next,
                "@boss:hs",
                Utc::now(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(first.state, State::Provisioning);
        assert!(store.is_processed("$e1").unwrap());
        let again = store
            .create_incident_for_command(
                "$e1",
                new_incident(),
                &snapshot(),
                &mut next,
                "@boss:hs",
                Utc::now(),
            )
            .unwrap();
        assert!(again.is_none());
        assert_eq!(
            store
                .incidents(&crate::store::IncidentFilter::all())
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store.playbook_snapshot(&first.id).unwrap(),
            Some(snapshot())
        );
        assert!(store.verify_audit().unwrap().is_intact());
    }

    #[test]
    fn control_rooms_are_recorded_once_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(
                store
                    .add_control_room("!c:hs", "@op:hs", Utc::now())
                    .unwrap()
            );
            assert!(
                !store
                    .add_control_room("!c:hs", "@op:hs", Utc::now())
                    .unwrap()
            );
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(store.is_control_room("!c:hs").unwrap());
        assert!(!store.is_control_room("!other:hs").unwrap());
        assert_eq!(store.control_rooms().unwrap(), vec!["!c:hs".to_owned()]);
    }
}
