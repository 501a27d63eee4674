//! Incidents and their rooms.

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde_json::json;

use super::audit::{AuditEntry, NewEntry};
use super::records::{IncidentFilter, RoomRecord};
use super::{Store, StoreError, decode, encode, tables};
use crate::domain::incident::{Event, Incident, IncidentId, NewIncident};

/// How many ids [`Store::create_incident`] tries before giving up.
const ID_ATTEMPTS: u32 = 64;

impl Store {
    /// Declares an incident: picks an id not yet used (drawing from `next_random`,
    /// again on a collision), stores the record in `provisioning`, and audits
    /// `incident.declared` by `actor`, all in one transaction.
    pub fn create_incident(
        &self,
        new: NewIncident,
        next_random: &mut dyn FnMut() -> u64,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<Incident, StoreError> {
        let tx = self.write()?;
        let incident = insert_new_incident(&tx, new, next_random, actor, at)?;
        tx.commit()?;
        Ok(incident)
    }

    /// The incident with this id, if any.
    pub fn incident(&self, id: &IncidentId) -> Result<Option<Incident>, StoreError> {
        let read = self.read()?;
        let incidents = read.open_table(tables::INCIDENTS)?;
        match incidents.get(id.as_str())? {
            None => Ok(None),
            Some(bytes) => decode("incidents", id.as_str(), bytes.value()).map(Some),
        }
    }

    /// The incidents matching `filter`, ordered by id.
    pub fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        let read = self.read()?;
        let incidents = read.open_table(tables::INCIDENTS)?;
        let mut out = Vec::new();
        for item in incidents.iter()? {
            let (key, value) = item?;
            let incident: Incident = decode("incidents", key.value(), value.value())?;
            if filter.matches(&incident) {
                out.push(incident);
            }
        }
        Ok(out)
    }

    /// Applies a lifecycle event to incident `id` at `at` and audits it as
    /// `incident.<event>` by `actor`, in one transaction. A refused event
    /// ([`StoreError::Transition`]) writes nothing; auditing the refusal is the caller's
    /// choice ([`Store::audit`]).
    pub fn apply(
        &self,
        id: &IncidentId,
        event: Event,
        actor: &str,
        at: DateTime<Utc>,
    ) -> Result<(Incident, AuditEntry), StoreError> {
        let tx = self.write()?;
        let result = {
            let mut incidents = tx.open_table(tables::INCIDENTS)?;
            let mut incident: Incident = match incidents.get(id.as_str())? {
                None => return Err(StoreError::NoSuchIncident(id.clone())),
                Some(bytes) => decode("incidents", id.as_str(), bytes.value())?,
            };
            let event_json = serde_json::to_value(&event).map_err(|source| StoreError::Encode {
                what: "event",
                source,
            })?;
            let transition =
                incident
                    .apply(event, at)
                    .map_err(|source| StoreError::Transition {
                        id: id.clone(),
                        source,
                    })?;
            let bytes = encode("incident", &incident)?;
            incidents.insert(id.as_str(), bytes.as_slice())?;
            let details = json!({
                "from": transition.from,
                "to": transition.to,
                "event": event_json,
            });
            let action = format!("incident.{}", transition.event);
            let entry = append(&tx, actor, &action, id, &details, at)?;
            (incident, entry)
        };
        tx.commit()?;
        Ok(result)
    }

