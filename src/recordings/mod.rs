//! Recordings: learns from FreeSWITCH's events where each call's WAV is, and finds the one
//! file a call id may download — complete, a real WAV, and under `recordings.dir`.
//!
//! Sources, best first: RECORD_START / RECORD_STOP of any leg of the call (legs are joined by
//! click2call, the dialer report and CHANNEL_BRIDGE); the path click2call chose; the
//! configured path template for each leg. A recording is "in progress" from RECORD_START
//! until RECORD_STOP or its leg's hangup; a file found without events is in progress while a
//! leg of the call still exists in FreeSWITCH.

pub mod reconcile;
pub mod wav;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::config::RecordingsConfig;
use crate::domain::layout::RecordingLayout;
use crate::domain::values::{CallId, Telefone};
use crate::esl::Client;
use crate::nodes::{Node, Nodes};
use crate::storage::{CallState, RecordingEvent, RecordingState, Storage, StorageError};
use wav::{WavError, WavLayout};

/// Why no file is served.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// No such call, or the telefone given is not the call's (indistinguishable on purpose).
    #[error("unknown call")]
    UnknownCall,
    #[error("the call has no recording")]
    NoRecording,
    #[error("the recording was discarded by FreeSWITCH ({0})")]
    Discarded(String),
    #[error("the recording is still being written")]
    InProgress,
    #[error("the recording's path is outside recordings.dir")]
    OutsideDir(PathBuf),
    #[error("the recording is not a usable WAV file: {0}")]
    NotWav(#[from] WavError),
    #[error("reading the recording: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A recording ready to stream: the open file, its size and date, and its WAV layout.
#[derive(Debug)]
pub struct RecordingFile {
    pub path: PathBuf,
    pub file: tokio::fs::File,
    pub len: u64,
    pub modified: SystemTime,
    /// Identity of this version of the file (size, date, inode) for ETags.
    pub version: (u64, u128, u64),
    pub layout: WavLayout,
}

#[derive(Clone)]
pub struct Recordings {
    storage: Storage,
    nodes: Nodes,
    layout: RecordingLayout,
}

/// The node a call is on, as the search needs it: who to ask whether a leg still exists,
/// where its files are visible to us, and FreeSWITCH's paths mapped there.
struct On<'a> {
    nodes: &'a Nodes,
    node: &'a Node,
    layout: RecordingLayout,
}

impl On<'_> {
    fn local(&self, path: &Path) -> PathBuf {
        self.nodes.local_path(self.node, path)
    }
}

impl Recordings {
    pub fn new(storage: Storage, nodes: Nodes, config: &RecordingsConfig) -> Self {
        Recordings {
            storage,
            nodes,
            layout: config.layout.clone(),
        }
    }

