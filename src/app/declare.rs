//! `declare`: a commander starts an incident from a playbook. The checks that need the
//! playbook (it exists, it is valid, the sender may declare it) run here; the incident
//! and the command are recorded in one transaction, then provisioning runs and its
//! summary answers.

use std::sync::Arc;

use chrono::TimeDelta;
use tracing::{error, info, warn};

use super::chat::{CommandError, Done, Incoming};
use super::ctx::Ctx;
use crate::domain::incident::NewIncident;
use crate::input::playbook::Catalog;

/// `declare`: checks, records the incident, and starts provisioning, whose summary
/// answers the command.
pub(super) async fn declare(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    playbook_id: &str,
    name: &str,
    exercise: bool,
) -> Result<Done, CommandError> {
    let now = ctx.now();
    let (catalog, problems) = Catalog::load(std::slice::from_ref(&ctx.config.playbooks_dir));

    // (2) The playbook exists, and (4) is valid: a file named after the id with
    // problems is reported as such rather than as unknown.
    let Some(playbook) = catalog.get(playbook_id) else {
        let related: Vec<String> = problems
            .iter()
            .filter(|d| {
                d.file
                    .file_stem()
                    .is_some_and(|s| s.to_string_lossy() == playbook_id)
            })
            .map(|d| d.to_string().lines().next().unwrap_or_default().to_owned())
            .collect();
        let message = if related.is_empty() {
            let available: Vec<&str> = catalog.ids().collect();
            format!(
                "There is no playbook `{playbook_id}`. Nothing was declared.\nAvailable \
                 playbooks: {}.\nExample: `!cordon declare {} \"Tram crash Addiscombe\"`",
                if available.is_empty() {
                    "none (ask the emergency planners to check the playbooks directory)".to_owned()
                } else {
                    available.join(", ")
                },
                available.first().copied().unwrap_or("mass-casualty"),
            )
        } else {
            let shown: Vec<String> = related.iter().take(5).cloned().collect();
            format!(
                "Playbook `{playbook_id}` cannot be used: it has {} problem(s). Nothing was \
                 declared.\n{}\nAsk the emergency planners to fix it and run `cordon check`.",
                related.len(),
                shown.join("\n")
            )
        };
        return Err(CommandError::refused("playbook", message));
    };

    // (3) The sender is allowed: the playbook's trigger, or an operator.
    if !(playbook.may_declare(&incoming.sender) || ctx.is_operator(&incoming.sender)) {
        return Err(CommandError::refused(
            "not-allowed",
            format!(
                "You are not allowed to declare `{}`. Nothing was declared. The playbook \
                 allows: {}. Ask an operator if this is wrong.",
                playbook.id,
                trigger_description(playbook)
            ),
        ));
    }

    // The playbook as declared, so that a resumed or later step uses exactly this
    // version even if the file changes on disk.
    let text = match crate::input::yaml::read_bounded(&playbook.source) {
        Ok(t) => t,
        Err(d) => return Err(CommandError::refused("playbook", d.to_string())),
    };
    let expires_at = now + TimeDelta::from_std(playbook.duration.max).unwrap_or(TimeDelta::MAX);
    let new = NewIncident {
        playbook: playbook.id.clone(),
        display_name: name.to_owned(),
        control_room: incoming.room.room_id().to_string(),
        commander: incoming.sender.to_string(),
        expires_at,
        exercise,
    };
    let snapshot = crate::store::PlaybookSnapshot {
        path: playbook.source.display().to_string(),
        sha256: playbook.sha256.clone(),
        text,
    };
    let created = {
        let mut rng = rand::rng();
        let mut next = || rand::Rng::random::<u64>(&mut rng);
        ctx.store.create_incident_for_command(
            incoming.event_id.as_str(),
            new,
            &snapshot,
            &mut next,
            incoming.sender.as_str(),
            now,
        )
    };
    let incident = match created {
        Ok(Some(incident)) => incident,
        Ok(None) => return Err(CommandError::Dropped), // handled before (a replay)
        Err(e) => {
            warn!(error = %e, "store: recording the incident");
            return Err(CommandError::NotDone(
                "I could not record the incident in my store, so nothing was declared. \
                 Operators: check cordon's logs. Try again in a minute."
                    .to_owned(),
            ));
        }
    };
    info!(incident = %incident.id, playbook = %incident.playbook, "declared");
    // The pipeline is the provisioning timer's job, run by the scheduler at once. Should
    // arming fail (the store), the incident is still provisioning: its timer is armed
    // again at the next start.
    if let Err(e) = ctx.arm(&crate::domain::incident::timers::provision(
        &incident.id,
        ctx.now(),
    )) {
        error!(incident = %incident.id, error = %e, "store: arming provisioning");
    }
    if let Some(sitrep) = &playbook.sitrep {
        let due = incident.declared_at
            + chrono::TimeDelta::from_std(sitrep.every).unwrap_or(chrono::TimeDelta::MAX);
        let timer = crate::domain::incident::timers::sitrep_due(&incident.id, 1, due);
        if let Err(e) = ctx.arm(&timer) {
            error!(incident = %incident.id, error = %e, "store: arming the SITREP cycle");
        }
    }
    if playbook.methane_required {
        let due = incident.declared_at
            + chrono::TimeDelta::from_std(crate::domain::incident::timers::METHANE_FIRST)
                .unwrap_or(chrono::TimeDelta::zero());
        let timer = crate::domain::incident::timers::methane_reminder(&incident.id, due);
        if let Err(e) = ctx.arm(&timer) {
            error!(incident = %incident.id, error = %e, "store: arming the METHANE reminder");
        }
    }
    Ok(Done::Answered)
}

/// Who may declare a playbook, as people read it.
fn trigger_description(playbook: &crate::input::playbook::Playbook) -> String {
    let mut parts: Vec<String> = playbook
        .trigger
        .allowed
        .iter()
        .map(|a| match a {
            crate::input::playbook::Allowed::Role(role) => match playbook.role(role) {
                Some(r) => format!("holders of {} ({})", r.title, role.as_str()),
                None => format!("holders of {}", role.as_str()),
            },
            crate::input::playbook::Allowed::User(user) => user.to_string(),
        })
        .collect();
    parts.push("operators".to_owned());
    parts.join(", ")
}
