//! WebDataset tars, streamed member by member. A sample is the run of consecutive members sharing
//! a key: the path up to the first dot of the file name (`dir/000123.jpg` -> key `dir/000123`).
//!
//! The tar format is parsed here and in `tar_header` (ustar, pax `path`/`size` records, GNU long
//! names) rather than through the `tar` crate, whose entry iterator borrows its archive and so
//! cannot be held in a resumable reader; it also lets every kind of damage end as a counted skip.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::tar_header::{checksum_ok, header_name, padded_size, parse_pax, parse_size, BLOCK};
use super::{RawSample, SampleMeta, Unit};
use crate::config::ColumnsConfig;
use crate::stats::SkipReason;

/// Members larger than this are skipped over, never read into memory.
const MAX_MEMBER_BYTES: u64 = 64 << 20;

pub struct TarShard {
    input: Option<BufReader<File>>,
    /// The file's length: a member that would end past it is cut short.
    len: u64,
    /// Which members' bytes are passed over, not read: images between [`TarShard::begin_skip`]
    /// and [`TarShard::end_skip`], every member when only the keys are counted.
    pass_over: PassOver,
    members: MemberNames,
    open_error: Option<Unit>,
    group: Option<Group>,
    ready: Option<Unit>,
    units: u64,
    /// Long name (GNU `L` or pax `path`) and pax size for the next member.
    next_name: Option<String>,
    next_size: Option<u64>,
    finished: bool,
}

/// Which members of a sample are its image and caption (`data.columns`), lower case as the
/// extensions are compared.
struct MemberNames {
    /// None: any of jpg, jpeg, png and webp.
    image: Option<String>,
    /// The caption member's extension, and the `.json` field read when there is none.
    caption_ext: String,
    caption_field: String,
}

impl MemberNames {
    fn of(columns: &ColumnsConfig) -> Self {
        let caption = columns.caption.as_deref();
        MemberNames {
            image: columns.image.as_deref().map(str::to_lowercase),
            caption_ext: caption.unwrap_or("txt").to_lowercase(),
            caption_field: caption.unwrap_or("caption").to_owned(),
        }
    }

