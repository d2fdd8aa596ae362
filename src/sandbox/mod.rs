//! The sandbox's FreeSWITCH: a small simulated PBX that speaks the real event socket protocol
//! (auth, event subscriptions, `api`, `bgapi originate`, the outbound `socket` hand-off), so
//! Finaz can exercise all three flows against the real service without a PBX.
//!
//! Calls play out in a few seconds: the operator's phone rings (CHANNEL_PROGRESS), answers
//! after a second, is recorded (a generated tone, a valid WAV, with RECORD_START /
//! RECORD_STOP as FreeSWITCH sends them) and hangs up. Extensions named `busy` and `offline`
//! answer `USER_BUSY` and `USER_NOT_REGISTERED`, to try the error answers.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod handoff;
mod inbound;
mod listener;

use inbound::serve;
use listener::Listener;

use crate::domain::layout::RecordingLayout;
use crate::recordings::wav::pcm_wav;
use crate::storage::now_ms;

/// How long an answered sandbox call lasts.
const CALL_LENGTH: Duration = Duration::from_secs(3);
/// How long the operator's phone rings before answering.
const RING: Duration = Duration::from_secs(1);

/// A dialer call to play (`POST /sandbox/dialer` on the admin listener).
#[derive(Clone, serde::Deserialize)]
pub struct DialerCall {
    pub crm_id: String,
    #[serde(default)]
    pub telefone: Option<String>,
    #[serde(default)]
    pub ramal: Option<String>,
}

impl std::fmt::Debug for DialerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialerCall")
            .field("crm_id", &self.crm_id)
            .field(
                "telefone",
                &crate::domain::values::MaskedPhone(self.telefone.as_deref()),
            )
            .field("ramal", &self.ramal)
            .finish()
    }
}

/// What a played dialer call was.
#[derive(Debug, Clone)]
pub struct Played {
    pub call_id: String,
}

struct Conn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    listener: Mutex<Listener>,
}

/// The simulated FreeSWITCH.
pub struct Simulator {
    addr: SocketAddr,
    password: String,
    recordings: RecordingLayout,
    conns: Mutex<Vec<Arc<Conn>>>,
    live: Mutex<HashSet<String>>,
}

