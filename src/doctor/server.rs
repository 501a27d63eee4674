//! The checks against the homeserver, through the config's `homeserver` address (the
//! one the bot uses, so its reverse proxy is part of what is checked), over the same
//! HTTP stack as the bot: matrix-sdk's client, and for the plain requests the reqwest
//! it is built on, with the same TLS settings and this system's trust store. Each
//! request is tried once and given 10 s.
//!
//! The login is a throwaway device, "cordon doctor (temporary)", logged out before the
//! checks end; the bot's own device and session are never used, only the saved token
//! is shown to `/account/whoami`.

use std::io;
use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::api::client::alias::create_alias;
use matrix_sdk::ruma::api::client::discovery::get_capabilities;
use matrix_sdk::ruma::api::client::discovery::get_capabilities::v3::RoomVersionStability;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::{OwnedRoomAliasId, OwnedRoomId, RoomVersionId};

use super::local::Secrets;
use super::{Check, Report};
use crate::input::config::Config;
use crate::matrix::admin::{AdminRights, RateLimitOverride, SynapseAdmin};
use crate::matrix::rooms::ROOM_VERSION;
use crate::matrix::session::{SessionPaths, read_session};

/// How long each request to the homeserver may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The display name of doctor's throwaway device.
pub const DEVICE_NAME: &str = "cordon doctor (temporary)";

/// The fix for a certificate this system does not trust.
const TRUST_FIX: &str = "if the certificate is signed by an internal CA, install the CA \
    on this host (Debian: copy it to /usr/local/share/ca-certificates/ and run \
    update-ca-certificates); otherwise give the homeserver a certificate from a public CA";

/// Runs the homeserver checks in order; a check whose prerequisite failed is skipped.
pub async fn checks(config: &Config, secrets: &Secrets, report: &mut Report<'_>) -> io::Result<()> {
    let reachable = homeserver(config, report).await?;
    if !reachable {
        for name in [
            "login",
            "saved session",
            "admin",
            "rate limits",
            "room versions",
            "aliases",
        ] {
            report.add(Check::skip(name, "the homeserver"))?;
        }
        return Ok(());
    }
    let client = match &secrets.password {
        Some(password) => login(config, password.expose(), report).await?,
        None => {
            report.add(Check::skip("login", "the password"))?;
            None
        }
    };
    saved_session(config, secrets, report).await?;
    match &client {
        Some(client) => {
            let admin = admin(config, client, report).await?;
            if admin {
                rate_limits(config, client, report).await?;
            } else {
                report.add(Check::skip("rate limits", "admin rights"))?;
            }
            room_versions(client, report).await?;
            if admin {
                aliases(config, client, report).await?;
            } else {
                report.add(Check::skip("aliases", "admin rights"))?;
            }
            logout(client, report).await?;
        }
        None => {
            for name in ["admin", "rate limits", "room versions", "aliases"] {
                report.add(Check::skip(name, "login"))?;
            }
        }
    }
    Ok(())
}

/// reqwest as matrix-sdk builds it (TLS 1.2 at least, the built-in trust store), with
/// doctor's timeout.
fn http() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .min_tls_version(reqwest::tls::Version::TLS_1_2)
        .timeout(TIMEOUT)
        .build()
}

/// Every error in `e`'s chain, joined.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Whether a connection error is a certificate the trust store refused.
pub fn is_certificate_error(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    lower.contains("certificate") || lower.contains("unknownissuer")
}

