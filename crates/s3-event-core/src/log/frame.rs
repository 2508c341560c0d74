//! Frames and segment headers: the bytes on disk.

/// Bytes before a frame's payload: `[len: u32 LE][crc32: u32 LE]`.
pub(crate) const FRAME_HEADER: usize = 8;
/// The largest payload a frame can hold.
pub const MAX_PAYLOAD: usize = u32::MAX as usize;
/// A segment header: `[magic: 8][base: u64 LE][crc32 of the 16 bytes before: u32 LE]`.
pub(crate) const SEGMENT_HEADER: usize = 20;

/// How the frames of a segment are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Crc {
    /// The CRC covers the four length bytes and the payload, so a run of
    /// zeros never passes as an empty frame (the current format).
    LenAndPayload,
    /// The CRC covers the payload only (the sink spool's first format).
    PayloadOnly,
}

/// Appends one frame holding `payload` to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    buf.extend_from_slice(&len);
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Why the frame at the start of `data` is not a good one.
pub(crate) fn check(data: &[u8], crc: Crc) -> Result<usize, &'static str> {
    if data.len() < FRAME_HEADER {
        return Err("incomplete frame header");
    }
    let len_bytes: [u8; 4] = data[..4].try_into().expect("4 bytes");
    let len = u32::from_le_bytes(len_bytes) as usize;
    let stored = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if data.len() - FRAME_HEADER < len {
        return Err("frame runs past the end of the file");
    }
    let payload = &data[FRAME_HEADER..FRAME_HEADER + len];
    let computed = match crc {
        Crc::LenAndPayload => {
            let mut h = crc32fast::Hasher::new();
            h.update(&len_bytes);
            h.update(payload);
            h.finalize()
        }
        Crc::PayloadOnly => {
            if len == 0 {
                return Err("empty frame");
            }
            crc32fast::hash(payload)
        }
    };
    if computed != stored {
        return Err("checksum mismatch");
    }
    Ok(len)
}

/// The payload of a complete, current-format frame, or `None` if it fails
/// its checksum or is incomplete.
pub fn decode(frame: &[u8]) -> Option<&[u8]> {
    let len = check(frame, Crc::LenAndPayload).ok()?;
    Some(&frame[FRAME_HEADER..FRAME_HEADER + len])
}

/// The bytes a frame with a payload of `len` bytes takes on disk.
pub fn frame_len(len: usize) -> u64 {
    (FRAME_HEADER + len) as u64
}

pub(crate) fn header(magic: &[u8; 8], base: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(magic);
    h[8..16].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The base stored in a current-format header, if `data` starts with one.
pub(crate) fn read_header(data: &[u8], magic: &[u8; 8]) -> Option<u64> {
    if data.len() < SEGMENT_HEADER || &data[..8] != magic {
        return None;
    }
    let crc = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes"));
    (crc32fast::hash(&data[..16]) == crc)
        .then(|| u64::from_le_bytes(data[8..16].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, b"hello");
        assert_eq!(decode(&buf), Some(&b"hello"[..]));
        assert_eq!(buf.len() as u64, frame_len(5));
        let mut bad = buf.clone();
        bad[9] ^= 1;
        assert_eq!(check(&bad, Crc::LenAndPayload), Err("checksum mismatch"));
        assert_eq!(
            check(&buf[..buf.len() - 1], Crc::LenAndPayload),
            Err("frame runs past the end of the file")
        );
        // Zeros are not an empty frame.
        assert!(check(&[0u8; 16], Crc::LenAndPayload).is_err());
        let h = header(b"S3ETEST1", 42);
        assert_eq!(read_header(&h, b"S3ETEST1"), Some(42));
        assert_eq!(read_header(&h, b"S3ETEST2"), None);
    }
}
