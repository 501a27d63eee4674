//! The FHIR server the stand-down delivers advice to (`fhir.base_url`), when one is
//! configured: its token can be read, and `<base>/metadata` answers with a FHIR R4
//! CapabilityStatement that takes transactions. Only a read (`GET /metadata`): doctor
//! never sends the server anything to store.

use std::io;

use serde_json::Value;

use super::{Check, Report};
use crate::input::config::Config;

const NAME: &str = "FHIR server";

/// Checks the configured FHIR server; says nothing when none is configured.
pub async fn check(config: &Config, report: &mut Report<'_>) -> io::Result<()> {
    let Some(delivery) = &config.fhir.delivery else {
        return Ok(());
    };
    let token = match &delivery.token {
        None => None,
        Some(source) => match source.read() {
            Ok(token) => Some(token),
            Err(e) => {
                report.add(Check::fail(
                    NAME,
                    format!("its token cannot be read: {e}"),
                    format!(
                        "make `fhir.token_file` (or `fhir.token`) in {} name a readable \
                         file holding the bearer token",
                        config.path.display()
                    ),
                ))?;
                return Ok(());
            }
        },
    };
    let url = match delivery.base_url.join("metadata") {
        Ok(url) => url,
        Err(e) => {
            report.add(Check::fail(NAME, e.to_string(), "check `fhir.base_url`"))?;
            return Ok(());
        }
    };
    let http = reqwest::Client::builder()
        .min_tls_version(reqwest::tls::Version::TLS_1_2)
        .timeout(super::server::TIMEOUT)
        .build();
    let mut request = match http {
        Ok(http) => http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/fhir+json"),
        Err(e) => {
            report.add(Check::fail(NAME, e.to_string(), "report this as a bug"))?;
            return Ok(());
        }
    };
    if let Some(token) = &token {
        request = request.bearer_auth(token.expose());
    }
    let answer = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: Option<Value> = response.json().await.ok();
            judge(status, body.as_ref())
        }
        Err(e) => Err((
            format!("{url} did not answer: {}", super::server::chain(&e)),
            "check `fhir.base_url`, and that this host can reach it (DNS, firewall, \
             proxy, certificate)"
                .to_owned(),
        )),
    };
    let check = match answer {
        Ok(Verdict::Good(detail)) => {
            Check::pass(NAME, format!("{detail} at {}", delivery.base_url))
        }
        Ok(Verdict::Doubt(detail, fix)) => {
            Check::warn(NAME, format!("{detail} at {}", delivery.base_url), fix)
        }
        Err((detail, fix)) => Check::fail(NAME, detail, fix),
    };
    report.add(check)?;
    Ok(())
}

/// A server that answered.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// All is as cordon needs.
    Good(String),
    /// It answers, but may not take what cordon sends; and what to do.
    Doubt(String, String),
}

/// What `/metadata`'s answer says: a FHIR R4 server that takes transactions, one that
/// may not, or (`Err`) none at all, with what to do.
fn judge(status: u16, body: Option<&Value>) -> Result<Verdict, (String, String)> {
    match status {
        200..=299 => {}
        401 | 403 => {
            return Err((
                format!("it refused cordon's token (HTTP {status}) for /metadata"),
                "put a valid bearer token in `fhir.token_file`, or ask the FHIR server's \
                 team which one cordon should use"
                    .to_owned(),
            ));
        }
        _ => {
            return Err((
                format!("/metadata answered HTTP {status}"),
                "check `fhir.base_url`: it must be the FHIR server's base, where \
                 `/metadata` answers"
                    .to_owned(),
            ));
        }
    }
    let Some(cs) = body.filter(|b| b["resourceType"] == "CapabilityStatement") else {
        return Err((
            "/metadata did not answer with a CapabilityStatement: it is not a FHIR \
             server's base"
                .to_owned(),
            "check `fhir.base_url`: it must be the FHIR server's base URL".to_owned(),
        ));
    };
    let version = cs["fhirVersion"].as_str().unwrap_or("an unknown version");
    if !(version.starts_with("4.0") || version.starts_with("4.3")) {
        return Ok(Verdict::Doubt(
            format!("it speaks FHIR {version}"),
            "cordon sends FHIR R4 (4.0.1): give it the server's R4 endpoint".to_owned(),
        ));
    }
    let rest = cs["rest"].as_array().cloned().unwrap_or_default();
    let transactions = rest.iter().any(|r| {
        r["interaction"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["code"] == "transaction"))
    });
    if !transactions {
        return Ok(Verdict::Doubt(
            format!("FHIR {version}, but its CapabilityStatement does not list transactions"),
            "cordon POSTs each incident's advice as one transaction: ask the FHIR server's \
             team whether it takes them"
                .to_owned(),
        ));
    }
    let no_conditional = rest.iter().any(|r| {
        r["resource"].as_array().is_some_and(|rs| {
            rs.iter()
                .any(|r| r["type"] == "Communication" && r["conditionalCreate"] == false)
        })
    });
    if no_conditional {
        return Ok(Verdict::Doubt(
            format!("FHIR {version}, but it does not take conditional creates of Communication"),
            "without them a delivery retried after a lost answer may record advice twice: \
             ask the FHIR server's team"
                .to_owned(),
        ));
    }
    Ok(Verdict::Good(format!("FHIR {version}, takes transactions")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn capability(version: &str, interactions: &[&str], conditional: Option<bool>) -> Value {
        let mut resource = json!({ "type": "Communication" });
        if let Some(c) = conditional {
            resource["conditionalCreate"] = json!(c);
        }
        json!({
            "resourceType": "CapabilityStatement",
            "fhirVersion": version,
            "rest": [{
                "mode": "server",
                "interaction": interactions.iter().map(|c| json!({ "code": c })).collect::<Vec<_>>(),
                "resource": [resource],
            }],
        })
    }

    #[test]
    fn an_r4_server_that_takes_transactions_passes_and_anything_less_is_named() {
        let good = capability("4.0.1", &["transaction", "batch"], Some(true));
        assert_eq!(
            judge(200, Some(&good)),
            Ok(Verdict::Good("FHIR 4.0.1, takes transactions".into()))
        );
        assert!(matches!(
            judge(200, Some(&capability("5.0.0", &["transaction"], None))),
            Ok(Verdict::Doubt(d, _)) if d.contains("FHIR 5.0.0")
        ));
        assert!(matches!(
            judge(200, Some(&capability("4.0.1", &["batch"], None))),
            Ok(Verdict::Doubt(d, _)) if d.contains("does not list transactions")
        ));
        assert!(matches!(
            judge(200, Some(&capability("4.0.1", &["transaction"], Some(false)))),
            Ok(Verdict::Doubt(d, _)) if d.contains("conditional creates")
        ));
        assert!(matches!(judge(401, None), Err((d, _)) if d.contains("token")));
        assert!(matches!(judge(404, None), Err((d, _)) if d.contains("HTTP 404")));
        assert!(matches!(
            judge(200, Some(&json!({ "resourceType": "Bundle" }))),
            Err((d, _)) if d.contains("not a FHIR server's base")
        ));
    }
}
