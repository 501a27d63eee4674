//! Whether a command's sending device may change anything: the decrypted event's
//! encryption info must show a device cross-signed by an identity cordon verified, and
//! the person's enrolment must not be revoked. This is what stops a stolen password or
//! a hostile server from declaring or destroying incidents.

use matrix_sdk::Client;
use matrix_sdk::deserialized_responses::{
    AlgorithmInfo, EncryptionInfo, VerificationLevel, VerificationState,
};
use tracing::warn;

use crate::store::Store;

/// The sending device's standing, as read from the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderDevice {
    /// Encrypted by a device cross-signed by an identity cordon verified.
    Verified,
    /// Not verified, with the reason.
    Unverified(Why),
}

/// Why a sending device is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The message was not end-to-end encrypted.
    Unencrypted,
    /// The identity was never verified by cordon.
    NotEnrolled,
    /// The identity changed after cordon verified it.
    IdentityChanged,
    /// The device is not cross-signed by its owner's identity.
    UnsignedDevice,
    /// The message could not be linked to a known device.
    UnknownDevice,
    /// The event's sender is not the owner of the device that encrypted it.
    MismatchedSender,
    /// An operator revoked the person's enrolment.
    Revoked,
}

impl Why {
    /// A short code for the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Why::Unencrypted => "unencrypted",
            Why::NotEnrolled => "not-enrolled",
            Why::IdentityChanged => "identity-changed",
            Why::UnsignedDevice => "unsigned-device",
            Why::UnknownDevice => "unknown-device",
            Why::MismatchedSender => "mismatched-sender",
            Why::Revoked => "revoked",
        }
    }

    /// The reason and what to do, as the sender and the room read it.
    pub fn explain(self) -> &'static str {
        match self {
            Why::Unencrypted => {
                "it was not end-to-end encrypted. Send commands from an encrypted room \
                 with an up-to-date Matrix client"
            }
            Why::NotEnrolled => {
                "your identity has not been verified by cordon. Ask an operator to enrol \
                 you in person (`cordon verify @you:server`)"
            }
            Why::IdentityChanged => {
                "your identity changed after cordon verified it (a reset, or someone else \
                 using your account). Ask an operator to verify you again in person"
            }
            Why::UnsignedDevice => {
                "this device is not verified with your own identity. Verify this session \
                 from another of your sessions (or with your recovery key), then send the \
                 command again"
            }
            Why::UnknownDevice => {
                "cordon could not link the message to a known device of yours. Send it \
                 again in a minute; if it persists, sign out and in again"
            }
            Why::MismatchedSender => {
                "the device that encrypted it does not belong to the sender. This may be \
                 an attack; operators have been told in the audit log"
            }
            Why::Revoked => "an operator revoked your enrolment. Ask an operator if this is wrong",
        }
    }
}

/// Whether the device that encrypted a command may change anything *now*.
///
/// [`classify`] reads the verification state matrix-sdk stored with the megolm session
/// when it first received it, and matrix-sdk keeps a session's "verified" for good. A
/// phone that was lost, and whose owner then reset their cross-signing identity, would
/// still pass. So a command classified as verified is checked again against the
/// homeserver's current keys (fetched now): the device still exists with the curve25519
/// key the session came from, it is not blacklisted, it is cross-signed by its owner's
/// *current* identity, that identity carries cordon's signature, and it is the identity
/// the operator enrolled. Local trust (what an emoji comparison gives the compared
/// device) counts for nothing here.
///
/// The same check decides for an enrolled sender whose session matrix-sdk stored as
/// unverified: it keeps that too, so someone enrolled (or enrolled again) after their
/// client shared its session with cordon would otherwise be refused until the client
/// rotates it.
pub async fn confirm_now(
    client: &Client,
    store: &Store,
    info: Option<&EncryptionInfo>,
    sender: &matrix_sdk::ruma::UserId,
) -> SenderDevice {
    let (revoked, record) = match store.enrolment(sender.as_str()) {
        Ok(record) => (record.as_ref().is_some_and(|e| !e.is_current()), record),
        Err(e) => {
            // Fail closed: a sender cordon cannot check is not trusted.
            warn!(error = %e, "store: reading an enrolment");
            (true, None)
        }
    };
    let enrolled = record.as_ref().is_some_and(|e| e.is_current());
    let classified = classify(info, sender, revoked);
    let recheck = match &classified {
        SenderDevice::Verified => true,
        SenderDevice::Unverified(Why::NotEnrolled | Why::IdentityChanged | Why::UnsignedDevice) => {
            enrolled
        }
        SenderDevice::Unverified(_) => false,
    };
    let (true, Some(info)) = (recheck, info) else {
        return classified;
    };
    let Some(device_id) = info.sender_device.as_deref() else {
        return SenderDevice::Unverified(Why::UnknownDevice);
    };
    let AlgorithmInfo::MegolmV1AesSha2 { curve25519_key, .. } = &info.algorithm_info else {
        return SenderDevice::Unverified(Why::UnknownDevice);
    };
    let encryption = client.encryption();
    // The homeserver's keys now, not the copy from the last sync: a reset that arrives
    // in the same sync as the command must count.
    let identity = match encryption.request_user_identity(sender).await {
        Ok(Some(identity)) => identity,
        Ok(None) => return SenderDevice::Unverified(Why::NotEnrolled),
        Err(e) => {
            warn!(user = %sender, error = %e, "could not fetch a command sender's keys");
            return SenderDevice::Unverified(Why::UnknownDevice);
        }
    };
    let device = match encryption.get_device(sender, device_id).await {
        Ok(Some(device)) => device,
        Ok(None) => return SenderDevice::Unverified(Why::UnknownDevice),
        Err(e) => {
            warn!(user = %sender, error = %e, "could not read a command sender's device");
            return SenderDevice::Unverified(Why::UnknownDevice);
        }
    };
    if device.curve25519_key().map(|k| k.to_base64()).as_deref() != Some(curve25519_key.as_str()) {
        return SenderDevice::Unverified(Why::UnknownDevice);
    }
    if device.is_blacklisted() {
        return SenderDevice::Unverified(Why::Revoked);
    }
    let enrolled_key = record.and_then(|e| e.master_key);
    let current = super::master_key(&identity);
    let changed = enrolled_key.is_some() && enrolled_key != current;
    if changed || !identity.is_verified() {
        return SenderDevice::Unverified(if changed || enrolled_key.is_some() {
            Why::IdentityChanged
        } else {
            Why::NotEnrolled
        });
    }
    if !device.is_cross_signed_by_owner() {
        return SenderDevice::Unverified(Why::UnsignedDevice);
    }
    SenderDevice::Verified
}

