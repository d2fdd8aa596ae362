//! The stand-in against the real switch: each captured client's bytes (`*.tx.raw`) are sent
//! to the stand-in command by command, and what it answers must be what FreeSWITCH 1.10.12
//! answered (`*.rx.raw`): the same frames, reply texts, events and job results, in the same
//! order, and nothing more. A stand-in kinder than the switch fails here.

use std::time::Duration;

use bytes::BytesMut;
use finaz_freeswitch::esl::{ContentType, EslCodec, Event, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::support::captures::read_capture;
use crate::support::standin::{Outcome, StandIn};

/// How long to listen after each command for frames it may still cause (capture 08 waited
/// 3 s for a job result that never came; the stand-in's jobs finish in microseconds).
const QUIET: Duration = Duration::from_millis(300);

/// What must match between the switch and the stand-in for one frame.
fn signature(f: &Frame) -> String {
    match &f.content_type {
        ct if ct.is_event() => {
            let e = Event::from_frame(f).expect("event");
            let name = e.name().unwrap_or_default().into_owned();
            let job = e
                .job_uuid()
                .map(|j| format!(" job={j}"))
                .unwrap_or_default();
            format!("event {name}{job} body={:?}", e.body_text())
        }
        ContentType::ApiResponse => {
            let body = f.body_text();
            format!(
                "api/response {}",
                body.split_whitespace().next().unwrap_or("")
            )
        }
        ct => format!(
            "{ct:?} reply={:?} body={:?}",
            f.reply_text().unwrap_or_default(),
            f.body_text()
        ),
    }
}

fn decode_all(codec: &mut EslCodec, buf: &mut BytesMut, out: &mut Vec<String>) {
    while let Some(f) = codec.decode(buf).expect("stand-in frames decode") {
        out.push(signature(&f));
    }
}

/// The captured frames, in order.
fn captured(name: &str) -> Vec<String> {
    let mut buf = BytesMut::from(&read_capture(&format!("{name}.rx.raw"))[..]);
    let mut out = Vec::new();
    decode_all(&mut EslCodec::default(), &mut buf, &mut out);
    out
}

/// Sends the captured client's commands one by one and collects what the stand-in answers.
async fn replayed(fs: &StandIn, name: &str) -> Vec<String> {
    let tx = read_capture(&format!("{name}.tx.raw"));
    let text = String::from_utf8(tx).unwrap();
    let commands: Vec<&str> = text.split_inclusive("\n\n").collect();
    let mut sock = TcpStream::connect(fs.addr()).await.unwrap();
    let mut codec = EslCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut closed = false;
    let mut listen = async |sock: &mut TcpStream, buf: &mut BytesMut, out: &mut Vec<String>| {
        loop {
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout(QUIET, sock.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    decode_all(&mut codec, buf, out);
                }
            }
        }
    };
    closed |= listen(&mut sock, &mut buf, &mut out).await;
    for c in commands {
        if closed {
            break;
        }
        sock.write_all(c.as_bytes()).await.unwrap();
        closed |= listen(&mut sock, &mut buf, &mut out).await;
    }
    out
}

async fn assert_replays_as_captured(fs: &StandIn, name: &str) {
    let want = captured(name);
    let got = replayed(fs, name).await;
    assert_eq!(
        got, want,
        "{name}: the stand-in answered differently from FreeSWITCH"
    );
}

#[tokio::test]
async fn a_wrong_password_a_command_before_auth_and_exit_answer_as_captured() {
    let fs = StandIn::start().await;
    assert_replays_as_captured(&fs, "01c_inbound_cmd_before_auth").await;
    assert_replays_as_captured(&fs, "05_inbound_exit").await;
    let wrong = StandIn::start_with_password("something-else").await;
    assert_replays_as_captured(&wrong, "01b_inbound_bad_auth").await;
}

#[tokio::test]
async fn background_job_after_custom_is_never_delivered_as_in_capture_08() {
    let fs = StandIn::start().await;
    fs.script("user/1003", Outcome::Fail("USER_NOT_REGISTERED"));
    assert_replays_as_captured(&fs, "08_custom_subclass_swallows_later_events").await;
}
