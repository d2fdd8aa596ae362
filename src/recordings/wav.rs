//! Reads a WAV file's RIFF header to check it is one, and to correct sizes a crash left
//! stale: FreeSWITCH writes the RIFF and `data` sizes when it closes the file, so a file cut
//! short by a crash carries zero (or garbage) there while its samples are fine.

/// What serving a WAV needs to know of its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavLayout {
    /// Where the samples start (after the `data` chunk header).
    pub data_offset: u64,
    /// The first `data_offset` bytes to send instead of the file's, when its sizes are stale.
    pub patched_header: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF/WAVE file")]
    NotWav,
    #[error("no data chunk in the first {0} bytes")]
    NoData(usize),
}

/// How much of the file's head is read to find the `data` chunk.
pub const HEAD_LIMIT: usize = 64 * 1024;

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// `head` is the start of a file of `file_len` bytes (at most [`HEAD_LIMIT`] of it).
pub fn layout(head: &[u8], file_len: u64) -> Result<WavLayout, WavError> {
    if head.len() < 12 || &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let mut pos = 12usize;
    let mut saw_fmt = false;
    loop {
        if pos + 8 > head.len() {
            return Err(WavError::NoData(head.len()));
        }
        let id = &head[pos..pos + 4];
        let size = le32(&head[pos + 4..pos + 8]) as usize;
        if id == b"data" {
            if !saw_fmt {
                return Err(WavError::NotWav);
            }
            let data_offset = (pos + 8) as u64;
            let data_len = file_len.saturating_sub(data_offset);
            let riff_len = file_len.saturating_sub(8);
            let stale = u64::from(le32(&head[4..8])) != riff_len.min(u32::MAX as u64)
                || size as u64 != data_len.min(u32::MAX as u64);
            let patched_header = stale.then(|| {
                let mut h = head[..pos + 8].to_vec();
                h[4..8].copy_from_slice(&(riff_len.min(u32::MAX as u64) as u32).to_le_bytes());
                h[pos + 4..pos + 8]
                    .copy_from_slice(&(data_len.min(u32::MAX as u64) as u32).to_le_bytes());
                h
            });
            return Ok(WavLayout {
                data_offset,
                patched_header,
            });
        }
        if id == b"fmt " {
            saw_fmt = true;
        }
        // Chunks are padded to an even size.
        pos = pos
            .checked_add(8 + size + (size & 1))
            .ok_or(WavError::NotWav)?;
    }
}

/// A valid mono 16-bit 8 kHz WAV of `samples` samples (for tests, benchmarks and the sandbox).
pub fn pcm_wav(samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut v = Vec::with_capacity(44 + samples.len() * 2);
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes()); // PCM
    v.extend_from_slice(&1u16.to_le_bytes()); // mono
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&16000u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_header_needs_no_patch() {
        let wav = pcm_wav(&[1, 2, 3, 4]);
        let l = layout(&wav, wav.len() as u64).unwrap();
        assert_eq!(l.data_offset, 44);
        assert_eq!(l.patched_header, None);
    }

    #[test]
    fn a_stale_header_after_a_crash_is_corrected() {
        let mut wav = pcm_wav(&[7; 100]);
        wav[4..8].copy_from_slice(&0u32.to_le_bytes());
        wav[40..44].copy_from_slice(&0u32.to_le_bytes());
        let l = layout(&wav, wav.len() as u64).unwrap();
        let h = l.patched_header.unwrap();
        assert_eq!(h.len(), 44);
        assert_eq!(le32(&h[4..8]), wav.len() as u32 - 8);
        assert_eq!(le32(&h[40..44]), 200);
        // Extra chunks (LIST) before data are walked over.
        let mut with_list = pcm_wav(&[1; 10]);
        let data = with_list.split_off(36);
        with_list.extend_from_slice(b"LIST");
        with_list.extend_from_slice(&3u32.to_le_bytes());
        with_list.extend_from_slice(b"abc\0");
        with_list.extend_from_slice(&data);
        let l = layout(&with_list, with_list.len() as u64).unwrap();
        assert_eq!(l.data_offset, 56);
        assert!(
            l.patched_header.is_some(),
            "RIFF size grew with the LIST chunk"
        );
    }

    #[test]
    fn other_files_are_refused() {
        assert_eq!(layout(b"ID3\x03 mp3 data here", 100), Err(WavError::NotWav));
        assert_eq!(layout(b"RIFF\0\0\0\0AVI LIST", 100), Err(WavError::NotWav));
        let mut no_data = pcm_wav(&[]);
        no_data.truncate(36);
        assert!(matches!(layout(&no_data, 36), Err(WavError::NoData(_))));
    }
}
