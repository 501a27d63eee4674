//! Integration tests: the Synapse harness itself. A real Synapse on loopback, real
//! matrix-sdk clients, real end-to-end encryption.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cordon::dev::{HarnessError, Synapse, TestUser};
use matrix_sdk::RoomState;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::serde::Raw;

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery staple";

/// Registers `localpart` on the shared homeserver and logs them in.
async fn person(hs: &Synapse, localpart: &str) -> anyhow::Result<TestUser> {
    hs.register(localpart, PASSWORD, false).await?;
    Ok(TestUser::login(hs, localpart, PASSWORD).await?)
}

#[tokio::test]
async fn invitee_joins_and_both_read_each_others_encrypted_messages() -> anyhow::Result<()> {
    let hs = Synapse::shared().await?;
    let alice = person(hs, "e2e-alice").await?;
    let bob = person(hs, "e2e-bob").await?;

    let fingerprint = alice.master_key_fingerprint().await?;
    ensure!(
        fingerprint.len() == 43,
        "a master key is 32 bytes of unpadded base64, got {fingerprint:?}"
    );

    let room_id = alice
        .create_encrypted_room("Harness ward", &[bob.user_id().to_owned()])
        .await?;
    let invited = bob.wait_for_invite(WAIT).await?;
    ensure!(
        invited.room_id() == room_id,
        "bob was invited to {}, not {room_id}",
        invited.room_id()
    );
    ensure!(
        invited.state() == RoomState::Invited,
        "the room should be pending as an invite"
    );
    let invite = bob
        .invites()
        .into_iter()
        .next()
        .context("the invite is recorded")?;
    ensure!(
        invite.inviter == alice.user_id(),
        "the invite came from {}",
        invite.inviter
    );

    let joined = bob.join(&room_id).await?;
    ensure!(
        joined.state() == RoomState::Joined,
        "bob should have joined"
    );

    alice.send_text(&room_id, "BP 120/80, stable").await?;
    let (sender, body) = bob
        .wait_for_message(&room_id, WAIT, |sender, body| {
            sender == alice.user_id() && body.contains("BP")
        })
        .await?;
    ensure!(
        sender == alice.user_id() && body == "BP 120/80, stable",
        "got {sender}: {body}"
    );
    let received = bob.messages(&room_id);
    let message = received
        .iter()
        .find(|m| m.body == body)
        .context("the message is logged")?;
    ensure!(
        message.encryption_info.is_some(),
        "the message must have arrived encrypted"
    );

    bob.send_text(&room_id, "acknowledged").await?;
    alice
        .wait_for_message(&room_id, WAIT, |sender, body| {
            sender == bob.user_id() && body == "acknowledged"
        })
        .await?;

    // The wait really looks at what arrived: a message nobody sent is not found.
    let never = alice
        .wait_for_message(&room_id, Duration::from_secs(1), |_, body| {
            body == "never sent"
        })
        .await;
    ensure!(
        matches!(never, Err(HarnessError::Timeout { .. })),
        "expected a timeout, got {never:?}"
    );

    let encryption = alice
        .room_state_json(&room_id, "m.room.encryption", "")
        .await?;
    ensure!(
        encryption["algorithm"] == "m.megolm.v1.aes-sha2",
        "encryption state: {encryption}"
    );

    alice.stop().await;
    bob.stop().await;
    Ok(())
}

