//! The stand-down pipeline's progress: one record per incident, written before each
//! step starts, so that a stand-down interrupted anywhere resumes at that step (every
//! step is safe to repeat). The rooms' own progress is in their records
//! ([`super::RoomStatus`]); the incident's in its state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, decode, encode, tables};
use crate::domain::incident::IncidentId;

/// A step of the stand-down pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StandDownStep {
    /// Making the rooms read-only and posting the final notices.
    Freeze,
    /// Exporting every room's history and sealing the archive, then verifying it.
    Seal,
    /// Waiting for a legal hold to be released before destroying anything.
    Held,
    /// Removing the members, deleting the rooms and their media.
    Destroy,
    /// Everything is done; the archive is kept until its keep time ends.
    Done,
}

impl StandDownStep {
    /// The kebab-case name (`seal`).
    pub fn as_str(self) -> &'static str {
        match self {
            StandDownStep::Freeze => "freeze",
            StandDownStep::Seal => "seal",
            StandDownStep::Held => "held",
            StandDownStep::Destroy => "destroy",
            StandDownStep::Done => "done",
        }
    }
}

/// Where an incident's stand-down is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandDownRecord {
    /// The step under way (or reached last).
    pub step: StandDownStep,
    /// When that step was started (the first time).
    pub started_at: DateTime<Utc>,
    /// How often the seal step was started (a crash or failure makes it start again).
    #[serde(default)]
    pub seal_attempts: u32,
    /// Every media address the export found (attachments and their thumbnails),
    /// deleted with the rooms: encrypted rooms hide them from the server's own list.
    #[serde(default)]
    pub media: Vec<String>,
    /// The delivery of the incident's advice to a FHIR server, when there is one to
    /// make (`fhir.base_url` configured, advice flagged, not an exercise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir: Option<FhirDelivery>,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
}

/// Where the delivery of an incident's advice bundle is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FhirDelivery {
    /// The bundle, sealed to cordon's delivery key: its path under the state directory.
    pub outbox: String,
    /// How many advice items it holds.
    pub items: usize,
    /// How many times it was POSTed (counted before each attempt).
    pub attempts: u32,
    /// How it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<FhirOutcome>,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum FhirOutcome {
    /// The server accepted the transaction.
    Delivered {
        /// When.
        at: DateTime<Utc>,
        /// Where.
        url: String,
    },
    /// An operator said to destroy the rooms without delivering (`retry --skip-fhir`).
    Skipped {
        /// Who.
        by: String,
        /// When.
        at: DateTime<Utc>,
    },
}

impl FhirDelivery {
    /// True while the rooms wait for it: neither delivered nor skipped.
    pub fn is_pending(&self) -> bool {
        self.outcome.is_none()
    }
}

impl Store {
    /// The stand-down record of `incident`, once its stand-down has started.
    pub fn standdown(&self, incident: &IncidentId) -> Result<Option<StandDownRecord>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::STANDDOWN)?;
        table
            .get(incident.as_str())?
            .map(|v| decode("standdown", incident.as_str(), v.value()))
            .transpose()
    }

    /// Writes the stand-down record of `incident`.
    pub fn put_standdown(
        &self,
        incident: &IncidentId,
        record: &StandDownRecord,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut table = tx.open_table(tables::STANDDOWN)?;
            let bytes = encode("standdown", record)?;
            table.insert(incident.as_str(), bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that `incident`'s stand-down is starting `step` (keeping the start
    /// time when it was already at that step) and returns the record.
    pub fn begin_standdown_step(
        &self,
        incident: &IncidentId,
        step: StandDownStep,
        now: DateTime<Utc>,
    ) -> Result<StandDownRecord, StoreError> {
        let mut record = self.standdown(incident)?.unwrap_or(StandDownRecord {
            step,
            started_at: now,
            seal_attempts: 0,
            media: Vec::new(),
            fhir: None,
            updated_at: now,
        });
        if record.step != step {
            record.step = step;
            record.started_at = now;
        }
        if step == StandDownStep::Seal {
            record.seal_attempts += 1;
        }
        record.updated_at = now;
        self.put_standdown(incident, &record)?;
        Ok(record)
    }
}