    /// Inserts or replaces a room record. Its incident must exist.
    pub fn upsert_room(&self, room: &RoomRecord) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let incidents = tx.open_table(tables::INCIDENTS)?;
            if incidents.get(room.incident.as_str())?.is_none() {
                return Err(StoreError::NoSuchIncident(room.incident.clone()));
            }
            let mut rooms = tx.open_table(tables::ROOMS)?;
            let bytes = encode("room", room)?;
            rooms.insert(
                (room.incident.as_str(), room.key.as_str()),
                bytes.as_slice(),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Changes room `key` of `incident` with `change` in one transaction, so that two
    /// steps changing different fields of one record (the guard's pins and a
    /// stand-down's status, say) never undo each other. Returns the record as written,
    /// or `None` when there is no such room.
    pub fn update_room(
        &self,
        incident: &IncidentId,
        key: &str,
        change: impl FnOnce(&mut RoomRecord),
    ) -> Result<Option<RoomRecord>, StoreError> {
        let tx = self.write()?;
        let updated = {
            let mut rooms = tx.open_table(tables::ROOMS)?;
            let current = match rooms.get((incident.as_str(), key))? {
                None => None,
                Some(bytes) => Some(decode::<RoomRecord>(
                    "rooms",
                    &format!("{incident}/{key}"),
                    bytes.value(),
                )?),
            };
            match current {
                None => None,
                Some(mut record) => {
                    change(&mut record);
                    let bytes = encode("room", &record)?;
                    rooms.insert((incident.as_str(), key), bytes.as_slice())?;
                    Some(record)
                }
            }
        };
        tx.commit()?;
        Ok(updated)
    }

    /// The room `key` of incident `incident`, if recorded.
    pub fn room(&self, incident: &IncidentId, key: &str) -> Result<Option<RoomRecord>, StoreError> {
        let read = self.read()?;
        let rooms = read.open_table(tables::ROOMS)?;
        match rooms.get((incident.as_str(), key))? {
            None => Ok(None),
            Some(bytes) => decode("rooms", &format!("{incident}/{key}"), bytes.value()).map(Some),
        }
    }

    /// Every room of `incident`, ordered by room key.
    pub fn rooms(&self, incident: &IncidentId) -> Result<Vec<RoomRecord>, StoreError> {
        let read = self.read()?;
        let rooms = read.open_table(tables::ROOMS)?;
        let mut out = Vec::new();
        for item in rooms.range((incident.as_str(), "")..)? {
            let (key, value) = item?;
            let (id, room_key) = key.value();
            if id != incident.as_str() {
                break;
            }
            out.push(decode("rooms", &format!("{id}/{room_key}"), value.value())?);
        }
        Ok(out)
    }

    /// The room record whose Matrix room id is `room_id`, if any (for routing events).
    pub fn room_by_matrix_id(&self, room_id: &str) -> Result<Option<RoomRecord>, StoreError> {
        let read = self.read()?;
        let rooms = read.open_table(tables::ROOMS)?;
        for item in rooms.iter()? {
            let (key, value) = item?;
            let (id, room_key) = key.value();
            let room: RoomRecord = decode("rooms", &format!("{id}/{room_key}"), value.value())?;
            if room.room_id.as_deref() == Some(room_id) {
                return Ok(Some(room));
            }
        }
        Ok(None)
    }
}

/// Appends an audit entry about `incident` inside `tx`.
/// Picks a free id, inserts the new incident in `provisioning` and audits
/// `incident.declared`, inside the caller's transaction.
pub(super) fn insert_new_incident(
    tx: &redb::WriteTransaction,
    new: NewIncident,
    next_random: &mut dyn FnMut() -> u64,
    actor: &str,
    at: DateTime<Utc>,
) -> Result<Incident, StoreError> {
    let mut incidents = tx.open_table(tables::INCIDENTS)?;
    let mut id = None;
    for _ in 0..ID_ATTEMPTS {
        let candidate = IncidentId::generate(&new.playbook, next_random);
        if incidents.get(candidate.as_str())?.is_none() {
            id = Some(candidate);
            break;
        }
    }
    let Some(id) = id else {
        return Err(StoreError::IdsExhausted {
            playbook: new.playbook,
            attempts: ID_ATTEMPTS,
        });
    };
    let incident = Incident::new(id, new, at);
    let bytes = encode("incident", &incident)?;
    incidents.insert(incident.id.as_str(), bytes.as_slice())?;
    let mut details = json!({
        "playbook": incident.playbook,
        "display_name": incident.display_name,
        "control_room": incident.control_room,
        "commander": incident.commander,
        "expires_at": incident.expires_at,
        "state": incident.state,
    });
    if incident.exercise {
        details["exercise"] = json!(true);
    }
    append(tx, actor, "incident.declared", &incident.id, &details, at)?;
    Ok(incident)
}

fn append(
    tx: &redb::WriteTransaction,
    actor: &str,
    action: &str,
    incident: &IncidentId,
    details: &serde_json::Value,
    at: DateTime<Utc>,
) -> Result<AuditEntry, StoreError> {
    super::append_in(
        tx,
        NewEntry {
            actor,
            action,
            incident: Some(incident),
            details,
            at,
        },
    )
}
