//! Property tests of the decoder: arbitrary bytes never panic it, and well-formed frames come
//! back identical however the stream is split.

use bytes::BytesMut;
use finaz_freeswitch::esl::EslCodec;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Feeds `bytes` in the given chunk sizes; returns frames as (content type, headers, body).
fn run(bytes: &[u8], chunks: &[usize]) -> Result<Vec<String>, String> {
    let mut codec = EslCodec::new(4096, 4096);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = chunks[i % chunks.len()].max(1).min(bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        i += 1;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    out.push(format!("{:?}|{:?}|{:?}", f.content_type, f.headers, f.body))
                }
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(out)
}

fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,20}"), 0..6),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
    )
        .prop_map(|(headers, body)| {
            let mut f = b"Content-Type: text/x-test\n".to_vec();
            for (n, v) in headers {
                if n.eq_ignore_ascii_case("content-length")
                    || n.eq_ignore_ascii_case("content-type")
                {
                    continue;
                }
                f.extend_from_slice(format!("{n}: {}\n", v.trim_start()).as_bytes());
            }
            if let Some(b) = &body {
                f.extend_from_slice(format!("Content-Length: {}\n\n", b.len()).as_bytes());
                f.extend_from_slice(b);
            } else {
                f.push(b'\n');
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..64) {
        let _ = run(&bytes, &[chunk]);
    }

    #[test]
    fn frames_decode_the_same_at_any_split(frames in prop::collection::vec(frame_strategy(), 1..6), chunks in prop::collection::vec(1usize..50, 1..5)) {
        let stream: Vec<u8> = frames.concat();
        let whole = run(&stream, &[stream.len()]).unwrap();
        prop_assert_eq!(whole.len(), frames.len());
        let split = run(&stream, &chunks).unwrap();
        prop_assert_eq!(whole, split);
    }
}