#[tokio::test]
async fn server_refuses_invites_from_strangers_and_members_without_power() -> anyhow::Result<()> {
    let hs = Synapse::shared().await?;
    let owner = person(hs, "pl-owner").await?;
    let member = person(hs, "pl-member").await?;
    let stranger = person(hs, "pl-stranger").await?;
    let target = hs.register("pl-target", PASSWORD, false).await?;

    // `private_chat` lets any member invite; raise invite to 100 as cordon does.
    let mut request = CreateRoomRequest::new();
    request.name = Some("Locked ward".to_owned());
    request.preset = Some(RoomPreset::PrivateChat);
    request.invite = vec![member.user_id().to_owned()];
    request.power_level_content_override =
        Some(Raw::from_json_string(r#"{"invite": 100}"#.to_owned())?);
    request.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room_id = owner.create_room(request).await?;
    let power = owner
        .room_state_json(&room_id, "m.room.power_levels", "")
        .await?;
    ensure!(power["invite"] == 100, "power levels: {power}");

    member.wait_for_invite(WAIT).await?;
    member.join(&room_id).await?;

    let refused = |who: &str, result: Result<(), matrix_sdk::Error>| -> anyhow::Result<()> {
        match result {
            Ok(()) => bail!("the server let {who} invite"),
            Err(e) => {
                ensure!(
                    matches!(e.client_api_error_kind(), Some(ErrorKind::Forbidden)),
                    "{who}'s invite should be M_FORBIDDEN, was: {e}"
                );
                Ok(())
            }
        }
    };
    refused(
        "a member at power 0",
        member.invite(&room_id, &target).await,
    )?;
    refused("a non-member", stranger.invite(&room_id, &target).await)?;
    // The owner still can, so the refusals above are about power, not a broken request.
    owner.invite(&room_id, &target).await?;

    owner.stop().await;
    member.stop().await;
    stranger.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_second_synapse_gets_its_own_port_and_data_and_survives_restart() -> anyhow::Result<()> {
    let shared = Synapse::shared().await?;
    let started = Instant::now();
    let own = Synapse::start().await?;
    eprintln!("second Synapse answered after {:?}", started.elapsed());
    ensure!(
        own.base_url() != shared.base_url(),
        "both on {}",
        own.base_url()
    );
    ensure!(
        own.data_dir() != shared.data_dir(),
        "both in {}",
        own.data_dir().display()
    );
    ensure!(
        own.base_url().host_str() == Some("127.0.0.1"),
        "not on loopback: {}",
        own.base_url()
    );

    own.register("restart-check", PASSWORD, true).await?;
    let port = own.port();
    let restarted = Instant::now();
    own.restart().await?;
    eprintln!("restart took {:?}", restarted.elapsed());
    ensure!(
        own.port() == port,
        "restart moved from port {port} to {}",
        own.port()
    );
    // The account is still there: the data survived the restart.
    match own.register("restart-check", PASSWORD, false).await {
        Err(HarnessError::Refused {
            status: 400, body, ..
        }) if body.contains("M_USER_IN_USE") => {}
        other => bail!("re-registering after restart should be M_USER_IN_USE, got {other:?}"),
    }
    ensure!(
        own.log_path().starts_with(own.data_dir()),
        "the log lives in the data dir"
    );

    let data_dir = own.data_dir().to_owned();
    own.stop().await;
    ensure!(data_dir.exists(), "stop keeps the data for a restart");
    drop(own);
    if std::env::var("CORDON_KEEP_SYNAPSE").as_deref() != Ok("1") {
        ensure!(!data_dir.exists(), "drop removes {}", data_dir.display());
    }
    Ok(())
}

/// The postgres-workers form (`CORDON_SYNAPSE=postgres-workers`) is what it says: the
/// database is PostgreSQL, every event is written by the event persister (the main
/// process hands them over through replication), and a room deletion, which Synapse
/// runs as a scheduled task, completes only because the background worker runs it.
#[tokio::test]
async fn the_postgres_workers_form_persists_through_its_persister_and_deletes_on_its_worker()
-> anyhow::Result<()> {
    use cordon::dev::{Form, SynapseOptions};
    let hs = Synapse::own_with(SynapseOptions {
        form: Some(Form::PostgresWorkers),
        ..SynapseOptions::default()
    })
    .await?;
    ensure!(hs.form() == Form::PostgresWorkers);
    let alice = person(hs, "pw-alice").await?;
    let bob = person(hs, "pw-bob").await?;
    let room_id = alice
        .create_encrypted_room("Workers ward", &[bob.user_id().to_owned()])
        .await?;
    bob.wait_for_invite(WAIT).await?;
    bob.join(&room_id).await?;
    alice.send_text(&room_id, "BP 120/80, stable").await?;
    bob.wait_for_message(&room_id, WAIT, |sender, body| {
        sender == alice.user_id() && body.contains("BP")
    })
    .await?;

    let writers = hs.sql(&format!(
        "SELECT DISTINCT instance_name FROM events WHERE room_id = '{room_id}'"
    ))?;
    ensure!(
        writers.trim() == "persister1",
        "the room's events were written by {writers:?}, not only the persister"
    );

    // The admin API's deletion is a scheduled task: the background worker runs it.
    let admin = hs.register_session("pw-admin", PASSWORD, true).await?;
    let client = cordon::dev::synapse::http_client()?;
    let url = hs
        .base_url()
        .join(&format!("_synapse/admin/v2/rooms/{room_id}"))?;
    let reply: serde_json::Value = client
        .delete(url)
        .bearer_auth(&admin.access_token)
        .json(&serde_json::json!({ "purge": true }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let delete_id = reply["delete_id"]
        .as_str()
        .context("a delete id")?
        .to_owned();
    let status_url = hs.base_url().join(&format!(
        "_synapse/admin/v2/rooms/delete_status/{delete_id}"
    ))?;
    let deadline = Instant::now() + WAIT;
    loop {
        let status: serde_json::Value = client
            .get(status_url.clone())
            .bearer_auth(&admin.access_token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if status["status"] == "complete" {
            break;
        }
        if Instant::now() > deadline {
            bail!("the deletion never completed: {status}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let left = hs.sql(&format!(
        "SELECT count(*) FROM events WHERE room_id = '{room_id}'"
    ))?;
    ensure!(left.trim() == "0", "{left} events left after the purge");
    alice.stop().await;
    bob.stop().await;
    Ok(())
}