    fn is_image(&self, ext: &str) -> bool {
        match &self.image {
            Some(image) => ext == image,
            None => matches!(ext, "jpg" | "jpeg" | "png" | "webp"),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum PassOver {
    Nothing,
    Images,
    Everything,
}

#[derive(Default)]
struct Group {
    key: String,
    image: Option<Vec<u8>>,
    /// Where the image's bytes are in the file, when they were passed over while skipping.
    image_at: Option<(u64, u64)>,
    caption: Option<String>,
    json: Option<Vec<u8>>,
    too_large: bool,
}

/// What a regular member's data became.
enum Payload {
    Read(Vec<u8>),
    /// Over `MAX_MEMBER_BYTES`: passed over.
    TooLarge,
    /// An image passed over while skipping: where its bytes are in the file, and how many.
    Unread {
        at: u64,
        size: u64,
    },
}

enum Member {
    Data {
        name: String,
        data: Payload,
    },
    End,
    /// The file ended cleanly between two members, without the end-of-archive blocks: every
    /// member read so far is whole (Python's tarfile reads such a tar without complaint), but
    /// the archive may have been cut.
    Unterminated,
    /// The reason, a detail, and the damaged member's name when its header was read.
    Damaged(SkipReason, String, Option<String>),
}

impl TarShard {
    pub fn open(path: &Path, columns: &ColumnsConfig) -> TarShard {
        let (input, len, open_error) = match File::open(path) {
            Ok(f) => match f.metadata().map(|m| m.len()).unwrap_or(0) {
                0 => (None, 0, Some(Unit::skip(SkipReason::EmptyShard, None, "zero-byte file"))),
                len => (Some(BufReader::with_capacity(1 << 16, f)), len, None),
            },
            Err(e) => (None, 0, Some(Unit::skip(SkipReason::UnreadableShard, None, e.to_string()))),
        };
        TarShard {
            input,
            len,
            pass_over: PassOver::Nothing,
            members: MemberNames::of(columns),
            open_error,
            group: None,
            ready: None,
            units: 0,
            next_name: None,
            next_size: None,
            finished: false,
        }
    }

    /// The fields of the first `.json` member, or None when there is none.
    pub fn first_json_fields(path: &Path) -> Option<Vec<String>> {
        let mut shard = TarShard::open(path, &ColumnsConfig::default());
        shard.input.as_ref()?;
        for _ in 0..64 {
            match shard.read_member() {
                Member::Data { name, data: Payload::Read(data) }
                    if split_name(&name).is_some_and(|(_, ext)| ext == "json") =>
                {
                    let value: serde_json::Value = serde_json::from_slice(&data).ok()?;
                    return Some(value.as_object()?.keys().cloned().collect());
                }
                Member::Data { .. } => continue,
                _ => return None,
            }
        }
        None
    }

    /// Number of samples (runs of members sharing a key), reading headers only: long names and
    /// pax records as the reader takes them, up to the end or the first damage.
    pub fn scan_keys(path: &Path) -> u64 {
        let mut shard = TarShard::open(path, &ColumnsConfig::default());
        shard.pass_over = PassOver::Everything;
        let (mut count, mut last) = (0u64, String::new());
        while let Member::Data { name, .. } = shard.read_member() {
            if let Some((key, _)) = split_name(&name) {
                if key != last {
                    count += 1;
                    last = key;
                }
            }
        }
        count
    }

    /// Until [`TarShard::end_skip`], units are only counted (restoring a cursor): the images of
    /// the samples skipped are passed over, not read.
    pub fn begin_skip(&mut self) {
        self.pass_over = PassOver::Images;
    }

    /// Reads as before again. The sample after the last one skipped may have begun with an
    /// image passed over: it is read now.
    pub fn end_skip(&mut self) {
        self.pass_over = PassOver::Nothing;
        if let Some(group) = self.group.as_mut().filter(|g| g.image.is_none()) {
            if let (Some((at, size)), Some(input)) = (group.image_at.take(), &self.input) {
                let mut data = vec![0u8; size as usize];
                if input.get_ref().read_exact_at(&mut data, at).is_ok() {
                    group.image = Some(data);
                }
            }
        }
    }

    fn step(&mut self) -> Option<Unit> {
        if let Some(unit) = self.open_error.take() {
            self.finished = true;
            return Some(unit);
        }
        loop {
            if let Some(unit) = self.ready.take() {
                return Some(unit);
            }
            if self.finished {
                return None;
            }
            match self.read_member() {
                Member::Data { name, data } => {
                    let Some((key, ext)) = split_name(&name) else { continue };
                    if self.group.as_ref().is_some_and(|g| g.key != key) {
                        self.ready = self.group.take().map(|g| g.into_unit(&self.members));
                    }
                    let group = self.group.get_or_insert_with(|| Group { key, ..Group::default() });
                    match data {
                        Payload::TooLarge => group.too_large = true,
                        Payload::Read(data) => group.add(&ext, data, &self.members),
                        Payload::Unread { at, size } => {
                            if group.image.is_none() {
                                group.image_at.get_or_insert((at, size));
                            }
                        }
                    }
                }
                Member::End => {
                    self.finished = true;
                    let last = self.group.take().map(|g| g.into_unit(&self.members));
                    if last.is_none() && self.units == 0 && self.ready.is_none() {
                        return Some(Unit::skip(SkipReason::EmptyShard, None, "no members"));
                    }
                    self.ready = self.ready.take().or(last);
                }
                Member::Unterminated => {
                    self.finished = true;
                    // The sample being assembled ends with a whole member: it is kept (or
                    // skipped for what it lacks), and the missing end is counted after it.
                    let detail = "no end-of-archive marker (cut short?)";
                    let skip = Unit::skip(SkipReason::TruncatedShard, None, detail);
                    return Some(match self.group.take() {
                        Some(group) => {
                            self.ready = Some(skip);
                            group.into_unit(&self.members)
                        }
                        None => skip,
                    });
                }
                Member::Damaged(reason, detail, name) => {
                    self.finished = true;
                    // The sample being assembled is complete when the damaged member starts a new
                    // key; otherwise it may lack members and is lost with the rest.
                    let damaged_key = name.as_deref().and_then(split_name).map(|(k, _)| k);
                    let mut key = self.group.as_ref().map(|g| g.key.clone());
                    if damaged_key.is_some() && damaged_key != key {
                        debug_assert!(self.ready.is_none());
                        self.ready = self.group.take().map(|g| g.into_unit(&self.members));
                        key = damaged_key;
                    }
                    let skip = Unit::skip(reason, key, detail);
                    return Some(match self.ready.take() {
                        Some(unit) => {
                            self.ready = Some(skip);
                            unit
                        }
                        None => skip,
                    });
                }
            }
        }
    }

    /// Reads the next regular member (its data, or None when over the size limit).
    fn read_member(&mut self) -> Member {
        let Some(input) = self.input.as_mut() else { return Member::End };
        loop {
            let mut header = [0u8; BLOCK];
            match read_full(input, &mut header) {
                Ok(0) => return Member::Unterminated,
                Ok(n) if n < BLOCK => {
                    return Member::Damaged(SkipReason::TruncatedShard, "short header".into(), None)
                }
                Ok(_) => {}
                Err(e) => return Member::Damaged(SkipReason::UnreadableShard, e.to_string(), None),
            }
            if header.iter().all(|&b| b == 0) {
                return Member::End;
            }
            if !checksum_ok(&header) {
                let reason = if self.units == 0 && self.group.is_none() {
                    SkipReason::UnreadableShard
                } else {
                    SkipReason::DamagedShard
                };
                return Member::Damaged(reason, "tar header checksum mismatch".into(), None);
            }
            let Some(mut size) = parse_size(&header[124..136]) else {
                return Member::Damaged(SkipReason::DamagedShard, "bad size field".into(), None);
            };
            if let Some(pax) = self.next_size.take() {
                size = pax;
            }
            let kind = header[156];
            let this_name = || Some(self.next_name.clone().unwrap_or_else(|| header_name(&header)));
            // A base-256 or pax size near 2^64 has no padded length: the header is damaged.
            let Some(padded) = padded_size(size) else {
                let name = this_name();
                let detail = format!(
                    "member {}: size {size} overflows (damaged size field)",
                    name.as_deref().unwrap_or("?")
                );
                return Member::Damaged(SkipReason::DamagedShard, detail, name);
            };
            let cut = |detail: &str, name: Option<String>| {
                let detail = format!("member {}: {detail}", name.as_deref().unwrap_or("?"));
                Member::Damaged(SkipReason::TruncatedShard, detail, name)
            };
            let wanted = matches!(kind, b'0' | 0 | b'7' | b'x' | b'L');
            if !wanted || size > MAX_MEMBER_BYTES {
                if let Err(detail) = skip_bytes(input, padded, self.len) {
                    return cut(&detail, this_name());
                }
                let name = self.next_name.take().unwrap_or_else(|| header_name(&header));
                if wanted && !matches!(kind, b'x' | b'L') {
                    return Member::Data { name, data: Payload::TooLarge };
                }
                continue;
            }
            // Skipping to a cursor: an image's bytes decide nothing about its sample's unit (its
            // presence does), so they are passed over, not read.
            if self.pass_over != PassOver::Nothing && matches!(kind, b'0' | 0 | b'7') {
                let name = self.next_name.clone().unwrap_or_else(|| header_name(&header));
                let image =
                    || split_name(&name).is_some_and(|(_, ext)| self.members.is_image(&ext));
                if self.pass_over == PassOver::Everything || image() {
                    let at = match skip_bytes(input, padded, self.len) {
                        Ok(at) => at,
                        Err(detail) => return cut(&detail, this_name()),
                    };
                    self.next_name = None;
                    return Member::Data { name, data: Payload::Unread { at, size } };
                }
            }
            let mut data = vec![0u8; padded as usize];
            match read_full(input, &mut data) {
                Ok(n) if n == data.len() => {}
                Ok(_) => return cut("data cut short", this_name()),
                Err(e) => {
                    return Member::Damaged(SkipReason::UnreadableShard, e.to_string(), this_name())
                }
            }
            data.truncate(size as usize);
            match kind {
                b'L' => {
                    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    self.next_name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
                }
                b'x' => {
                    let (name, size) = parse_pax(&data);
                    self.next_name = name.or(self.next_name.take());
                    self.next_size = size;
                }
                _ => {
                    let name = self.next_name.take().unwrap_or_else(|| header_name(&header));
                    return Member::Data { name, data: Payload::Read(data) };
                }
            }
        }
    }
}

impl Iterator for TarShard {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        let unit = self.step();
        self.units += unit.is_some() as u64;
        unit
    }
}

impl Group {
    fn add(&mut self, ext: &str, data: Vec<u8>, names: &MemberNames) {
        if names.is_image(ext) {
            self.image.get_or_insert(data);
        } else if ext == names.caption_ext {
            // A caption file saved by a Windows editor may start with a byte-order mark.
            let text = String::from_utf8_lossy(&data);
            self.caption = Some(text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned());
        } else if ext == "json" {
            self.json = Some(data);
        }
    }

    fn into_unit(self, names: &MemberNames) -> Unit {
        let key = Some(self.key.clone());
        let json: Option<serde_json::Value> =
            self.json.as_deref().and_then(|j| serde_json::from_slice(j).ok());
        let field = |name: &str| json.as_ref().and_then(|j| j.get(name));
        if let Some(status) = field("status").and_then(|s| s.as_str()) {
            if status != "success" {
                return Unit::skip(SkipReason::NotSuccess, key, format!("status {status}"));
            }
        }
        // An image passed over while skipping stands for itself: the unit is skipped anyway.
        let Some(image) = self.image.or(self.image_at.map(|_| Vec::new())) else {
            let reason =
                if self.too_large { SkipReason::MemberTooLarge } else { SkipReason::MissingImage };
            let detail = match &names.image {
                Some(ext) => format!("no usable {ext} member"),
                None => "no usable jpg/png/webp member".to_owned(),
            };
            return Unit::skip(reason, key, detail);
        };
        let caption =
            self.caption.or_else(|| field(&names.caption_field)?.as_str().map(str::to_string));
        let Some(caption) = caption else {
            let detail =
                format!("no {} member or json {:?}", names.caption_ext, names.caption_field);
            return Unit::skip(SkipReason::MissingCaption, key, detail);
        };
        // A number, or a number written as a string (as some exports of LAION's scores are).
        let meta = SampleMeta::from_fields(|name: &str| {
            field(name).and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
        });
        Unit::Sample(RawSample { key: self.key, caption, image, meta })
    }
}

/// (key, lower-case extension) of a member path, or None for names without an extension.
fn split_name(name: &str) -> Option<(String, String)> {
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let dot = name[slash..].find('.')? + slash;
    Some((name[..dot].to_string(), name[dot + 1..].to_ascii_lowercase()))
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Moves `n` bytes on without reading them and returns where they start, or says the member is
/// cut short when they would end past the file's `len`.
fn skip_bytes(input: &mut BufReader<File>, n: u64, len: u64) -> Result<u64, String> {
    let at = input.stream_position().map_err(|e| e.to_string())?;
    if at.checked_add(n).is_none_or(|end| end > len) {
        return Err("data cut short".into());
    }
    let offset = i64::try_from(n).map_err(|_| "data cut short".to_string())?;
    input.seek_relative(offset).map_err(|e| e.to_string())?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_path_up_to_the_first_dot_of_the_file_name() {
        assert_eq!(split_name("a.b/000123.jpg"), Some(("a.b/000123".into(), "jpg".into())));
        assert_eq!(split_name("x.seg.JSON"), Some(("x".into(), "seg.json".into())));
        assert_eq!(split_name("dir/noext"), None);
    }

    /// A tar of `(name, bytes)` members as the `tar` crate writes it (GNU long names past 100
    /// bytes).
    fn tar_of(members: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut tar = ::tar::Builder::new(file.reopen().unwrap());
        for (name, data) in members {
            let mut header = ::tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.finish().unwrap();
        file
    }

    #[test]
    fn keys_are_counted_and_json_fields_found_as_the_reader_names_members() {
        let long = format!("dir/{}", "k".repeat(120));
        let file = tar_of(&[
            ("a.JPG", b"jpeg"),
            ("a.JSON", br#"{"caption": "x", "punsafe": 0.1}"#),
            (&format!("{long}1.jpg"), b"jpeg"),
            (&format!("{long}1.txt"), b"one"),
            (&format!("{long}2.jpg"), b"jpeg"),
        ]);
        // The two long names share their first 100 bytes, which a header alone would read as one
        // key.
        assert_eq!(TarShard::scan_keys(file.path()), 3);
        let units = TarShard::open(file.path(), &ColumnsConfig::default()).count();
        assert_eq!(units, 3);
        let mut fields = TarShard::first_json_fields(file.path()).unwrap();
        fields.sort();
        assert_eq!(fields, ["caption", "punsafe"]);
    }

    #[test]
    fn a_caption_file_is_read_without_its_byte_order_mark() {
        let file = tar_of(&[("a.jpg", b"jpeg"), ("a.txt", "\u{feff}a red square".as_bytes())]);
        let units: Vec<Unit> = TarShard::open(file.path(), &ColumnsConfig::default()).collect();
        let [Unit::Sample(sample)] = &units[..] else { panic!("{}", units.len()) };
        assert_eq!(sample.caption, "a red square");
    }
}
