//! Enrolments: the people an operator verified (`cordon verify`), and revocations.
//!
//! The signature cordon's user-signing key puts on a person's identity lives on the
//! homeserver and cannot be withdrawn. What cordon keeps here is who enrolled them, how,
//! when, and which master key was checked; a revocation overrides the signature for
//! every decision cordon makes ("verified" is `UserIdentity::is_verified()` and not
//! revoked here).

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError, append_in, audit, decode, encode, tables};

/// How a person's identity was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum EnrolMethod {
    /// Interactive emoji comparison with one of their devices.
    Sas {
        /// The device the comparison ran with.
        device: String,
    },
    /// Their master-key fingerprint, read out in person and compared with the server's.
    Fingerprint,
    /// Not enrolled through this store (a record holding only a revocation).
    Unrecorded,
}

impl std::fmt::Display for EnrolMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sas { device } => write!(f, "emoji comparison with device {device}"),
            Self::Fingerprint => f.write_str("master-key fingerprint"),
            Self::Unrecorded => f.write_str("not recorded"),
        }
    }
}

/// A revocation: cordon no longer treats the person as verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Who revoked (the operator's account or login name).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, as the operator gave it.
    pub reason: Option<String>,
}

/// One person's enrolment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolment {
    /// The Matrix user id.
    pub user: String,
    /// The master key (unpadded base64 ed25519) that was checked and signed; `None` for
    /// a record holding only a revocation.
    pub master_key: Option<String>,
    /// How it was checked.
    pub method: EnrolMethod,
    /// Who enrolled them (the operator's account or login name).
    pub by: String,
    /// When.
    pub verified_at: DateTime<Utc>,
    /// Set when the enrolment was revoked; a later enrolment clears it.
    pub revoked: Option<Revocation>,
}

impl Enrolment {
    /// True unless revoked.
    pub fn is_current(&self) -> bool {
        self.revoked.is_none()
    }
}

impl Store {
    /// Records that `enrolment.user` was verified (replacing an earlier record and any
    /// revocation), audited as `identity.verified` in the same transaction.
    pub fn record_enrolment(&self, enrolment: &Enrolment) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut table = tx.open_table(tables::ENROLMENTS)?;
            let bytes = encode("enrolment", enrolment)?;
            table.insert(enrolment.user.as_str(), bytes.as_slice())?;
            append_in(
                &tx,
                audit::NewEntry {
                    actor: &enrolment.by,
                    action: "identity.verified",
                    incident: None,
                    details: &json!({
                        "user": enrolment.user,
                        "master_key": enrolment.master_key,
                        "method": enrolment.method,
                    }),
                    at: enrolment.verified_at,
                },
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Revokes `user`'s enrolment, audited as `identity.revoked`. A person who was never
    /// enrolled here (for example one verified before the store was rebuilt) gets a
    /// record holding only the revocation. Returns the record as it now stands.
    pub fn revoke_enrolment(
        &self,
        user: &str,
        revocation: Revocation,
    ) -> Result<Enrolment, StoreError> {
        let tx = self.write()?;
        let record = {
            let mut table = tx.open_table(tables::ENROLMENTS)?;
            let existing: Option<Enrolment> = match table.get(user)? {
                Some(bytes) => Some(decode("enrolments", user, bytes.value())?),
                None => None,
            };
            let record = match existing {
                Some(mut e) => {
                    e.revoked = Some(revocation.clone());
                    e
                }
                None => Enrolment {
                    user: user.to_owned(),
                    master_key: None,
                    method: EnrolMethod::Unrecorded,
                    by: String::new(),
                    verified_at: revocation.at,
                    revoked: Some(revocation.clone()),
                },
            };
            let bytes = encode("enrolment", &record)?;
            table.insert(user, bytes.as_slice())?;
            append_in(
                &tx,
                audit::NewEntry {
                    actor: &revocation.by,
                    action: "identity.revoked",
                    incident: None,
                    details: &json!({ "user": user, "reason": revocation.reason }),
                    at: revocation.at,
                },
            )?;
            record
        };
        tx.commit()?;
        Ok(record)
    }

    /// `user`'s enrolment record, if any.
    pub fn enrolment(&self, user: &str) -> Result<Option<Enrolment>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::ENROLMENTS)?;
        match table.get(user)? {
            Some(bytes) => decode("enrolments", user, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every enrolment record, by user id.
    pub fn enrolments(&self) -> Result<Vec<Enrolment>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::ENROLMENTS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (key, value) = item?;
            out.push(decode("enrolments", key.value(), value.value())?);
        }
        Ok(out)
    }
}
