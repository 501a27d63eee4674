//! Enrolment by emoji comparison (SAS): cordon asks the person's devices that their own
//! identity cross-signs (or the one device the operator names) to verify, the first
//! device that accepts runs the comparison, the operator compares the seven
//! emojis with what the person's screen shows, and on a match both sides confirm.
//!
//! cordon signs nothing itself here: at the end of a confirmed comparison matrix-sdk
//! signs the person's master key with cordon's user-signing key (the crypto crate's
//! `IdentitiesBeingVerified::mark_as_done`, when the other device's MAC covered its
//! master key). This module waits until the homeserver's copy carries that signature,
//! then records the enrolment. A mismatch, a cancel or a timeout signs and records
//! nothing, and is audited as `identity.verify-failed`.
//!
//! A person's client ignores a verification request from a device it does not know,
//! and clients learn other people's devices only from the encrypted rooms they share.
//! Most people share none with cordon before their first incident (under
//! `verification: required` they are not invited until they are enrolled), so cordon
//! first makes sure there is one: an encrypted room both have joined, or else a small
//! "identity check" room the person is invited to (the invite's reason says why) and
//! joins. cordon leaves that room when the comparison is over, whatever its outcome.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{BoxStream, SelectAll};
use matrix_sdk::encryption::identities::UserIdentity;
use matrix_sdk::encryption::verification::{
    Emoji, SasState, SasVerification, Verification, VerificationRequest, VerificationRequestState,
};
use matrix_sdk::ruma::events::key::verification::VerificationMethod;
use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::{OwnedDeviceId, UserId};
use matrix_sdk::{Client, Room};
use serde_json::json;
use tokio::time::Instant;
use tracing::{info, instrument, warn};

use super::{TrustError, record};
use crate::clock::Clock;
use crate::matrix::rooms;
use crate::store::{EnrolMethod, Enrolment, Store};

/// How long, after both sides confirmed, cordon waits for its signature on the
/// person's master key to show on the homeserver.
const SIGNATURE_WAIT: Duration = Duration::from_secs(30);

/// After the person joins the identity-check room, how long their client gets to fetch
/// cordon's device keys (it does so on its next sync) before the request is sent: a
/// request from a device their client does not know yet would be dropped unseen.
const KEYS_SETTLE: Duration = Duration::from_secs(3);

/// The unencrypted reason on the identity-check invite: all the person can read.
const CHECK_INVITE_REASON: &str = "An operator is verifying your identity for cordon, the \
     incident bot. Accept this invite, then accept cordon's verification request and \
     compare the emojis with the operator. The room holds no messages.";

/// The operator at the other end of the comparison (the `cordon verify` terminal).
pub trait Operator: Send {
    /// Tells the operator how things stand ("waiting for the person to accept").
    fn progress(&mut self, message: String) -> impl Future<Output = ()> + Send;

    /// Shows the emojis and asks whether they match what the person sees. `true` only
    /// for an explicit yes; anything else (no, a closed terminal) is `false`.
    fn compare(&mut self, device: &str, emojis: &[Emoji]) -> impl Future<Output = bool> + Send;
}

/// What to compare with, and for how long.
#[derive(Debug, Clone)]
pub struct SasOptions {
    /// Only this device of theirs; otherwise every device is asked and the first to
    /// accept is used.
    pub device: Option<OwnedDeviceId>,
    /// The whole comparison, the person's and the operator's time included.
    pub timeout: Duration,
}

/// Runs the comparison with `user` and, on a confirmed match, records the enrolment.
/// Every failure after the first request was sent is audited as
/// `identity.verify-failed` and cancels what is still open.
#[instrument(skip_all, fields(user = %user))]
pub async fn verify(
    client: &Client,
    store: &Store,
    user: &UserId,
    options: &SasOptions,
    by: &str,
    clock: &dyn Clock,
    operator: &mut impl Operator,
) -> Result<Enrolment, TrustError> {
    if client.user_id() == Some(user) {
        return Err(TrustError::OwnAccount(user.to_string()));
    }
    let deadline = Instant::now() + options.timeout;
    let mut flow = Flow {
        requests: Vec::new(),
        sas: None,
        check_room: None,
    };
    let result = run(
        client, store, user, options, by, clock, operator, deadline, &mut flow,
    )
    .await;
    if let Some(room) = flow.check_room.take() {
        leave_check_room(&room).await;
    }
    if let Err(e) = &result {
        flow.cancel_all().await;
        let device = flow
            .sas
            .as_ref()
            .map(|s| s.other_device().device_id().to_string());
        if let Err(audit) = store.audit(
            by,
            "identity.verify-failed",
            None,
            json!({ "user": user, "method": "sas", "device": device, "why": e.to_string() }),
            clock.now(),
        ) {
            warn!(error = %audit, "store: auditing a failed verification");
        }
    }
    result
}

