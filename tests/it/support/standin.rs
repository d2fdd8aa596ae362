//! A FreeSWITCH stand-in for the inbound event socket, written from the captures, not from our
//! codec: its framing is hand-written here and its events are the captured ones, with only the
//! call and job ids replaced. Tests script originate outcomes, push events, read back every
//! command it received, and stop and restart it on the same port.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::captures::plain_event_body;
use super::fs_rules::Listener;

/// The call id and job id the captured click2call (`06_*`) used; replaced by ours.
const CAPTURED_CALL: &str = "33c74a7d-a7d7-4947-94d0-d95bac1b228a";
const CAPTURED_BUSY_CALL: &str = "9500c436-b9e7-4e5d-826f-fbd5a5708559";
/// The recording path of capture 06, replaced by the one the originate asked for.
const CAPTURED_RECORDING: &str =
    "/srv/fsdemo/recordings/sip/33c74a7d-a7d7-4947-94d0-d95bac1b228a.wav";

/// What FreeSWITCH does with an originate, as seen in captures 06 and 06b.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The phone rings (CREATE, PROGRESS), answers after `ring`, then the job says +OK.
    Answer { ring: Duration },
    /// 486 Busy: CREATE, HANGUP_COMPLETE, then `-ERR USER_BUSY`.
    Busy,
    /// No channel events at all, only `-ERR <cause>` (e.g. USER_NOT_REGISTERED).
    Fail(&'static str),
    /// FreeSWITCH accepts the bgapi and then says nothing.
    Silent,
    /// Nothing for `after`, then the phone rings and answers at once.
    Late { after: Duration },
}

/// A command as the stand-in read it off the socket.
#[derive(Debug, Clone)]
pub struct Received {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

struct State {
    password: String,
    outcomes: Mutex<HashMap<String, Outcome>>,
    default_outcome: Mutex<Outcome>,
    received: Mutex<Vec<Received>>,
    /// Channels that exist (rang and not hung up), as `uuid_exists` sees them.
    live: Mutex<HashSet<String>>,
    /// Time from the bgapi to CHANNEL_CREATE + CHANNEL_PROGRESS (real: ~20 ms).
    progress_delay: Mutex<Duration>,
    /// Recordings being written, by channel: FreeSWITCH's `record_session`.
    recording: Mutex<HashMap<String, std::path::PathBuf>>,
    /// Whether recordings are written to disk (benchmarks only want the events).
    write_files: std::sync::atomic::AtomicBool,
    /// Extensions with a registered phone, when set: `sofia_contact` answers from it and an
    /// originate to `user/<other>` fails `USER_NOT_REGISTERED`, as FreeSWITCH's do. Unset:
    /// every extension but 1003 is registered.
    registered: Mutex<Option<HashSet<String>>>,
    /// Where this switch's disk is seen from the adapter (an NFS mount): a recording
    /// FreeSWITCH writes at `.0/x` lands in `.1/x`, while its events still say `.0/x`.
    disk: Mutex<Option<(std::path::PathBuf, std::path::PathBuf)>>,
    /// This switch's `Core-UUID`: every event it sends carries it (each FreeSWITCH instance
    /// has its own; the captures' is replaced).
    core_uuid: String,
    /// A hung switch: connections stay open (and new ones are accepted by the kernel), but
    /// nothing is read or written until thawed.
    frozen: tokio::sync::watch::Sender<bool>,
    conns: Mutex<Vec<(Arc<Conn>, JoinHandle<()>)>>,
}

/// One client connection: its write queue and what it subscribed to and filters on.
struct Conn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    listener: Mutex<Listener>,
}

impl Conn {
    fn send(&self, bytes: Vec<u8>) {
        let _ = self.tx.send(bytes);
    }

    /// Like mod_event_socket, writes an event only if this listener's subscription and
    /// filters let it through (see [`Listener::wants`]).
    fn send_event(&self, body: &str) {
        let listener = self.listener.lock().unwrap();
        if listener.wants(body) {
            listener.assert_plain();
            let _ = self.tx.send(event_frame(body));
        }
    }
}

