use super::*;

/// The vector input: the first `n` bytes of the BLAKE3 extendable output of `label`.
fn xof(label: &[u8], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(label)
        .finalize_xof()
        .fill(&mut out);
    out
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// docs/PROTOCOL.md §5.4, vector 1: 1 MiB of the BLAKE3 XOF of "ferry chunking vector 1".
#[test]
fn vector_pseudo_random_mebibyte() {
    let data = xof(b"ferry chunking vector 1", 1 << 20);
    let chunks = chunk_all(&data);
    let lens: Vec<u32> = chunks.iter().map(|c| c.len).collect();
    assert_eq!(
        lens,
        [
            123930, 119461, 71889, 20610, 183611, 77639, 90759, 174994, 42568, 88568, 36534, 18013
        ]
    );
    assert_eq!(
        hex(&chunks[0].hash),
        "476895f5c2a19a41942ebb40f2ab483e37c588f38d62eaf767648b389ea8d217"
    );
    assert_eq!(
        hex(&chunks[11].hash),
        "e7c1092b4555aad07a3734116a3e016315e8d3eda465d5f26de1a26a420860af"
    );
}

/// Vector 2: content with no cut point (zeros) is cut at the maximum size.
#[test]
fn vector_zeros_cut_at_the_maximum() {
    let data = vec![0u8; 600 * 1024];
    let lens: Vec<u32> = chunk_all(&data).iter().map(|c| c.len).collect();
    assert_eq!(lens, [262144, 262144, 90112]);
}

/// Vector 3: short contents are one chunk; the empty content has none.
#[test]
fn vector_short_and_empty() {
    assert!(chunk_all(b"").is_empty());
    let one = chunk_all(b"hello");
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].hash, *blake3::hash(b"hello").as_bytes());
    let small = xof(b"x", MIN_CHUNK);
    assert_eq!(chunk_all(&small).len(), 1);
}

#[test]
fn streaming_cuts_where_the_whole_does() {
    let data = xof(b"ferry chunking stream", 3 << 20);
    let whole = chunk_all(&data);
    for piece in [
        1usize,
        7,
        4096,
        65536,
        MAX_CHUNK - 1,
        MAX_CHUNK,
        MAX_CHUNK + 3,
        1 << 20,
    ] {
        let mut c = Chunker::new();
        let mut step = 0;
        // Pieces of 1 byte only over the first 300 KiB, to keep the test quick.
        let sample = if piece == 1 {
            &data[..300 * 1024]
        } else {
            &data[..]
        };
        for p in sample.chunks(piece) {
            c.push(p);
            step += 1;
            assert!(step <= sample.len());
        }
        assert_eq!(c.total(), sample.len() as u64);
        let got = c.finish();
        if piece == 1 {
            assert_eq!(got, chunk_all(sample), "piece size {piece}");
        } else {
            assert_eq!(got, whole, "piece size {piece}");
        }
    }
}

/// The point of content-defined chunks: an edit changes the chunks around it only, even an
/// insertion that shifts everything after it.
#[test]
fn edits_change_only_nearby_chunks() {
    let data = xof(b"ferry chunking edits", 8 << 20);
    let before: std::collections::HashSet<_> = chunk_all(&data).into_iter().collect();
    let new_bytes = |after: &[u8]| -> u64 {
        chunk_all(after)
            .iter()
            .filter(|c| !before.contains(c))
            .map(|c| u64::from(c.len))
            .sum()
    };
    let mut flipped = data.clone();
    flipped[4 << 20] ^= 1;
    assert!(new_bytes(&flipped) <= 2 * MAX_CHUNK as u64);
    let mut inserted = data.clone();
    inserted.splice(1000..1000, [7u8; 100]);
    assert!(new_bytes(&inserted) <= 2 * MAX_CHUNK as u64);
}

#[test]
fn lists_round_trip_and_refuse_malformed_bytes() {
    let data = xof(b"ferry chunking list", 1 << 20);
    let chunks = chunk_all(&data);
    let bytes = encode_list(&chunks);
    assert_eq!(bytes.len(), chunks.len() * CHUNK_REF_LEN);
    assert_eq!(decode_list(&bytes, data.len() as u64), Ok(chunks.clone()));
    assert_eq!(decode_list(&[], 0), Ok(vec![]));
    assert_eq!(decode_list(&bytes[..35], 0), Err(ListError::Length(35)));
    assert!(matches!(
        decode_list(&bytes, data.len() as u64 + 1),
        Err(ListError::Sum { .. })
    ));
    let mut zero = bytes.clone();
    zero[32..36].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        decode_list(&zero, data.len() as u64),
        Err(ListError::BadLength { index: 0, len: 0 })
    ));
    let mut long = bytes.clone();
    long[32..36].copy_from_slice(&(MAX_CHUNK as u32 + 1).to_be_bytes());
    assert!(matches!(
        decode_list(&long, data.len() as u64),
        Err(ListError::BadLength { index: 0, .. })
    ));
    let many = vec![0u8; (MAX_LIST_CHUNKS + 1) * CHUNK_REF_LEN];
    assert_eq!(
        decode_list(&many, 0),
        Err(ListError::TooMany(MAX_LIST_CHUNKS + 1))
    );
}

#[test]
fn a_repeated_or_held_chunk_is_not_needed() {
    let c = |b: u8| ChunkRef {
        hash: [b; 32],
        len: 10,
    };
    let list = [c(1), c(2), c(1), c(3), c(2), c(4), c(5), c(6), c(7)];
    let bitmap = needed(&list, |h| h[0] == 3);
    let marked: Vec<usize> = (0..list.len()).filter(|&i| is_needed(&bitmap, i)).collect();
    assert_eq!(marked, [0, 1, 5, 6, 7, 8]);
    assert_eq!(bitmap, [0b1110_0011, 0b0000_0001]);
    assert_eq!(needed_bytes(&list, &bitmap), 60);
    assert!(!is_needed(&bitmap, 100));
    // Chunks 0-1 and 5-8 are needed: two runs.
    assert_eq!(needed_runs(&list, &bitmap), [(0, 20), (50, 40)]);
    assert!(needed_runs(&list, &[0, 0]).is_empty());
}

/// The masks docs/PROTOCOL.md §5.4 states (mask_s has 17 bits set, mask_l 15).
#[test]
fn masks_are_the_documented_ones() {
    let (s, l) = masks();
    assert_eq!((s, l), (0x0000_d907_0353_7000, 0x0000_d90f_0353_0000));
    assert_eq!((s.count_ones(), l.count_ones()), (17, 15));
}
