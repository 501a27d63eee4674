//! The media addresses of every incident's attachments, noted as cordon first sees each
//! event, so that stand-down deletes them all.
//!
//! Synapse cannot list what end-to-end-encrypted events point to, and a message that was
//! redacted (by retention, a moderator or its sender) no longer says. So the address is
//! written here when cordon reads the event: in sync, in the retention sweep before it
//! redacts, and (into the stand-down record) in the seal. Only addresses and event ids are
//! kept, never message text. Recording is idempotent: the first sighting of an address
//! stays, later ones change nothing.

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, decode, encode, tables};
use crate::domain::incident::IncidentId;

/// Where cordon read a media address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaSeenIn {
    /// An event as sync delivered it (decrypted when it could be).
    Sync,
    /// An event the retention sweep was about to redact.
    Sweep,
}

/// The first sighting of one media address in an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaSighting {
    /// The Matrix room the event was in.
    pub room: String,
    /// The event that named the address.
    pub event: String,
    /// Where cordon read it.
    pub seen_in: MediaSeenIn,
    /// When.
    pub at: DateTime<Utc>,
}

impl Store {
    /// Records each `(address, sighting)` of `incident` found, keeping an earlier
    /// sighting of the same address. One transaction. Returns how many addresses were
    /// new.
    pub fn record_media(
        &self,
        incident: &IncidentId,
        found: &[(String, MediaSighting)],
    ) -> Result<usize, StoreError> {
        if found.is_empty() {
            return Ok(0);
        }
        let tx = self.write()?;
        let mut new = 0;
        {
            let mut table = tx.open_table(tables::MEDIA)?;
            for (address, sighting) in found {
                let key = (incident.as_str(), address.as_str());
                if table.get(key)?.is_none() {
                    table.insert(key, encode("media", sighting)?.as_slice())?;
                    new += 1;
                }
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Every media address recorded for `incident`, sorted, with its first sighting.
    pub fn incident_media(
        &self,
        incident: &IncidentId,
    ) -> Result<Vec<(String, MediaSighting)>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::MEDIA)?;
        let mut out = Vec::new();
        for item in table.range((incident.as_str(), "")..)? {
            let (key, value) = item?;
            let (id, address) = key.value();
            if id != incident.as_str() {
                break;
            }
            let sighting = decode("media", &format!("{id}/{address}"), value.value())?;
            out.push((address.to_owned(), sighting));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn sighting(event: &str, seen_in: MediaSeenIn, secs: i64) -> MediaSighting {
        MediaSighting {
            room: "!ward:hs.example".into(),
            event: event.into(),
            seen_in,
            at: at(secs),
        }
    }

    fn found(list: &[&str], sighting: &MediaSighting) -> Vec<(String, MediaSighting)> {
        list.iter()
            .map(|s| ((*s).to_owned(), sighting.clone()))
            .collect()
    }

    #[test]
    fn the_first_sighting_of_an_address_is_kept_and_repeats_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = IncidentId::parse("mc-4k7p").unwrap();
        let image = ["mxc://hs.example/scan", "mxc://hs.example/thumb"];
        let first = found(&image, &sighting("$image", MediaSeenIn::Sync, 0));
        assert_eq!(store.record_media(&id, &first).unwrap(), 2);
        // The sweep reads the same event later: nothing new.
        let again = found(&image, &sighting("$image", MediaSeenIn::Sweep, 60));
        assert_eq!(store.record_media(&id, &again).unwrap(), 0);
        // An edit adds a new file.
        let edit = found(
            &["mxc://hs.example/scan", "mxc://hs.example/scan-v2"],
            &sighting("$edit", MediaSeenIn::Sweep, 90),
        );
        assert_eq!(store.record_media(&id, &edit).unwrap(), 1);
        assert_eq!(store.record_media(&id, &[]).unwrap(), 0);
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let media = store.incident_media(&id).unwrap();
        let listed: Vec<&str> = media.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            listed,
            [
                "mxc://hs.example/scan",
                "mxc://hs.example/scan-v2",
                "mxc://hs.example/thumb"
            ],
            "kept across restarts, sorted"
        );
        assert_eq!(media[0].1, sighting("$image", MediaSeenIn::Sync, 0));
        assert_eq!(media[1].1, sighting("$edit", MediaSeenIn::Sweep, 90));
    }

    #[test]
    fn each_incident_lists_only_its_own_media() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = IncidentId::parse("mc-aaaa").unwrap();
        let b = IncidentId::parse("mc-aaab").unwrap();
        let s = sighting("$e", MediaSeenIn::Sync, 0);
        store
            .record_media(&a, &found(&["mxc://hs.example/a"], &s))
            .unwrap();
        store
            .record_media(
                &b,
                &found(&["mxc://hs.example/a", "mxc://hs.example/b"], &s),
            )
            .unwrap();
        let of = |id: &IncidentId| -> Vec<String> {
            store
                .incident_media(id)
                .unwrap()
                .into_iter()
                .map(|(address, _)| address)
                .collect()
        };
        assert_eq!(of(&a), ["mxc://hs.example/a"]);
        assert_eq!(of(&b), ["mxc://hs.example/a", "mxc://hs.example/b"]);
        assert!(of(&IncidentId::parse("mc-aaa0").unwrap()).is_empty());
    }

    #[test]
    fn a_sighting_holds_ids_and_no_content() {
        let json = serde_json::to_value(sighting("$image", MediaSeenIn::Sweep, 0)).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["at", "event", "room", "seen_in"]);
        assert_eq!(json["seen_in"], "sweep");
    }
}