    /// The recording Finaz may download for `call`.
    pub async fn find(
        &self,
        call: &CallId,
        telefone: Option<&Telefone>,
    ) -> Result<RecordingFile, RecordingError> {
        let record = self
            .storage
            .find_call(call.as_str())
            .await?
            .ok_or(RecordingError::UnknownCall)?;
        if let Some(t) = telefone
            && !record
                .telefone
                .as_deref()
                .is_some_and(|known| same_number(known, t.as_str()))
        {
            return Err(RecordingError::UnknownCall);
        }
        let node = self.nodes.named(record.node.as_deref());
        let on = On {
            nodes: &self.nodes,
            node,
            layout: self.layout.with_dir(&node.recordings_dir),
        };
        let esl = &node.esl;
        let mut rows = self.storage.recordings_for_call(&record.id).await?;
        if rows.iter().any(|r| r.state == RecordingState::Recording) {
            // Its RECORD_STOP may have been lost (we were away): a leg FreeSWITCH no longer
            // has is closed now, and its file served.
            let mut closed_any = false;
            for row in rows.iter().filter(|r| r.state == RecordingState::Recording) {
                if !esl.is_connected()
                    || reconcile::leg_exists(esl, &row.leg_id)
                        .await
                        .unwrap_or(true)
                {
                    return Err(RecordingError::InProgress);
                }
                self.storage.leg_hung_up(&row.leg_id, None).await?;
                closed_any = true;
            }
            if closed_any {
                tracing::info!(call_id = %record.id, "recording closed: its channel is gone");
                rows = self.storage.recordings_for_call(&record.id).await?;
            }
        }
        let mut discarded = None;
        for row in &rows {
            match row.state {
                RecordingState::Done => match self.open(&on, &on.local(Path::new(&row.path))).await
                {
                    Ok(f) => return Ok(f),
                    Err(RecordingError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::warn!(call_id = %record.id, path = %row.path, "recorded file is gone");
                    }
                    Err(e) => return Err(e),
                },
                RecordingState::Discarded => {
                    discarded.get_or_insert_with(|| row.cause.clone().unwrap_or_default());
                }
                RecordingState::Recording => {}
            }
        }
        if let Some(cause) = discarded {
            return Err(RecordingError::Discarded(cause));
        }
        // No event told us: the path click2call chose, then the template for each leg.
        let legs = self.storage.legs_of(&record.id).await?;
        let mut candidates: Vec<PathBuf> = record
            .recording_path
            .iter()
            .map(|p| on.local(Path::new(p)))
            .collect();
        // The call's UTC day, and the days either side: a dialplan's strftime uses
        // FreeSWITCH's local time.
        const DAY_MS: i64 = 86_400_000;
        for at in [
            record.created_at,
            record.created_at - DAY_MS,
            record.created_at + DAY_MS,
        ] {
            for leg in &legs {
                let path = on.layout.path(leg, at);
                if !candidates.contains(&path) {
                    candidates.push(path);
                }
            }
        }
        for path in candidates {
            match self.open(&on, &path).await {
                Ok(f) => {
                    if may_still_be_recording(esl, &record.state, &legs).await {
                        return Err(RecordingError::InProgress);
                    }
                    return Ok(f);
                }
                Err(RecordingError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // Nothing yet, but the call is still up (a click2call rings before it records).
        if may_still_be_recording(esl, &record.state, &legs).await {
            return Err(RecordingError::InProgress);
        }
        Err(RecordingError::NoRecording)
    }

    /// Opens `path` only if, symlinks resolved, it is a regular file under the call's node's
    /// recordings directory (`recordings.dir` with one node), and reads its WAV header.
    async fn open(&self, on: &On<'_>, path: &Path) -> Result<RecordingFile, RecordingError> {
        let real = tokio::fs::canonicalize(path).await?;
        let root = tokio::fs::canonicalize(&on.node.recordings_dir).await?;
        if !real.starts_with(&root) {
            tracing::warn!(path = %path.display(), resolved = %real.display(), "recording outside recordings.dir refused");
            return Err(RecordingError::OutsideDir(real));
        }
        let mut file = tokio::fs::File::open(&real).await?;
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Err(RecordingError::OutsideDir(real));
        }
        let len = meta.len();
        let modified = meta.modified()?;
        let mut head = Vec::with_capacity(wav::HEAD_LIMIT.min(len as usize));
        (&mut file)
            .take(wav::HEAD_LIMIT as u64)
            .read_to_end(&mut head)
            .await?;
        let layout = wav::layout(&head, len)?;
        let nanos = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(RecordingFile {
            path: real,
            file,
            len,
            modified,
            version: (len, nanos, inode),
            layout,
        })
    }
}

/// For a file no event described: while any leg lives, FreeSWITCH may still write it.
async fn may_still_be_recording(esl: &Client, state: &CallState, legs: &[String]) -> bool {
    if matches!(state, CallState::Ended | CallState::Failed) {
        return false;
    }
    if !esl.is_connected() {
        // Cannot ask; the call was never seen to end.
        return true;
    }
    for leg in legs {
        // Cannot ask: assume it may still be recording.
        if reconcile::leg_exists(esl, leg).await.unwrap_or(true) {
            return true;
        }
    }
    false
}

/// The same number, give or take Brazil's country code.
fn same_number(known: &str, given: &str) -> bool {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let strip = |s: String| match s.strip_prefix("55") {
        Some(rest) if s.len() >= 12 => rest.to_string(),
        _ => s,
    };
    let (a, b) = (digits(known), digits(given));
    !a.is_empty() && (a == b || strip(a) == strip(b))
}

/// Follows RECORD_START / RECORD_STOP, bridges and hangups into storage, in arrival order.
pub async fn watch(esl: Client, storage: Storage, shutdown: CancellationToken) {
    let mut events = esl.subscribe(65_536);
    loop {
        let event = tokio::select! {
            e = events.recv() => match e { Some(e) => e, None => return },
            _ = shutdown.cancelled() => return,
        };
        let Some(name) = event.name() else { continue };
        let get = |h: &str| {
            event
                .header(h)
                .map(|v| v.into_owned())
                .filter(|v| !v.is_empty())
        };
        let Some(leg) = get("Unique-ID") else {
            continue;
        };
        let update = match name.as_ref() {
            "RECORD_START" => {
                get("Record-File-Path").map(|path| RecordingEvent::Started { leg, path })
            }
            "RECORD_STOP" => get("Record-File-Path").map(|path| RecordingEvent::Stopped {
                leg,
                path,
                cause: get("Record-Completion-Cause"),
                discarded: get("variable_RECORD_DISCARDED")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            }),
            "CHANNEL_HANGUP_COMPLETE" => Some(RecordingEvent::HungUp {
                leg,
                path: get("variable_record_file_path"),
            }),
            "CHANNEL_BRIDGE" => get("Other-Leg-Unique-ID")
                .or_else(|| get("Bridge-B-Unique-ID"))
                .filter(|b| *b != leg)
                .map(|b| RecordingEvent::Bridged { a: leg, b }),
            _ => None,
        };
        if let Some(u) = update
            && let Err(e) = storage.queue_recording_event(u).await
        {
            tracing::error!(error = %e, "could not record a recording event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_with_or_without_the_country_code() {
        assert!(same_number("41988445566", "41988445566"));
        assert!(same_number("+55 41 98844-5566", "41988445566"));
        assert!(same_number("41988445566", "5541988445566"));
        assert!(!same_number("41988445566", "41988445567"));
        assert!(!same_number("", "41988445566"));
        assert!(!same_number("5511988445566", "41988445566"));
    }
}