pub struct StandIn {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl StandIn {
    pub async fn start() -> StandIn {
        Self::start_with_password("ClueCon").await
    }

    pub async fn start_with_password(password: &str) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            password: password.into(),
            outcomes: Mutex::new(HashMap::new()),
            default_outcome: Mutex::new(Outcome::Answer {
                ring: Duration::from_millis(0),
            }),
            received: Mutex::new(Vec::new()),
            live: Mutex::new(HashSet::new()),
            progress_delay: Mutex::new(Duration::from_millis(2)),
            recording: Mutex::new(HashMap::new()),
            write_files: std::sync::atomic::AtomicBool::new(true),
            registered: Mutex::new(None),
            disk: Mutex::new(None),
            core_uuid: uuid::Uuid::new_v4().to_string(),
            frozen: tokio::sync::watch::channel(false).0,
            conns: Mutex::new(Vec::new()),
        });
        let accept = Some(tokio::spawn(accept_loop(listener, state.clone())));
        StandIn {
            addr,
            state,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Outcome for originates whose dial string holds `endpoint` (e.g. `user/1002`).
    pub fn script(&self, endpoint: &str, outcome: Outcome) {
        self.state
            .outcomes
            .lock()
            .unwrap()
            .insert(endpoint.into(), outcome);
    }

    /// Whether `record_session` writes files (benchmarks measure the adapter, not the disk).
    pub fn set_write_recordings(&self, on: bool) {
        self.state
            .write_files
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long a ringing phone takes to show CHANNEL_PROGRESS (zero for benchmarks).
    pub fn set_progress_delay(&self, delay: Duration) {
        *self.state.progress_delay.lock().unwrap() = delay;
    }

    pub fn set_default(&self, outcome: Outcome) {
        *self.state.default_outcome.lock().unwrap() = outcome;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Commands whose first line starts with `prefix`.
    pub fn received_lines(&self, prefix: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .map(|r| r.line)
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.state
            .conns
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, h)| !h.is_finished())
            .count()
    }

    /// Sends a plain event (its inner body) to every authenticated connection.
    pub fn emit(&self, body: &str) {
        broadcast(&self.state, body);
    }

    /// The `Core-UUID` in this switch's events.
    pub fn core_uuid(&self) -> &str {
        &self.state.core_uuid
    }

    /// A channel FreeSWITCH now has (a leg the test plays): `uuid_exists` says true and
    /// [`StandIn::hangup`] ends it.
    pub fn answer_channel(&self, leg: &str) {
        self.state.live.lock().unwrap().insert(leg.to_string());
    }

    /// A channel that went away without a word (events lost): `uuid_exists` says false.
    pub fn forget_channel(&self, leg: &str) {
        self.state.live.lock().unwrap().remove(leg);
        self.state.recording.lock().unwrap().remove(leg);
    }

    /// Channels alive now.
    pub fn live_channels(&self) -> Vec<String> {
        self.state.live.lock().unwrap().iter().cloned().collect()
    }

    /// Hangs up a live channel: its CHANNEL_HANGUP_COMPLETE with `cause` goes out.
    pub fn hangup(&self, call: &str, cause: &str) -> bool {
        hangup(&self.state, call, cause)
    }

    /// `record_session path` on channel `leg`: writes the file as FreeSWITCH does while
    /// recording (sizes in the header still zero) and sends RECORD_START.
    pub fn start_recording(&self, leg: &str, path: &std::path::Path) {
        start_recording(&self.state, leg, path);
    }

    /// Closes `leg`'s recording: final header and RECORD_STOP; `discarded` deletes the file
    /// and flags it as FreeSWITCH does for too-short recordings.
    pub fn stop_recording(&self, leg: &str, discarded: bool) -> Option<std::path::PathBuf> {
        stop_recording(&self.state, leg, discarded)
    }

    /// Only these extensions have a registered phone on this switch.
    pub fn set_registered(&self, users: &[&str]) {
        *self.state.registered.lock().unwrap() =
            Some(users.iter().map(|u| u.to_string()).collect());
    }

    /// A phone registers for `user`: FreeSWITCH's `sofia::register` event.
    pub fn register(&self, user: &str) {
        self.state
            .registered
            .lock()
            .unwrap()
            .get_or_insert_with(HashSet::new)
            .insert(user.to_string());
        broadcast(&self.state, &registration_event("sofia::register", user));
    }

    /// `user`'s phone unregisters: `sofia::unregister`.
    pub fn unregister(&self, user: &str) {
        if let Some(set) = self.state.registered.lock().unwrap().as_mut() {
            set.remove(user);
        }
        broadcast(&self.state, &registration_event("sofia::unregister", user));
    }

    /// This switch's `switch_dir` is seen at `local` by the adapter (see `State::disk`).
    pub fn set_disk(&self, switch_dir: &std::path::Path, local: &std::path::Path) {
        *self.state.disk.lock().unwrap() = Some((switch_dir.into(), local.into()));
    }

    /// FreeSWITCH dies mid-recording and the channel goes: the file keeps the header it had
    /// while recording (sizes zero), and no RECORD_STOP is sent, only the hangup.
    pub fn crash_recording(&self, leg: &str) -> Option<std::path::PathBuf> {
        let path = self.state.recording.lock().unwrap().remove(leg)?;
        std::fs::write(on_disk(&self.state, &path), {
            let mut partial = recorded_wav(2);
            partial[4..8].copy_from_slice(&0u32.to_le_bytes());
            partial[40..44].copy_from_slice(&0u32.to_le_bytes());
            partial
        })
        .unwrap();
        hangup(&self.state, leg, "NORMAL_CLEARING");
        Some(path)
    }

    /// FreeSWITCH hangs (a deadlock, a host frozen by the hypervisor): every socket stays
    /// open, nothing is answered, no event goes out, until [`StandIn::thaw`].
    pub fn freeze(&self) {
        self.state.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.state.frozen.send_replace(false);
    }

    /// Sends raw bytes to every connection (for malformed-input tests).
    pub fn emit_raw(&self, bytes: &[u8]) {
        for (c, _) in self.state.conns.lock().unwrap().iter() {
            c.send(bytes.to_vec());
        }
    }

    /// Kills FreeSWITCH: the listener and every connection close at once.
    pub async fn stop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
            let _ = a.await;
        }
        let conns: Vec<_> = self.state.conns.lock().unwrap().drain(..).collect();
        for (_, h) in conns {
            h.abort();
            let _ = h.await;
        }
    }

    /// Starts again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.accept = Some(tokio::spawn(accept_loop(listener, self.state.clone())));
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for (_, h) in self.state.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            tx,
            listener: Mutex::new(Listener::default()),
        });
        let handle = tokio::spawn(serve(sock, state.clone(), conn.clone(), rx));
        state.conns.lock().unwrap().push((conn, handle));
    }
}

