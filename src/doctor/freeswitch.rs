//! The doctor's FreeSWITCH checks, over a plain event socket connection of their own: the
//! socket answers, the password works, job results arrive, the operator's extension exists.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::Check;
use crate::config::Config;
use crate::esl::{Command, ContentType, EslCodec, EventFormat, Frame};

type Esl = Framed<TcpStream, EslCodec>;

async fn next(esl: &mut Esl, timeout: Duration) -> Result<Frame, String> {
    loop {
        match tokio::time::timeout(timeout, esl.next()).await {
            Err(_) => return Err(format!("no answer within {}s", timeout.as_secs())),
            Ok(None) => return Err("FreeSWITCH closed the connection".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            // Events may come before the reply: skip them.
            Ok(Some(Ok(f))) if f.content_type.is_event() => continue,
            Ok(Some(Ok(f))) => return Ok(f),
        }
    }
}

async fn send(esl: &mut Esl, cmd: Command, timeout: Duration) -> Result<Frame, String> {
    esl.send(cmd).await.map_err(|e| e.to_string())?;
    next(esl, timeout).await
}

async fn api(esl: &mut Esl, cmd: &str, timeout: Duration) -> Result<String, String> {
    let c = Command::api(cmd).map_err(|e| e.to_string())?;
    Ok(send(esl, c, timeout).await?.body_text().trim().to_string())
}

pub(super) async fn freeswitch_checks(
    config: &Config,
    node: &crate::config::NodeConfig,
    ramal: Option<&str>,
) -> Vec<Check> {
    let fs = &config.freeswitch;
    let t = fs.connect_timeout;
    let mut out = Vec::new();
    let addr = &node.address;
    let tcp = match tokio::time::timeout(t, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            out.push(Check::fail(
                "event socket reachable",
                format!("{addr}: {e}"),
                "start FreeSWITCH with mod_event_socket (freeswitch/event_socket.conf.xml) and make freeswitch.address match its listen-ip:listen-port",
            ));
            return out;
        }
        Err(_) => {
            out.push(Check::fail(
                "event socket reachable",
                format!("{addr}: no answer within {}s", t.as_secs()),
                "check the address and any firewall between the adapter and FreeSWITCH",
            ));
            return out;
        }
    };
    out.push(Check::ok("event socket reachable", addr.clone()));
    let mut esl = Framed::new(tcp, EslCodec::default());
    match next(&mut esl, t).await {
        Ok(f) if f.content_type == ContentType::AuthRequest => {}
        Ok(f)
            if matches!(
                f.content_type,
                ContentType::DisconnectNotice | ContentType::RudeRejection
            ) =>
        {
            out.push(Check::fail(
                "password accepted",
                format!(
                    "FreeSWITCH refused the connection: {}",
                    f.body_text().trim()
                ),
                "the event socket ACL (apply-inbound-acl) does not admit this host",
            ));
            return out;
        }
        other => {
            out.push(Check::fail(
                "password accepted",
                format!("no auth/request from {addr}: {other:?}"),
                "freeswitch.address must point at mod_event_socket, not another service",
            ));
            return out;
        }
    }
    let auth = Command::auth(node.password.expose()).map_err(|e| e.to_string());
    match match auth {
        Ok(c) => send(&mut esl, c, t).await,
        Err(e) => Err(e),
    } {
        Ok(f) if f.is_ok() => out.push(Check::ok("password accepted", "authenticated")),
        Ok(f) => {
            out.push(Check::fail(
                "password accepted",
                format!("FreeSWITCH answered {}", f.reply_text().unwrap_or_default()),
                "set freeswitch.password (or FINAZ_FREESWITCH__PASSWORD) to the password in event_socket.conf.xml",
            ));
            return out;
        }
        Err(e) => {
            out.push(Check::fail(
                "password accepted",
                e,
                "check FreeSWITCH's log",
            ));
            return out;
        }
    }
    let subscription = crate::nodes::subscription(config.nodes.len() > 1);
    let events = Command::event(EventFormat::Plain, &subscription);
    match match events {
        Ok(c) => send(&mut esl, c, t).await,
        Err(e) => Err(e.to_string()),
    } {
        Ok(f) if f.is_ok() => out.push(Check::ok(
            "events subscribed",
            format!("{} event names", subscription.len()),
        )),
        Ok(f) => out.push(Check::fail(
            "events subscribed",
            format!("FreeSWITCH answered {}", f.reply_text().unwrap_or_default()),
            "check that mod_event_socket is loaded and not restricted",
        )),
        Err(e) => out.push(Check::fail(
            "events subscribed",
            e,
            "check FreeSWITCH's log",
        )),
    }
    out.push(job_check(&mut esl, t).await);
    out.push(operator_check(&mut esl, &fs.operator_endpoint, ramal, t).await);
    let _ = esl.send(Command::exit()).await;
    out
}