/// Classifies the encryption info of a command event sent by `sender`. `revoked` says
/// whether cordon's store revokes the sender's enrolment.
pub fn classify(
    info: Option<&EncryptionInfo>,
    sender: &matrix_sdk::ruma::UserId,
    revoked: bool,
) -> SenderDevice {
    let Some(info) = info else {
        return SenderDevice::Unverified(Why::Unencrypted);
    };
    if info.sender != sender {
        return SenderDevice::Unverified(Why::MismatchedSender);
    }
    match &info.verification_state {
        VerificationState::Verified if revoked => SenderDevice::Unverified(Why::Revoked),
        VerificationState::Verified => SenderDevice::Verified,
        VerificationState::Unverified(level) => SenderDevice::Unverified(match level {
            VerificationLevel::UnverifiedIdentity => Why::NotEnrolled,
            VerificationLevel::VerificationViolation => Why::IdentityChanged,
            VerificationLevel::UnsignedDevice => Why::UnsignedDevice,
            VerificationLevel::None(_) => Why::UnknownDevice,
            VerificationLevel::MismatchedSender => Why::MismatchedSender,
        }),
    }
}

#[cfg(test)]
mod tests {
    use matrix_sdk::deserialized_responses::{AlgorithmInfo, DeviceLinkProblem};
    use matrix_sdk::ruma::{owned_device_id, owned_user_id, user_id};

    use super::*;

    fn info(state: VerificationState) -> EncryptionInfo {
        EncryptionInfo {
            sender: owned_user_id!("@lead:hs"),
            sender_device: Some(owned_device_id!("DEV")),
            forwarder: None,
            algorithm_info: AlgorithmInfo::MegolmV1AesSha2 {
                curve25519_key: "key".to_owned(),
                sender_claimed_keys: Default::default(),
                session_id: None,
            },
            verification_state: state,
        }
    }

    #[test]
    fn only_a_verified_device_of_the_sender_passes() {
        let lead = user_id!("@lead:hs");
        assert_eq!(
            classify(Some(&info(VerificationState::Verified)), lead, false),
            SenderDevice::Verified
        );
        let cases = [
            (VerificationLevel::UnverifiedIdentity, Why::NotEnrolled),
            (
                VerificationLevel::VerificationViolation,
                Why::IdentityChanged,
            ),
            (VerificationLevel::UnsignedDevice, Why::UnsignedDevice),
            (
                VerificationLevel::None(DeviceLinkProblem::MissingDevice),
                Why::UnknownDevice,
            ),
            (VerificationLevel::MismatchedSender, Why::MismatchedSender),
        ];
        for (level, why) in cases {
            assert_eq!(
                classify(
                    Some(&info(VerificationState::Unverified(level))),
                    lead,
                    false
                ),
                SenderDevice::Unverified(why)
            );
        }
    }

    #[test]
    fn unencrypted_revoked_and_spoofed_senders_are_refused() {
        let lead = user_id!("@lead:hs");
        assert_eq!(
            classify(None, lead, false),
            SenderDevice::Unverified(Why::Unencrypted)
        );
        assert_eq!(
            classify(Some(&info(VerificationState::Verified)), lead, true),
            SenderDevice::Unverified(Why::Revoked)
        );
        assert_eq!(
            classify(
                Some(&info(VerificationState::Verified)),
                user_id!("@other:hs"),
                false
            ),
            SenderDevice::Unverified(Why::MismatchedSender)
        );
    }
}