fn reply(text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes()
}

fn api_response(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn event_frame(body: &str) -> Vec<u8> {
    format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How long FreeSWITCH waits for `auth` before closing.
const AUTH_DEADLINE: Duration = Duration::from_secs(25);

const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

pub fn disconnect_notice() -> Vec<u8> {
    format!(
        "Content-Type: text/disconnect-notice\nContent-Length: {}\n\n{GOODBYE}",
        GOODBYE.len()
    )
    .into_bytes()
}

/// Percent-encodes a value the way switch_event.c does for plain events.
pub fn fs_encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        let special = b" \r\n#%&+:;<=>?@[\\]^`{|}\"".contains(&b);
        if !(0x20..=0x7e).contains(&b) || special {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// The captured event `name` from `file`, with the captured call id replaced by `call`.
fn captured(file: &str, name: &str, from: &str, call: &str) -> String {
    plain_event_body(file, name).replace(from, call)
}

/// A BACKGROUND_JOB built on the captured one, carrying our job id, argument and result.
pub fn background_job(job: &str, command: &str, arg: &str, result: &str) -> String {
    let template = plain_event_body("06_sip_operator_click2call.rx.raw", "BACKGROUND_JOB");
    let mut out = String::new();
    for line in template.lines() {
        if line.is_empty() {
            break;
        }
        let name = line.split(':').next().unwrap();
        match name {
            "Job-UUID" => out.push_str(&format!("Job-UUID: {job}\n")),
            "Job-Command" => out.push_str(&format!("Job-Command: {}\n", fs_encode(command))),
            "Job-Command-Arg" => out.push_str(&format!("Job-Command-Arg: {}\n", fs_encode(arg))),
            "Content-Length" => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(&format!("Content-Length: {}\n\n{result}", result.len()));
    out
}

async fn serve(
    sock: TcpStream,
    state: Arc<State>,
    conn: Arc<Conn>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let tx = conn.tx.clone();
    let _ = sock.set_nodelay(true);
    let (mut r, mut w) = sock.into_split();
    // Everything written goes through one queue, so frames never interleave. Aborting this
    // connection (stop) aborts its writer too, so the socket really closes even while a
    // job still holds the queue.
    let mut frozen = state.frozen.subscribe();
    let mut frozen_reader = state.frozen.subscribe();
    let writer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let _ = frozen.wait_for(|f| !*f).await;
            if bytes.is_empty() {
                break; // close request
            }
            if w.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    }));
    let _ = tx.send(b"Content-Type: auth/request\n\n".to_vec());
    let mut authed = false;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // FreeSWITCH gives a client 25 s to authenticate (read_packet(..., 25)).
        let next = read_command(&mut r, &mut buf);
        let cmd = if authed {
            next.await
        } else {
            tokio::time::timeout(AUTH_DEADLINE, next)
                .await
                .ok()
                .flatten()
        };
        let Some(cmd) = cmd else {
            break;
        };
        // A hung switch reads nothing more (the command waits in the socket, as in the kernel).
        let _ = frozen_reader.wait_for(|f| !*f).await;
        state.received.lock().unwrap().push(cmd.clone());
        let line = cmd.line.clone();
        let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        if !authed {
            if verb == "auth" {
                if rest == state.password {
                    authed = true;
                    let _ = tx.send(reply("+OK accepted"));
                } else {
                    let _ = tx.send(reply("-ERR invalid"));
                    let _ = tx.send(disconnect_notice());
                    let _ = tx.send(Vec::new());
                    break;
                }
            } else {
                let _ = tx.send(reply("-ERR command not found"));
            }
            continue;
        }
        match verb {
            "event" => {
                let text = conn.listener.lock().unwrap().event(rest);
                let _ = tx.send(reply(&text));
            }
            "nixevent" => {
                let text = conn.listener.lock().unwrap().nixevent(rest);
                let _ = tx.send(reply(&text));
            }
            "noevents" => {
                let text = conn.listener.lock().unwrap().noevents();
                let _ = tx.send(reply(&text));
            }
            "filter" => {
                let text = conn.listener.lock().unwrap().filter(rest);
                let _ = tx.send(reply(&text));
            }
            "api" => {
                let body = match rest {
                    "status" => {
                        "UP 0 years, 0 days\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
                            .to_string()
                    }
                    r if r.starts_with("uuid_getvar") => "-ERR No such channel!\n".to_string(),
                    // The directory the doctor asks about: 1999 does not exist, 1003 exists
                    // without a registered phone (as in captures 03 and 06b).
                    "global_getvar domain" => "127.0.0.1".to_string(),
                    r if r.starts_with("user_exists id ") => (!r.contains(" 1999 ")).to_string(),
                    r if r.starts_with("sofia_contact ")
                        && state.registered.lock().unwrap().is_some() =>
                    {
                        let user = r[14..].split('@').next().unwrap_or("");
                        if state
                            .registered
                            .lock()
                            .unwrap()
                            .as_ref()
                            .unwrap()
                            .contains(user)
                        {
                            format!("sofia/internal/sip:{user}@127.0.0.1:5071")
                        } else {
                            "error/user_not_registered".to_string()
                        }
                    }
                    r if r.starts_with("sofia_contact ") => {
                        if r.contains(" 1003@") {
                            "error/user_not_registered".to_string()
                        } else {
                            format!("sofia/internal/sip:{}:5071", &r[14..])
                        }
                    }
                    r if r.starts_with("uuid_exists ") => {
                        let live = state.live.lock().unwrap().contains(&r[12..]);
                        format!("{live}")
                    }
                    r if r.starts_with("uuid_kill ") => {
                        let mut words = r[10..].split(' ');
                        let call = words.next().unwrap_or("");
                        let cause = words.next().unwrap_or("NORMAL_CLEARING");
                        if hangup(&state, call, cause) {
                            "+OK\n".to_string()
                        } else {
                            "-ERR No such channel!\n".to_string()
                        }
                    }
                    r => format!(
                        "-ERR {} Command not found!\n",
                        r.split(' ').next().unwrap_or("")
                    ),
                };
                let _ = tx.send(api_response(&body));
            }
            "bgapi" => {
                let job = cmd
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("job-uuid"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                // FreeSWITCH builds this reply in 512 bytes holding the id twice: a longer id
                // loses the closing blank line and breaks the framing (PROTOCOL.md a.5).
                assert!(
                    job.len() <= 235,
                    "stand-in: a Job-UUID of {} bytes",
                    job.len()
                );
                let _ = tx.send(reply(&format!("+OK Job-UUID: {job}\nJob-UUID: {job}")));
                tokio::spawn(run_job(state.clone(), job, rest.to_string()));
            }
            "exit" => {
                let _ = tx.send(reply("+OK bye"));
                let _ = tx.send(disconnect_notice());
                let _ = tx.send(Vec::new());
                break;
            }
            // Reply texts of mod_event_socket (PROTOCOL.md a.2). `myevents <uuid>` would bind
            // this connection to one call: the service never does that, so it is refused here
            // rather than modelled.
            "linger" => {
                let text = match rest.trim() {
                    "" => "+OK will linger".to_string(),
                    n => format!("+OK will linger {n} seconds"),
                };
                let _ = tx.send(reply(&text));
            }
            "nolinger" => {
                let _ = tx.send(reply("+OK will not linger"));
            }
            "sendmsg" => {
                let uuid = rest.trim();
                let text = if state.live.lock().unwrap().contains(uuid) {
                    "+OK".to_string()
                } else {
                    format!("-ERR invalid session id [{uuid}]")
                };
                let _ = tx.send(reply(&text));
            }
            "myevents" => panic!("stand-in: myevents on the inbound connection: {line}"),
            _ => {
                let _ = tx.send(reply("-ERR command not found"));
            }
        }
    }
    let _ = writer.await;
}

/// Reads one command: a header block ended by a blank line (leading CR/LF skipped, CR
/// ignored), then a body if it announced a Content-Length.
async fn read_command(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> Option<Received> {
    loop {
        while buf.first().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.remove(0);
        }
        let text: Vec<u8> = buf.iter().copied().filter(|b| *b != b'\r').collect();
        if let Some(end) = text.windows(2).position(|w| w == b"\n\n") {
            let block = String::from_utf8_lossy(&text[..end]).into_owned();
            // Consume up to the blank line in the raw buffer (CRs included).
            let mut seen = 0;
            let mut cut = 0;
            for (i, b) in buf.iter().enumerate() {
                if *b != b'\r' {
                    seen += 1;
                }
                if seen == end + 2 {
                    cut = i + 1;
                    break;
                }
            }
            buf.drain(..cut);
            let mut lines = block.lines();
            let line = lines.next().unwrap_or("").to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.to_string(), v.trim_start().to_string()))
                .collect();
            // FreeSWITCH refuses a negative, non-numeric or over-16 MiB Content-Length
            // (a097e124; before it, a huge one aborted the switch): the service must never
            // send one, so the stand-in fails the test loudly.
            let announced = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| {
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n <= 16 * 1024 * 1024)
                        .unwrap_or_else(|| panic!("stand-in: invalid command Content-Length {v:?}"))
                });
            if let Some(len) = announced {
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
            return Some(Received { line, headers });
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn broadcast(state: &State, body: &str) {
    let body = own_core_uuid(body, &state.core_uuid);
    for (c, _) in state.conns.lock().unwrap().iter() {
        c.send_event(&body);
    }
}

/// `body` with its `Core-UUID` header (if any) saying `core`.
fn own_core_uuid(body: &str, core: &str) -> String {
    let mut out = String::with_capacity(body.len());
    for line in body.split_inclusive('\n') {
        if line.starts_with("Core-UUID: ") {
            out.push_str("Core-UUID: ");
            out.push_str(core);
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The WAV FreeSWITCH leaves: 8 kHz mono 16-bit, one second of a ramp per call.
pub fn recorded_wav(seconds: usize) -> Vec<u8> {
    let samples: Vec<i16> = (0..8000 * seconds).map(|i| (i % 4000) as i16 * 8).collect();
    finaz_freeswitch::recordings::wav::pcm_wav(&samples)
}

/// Where a file FreeSWITCH writes at `path` really is (see `State::disk`).
fn on_disk(state: &State, path: &std::path::Path) -> std::path::PathBuf {
    match &*state.disk.lock().unwrap() {
        Some((switch, local)) => match path.strip_prefix(switch) {
            Ok(rest) => local.join(rest),
            Err(_) => path.to_path_buf(),
        },
        None => path.to_path_buf(),
    }
}

/// A `sofia::register` / `sofia::unregister` event as mod_sofia fires it (plain format:
/// values URL-encoded).
fn registration_event(subclass: &str, user: &str) -> String {
    format!(
        "Event-Name: CUSTOM\nCore-UUID: 2f9c6b9e-3c3c-4a55-9f7e-6d0b1f6a1c11\nFreeSWITCH-Hostname: fs\n\
         Event-Subclass: {}\nEvent-Date-Timestamp: 1764590000000000\nprofile-name: internal\n\
         from-user: {user}\nfrom-host: 127.0.0.1\nusername: {user}\nrealm: 127.0.0.1\n\
         contact: {}\nexpires: 3600\n\n",
        fs_encode(subclass),
        fs_encode(&format!("\"user\" <sip:{user}@127.0.0.1:5071>")),
    )
}

fn start_recording(state: &State, leg: &str, path: &std::path::Path) {
    if state.write_files.load(std::sync::atomic::Ordering::Relaxed) {
        let path = &on_disk(state, path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // While recording, the sizes in the header are not written yet.
        let mut partial = recorded_wav(1);
        partial[4..8].copy_from_slice(&0u32.to_le_bytes());
        partial[40..44].copy_from_slice(&0u32.to_le_bytes());
        std::fs::write(path, &partial).unwrap();
    }
    state
        .recording
        .lock()
        .unwrap()
        .insert(leg.to_string(), path.to_path_buf());
    let body = plain_event_body("06_sip_operator_click2call.rx.raw", "RECORD_START")
        .replace(CAPTURED_RECORDING, &fs_encode(&path.display().to_string()))
        .replace(CAPTURED_CALL, leg);
    broadcast(state, &body);
}

fn stop_recording(state: &State, leg: &str, discarded: bool) -> Option<std::path::PathBuf> {
    let path = state.recording.lock().unwrap().remove(leg)?;
    let mut body = plain_event_body("06_sip_operator_click2call.rx.raw", "RECORD_STOP")
        .replace(CAPTURED_RECORDING, &fs_encode(&path.display().to_string()))
        .replace(CAPTURED_CALL, leg);
    let disk = on_disk(state, &path);
    if discarded {
        std::fs::remove_file(&disk).unwrap();
        body = body.replace(
            "Record-Completion-Cause: success-silence\n",
            "Record-Completion-Cause: success-silence\nvariable_RECORD_DISCARDED: true\n",
        );
    } else {
        std::fs::write(&disk, recorded_wav(3)).unwrap();
    }
    broadcast(state, &body);
    Some(path)
}

/// Ends a live channel as FreeSWITCH does: RECORD_STOP for its recording, then
/// CHANNEL_HANGUP_COMPLETE with the cause.
fn hangup(state: &State, call: &str, cause: &str) -> bool {
    if !state.live.lock().unwrap().remove(call) {
        return false;
    }
    stop_recording(state, call, false);
    let body = captured(
        "06_sip_operator_click2call.rx.raw",
        "CHANNEL_HANGUP_COMPLETE",
        CAPTURED_CALL,
        call,
    )
    .replace(
        "Hangup-Cause: NORMAL_CLEARING",
        &format!("Hangup-Cause: {cause}"),
    );
    for (c, _) in state.conns.lock().unwrap().iter() {
        c.send_event(&body);
    }
    true
}

/// Plays a background job as FreeSWITCH would, events first, result last.
async fn run_job(state: Arc<State>, job: String, arg: String) {
    let (command, args) = arg.split_once(' ').unwrap_or((arg.as_str(), ""));
    // BACKGROUND_JOB is fired on the global bus: every listener subscribed to it (and whose
    // filters pass it) gets every job's result, the issuing connection included.
    if command != "originate" {
        broadcast(&state, &background_job(&job, command, args, "+OK\n"));
        return;
    }
    let call = args
        .split("origination_uuid=")
        .nth(1)
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
                .collect::<String>()
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // `user/<ext>` whose phone is not registered here: FreeSWITCH fails the originate.
    let unregistered = state
        .registered
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|set| {
            args.split("user/")
                .nth(1)
                .map(|rest| {
                    rest.chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect::<String>()
                })
                .is_some_and(|user| !set.contains(&user))
        });
    let outcome = if unregistered {
        Outcome::Fail("USER_NOT_REGISTERED")
    } else {
        let scripted = state.outcomes.lock().unwrap();
        scripted
            .iter()
            .find(|(k, _)| args.contains(k.as_str()))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| state.default_outcome.lock().unwrap().clone())
    };
    let send = |body: String| broadcast(&state, &body);
    let ok = "06_sip_operator_click2call.rx.raw";
    let busy = "06b_sip_operator_busy_unregistered.rx.raw";
    let (outcome, before) = match outcome {
        Outcome::Late { after } => (
            Outcome::Answer {
                ring: Duration::ZERO,
            },
            after,
        ),
        o => (o, Duration::ZERO),
    };
    if !before.is_zero() {
        tokio::time::sleep(before).await;
    }
    match outcome {
        Outcome::Answer { ring } => {
            // Real FreeSWITCH: CREATE and PROGRESS ~20 ms after the INVITE.
            let delay = *state.progress_delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            state.live.lock().unwrap().insert(call.clone());
            send(captured(ok, "CHANNEL_CREATE", CAPTURED_CALL, &call));
            send(captured(ok, "CHANNEL_PROGRESS", CAPTURED_CALL, &call));
            tokio::time::sleep(ring).await;
            if !state.live.lock().unwrap().contains(&call) {
                // Killed while ringing: the originate fails with the kill's cause.
                send(background_job(
                    &job,
                    "originate",
                    args,
                    "-ERR ORIGINATOR_CANCEL\n",
                ));
                return;
            }
            send(captured(ok, "CHANNEL_ANSWER", CAPTURED_CALL, &call));
            // execute_on_answer='record_session <path>' starts recording at the answer.
            if let Some(path) = args
                .split("execute_on_answer='record_session ")
                .nth(1)
                .and_then(|r| r.split('\'').next())
            {
                start_recording(&state, &call, std::path::Path::new(path));
            }
            send(background_job(
                &job,
                "originate",
                args,
                &format!("+OK {call}\n"),
            ));
        }
        Outcome::Busy => {
            send(captured(busy, "CHANNEL_CREATE", CAPTURED_BUSY_CALL, &call));
            send(captured(
                busy,
                "CHANNEL_HANGUP_COMPLETE",
                CAPTURED_BUSY_CALL,
                &call,
            ));
            send(background_job(&job, "originate", args, "-ERR USER_BUSY\n"));
        }
        Outcome::Fail(cause) => {
            send(background_job(
                &job,
                "originate",
                args,
                &format!("-ERR {cause}\n"),
            ));
        }
        Outcome::Silent | Outcome::Late { .. } => {}
    }
}