/// A `bgapi status` must come back as a `BACKGROUND_JOB` on the service's subscription:
/// without it every failed click2call waits for a 504 instead of its 404/409.
async fn job_check(esl: &mut Esl, t: Duration) -> Check {
    const NAME: &str = "job results arrive";
    let job = uuid::Uuid::new_v4().to_string();
    let cmd = match Command::bgapi("status", &job) {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, e.to_string(), "report this as a bug"),
    };
    match send(esl, cmd, t).await {
        Ok(f) if f.is_ok() => {}
        Ok(f) => {
            return Check::fail(
                NAME,
                format!("bgapi refused: {}", f.reply_text().unwrap_or_default()),
                "allow bgapi for the adapter's ESL user (esl-allowed-api)",
            );
        }
        Err(e) => return Check::fail(NAME, e, "check FreeSWITCH's log"),
    }
    let started = std::time::Instant::now();
    let wait = async {
        loop {
            match esl.next().await {
                Some(Ok(f)) if f.content_type.is_event() => {
                    let Ok(e) = crate::esl::Event::from_frame(&f) else {
                        continue;
                    };
                    if e.name().as_deref() == Some("BACKGROUND_JOB")
                        && e.job_uuid().as_deref() == Some(job.as_str())
                    {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("FreeSWITCH closed the connection".to_string()),
            }
        }
    };
    match tokio::time::timeout(t, wait).await {
        Ok(Ok(())) => Check::ok(
            NAME,
            format!(
                "bgapi status answered in {} ms",
                started.elapsed().as_millis()
            ),
        ),
        Ok(Err(e)) => Check::fail(NAME, e, "check FreeSWITCH's log"),
        Err(_) => Check::fail(
            NAME,
            format!(
                "the bgapi was accepted but no BACKGROUND_JOB came within {}s: failed click2calls would all be 504",
                t.as_secs()
            ),
            "allow BACKGROUND_JOB for the adapter's ESL user (esl-allowed-events) and remove event filters on it",
        ),
    }
}

/// `user/{ramal}` endpoints: the user must exist and have a registered phone.
async fn operator_check(esl: &mut Esl, endpoint: &str, ramal: Option<&str>, t: Duration) -> Check {
    const NAME: &str = "operator endpoint";
    let Some(ramal) = ramal else {
        return Check::skipped(
            NAME,
            "give --ramal EXTENSION to try freeswitch.operator_endpoint with one",
        );
    };
    if !endpoint.starts_with("user/") {
        return Check::skipped(
            NAME,
            format!("{endpoint:?} is not a user/ endpoint; try a click2call"),
        );
    }
    let domain = match api(esl, "global_getvar domain", t).await {
        Ok(d) if !d.is_empty() && !d.starts_with("-ERR") => d,
        Ok(d) => {
            return Check::fail(
                NAME,
                format!("global_getvar domain: {d}"),
                "set the domain variable in vars.xml",
            );
        }
        Err(e) => return Check::fail(NAME, e, "check FreeSWITCH's log"),
    };
    match api(esl, &format!("user_exists id {ramal} {domain}"), t).await {
        Ok(r) if r == "true" => {}
        Ok(_) => {
            return Check::fail(
                NAME,
                format!(
                    "user {ramal}@{domain} does not exist (click2call would answer 404 SUBSCRIBER_ABSENT)"
                ),
                "add the operator to FreeSWITCH's directory, or fix freeswitch.operator_endpoint",
            );
        }
        Err(e) => return Check::fail(NAME, e, "check FreeSWITCH's log"),
    }
    match api(esl, &format!("sofia_contact {ramal}@{domain}"), t).await {
        Ok(c) if c.starts_with("error/") || c.starts_with("-ERR") => Check::fail(
            NAME,
            format!("{ramal}@{domain} exists but no phone is registered ({c})"),
            "register the operator's phone (click2call would answer 404 USER_NOT_REGISTERED)",
        ),
        Ok(c) => Check::ok(NAME, format!("user/{ramal} -> {c}")),
        Err(e) => Check::fail(NAME, e, "check FreeSWITCH's log"),
    }
}