/// Checks that the homeserver answers `/_matrix/client/versions`; names Synapse's
/// version when it tells it.
async fn homeserver(config: &Config, report: &mut Report<'_>) -> io::Result<bool> {
    let base = &config.homeserver;
    let fix_address = format!(
        "check `homeserver` in {} (the address Matrix clients use), and that this host \
         can reach it (DNS, firewall, proxy)",
        config.path.display()
    );
    let http = match http() {
        Ok(h) => h,
        Err(e) => {
            report.add(Check::fail(
                "homeserver",
                format!("no HTTP client: {}", chain(&e)),
                "report this as a bug",
            ))?;
            return Ok(false);
        }
    };
    let Ok(versions) = base.join("_matrix/client/versions") else {
        report.add(Check::fail(
            "homeserver",
            format!("{base} is not a base address"),
            fix_address,
        ))?;
        return Ok(false);
    };
    match http.get(versions).send().await {
        Ok(answer) if answer.status().is_success() => {
            let header = answer
                .headers()
                .get(reqwest::header::SERVER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let version = match synapse_version(&http, base).await {
                Some(v) => format!(" (Synapse {v})"),
                None => header.map(|h| format!(" ({h})")).unwrap_or_default(),
            };
            report.add(Check::pass(
                "homeserver",
                format!("{base} reachable{version}"),
            ))?;
            Ok(true)
        }
        Ok(answer) => {
            report.add(Check::fail(
                "homeserver",
                format!(
                    "{base} answered HTTP {} to /_matrix/client/versions",
                    answer.status()
                ),
                format!("{fix_address}; the reverse proxy must pass /_matrix/ to Synapse"),
            ))?;
            Ok(false)
        }
        Err(e) => {
            let text = chain(&e);
            let check = if is_certificate_error(&text) {
                Check::fail(
                    "homeserver",
                    format!(
                        "the homeserver's certificate is not trusted by this system's trust \
                         store ({text})"
                    ),
                    TRUST_FIX,
                )
            } else if e.is_timeout() {
                Check::fail(
                    "homeserver",
                    format!("{base} did not answer within {} s", TIMEOUT.as_secs()),
                    fix_address,
                )
            } else {
                Check::fail(
                    "homeserver",
                    format!("cannot reach {base}: {text}"),
                    fix_address,
                )
            };
            report.add(check)?;
            Ok(false)
        }
    }
}

/// Synapse's version from its (unauthenticated) `server_version` admin endpoint.
async fn synapse_version(http: &reqwest::Client, base: &url::Url) -> Option<String> {
    let url = base.join("_synapse/admin/v1/server_version").ok()?;
    let body: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
    body.get("server_version")?.as_str().map(str::to_owned)
}

/// Logs in as a throwaway device; `None` when that fails.
async fn login(
    config: &Config,
    password: &str,
    report: &mut Report<'_>,
) -> io::Result<Option<Client>> {
    let client = match Client::builder()
        .homeserver_url(config.homeserver.as_str())
        // Every check goes through the configured address, as the bot's requests do
        // once it restores its session: matrix-sdk would otherwise move to the
        // `well_known` base URL a login answer carries (Synapse's `public_baseurl`),
        // past the very proxy the admin check is about.
        .respect_login_well_known(false)
        .request_config(RequestConfig::new().disable_retry().timeout(TIMEOUT))
        .build()
        .await
    {
        Ok(c) => c,
        Err(e) => {
            report.add(Check::fail(
                "login",
                format!("no Matrix client: {e}"),
                "report this as a bug",
            ))?;
            return Ok(None);
        }
    };
    let answer = client
        .matrix_auth()
        .login_username(config.user.as_str(), password)
        .initial_device_display_name(DEVICE_NAME)
        .send()
        .await;
    match answer {
        Ok(response) => {
            report.add(Check::pass(
                "login",
                format!(
                    "{} logged in with the configured password, as a temporary device \
                     \"{DEVICE_NAME}\" ({}), logged out again when the checks end",
                    config.user, response.device_id
                ),
            ))?;
            Ok(Some(client))
        }
        Err(e) => {
            let check = match e.client_api_error_kind() {
                Some(ErrorKind::Forbidden) => Check::fail(
                    "login",
                    format!(
                        "the homeserver refused the password for {} ({e})",
                        config.user
                    ),
                    format!(
                        "put the account's password in what `password` names in {} (or set a \
                         new one: docs/operations.md, \"Rotating the bot's password\")",
                        config.path.display()
                    ),
                ),
                Some(ErrorKind::UserDeactivated) => Check::fail(
                    "login",
                    format!("{} is deactivated", config.user),
                    "reactivate the account (Synapse admin API), or configure another",
                ),
                Some(ErrorKind::UserLocked) => Check::fail(
                    "login",
                    format!("{} is locked", config.user),
                    "unlock the account (Synapse admin API: PUT /_synapse/admin/v2/users/… with \"locked\": false)",
                ),
                _ => Check::fail(
                    "login",
                    format!("logging in {} failed: {e}", config.user),
                    "`homeserver` must be the homeserver's client address, with password login \
                     enabled for the account (docs/deploy.md, step 2)",
                ),
            };
            report.add(check)?;
            Ok(None)
        }
    }
}

/// Shows the saved session's token, if any, to `/account/whoami` (read only: the
/// session is not restored).
async fn saved_session(
    config: &Config,
    secrets: &Secrets,
    report: &mut Report<'_>,
) -> io::Result<()> {
    let path = SessionPaths::new(&config.state_dir).session;
    if !path.exists() {
        report.add(Check::pass(
            "saved session",
            format!(
                "none yet: the first start logs in and writes {}",
                path.display()
            ),
        ))?;
        return Ok(());
    }
    let Some(passphrase) = &secrets.store_passphrase else {
        report.add(Check::skip("saved session", "the store passphrase"))?;
        return Ok(());
    };
    let saved = match read_session(&path, passphrase) {
        Ok(Some(saved)) => saved.session,
        Ok(None) => {
            report.add(Check::pass("saved session", "none yet"))?;
            return Ok(());
        }
        Err(e) => {
            report.add(Check::fail(
                "saved session",
                e.to_string(),
                format!(
                    "`store_passphrase` in {} must name the passphrase cordon first started \
                     with (it also opens the crypto store): put that one back from your \
                     password vault",
                    config.path.display()
                ),
            ))?;
            return Ok(());
        }
    };
    let device = saved.meta.device_id.clone();
    if saved.meta.user_id != config.user {
        report.add(Check::fail(
            "saved session",
            format!(
                "{} belongs to {}, not {}",
                path.display(),
                saved.meta.user_id,
                config.user
            ),
            format!(
                "point `state_dir` in {} at this account's directory",
                config.path.display()
            ),
        ))?;
        return Ok(());
    }
    let Ok(url) = config.homeserver.join("_matrix/client/v3/account/whoami") else {
        return Ok(());
    };
    let answer = match http() {
        Ok(http) => {
            http.get(url)
                .bearer_auth(&saved.tokens.access_token)
                .send()
                .await
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(a) if a.status().is_success() => {
            report.add(Check::pass(
                "saved session",
                format!("the homeserver accepts the saved token of cordon's device {device}"),
            ))?;
        }
        Ok(a) if a.status() == reqwest::StatusCode::UNAUTHORIZED => {
            report.add(Check::warn(
                "saved session",
                format!("the homeserver no longer accepts the saved token of device {device}"),
                "none if the device still exists: cordon logs in again as the same device at \
                 its next start; if the device was deleted, cordon stops and asks for \
                 `cordon recover`",
            ))?;
        }
        Ok(a) => {
            report.add(Check::warn(
                "saved session",
                format!(
                    "/account/whoami answered HTTP {} for device {device}",
                    a.status()
                ),
                "run doctor again; if it persists, read Synapse's log",
            ))?;
        }
        Err(e) => {
            report.add(Check::warn(
                "saved session",
                format!("could not check the saved token: {}", chain(&e)),
                "run doctor again",
            ))?;
        }
    }
    Ok(())
}

/// Checks that cordon's account is a server admin, through the configured address.
async fn admin(config: &Config, client: &Client, report: &mut Report<'_>) -> io::Result<bool> {
    let admin = match SynapseAdmin::for_preflight(client) {
        Ok(a) => a,
        Err(e) => {
            report.add(Check::fail("admin", e.to_string(), "report this as a bug"))?;
            return Ok(false);
        }
    };
    let base = &config.homeserver;
    let (check, ok) = match admin.admin_rights(&config.user).await {
        Ok(AdminRights::Admin) => (
            Check::pass(
                "admin",
                format!(
                    "{} is a server admin, through {base}_synapse/admin/",
                    config.user
                ),
            ),
            true,
        ),
        Ok(AdminRights::NotAdmin) => (
            Check::fail(
                "admin",
                format!(
                    "{} is not a server admin: cordon cannot lift its rate limits or purge \
                     incident rooms at stand-down",
                    config.user
                ),
                "make it a server admin (docs/deploy.md, step 2: `register_new_matrix_user \
                 --admin`, or the admin API's PUT /_synapse/admin/v2/users/<user> with \
                 \"admin\": true)",
            ),
            false,
        ),
        Ok(AdminRights::NotForwarded(code, _)) => (
            Check::fail(
                "admin",
                format!(
                    "{base}_synapse/admin/ answered HTTP {code}: the admin API is not reachable \
                     through this address"
                ),
                "your reverse proxy must forward /_synapse/admin/ to Synapse for cordon's \
                 account (docs/deploy.md, step 3), or point `homeserver` at Synapse's \
                 loopback listener when cordon runs on its host",
            ),
            false,
        ),
        Err(e) => (
            Check::fail(
                "admin",
                e.to_string(),
                "run doctor again; if it persists, read Synapse's log",
            ),
            false,
        ),
    };
    report.add(check)?;
    Ok(ok)
}

/// Reads cordon's rate-limit override (never changes it: cordon lifts its limits
/// itself at start).
async fn rate_limits(config: &Config, client: &Client, report: &mut Report<'_>) -> io::Result<()> {
    let check = match SynapseAdmin::for_preflight(client) {
        Ok(admin) => match admin.rate_limit_override(&config.user).await {
            Ok(RateLimitOverride::Set {
                messages_per_second: 0,
                burst_count: 0,
            }) => Check::pass("rate limits", format!("lifted for {}", config.user)),
            Ok(RateLimitOverride::Set {
                messages_per_second,
                burst_count,
            }) => Check::pass(
                "rate limits",
                format!(
                    "can be lifted: an override of {messages_per_second}/s (burst \
                     {burst_count}) is set now, and cordon lifts it at its start"
                ),
            ),
            Ok(RateLimitOverride::None) => Check::pass(
                "rate limits",
                "can be lifted: Synapse's defaults apply now, and cordon lifts them at its start",
            ),
            Err(e) => Check::fail(
                "rate limits",
                e.to_string(),
                "cordon needs the admin API's override_ratelimit (docs/deploy.md, step 2)",
            ),
        },
        Err(e) => Check::fail("rate limits", e.to_string(), "report this as a bug"),
    };
    report.add(check)?;
    Ok(())
}

/// Checks that the server offers room version 12, and says what its default is.
async fn room_versions(client: &Client, report: &mut Report<'_>) -> io::Result<()> {
    let answer = client.send(get_capabilities::v3::Request::new()).await;
    let versions = match answer {
        Ok(a) => a.capabilities.room_versions,
        Err(e) => {
            report.add(Check::fail(
                "room versions",
                format!("/capabilities: {e}"),
                "run doctor again; if it persists, read Synapse's log",
            ))?;
            return Ok(());
        }
    };
    let wanted = ROOM_VERSION;
    let check = match versions.available.get(&wanted) {
        None => Check::fail(
            "room versions",
            format!(
                "the server does not offer room version {wanted}, which every room cordon \
                 creates asks for (it offers {})",
                list(versions.available.keys())
            ),
            "upgrade Synapse (cordon is tested against 1.163)",
        ),
        Some(RoomVersionStability::Unstable) => Check::warn(
            "room versions",
            format!("the server offers room version {wanted} only as unstable"),
            "upgrade Synapse (cordon is tested against 1.163)",
        ),
        Some(_) if versions.default != wanted => Check::warn(
            "room versions",
            format!(
                "{wanted} is available, but the server's default is {}: cordon asks for \
                 {wanted} in every room it creates, so its incident rooms are {wanted}; \
                 control rooms people create get {}, which cordon handles",
                versions.default, versions.default
            ),
            format!(
                "nothing for cordon; to make {wanted} the default for everyone, set \
                 `default_room_version: \"{wanted}\"` in homeserver.yaml"
            ),
        ),
        Some(_) => Check::pass(
            "room versions",
            format!("{wanted} is available and the server's default"),
        ),
    };
    report.add(check)?;
    Ok(())
}

/// `10, 11, 12`.
fn list<'a>(versions: impl Iterator<Item = &'a RoomVersionId>) -> String {
    versions
        .map(RoomVersionId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that the server's `alias_creation_rules` let cordon create its creation
/// aliases (`#cordon-…`): an alias is asked for a room that does not exist, which
/// Synapse judges against its rules first and then refuses for the room, creating
/// nothing. Needs admin rights (a non-admin must be in the room first).
async fn aliases(config: &Config, client: &Client, report: &mut Report<'_>) -> io::Result<()> {
    let server = config.user.server_name();
    let probe = format!("#cordon-doctor-{:016x}:{server}", rand::random::<u64>());
    let (Ok(alias), Ok(room)) = (
        OwnedRoomAliasId::try_from(probe.as_str()),
        OwnedRoomId::try_from(format!("!cordon-doctor-probe:{server}")),
    ) else {
        return Ok(());
    };
    let answer = client
        .send(create_alias::v3::Request::new(alias.clone(), room))
        .await;
    let check = match answer {
        Ok(_) => {
            // Synapse made it after all: take it away again.
            let delete =
                matrix_sdk::ruma::api::client::alias::delete_alias::v3::Request::new(alias);
            let _ = client.send(delete).await;
            Check::pass("aliases", "cordon may create its rooms' creation aliases")
        }
        Err(e) => match e.as_client_api_error().map(|a| a.status_code.as_u16()) {
            // The rules let it through; the made-up room stopped it.
            Some(400 | 404) => Check::pass(
                "aliases",
                format!(
                    "the server's alias_creation_rules let cordon create its rooms' creation \
                     aliases (asked with {probe} for a room that does not exist; nothing created)"
                ),
            ),
            Some(403) => Check::warn(
                "aliases",
                format!("the homeserver refuses cordon room aliases ({e})"),
                format!(
                    "allow {} in `alias_creation_rules` of homeserver.yaml (docs/deploy.md, \
                     step 3): without its aliases cordon still creates rooms, but a creation \
                     cut short by a crash can leave a second room",
                    config.user
                ),
            ),
            _ => Check::warn(
                "aliases",
                format!("could not tell whether cordon may create aliases: {e}"),
                "run doctor again",
            ),
        },
    };
    report.add(check)?;
    Ok(())
}

/// Logs doctor's throwaway device out.
async fn logout(client: &Client, report: &mut Report<'_>) -> io::Result<()> {
    let device = client
        .device_id()
        .map(ToString::to_string)
        .unwrap_or_default();
    let check = match client.logout().await {
        Ok(_) => Check::pass(
            "logout",
            format!("the temporary device {device} is logged out"),
        ),
        Err(e) => Check::warn(
            "logout",
            format!("could not log out the temporary device {device}: {e}"),
            format!("delete the device \"{DEVICE_NAME}\" in Element (Settings > Sessions)"),
        ),
    };
    report.add(check)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_issuer_is_a_certificate_error() {
        assert!(is_certificate_error(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_certificate_error(
            "error sending request: Connection refused (os error 111)"
        ));
    }
}
