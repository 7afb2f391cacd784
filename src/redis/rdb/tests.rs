use super::*;
use proptest::prelude::*;

/// A length field as Redis writes it.
fn len(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=63 => out.push(n as u8),
        64..=16383 => out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]),
        _ if n <= u64::from(u32::MAX) => {
            out.push(0x80);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0x81);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A small hand-built RDB: two databases, several encodings, expiries, and a valid trailer.
fn sample(checksum: bool) -> Vec<u8> {
    let mut rdb = b"REDIS0010".to_vec();
    rdb.push(OP_AUX);
    string(&mut rdb, b"redis-ver");
    string(&mut rdb, b"7.0.15");
    rdb.push(OP_AUX);
    string(&mut rdb, b"ctime");
    rdb.extend_from_slice(&[0xc2, 0x10, 0x20, 0x30, 0x40]); // int32-encoded
    rdb.push(OP_SELECTDB);
    len(&mut rdb, 0);
    rdb.push(OP_RESIZEDB);
    len(&mut rdb, 3);
    len(&mut rdb, 1);
    // A plain string with a millisecond expiry.
    rdb.push(OP_EXPIRETIME_MS);
    rdb.extend_from_slice(&1_900_000_000_000u64.to_le_bytes());
    rdb.push(0);
    string(&mut rdb, b"greeting");
    string(&mut rdb, &[b'x'; 300]);
    // An int-encoded string value.
    rdb.push(0);
    string(&mut rdb, b"counter");
    rdb.extend_from_slice(&[0xc0, 42]);
    // A hash as plain pairs, with an LFU frequency before it.
    rdb.push(OP_FREQ);
    rdb.push(5);
    rdb.push(4);
    string(&mut rdb, b"h");
    len(&mut rdb, 2);
    for s in [&b"a"[..], b"1", b"b", b"2"] {
        string(&mut rdb, s);
    }
    rdb.push(OP_SELECTDB);
    len(&mut rdb, 3);
    // A sorted set with text scores, one of them +inf.
    rdb.push(3);
    string(&mut rdb, b"z");
    len(&mut rdb, 2);
    string(&mut rdb, b"m1");
    string(&mut rdb, b"1.5");
    string(&mut rdb, b"m2");
    rdb.push(254);
    // An LZF-compressed value: only its lengths matter to the scanner.
    rdb.push(0);
    string(&mut rdb, b"packed");
    rdb.push(0xc3);
    len(&mut rdb, 4);
    len(&mut rdb, 100);
    rdb.extend_from_slice(&[1, 2, 3, 4]);
    rdb.push(OP_EOF);
    let crc = if checksum { CRC64.checksum(&rdb) } else { 0 };
    rdb.extend_from_slice(&crc.to_le_bytes());
    rdb
}

fn crc_of(data: &[u8], chunks: &[usize]) -> CrcCheck {
    let mut crc = TrailerCrc::default();
    let mut rest = data;
    for &size in chunks {
        let (head, tail) = rest.split_at(size.min(rest.len()));
        crc.update(head);
        rest = tail;
    }
    crc.update(rest);
    crc.finish()
}

#[test]
fn crc64_is_the_one_redis_uses() {
    // Redis's own test vector (crc64.c).
    assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
}

#[test]
fn scan_counts_keys_and_expiries_per_database() {
    let rdb = sample(true);
    let info = scan(rdb.as_slice()).unwrap();
    assert_eq!(info.version, 10);
    assert_eq!(info.key_count, KeyCount::Exact);
    assert_eq!(
        info.databases[&0],
        DbKeys {
            keys: 3,
            expires: 1
        }
    );
    assert_eq!(
        info.databases[&3],
        DbKeys {
            keys: 2,
            expires: 0
        }
    );
    assert_eq!(info.total_keys(), 5);
    assert_eq!(info.aux["redis-ver"], "7.0.15");
    assert_eq!(
        info.aux["ctime"],
        i32::from_le_bytes([0x10, 0x20, 0x30, 0x40]).to_string()
    );
    assert_eq!(
        crc_of(&rdb, &[]),
        CrcCheck::Valid(CRC64.checksum(&rdb[..rdb.len() - 8]))
    );
}

#[test]
fn scan_stops_exactly_after_the_trailer() {
    let mut data = sample(true);
    let rdb_len = data.len();
    data.extend_from_slice(b"replication stream that follows");
    let mut reader = data.as_slice();
    scan(&mut reader).unwrap();
    assert_eq!(reader.len(), data.len() - rdb_len);
}

#[test]
fn a_disabled_checksum_is_reported_as_such() {
    assert_eq!(crc_of(&sample(false), &[]), CrcCheck::Disabled);
}

#[test]
fn a_flipped_byte_breaks_the_crc() {
    let mut rdb = sample(true);
    rdb[40] ^= 0x01;
    assert!(matches!(crc_of(&rdb, &[]), CrcCheck::Mismatch { .. }));
}

#[test]
fn truncation_is_reported_by_the_scanner() {
    let rdb = sample(true);
    for cut in [5, 20, 60, rdb.len() - 3] {
        let err = scan(&rdb[..cut]).unwrap_err();
        assert!(
            matches!(err, RdbError::Truncated(_) | RdbError::BadMagic(_)),
            "{cut}: {err}"
        );
    }
}

#[test]
fn bad_magic_is_reported() {
    let err = scan(&b"NOTREDIS0010\xff"[..]).unwrap_err();
    assert!(matches!(err, RdbError::BadMagic(_)), "{err}");
}

#[test]
fn an_unknown_type_falls_back_on_the_resize_hints() {
    let mut rdb = b"REDIS0012".to_vec();
    rdb.push(OP_SELECTDB);
    len(&mut rdb, 0);
    rdb.push(OP_RESIZEDB);
    len(&mut rdb, 7);
    len(&mut rdb, 2);
    rdb.push(0);
    string(&mut rdb, b"k");
    string(&mut rdb, b"v");
    rdb.push(25); // a hash with field expiries (7.4+): not skippable here
    string(&mut rdb, b"h");
    rdb.extend_from_slice(b"opaque");
    let info = scan(rdb.as_slice()).unwrap();
    assert_eq!(
        info.databases[&0],
        DbKeys {
            keys: 7,
            expires: 2
        }
    );
    assert!(matches!(info.key_count, KeyCount::Hints { .. }));
}

proptest! {
    /// However the stream is cut into chunks, the trailer check gives the same answer.
    #[test]
    fn trailer_crc_does_not_depend_on_chunking(
        chunks in proptest::collection::vec(0usize..40, 0..20),
        flip in proptest::option::of(0usize..100),
    ) {
        let mut rdb = sample(true);
        if let Some(at) = flip {
            let at = at % rdb.len();
            rdb[at] ^= 0x80;
        }
        prop_assert_eq!(crc_of(&rdb, &chunks), crc_of(&rdb, &[]));
    }
}