impl Simulator {
    /// Listens on 127.0.0.1 (a free port) with `password`; dialer calls are recorded where
    /// `recordings` says (click2calls where their originate says).
    pub async fn start(
        password: &str,
        recordings: RecordingLayout,
    ) -> anyhow::Result<Arc<Simulator>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let sim = Arc::new(Simulator {
            addr: listener.local_addr()?,
            password: password.to_string(),
            recordings,
            conns: Mutex::new(Vec::new()),
            live: Mutex::new(HashSet::new()),
        });
        let s = sim.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(s.clone(), sock));
            }
        });
        Ok(sim)
    }

    /// The event socket address to give the service.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn broadcast(&self, name: &str, body: &str) {
        let frame = event_frame(body);
        for c in self.conns.lock().expect("lock").iter() {
            if c.listener.lock().expect("lock").wants(name, None) {
                let _ = c.tx.send(frame.clone().into_bytes());
            }
        }
    }

    /// Plays an answered dialer call: hands it to the service's outbound socket server as
    /// FreeSWITCH's `socket` app does, and records it.
    pub async fn dialer_call(
        self: &Arc<Self>,
        dialer: SocketAddr,
        call: DialerCall,
    ) -> anyhow::Result<Played> {
        let id = uuid::Uuid::new_v4().to_string();
        let telefone = call.telefone.unwrap_or_else(|| "41988445566".into());
        let ramal = call.ramal.unwrap_or_else(|| "1001".into());
        let vars = [
            ("finaz_crm_id", call.crm_id.as_str()),
            ("finaz_telefone", telefone.as_str()),
            ("finaz_ramal", ramal.as_str()),
        ];
        let mut data = channel_headers("CHANNEL_DATA", &id, "outbound", &telefone, &vars);
        data.push_str("Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n");
        let path = self.recordings.path(&id, now_ms());
        self.start_recording(&id, &path, &vars)?;
        let park = event_frame(
            &(channel_headers("CHANNEL_PARK", &id, "outbound", &telefone, &vars) + "\n"),
        );
        // The adapter closes once the webhook is stored and the channel parked; the call goes on.
        match handoff::run(dialer, &id, &data, &park).await? {
            handoff::Released::AfterPark => {}
            other => {
                tracing::warn!(call_id = %id, released = ?other, "sandbox: dialer hand-off not released after the park")
            }
        }
        let (sim, call) = (self.clone(), id.clone());
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::spawn(async move {
            tokio::time::sleep(CALL_LENGTH).await;
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            sim.end_call(&call, &telefone, Some(&path), &vars);
        });
        tracing::info!(call_id = %id, "sandbox: dialer call handed to the adapter");
        Ok(Played { call_id: id })
    }

    fn start_recording(&self, id: &str, path: &Path, vars: &[(&str, &str)]) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating {} for sandbox recordings", dir.display()))?;
        }
        // While recording, FreeSWITCH's header does not hold the sizes yet.
        let mut partial = tone(1);
        partial[4..8].copy_from_slice(&0u32.to_le_bytes());
        partial[40..44].copy_from_slice(&0u32.to_le_bytes());
        std::fs::write(path, partial)?;
        let mut ev = channel_headers("RECORD_START", id, "outbound", "", vars);
        ev.push_str(&format!(
            "Record-File-Path: {}\n\n",
            encode(&path.display().to_string())
        ));
        self.broadcast("RECORD_START", &ev);
        self.live.lock().expect("lock").insert(id.to_string());
        Ok(())
    }

    fn end_call(&self, id: &str, number: &str, path: Option<&Path>, vars: &[(&str, &str)]) {
        if !self.live.lock().expect("lock").remove(id) {
            return;
        }
        if let Some(path) = path {
            let _ = std::fs::write(path, tone(CALL_LENGTH.as_secs() as usize));
            let mut ev = channel_headers("RECORD_STOP", id, "outbound", number, vars);
            ev.push_str(&format!(
                "Record-File-Path: {}\nRecord-Completion-Cause: success-silence\n\n",
                encode(&path.display().to_string())
            ));
            self.broadcast("RECORD_STOP", &ev);
        }
        let mut ev = channel_headers("CHANNEL_HANGUP_COMPLETE", id, "outbound", number, vars);
        ev.push_str("Hangup-Cause: NORMAL_CLEARING\n\n");
        self.broadcast("CHANNEL_HANGUP_COMPLETE", &ev);
    }

    /// Plays `originate {...}user/<ramal> <number> ...` as FreeSWITCH would.
    async fn originate(self: Arc<Self>, job: String, args: String) {
        let field = |key: &str| {
            args.split(key)
                .nth(1)
                .map(|r| r.split([',', '}']).next().unwrap_or("").to_string())
        };
        let id = field("origination_uuid=").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let ramal = args
            .split("}user/")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("")
            .to_string();
        let number = args
            .split('}')
            .nth(1)
            .and_then(|r| r.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let record = args
            .split("record_session ")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .map(PathBuf::from);
        // BACKGROUND_JOB goes out on the global bus: to every connection subscribed to it.
        let result = |body: &str| {
            let inner = format!(
                "Event-Name: BACKGROUND_JOB\nJob-UUID: {job}\nJob-Command: originate\nContent-Length: {}\n\n{body}",
                body.len()
            );
            self.broadcast("BACKGROUND_JOB", &inner);
        };
        let vars = [
            ("finaz_callid", id.as_str()),
            ("finaz_ramal", ramal.as_str()),
        ];
        match ramal.as_str() {
            "offline" => return result("-ERR USER_NOT_REGISTERED\n"),
            "busy" => {
                self.broadcast(
                    "CHANNEL_CREATE",
                    &(channel_headers("CHANNEL_CREATE", &id, "outbound", &ramal, &vars) + "\n"),
                );
                let mut ev =
                    channel_headers("CHANNEL_HANGUP_COMPLETE", &id, "outbound", &ramal, &vars);
                ev.push_str("Hangup-Cause: USER_BUSY\n\n");
                self.broadcast("CHANNEL_HANGUP_COMPLETE", &ev);
                return result("-ERR USER_BUSY\n");
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.live.lock().expect("lock").insert(id.clone());
        for name in ["CHANNEL_CREATE", "CHANNEL_PROGRESS"] {
            self.broadcast(
                name,
                &(channel_headers(name, &id, "outbound", &ramal, &vars) + "\n"),
            );
        }
        tokio::time::sleep(RING).await;
        self.broadcast(
            "CHANNEL_ANSWER",
            &(channel_headers("CHANNEL_ANSWER", &id, "outbound", &ramal, &vars) + "\n"),
        );
        if let Some(path) = &record
            && let Err(e) = self.start_recording(&id, path, &vars)
        {
            tracing::warn!(error = %e, "sandbox: cannot record");
        }
        result(&format!("+OK {id}\n"));
        tokio::time::sleep(CALL_LENGTH).await;
        self.end_call(&id, &number, record.as_deref(), &vars);
    }
}

/// A tone of `seconds` at 8 kHz, 16-bit mono: what a sandbox recording holds.
fn tone(seconds: usize) -> Vec<u8> {
    let samples: Vec<i16> = (0..8000 * seconds)
        .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin() * 8000.0) as i16)
        .collect();
    pcm_wav(&samples)
}

/// Percent-encodes a header value as FreeSWITCH does.
fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_./".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The headers every channel event carries (without the closing blank line).
fn channel_headers(
    name: &str,
    id: &str,
    direction: &str,
    number: &str,
    vars: &[(&str, &str)],
) -> String {
    let mut h = format!(
        "Event-Name: {name}\nCore-UUID: 5a4db5b6-0000-4000-8000-5a4db5b60000\nFreeSWITCH-Hostname: sandbox\nEvent-Date-Timestamp: {}\nUnique-ID: {id}\nChannel-Name: sofia/sandbox/{}\nCall-Direction: {direction}\nCaller-Destination-Number: {}\n",
        now_ms() * 1000,
        encode(number),
        encode(number)
    );
    for (k, v) in vars {
        h.push_str(&format!("variable_{k}: {}\n", encode(v)));
    }
    h
}

/// A plain event frame around `body` (the event's own header block).
pub(super) fn event_frame(body: &str) -> String {
    format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    )
}
