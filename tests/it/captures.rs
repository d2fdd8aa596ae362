//! Replays every real FreeSWITCH capture through the codec: same frames at every split point,
//! the same frame boundaries the capture tool recorded, and events that read as they should.

use bytes::BytesMut;
use finaz_freeswitch::esl::{ContentType, EslCodec, Event, Frame};
use tokio_util::codec::Decoder;

use crate::support::captures::{all_rx, read_capture, transcript_frame_sizes};

/// Decodes a whole buffer, returning each frame with the bytes it consumed.
fn decode_whole(bytes: &[u8]) -> Vec<(Frame, usize)> {
    let mut codec = EslCodec::default();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        let before = buf.len();
        match codec.decode(&mut buf).expect("capture decodes") {
            Some(f) => out.push((f, before - buf.len())),
            None => break,
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    out
}

/// Decodes feeding `chunks` of the given sizes (cycled), as a socket might deliver them.
fn decode_chunked(bytes: &[u8], sizes: &[usize]) -> Vec<Frame> {
    let mut codec = EslCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = sizes[i % sizes.len()].min(bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        i += 1;
        while let Some(f) = codec.decode(&mut buf).expect("capture decodes") {
            out.push(f);
        }
    }
    assert!(buf.is_empty());
    out
}

fn same(a: &Frame, b: &Frame) -> bool {
    a.content_type == b.content_type
        && a.body == b.body
        && a.headers.iter().collect::<Vec<_>>() == b.headers.iter().collect::<Vec<_>>()
}

/// The frames of a whole capture, decoded in one go: the reference for split decodes.
fn frames(rx: &[u8]) -> Vec<Frame> {
    decode_whole(rx).into_iter().map(|(f, _)| f).collect()
}

/// Asserts that decoding `rx` in `chunks` gives exactly `reference`.
fn assert_chunked_same(rx: &[u8], chunks: &[usize], reference: &[Frame], context: &str) {
    let got = decode_chunked(rx, chunks);
    assert_eq!(got.len(), reference.len(), "{context}");
    assert!(
        reference.iter().zip(&got).all(|(a, b)| same(a, b)),
        "{context}"
    );
}

#[test]
fn every_capture_frames_exactly_as_the_capture_tool_recorded() {
    let mut checked = 0;
    for (name, rx) in all_rx() {
        let frames = decode_whole(&rx);
        if let Some(sizes) = transcript_frame_sizes(&name) {
            let ours: Vec<usize> = frames.iter().map(|(_, n)| *n).collect();
            // A transcript may stop logging before the raw capture ends (04d stops at the
            // hang-up it waited for); every frame it did log must match ours exactly, and the codec
            // leaves no byte of the raw capture undecoded.
            assert!(
                !sizes.is_empty() && sizes.len() <= ours.len(),
                "{name}: transcript lists more frames than we decode"
            );
            assert_eq!(
                ours[..sizes.len()],
                sizes[..],
                "{name}: frame boundaries differ from the transcript"
            );
            checked += 1;
        }
        for (f, _) in &frames {
            assert_ne!(f.content_type, ContentType::Missing, "{name}");
            assert!(
                !matches!(f.content_type, ContentType::Other(_)),
                "{name}: {:?}",
                f.content_type
            );
        }
    }
    assert!(checked >= 20, "only {checked} transcripts compared");
}

#[test]
fn decodes_every_capture_fed_one_byte_at_a_time() {
    for (name, rx) in all_rx() {
        assert_chunked_same(&rx, &[1], &frames(&rx), &name);
    }
}

#[test]
fn decodes_small_captures_split_at_every_byte_boundary() {
    for name in [
        "01_inbound_api",
        "01b_inbound_bad_auth",
        "05_inbound_exit",
        "04b_close_without_hangup_outbound_session",
    ] {
        let rx = read_capture(&format!("{name}.rx.raw"));
        let whole = frames(&rx);
        for split in 1..rx.len() {
            assert_chunked_same(
                &rx,
                &[split, rx.len()],
                &whole,
                &format!("{name} split at {split}"),
            );
        }
    }
}

#[test]
fn decodes_large_captures_in_irregular_chunks() {
    for (name, rx) in all_rx() {
        let whole = frames(&rx);
        for sizes in [&[7usize, 13, 1, 4096][..], &[3, 1000, 2], &[65536]] {
            assert_chunked_same(&rx, sizes, &whole, &format!("{name} {sizes:?}"));
        }
    }
}

fn events(name: &str) -> Vec<Event> {
    decode_whole(&read_capture(&format!("{name}.rx.raw")))
        .into_iter()
        .filter(|(f, _)| f.content_type.is_event())
        .map(|(f, _)| Event::from_frame(&f).expect("event parses"))
        .collect()
}

#[test]
fn every_captured_event_has_a_name() {
    for (name, rx) in all_rx() {
        for (f, _) in decode_whole(&rx) {
            if f.content_type.is_event() {
                let e = Event::from_frame(&f).unwrap_or_else(|err| panic!("{name}: {err}"));
                assert!(e.name().is_some(), "{name}: event without Event-Name");
            }
        }
    }
}

#[test]
fn plain_and_json_views_of_the_same_call_agree() {
    let plain = events("02a_originate_loopback9999_park_event_plain_ALL");
    let json = events("02a_originate_loopback9999_park_event_json_ALL");
    let key = |e: &Event| {
        (
            e.name().unwrap().into_owned(),
            e.unique_id().map(|u| u.into_owned()),
        )
    };
    let p: Vec<_> = plain
        .iter()
        .filter(|e| e.name().unwrap() != "BACKGROUND_JOB")
        .map(key)
        .collect();
    let j: Vec<_> = json
        .iter()
        .filter(|e| e.name().unwrap() != "BACKGROUND_JOB")
        .map(key)
        .collect();
    assert!(p.len() > 20);
    // Both connections saw the same call; each frame set must hold the same events.
    let mut ps = p.clone();
    let mut js = j.clone();
    ps.sort();
    js.sort();
    assert_eq!(ps, js);
    // Decoded values agree across the two encodings, e.g. the originate's tagged variable.
    let tagged = |evs: &[Event]| {
        evs.iter()
            .filter_map(|e| e.variable("finaz_crm_id").map(|v| v.into_owned()))
            .next()
    };
    assert_eq!(tagged(&plain).as_deref(), Some("4242"));
    assert_eq!(tagged(&json).as_deref(), Some("4242"));
}

#[test]
fn background_job_results_carry_their_inner_body() {
    let evs = events("03_originate_fail");
    let bodies: Vec<String> = evs
        .iter()
        .filter(|e| e.name().unwrap() == "BACKGROUND_JOB")
        .map(|e| e.body_text().trim().to_owned())
        .collect();
    for cause in [
        "-ERR SUBSCRIBER_ABSENT",
        "-ERR USER_NOT_REGISTERED",
        "-ERR NO_ROUTE_DESTINATION",
        "-ERR CHAN_NOT_IMPLEMENTED",
        "-ERR NORMAL_TEMPORARY_FAILURE",
    ] {
        assert!(
            bodies.iter().any(|b| b == cause),
            "missing {cause} in {bodies:?}"
        );
    }
    let ok = events("06_sip_operator_click2call");
    let job = ok
        .iter()
        .find(|e| e.name().unwrap() == "BACKGROUND_JOB")
        .unwrap();
    assert_eq!(
        job.body_text(),
        "+OK 33c74a7d-a7d7-4947-94d0-d95bac1b228a\n"
    );
    assert_eq!(job.header("Job-Command").unwrap(), "originate");
    assert!(
        job.header("Job-Command-Arg")
            .unwrap()
            .contains("execute_on_answer='record_session /srv/fsdemo/recordings/sip/")
    );
}

#[test]
fn outbound_connect_reply_is_one_block_with_decoded_reply_text() {
    let frames = decode_whole(&read_capture("04a_outbound_full_session.rx.raw"));
    let (connect, size) = &frames[0];
    assert_eq!(*size, 3640);
    assert_eq!(connect.content_type, ContentType::CommandReply);
    assert!(connect.body.is_none());
    assert_eq!(connect.reply_text().unwrap(), "+OK\n");
    assert!(connect.is_ok());
    assert_eq!(connect.headers.get("Control").unwrap(), "full");
    assert_eq!(connect.headers.get("Socket-Mode").unwrap(), "async");
    assert_eq!(connect.headers.get("Event-Name").unwrap(), "CHANNEL_DATA");
    assert!(connect.headers.len() > 100);
    // After hangup without linger: the last frame is the disconnect notice.
    let g = decode_whole(&read_capture("04g_nolinger_hangup_outbound_session.rx.raw"));
    let last = &g.last().unwrap().0;
    assert_eq!(last.content_type, ContentType::DisconnectNotice);
    assert_eq!(
        last.headers.get("Content-Disposition").unwrap(),
        "disconnect"
    );
}

#[test]
fn dialer_bridge_event_carries_the_crm_tag_and_the_operator() {
    let evs = events("07_dialer_bridge_to_sip_operator");
    let bridge = evs
        .iter()
        .find(|e| e.name().unwrap() == "CHANNEL_BRIDGE")
        .expect("bridge seen");
    assert_eq!(bridge.variable("finaz_crm_id").unwrap(), "CRM-7001");
    assert_eq!(
        bridge.header("Other-Leg-Destination-Number").unwrap(),
        "1001"
    );
    assert!(bridge.header("Other-Leg-Unique-ID").is_some());
}