/// What is open on the wire, so that a failure can cancel it.
struct Flow {
    requests: Vec<(OwnedDeviceId, VerificationRequest)>,
    sas: Option<SasVerification>,
    /// The identity-check room cordon created for this comparison, to leave after it.
    check_room: Option<Room>,
}

impl Flow {
    async fn cancel_all(&self) {
        if let Some(sas) = &self.sas
            && !sas.is_done()
            && !sas.is_cancelled()
        {
            let _ = sas.cancel().await;
        }
        for (_, request) in &self.requests {
            if !request.is_done() && !request.is_cancelled() {
                let _ = request.cancel().await;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    client: &Client,
    store: &Store,
    user: &UserId,
    options: &SasOptions,
    by: &str,
    clock: &dyn Clock,
    operator: &mut impl Operator,
    deadline: Instant,
    flow: &mut Flow,
) -> Result<Enrolment, TrustError> {
    let encryption = client.encryption();
    // Fetch first: cordon may share no room with the person and not track their keys.
    let identity = encryption
        .request_user_identity(user)
        .await
        .map_err(|e| TrustError::matrix(format!("fetching {user}'s identity"), e))?
        .ok_or_else(|| TrustError::NoIdentity {
            user: user.to_string(),
        })?;
    let devices = encryption
        .get_user_devices(user)
        .await
        .map_err(|e| TrustError::matrix(format!("listing {user}'s devices"), e))?;
    // Only devices the person's identity cross-signs are asked, unless the operator
    // names one: a device the homeserver added in their name (an admin's login as
    // them, a stolen password) is not cross-signed, and must not be the one that
    // answers first.
    let mut targets = Vec::new();
    let mut unsigned = Vec::new();
    for device in devices.devices() {
        match &options.device {
            Some(wanted) if wanted == device.device_id() => targets.push(device),
            Some(_) => {}
            None if device.is_cross_signed_by_owner() => targets.push(device),
            None => unsigned.push(device.device_id().to_string()),
        }
    }
    if targets.is_empty() {
        return Err(TrustError::Cancelled(match &options.device {
            Some(d) => format!("{user} has no device {d} on the homeserver; nothing was signed"),
            None if !unsigned.is_empty() => format!(
                "none of {user}'s devices is cross-signed by their own identity ({} not), \
                 so cordon asks none of them: a device the server added in their name \
                 could answer. Ask them to verify the session they are using (from \
                 another session or with their recovery key), or name it with \
                 `--device ID` after checking its id on their screen; nothing was signed",
                unsigned.join(", ")
            ),
            None => format!(
                "{user} has no device with encryption keys; they must log in (for example \
                 in Element) before they can be verified by emoji"
            ),
        }));
    }
    if !unsigned.is_empty() {
        operator
            .progress(format!(
                "not asking {user}'s device(s) {}: their identity does not cross-sign them",
                unsigned.join(", ")
            ))
            .await;
    }
    ensure_shared_room(client, user, operator, deadline, flow).await?;
    for device in targets {
        let id = device.device_id().to_owned();
        let request = device
            .request_verification_with_methods(vec![VerificationMethod::SasV1])
            .await
            .map_err(|e| TrustError::matrix(format!("asking {user}'s device {id} to verify"), e))?;
        flow.requests.push((id, request));
    }
    let ids: Vec<String> = flow.requests.iter().map(|(d, _)| d.to_string()).collect();
    operator
        .progress(format!(
            "asked {user} to verify on {} device(s) ({}); waiting for them to accept",
            ids.len(),
            ids.join(", ")
        ))
        .await;

    let chosen = wait_for_accept(user, &flow.requests, deadline).await?;
    let (device_id, request) = flow.requests[chosen].clone();
    for (i, (_, other)) in flow.requests.iter().enumerate() {
        if i != chosen {
            let _ = other.cancel().await;
        }
    }
    info!(device = %device_id, "the person accepted");
    operator
        .progress(format!(
            "{user} accepted on device {device_id}; comparing emojis"
        ))
        .await;

    let sas = start_sas(user, &request, deadline).await?;
    flow.sas = Some(sas.clone());
    let emojis = wait_for_emojis(user, &sas, deadline).await?;

    let answer = tokio::time::timeout_at(deadline, operator.compare(device_id.as_str(), &emojis))
        .await
        .map_err(|_| timed_out(user))?;
    if !answer {
        let _ = sas.mismatch().await;
        return Err(TrustError::Cancelled(format!(
            "the emojis were not confirmed as matching; nothing was signed and {user} is \
             not enrolled"
        )));
    }
    sas.confirm()
        .await
        .map_err(|e| TrustError::matrix("confirming the emojis", e))?;
    wait_for_done(user, &sas, deadline).await?;

    let identity = wait_for_signature(client, user, identity).await?;
    let enrolment = record(
        store,
        &identity,
        EnrolMethod::Sas {
            device: device_id.to_string(),
        },
        by,
        clock.now(),
    )?;
    super::unblock_signed_devices(client, user).await?;
    info!(device = %device_id, "enrolled by emoji comparison");
    Ok(enrolment)
}

/// Makes sure cordon and `user` share an encrypted room that both have joined, so that
/// the person's client knows cordon's device when the request arrives (see the module
/// doc). Creates an identity-check room and waits for the person to join it if needed.
async fn ensure_shared_room(
    client: &Client,
    user: &UserId,
    operator: &mut impl Operator,
    deadline: Instant,
    flow: &mut Flow,
) -> Result<(), TrustError> {
    for room in client.joined_rooms() {
        if room.encryption_state().is_encrypted()
            && membership(&room, user).await == Some(MembershipState::Join)
        {
            return Ok(());
        }
    }
    let room = rooms::create_identity_check_room(client, user)
        .await
        .map_err(|e| TrustError::matrix("creating the identity-check room", e))?;
    flow.check_room = Some(room.clone());
    rooms::invite_with_reason(client, room.room_id(), user, CHECK_INVITE_REASON)
        .await
        .map_err(|e| {
            TrustError::matrix(format!("inviting {user} to the identity-check room"), e)
        })?;
    operator
        .progress(format!(
            "{user} shares no encrypted room with cordon, so their client would not show \
             its request: they are invited to a room named \"cordon: identity check\"; \
             ask them to accept the invite"
        ))
        .await;
    loop {
        match membership(&room, user).await {
            Some(MembershipState::Join) => break,
            Some(MembershipState::Leave | MembershipState::Ban) => {
                return Err(TrustError::Cancelled(format!(
                    "{user} declined the identity-check invite; nothing was signed"
                )));
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(timed_out(user));
        }
        // Membership arrives with the sync that the bot (or the offline CLI) runs.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    info!("the person joined the identity-check room");
    tokio::time::sleep(KEYS_SETTLE.min(deadline.saturating_duration_since(Instant::now()))).await;
    Ok(())
}

async fn membership(room: &Room, user: &UserId) -> Option<MembershipState> {
    match room.get_member_no_sync(user).await {
        Ok(Some(member)) => Some(member.membership().clone()),
        _ => None,
    }
}

/// Leaves and forgets the identity-check room; the person may leave it too.
async fn leave_check_room(room: &Room) {
    if let Err(e) = room.leave().await {
        warn!(error = %e, "could not leave the identity-check room");
        return;
    }
    if let Err(e) = room.forget().await {
        warn!(error = %e, "could not forget the identity-check room");
    }
}

fn timed_out(user: &UserId) -> TrustError {
    TrustError::Cancelled(format!(
        "the verification with {user} timed out; nothing was signed"
    ))
}

/// Waits until one device accepts (ready, or it started the comparison itself), and
/// returns its index. A request every device declined is an error.
async fn wait_for_accept(
    user: &UserId,
    requests: &[(OwnedDeviceId, VerificationRequest)],
    deadline: Instant,
) -> Result<usize, TrustError> {
    let mut changes: SelectAll<BoxStream<'static, VerificationRequestState>> =
        futures_util::stream::select_all(requests.iter().map(|(_, r)| r.changes().boxed()));
    loop {
        let mut open = 0;
        for (i, (_, request)) in requests.iter().enumerate() {
            match request.state() {
                VerificationRequestState::Ready { .. }
                | VerificationRequestState::Transitioned { .. } => return Ok(i),
                VerificationRequestState::Cancelled(_) | VerificationRequestState::Done => {}
                _ => open += 1,
            }
        }
        if open == 0 {
            let why = requests
                .iter()
                .find_map(|(_, r)| r.cancel_info().map(|c| c.reason().to_owned()))
                .unwrap_or_else(|| "cancelled".to_owned());
            return Err(TrustError::Cancelled(format!(
                "{user} did not accept the verification ({why}); nothing was signed"
            )));
        }
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => std::future::pending::<()>().await,
            Err(_) => return Err(timed_out(user)),
        }
    }
}

/// Starts the SAS on an accepted request, or takes the one the person's device started.
async fn start_sas(
    user: &UserId,
    request: &VerificationRequest,
    deadline: Instant,
) -> Result<SasVerification, TrustError> {
    let mut changes = request.changes();
    loop {
        match request.state() {
            VerificationRequestState::Transitioned { verification } => {
                return match verification {
                    Verification::SasV1(sas) => {
                        if !sas.we_started() {
                            sas.accept()
                                .await
                                .map_err(|e| TrustError::matrix("accepting the comparison", e))?;
                        }
                        Ok(sas)
                    }
                    _ => Err(TrustError::Cancelled(
                        "the person's device chose a method other than emoji comparison".to_owned(),
                    )),
                };
            }
            VerificationRequestState::Ready { .. } => {
                if let Some(sas) = request
                    .start_sas()
                    .await
                    .map_err(|e| TrustError::matrix("starting the emoji comparison", e))?
                {
                    return Ok(sas);
                }
                // The other side started at the same moment: its start wins; look again.
            }
            VerificationRequestState::Cancelled(info) => {
                return Err(TrustError::Cancelled(format!(
                    "{user} cancelled the verification ({}); nothing was signed",
                    info.reason()
                )));
            }
            _ => {}
        }
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => std::future::pending::<()>().await,
            Err(_) => return Err(timed_out(user)),
        }
    }
}

/// Waits until both sides have exchanged keys and the emojis can be shown.
async fn wait_for_emojis(
    user: &UserId,
    sas: &SasVerification,
    deadline: Instant,
) -> Result<Vec<Emoji>, TrustError> {
    let mut changes = sas.changes();
    loop {
        match sas.state() {
            SasState::KeysExchanged {
                emojis: Some(e), ..
            } => return Ok(e.emojis.to_vec()),
            SasState::KeysExchanged { emojis: None, .. } => {
                return Err(TrustError::Cancelled(format!(
                    "{user}'s device does not offer emoji comparison; nothing was signed"
                )));
            }
            SasState::Cancelled(info) => {
                return Err(TrustError::Cancelled(format!(
                    "{user} cancelled the comparison ({}); nothing was signed",
                    info.reason()
                )));
            }
            _ => {}
        }
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => std::future::pending::<()>().await,
            Err(_) => return Err(timed_out(user)),
        }
    }
}

/// Waits for both confirmations (the person may still be looking at their screen).
async fn wait_for_done(
    user: &UserId,
    sas: &SasVerification,
    deadline: Instant,
) -> Result<(), TrustError> {
    let mut changes = sas.changes();
    loop {
        match sas.state() {
            SasState::Done { .. } => return Ok(()),
            SasState::Cancelled(info) => {
                return Err(TrustError::Cancelled(format!(
                    "{user} did not confirm the emojis ({}); nothing was signed",
                    info.reason()
                )));
            }
            _ => {}
        }
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => std::future::pending::<()>().await,
            Err(_) => return Err(timed_out(user)),
        }
    }
}

/// Waits until the homeserver's copy of the identity carries cordon's signature (the
/// SDK uploads it when the comparison completes), and returns that copy. The master
/// key must be the one that was compared.
async fn wait_for_signature(
    client: &Client,
    user: &UserId,
    compared: UserIdentity,
) -> Result<UserIdentity, TrustError> {
    let wanted = super::master_key(&compared);
    let until = Instant::now() + SIGNATURE_WAIT;
    loop {
        let identity = client
            .encryption()
            .request_user_identity(user)
            .await
            .map_err(|e| TrustError::matrix(format!("fetching {user}'s identity"), e))?;
        if let Some(identity) = identity {
            if super::master_key(&identity) != wanted {
                return Err(TrustError::Cancelled(format!(
                    "{user}'s master key changed during the comparison; nothing was recorded"
                )));
            }
            if identity.is_verified() {
                return Ok(identity);
            }
        }
        if Instant::now() >= until {
            return Err(TrustError::matrix(
                format!("recording {user}'s verification"),
                "the comparison completed, but cordon's signature on their identity did not \
                 reach the homeserver; run the verification again",
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
