//! The tar format's headers: names (ustar prefixes), sizes (octal or GNU base-256), checksums,
//! pax records and block padding.

/// The size of a tar block and header.
pub(super) const BLOCK: usize = 512;

/// Pax extended header records ("LEN key=value\n"): the `path` and `size` of the next member.
pub(super) fn parse_pax(data: &[u8]) -> (Option<String>, Option<u64>) {
    let (mut name, mut size) = (None, None);
    for record in String::from_utf8_lossy(data).split('\n') {
        let Some((_, kv)) = record.split_once(' ') else { continue };
        match kv.split_once('=') {
            Some(("path", v)) => name = Some(v.to_string()),
            Some(("size", v)) => size = v.parse().ok(),
            _ => {}
        }
    }
    (name, size)
}

pub(super) fn header_name(h: &[u8; BLOCK]) -> String {
    let field = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let name = field(&h[0..100]);
    // POSIX ustar ("ustar\0") keeps a name prefix at 345; GNU's header ("ustar  \0") keeps
    // access and change times there instead.
    let prefix = if &h[257..263] == b"ustar\0" { field(&h[345..500]) } else { String::new() };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The header's checksum: the sum of its bytes (the checksum field read as spaces), unsigned as
/// POSIX says, or signed as some old tars wrote it (Python's tarfile takes either).
pub(super) fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_octal(&h[148..156]) else { return false };
    let field = |i: usize| (148..156).contains(&i);
    let unsigned: i64 =
        h.iter().enumerate().map(|(i, &b)| if field(i) { 32 } else { b as i64 }).sum();
    let signed: i64 =
        h.iter().enumerate().map(|(i, &b)| if field(i) { 32 } else { b as i8 as i64 }).sum();
    stored as i64 == unsigned || stored as i64 == signed
}

/// Octal, or GNU base-256 when the high bit of the first byte is set.
pub(super) fn parse_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    parse_octal(field)
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// A member's size rounded up to whole blocks, or None when that overflows.
pub(super) fn padded_size(size: u64) -> Option<u64> {
    size.checked_next_multiple_of(BLOCK as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_octal_and_base_256() {
        assert_eq!(parse_size(b"00000001750\0"), Some(1000));
        let mut b = [0u8; 12];
        b[0] = 0x80;
        b[11] = 0x10;
        assert_eq!(parse_size(&b), Some(16));
    }

    fn header(name: &[u8], magic: &[u8], at_345: &[u8]) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[257..257 + magic.len()].copy_from_slice(magic);
        h[345..345 + at_345.len()].copy_from_slice(at_345);
        h
    }

    #[test]
    fn a_name_prefix_is_read_from_posix_headers_only() {
        let posix = header(b"000001.jpg", b"ustar\x0000", b"part-3");
        assert_eq!(header_name(&posix), "part-3/000001.jpg");
        // GNU tar keeps the access time at 345, which is no prefix.
        let gnu = header(b"000001.jpg", b"ustar  \0", b"14733147561\0");
        assert_eq!(header_name(&gnu), "000001.jpg");
    }

    #[test]
    fn checksums_are_taken_unsigned_or_signed() {
        let mut h = header("caf\u{e9}.jpg".as_bytes(), b"ustar\x0000", b"");
        let sum = |signed: bool| -> i64 {
            let byte = |&b: &u8| if signed { b as i8 as i64 } else { b as i64 };
            h.iter().map(byte).sum::<i64>() + 8 * 32
        };
        let (unsigned, signed) = (sum(false), sum(true));
        assert_ne!(unsigned, signed, "the name has bytes above 0x7f");
        for stored in [unsigned, signed] {
            h[148..156].copy_from_slice(format!("{stored:06o}\0 ").as_bytes());
            assert!(checksum_ok(&h), "{stored}");
        }
        h[148..156].copy_from_slice(format!("{:06o}\0 ", unsigned + 1).as_bytes());
        assert!(!checksum_ok(&h));
    }
}
