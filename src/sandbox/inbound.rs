//! One connection to the simulated inbound event socket: `auth`, then commands (`event`,
//! `api`, `bgapi originate`, ...) answered as FreeSWITCH answers them, and events pushed as
//! the simulated calls play out.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::*;

pub(super) async fn serve(sim: Arc<Simulator>, sock: TcpStream) {
    let (mut r, mut w) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let conn = Arc::new(Conn {
        tx,
        listener: Mutex::new(Listener::default()),
    });
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if b.is_empty() || w.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let reply =
        |text: &str| format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes();
    let _ = conn.tx.send(b"Content-Type: auth/request\n\n".to_vec());
    let mut authed = false;
    let mut buf = Vec::new();
    loop {
        let Some((line, headers)) = read_command(&mut r, &mut buf).await else {
            break;
        };
        let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        if !authed {
            if verb == "auth" && rest == sim.password {
                authed = true;
                sim.conns.lock().expect("lock").push(conn.clone());
                let _ = conn.tx.send(reply("+OK accepted"));
            } else if verb == "auth" {
                let _ = conn.tx.send(reply("-ERR invalid"));
                let _ = conn.tx.send(disconnect_notice());
                break;
            } else {
                let _ = conn.tx.send(reply("-ERR command not found"));
            }
            continue;
        }
        match verb {
            "event" => {
                let text = conn.listener.lock().expect("lock").event(rest);
                let _ = conn.tx.send(reply(&text));
            }
            "nixevent" => {
                let text = conn.listener.lock().expect("lock").nixevent(rest);
                let _ = conn.tx.send(reply(&text));
            }
            "noevents" => {
                let text = conn.listener.lock().expect("lock").noevents();
                let _ = conn.tx.send(reply(&text));
            }
            "api" => {
                let body = if rest == "status" {
                    "UP 0 years, 0 days\nFreeSWITCH (sandbox of finaz-freeswitch) is ready\n"
                        .to_string()
                } else if let Some(id) = rest.strip_prefix("uuid_exists ") {
                    sim.live
                        .lock()
                        .expect("lock")
                        .contains(id.trim())
                        .to_string()
                } else if let Some(args) = rest.strip_prefix("uuid_kill ") {
                    let id = args.split(' ').next().unwrap_or("");
                    if sim.live.lock().expect("lock").contains(id) {
                        sim.end_call(id, "", None, &[]);
                        "+OK\n".to_string()
                    } else {
                        "-ERR No such channel!\n".to_string()
                    }
                } else if rest.starts_with("sofia_contact ") {
                    "sofia/sandbox/sip:1001@127.0.0.1:5060\n".to_string()
                } else {
                    format!(
                        "-ERR {} Command not found!\n",
                        rest.split(' ').next().unwrap_or("")
                    )
                };
                let _ = conn.tx.send(
                    format!(
                        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
                        body.len()
                    )
                    .into_bytes(),
                );
            }
            "bgapi" => {
                let job = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("Job-UUID"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let _ = conn
                    .tx
                    .send(reply(&format!("+OK Job-UUID: {job}\nJob-UUID: {job}")));
                if let Some(args) = rest.strip_prefix("originate ") {
                    tokio::spawn(sim.clone().originate(job, args.to_string()));
                }
            }
            "exit" => {
                let _ = conn.tx.send(reply("+OK bye"));
                let _ = conn.tx.send(disconnect_notice());
                break;
            }
            // Filters, log levels and the rest are not simulated: refused, as FreeSWITCH
            // refuses a command it does not know, rather than acknowledged and ignored.
            _ => {
                let _ = conn.tx.send(reply("-ERR command not found"));
            }
        }
    }
    sim.conns
        .lock()
        .expect("lock")
        .retain(|c| !Arc::ptr_eq(c, &conn));
    let _ = conn.tx.send(Vec::new());
    let _ = writer.await;
}

/// FreeSWITCH's goodbye before it closes a connection (`exit`, failed auth).
fn disconnect_notice() -> Vec<u8> {
    const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
    format!(
        "Content-Type: text/disconnect-notice\nContent-Length: {}\n\n{GOODBYE}",
        GOODBYE.len()
    )
    .into_bytes()
}

/// One command: its first line and headers; a body announced by Content-Length is skipped.
async fn read_command(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<(String, String)>)> {
    loop {
        while buf.first().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.remove(0);
        }
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block = String::from_utf8_lossy(&buf[..end]).replace('\r', "");
            buf.drain(..end + 2);
            let mut lines = block.lines();
            let line = lines.next().unwrap_or("").to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect();
            if let Some(len) = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
                .and_then(|(_, v)| v.parse::<usize>().ok())
            {
                while buf.len() < len {
                    let mut chunk = [0u8; 4096];
                    let n = r.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..len);
            }
            return Some((line, headers));
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
