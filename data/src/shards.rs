//! Shard lists: files, directories, globs, brace ranges (`{00000..00099}`, zero padding kept,
//! and `{a,b}` alternatives) and list files (one entry per line, relative to the list's folder).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The container of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardFormat {
    Parquet,
    Wds,
}

impl ShardFormat {
    /// The format a file name implies: `.parquet`, or `.tar` for WebDataset (in any case).
    pub fn from_path(path: &Path) -> Option<ShardFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" => Some(ShardFormat::Parquet),
            "tar" => Some(ShardFormat::Wds),
            _ => None,
        }
    }
}

/// Expands shard list entries into shard paths, in order, without duplicates.
///
/// An entry is brace-expanded first; then each result is a glob (if it holds `*?[`), a directory
/// (its `.parquet`/`.tar` files, sorted), a shard file, or else a list file. A missing path, a glob
/// that matches nothing, or an empty result is an error.
///
/// A directory or glob leaves out `X.parquet` when `X.tar` sits beside it: img2dataset's
/// WebDataset output writes that metadata-only side-car (no image column) next to each tar. A
/// parquet named explicitly (as a file, a brace range or in a list file) is kept.
pub fn expand_shards(entries: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut sidecars = 0;
    for entry in entries {
        for item in expand_braces(entry)? {
            expand_item(&item, &mut out, &mut sidecars, 0)?;
        }
    }
    if sidecars > 0 {
        tracing::info!(
            "left out {sidecars} .parquet file(s) of {entries:?}: each is the metadata side-car of \
             the .tar of the same name beside it (img2dataset's WebDataset output); name one \
             explicitly to read it"
        );
    }
    // The same file named twice ("d" and "d/./00000.tar", a link) is one shard: otherwise each
    // pass would deal it twice, to two ranks at once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    if entries.is_empty() {
        return Err(DataError::ShardList(
            "data.shards is empty: list the training shards (files, directories or globs)".into(),
        ));
    }
    if out.is_empty() {
        return Err(DataError::ShardList(format!("{entries:?} names no shard")));
    }
    Ok(out)
}

/// Drops the `X.parquet` files that have an `X.tar` beside them; returns how many.
fn drop_sidecars(files: &mut Vec<PathBuf>) -> usize {
    let before = files.len();
    files.retain(|p| {
        ShardFormat::from_path(p) != Some(ShardFormat::Parquet)
            || !["tar", "TAR"].iter().any(|ext| p.with_extension(ext).is_file())
    });
    before - files.len()
}

fn expand_item(
    item: &str,
    out: &mut Vec<PathBuf>,
    sidecars: &mut usize,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        return Err(DataError::ShardList(format!("{item}: list files nest too deeply")));
    }
    // An existing path is taken as written, even with a `[` in its name (`laion[en]/`).
    if item.contains(['*', '?', '[']) && !Path::new(item).exists() {
        let paths =
            glob::glob(item).map_err(|e| DataError::ShardList(format!("{item}: bad glob: {e}")))?;
        let mut matched: Vec<PathBuf> = paths
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file() && ShardFormat::from_path(p).is_some())
            .collect();
        let dropped = drop_sidecars(&mut matched);
        *sidecars += dropped;
        if matched.is_empty() {
            return Err(DataError::ShardList(format!(
                "{item}: glob matches no .parquet/.tar file{}",
                left_out(dropped)
            )));
        }
        matched.sort();
        out.extend(matched);
        return Ok(());
    }
    let path = Path::new(item);
    if path.is_dir() {
        let read = std::fs::read_dir(path).map_err(|e| DataError::io(path, e))?;
        let mut files: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && ShardFormat::from_path(p).is_some())
            .collect();
        let dropped = drop_sidecars(&mut files);
        *sidecars += dropped;
        if files.is_empty() {
            return Err(DataError::ShardList(format!(
                "{item}: directory holds no .parquet/.tar file{}",
                left_out(dropped)
            )));
        }
        files.sort();
        out.extend(files);
    } else if !path.exists() {
        return Err(DataError::ShardList(format!("{item}: no such file or directory")));
    } else if ShardFormat::from_path(path).is_some() {
        out.push(path.to_path_buf());
    } else {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            DataError::ShardList(format!(
                "{item}: neither a shard (.parquet or .tar; a compressed .tar.gz is not read) \
                 nor a list file (text, one shard per line)"
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let joined = if Path::new(line).is_absolute() {
                line.to_string()
            } else {
                base.join(line).to_string_lossy().into_owned()
            };
            for e in expand_braces(&joined)? {
                expand_item(&e, out, sidecars, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// The end of a "matches nothing" error when side-cars were all there was.
fn left_out(sidecars: usize) -> String {
    match sidecars {
        0 => String::new(),
        n => format!(
            " ({n} .parquet file(s) left out as the metadata side-cars of the .tar beside them)"
        ),
    }
}

/// Bash-style brace expansion: `{0..12}`, `{00000..00012}` (width of the wider bound kept),
/// `{a,b,c}`; several groups multiply. At most 10 million results.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| i + open)
        .ok_or_else(|| DataError::ShardList(format!("{pattern}: unclosed '{{'")))?;
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let alternatives: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let bad = || DataError::ShardList(format!("{pattern}: bad range {{{body}}}"));
        let (lo, hi): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if hi < lo || hi - lo >= 10_000_000 {
            return Err(bad());
        }
        // As bash: padded to the wider bound only when a bound has a leading zero ("00..10");
        // a bare "0" is not one ("{0..10}" gives 0, 1, ..., 10).
        let padded = |n: &str| n.len() > 1 && n.starts_with('0');
        let width = if padded(a) || padded(b) { a.len().max(b.len()) } else { 0 };
        (lo..=hi).map(|i| format!("{i:0width$}")).collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let tails = expand_braces(tail)?;
    let mut out = Vec::with_capacity(alternatives.len() * tails.len());
    for alt in &alternatives {
        for t in &tails {
            out.push(format!("{head}{alt}{t}"));
        }
    }
    Ok(out)
}

/// img2dataset's completion marker for a shard: `dir/NNNNN_stats.json` next to `dir/NNNNN.tar`.
pub fn stats_marker(shard: &Path) -> PathBuf {
    let stem = shard.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    shard.with_file_name(format!("{stem}_stats.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brace_ranges_keep_zero_padding() {
        assert_eq!(
            expand_braces("a/{00008..00011}.tar").unwrap(),
            ["a/00008.tar", "a/00009.tar", "a/00010.tar", "a/00011.tar"]
        );
        assert_eq!(expand_braces("{8..10}").unwrap(), ["8", "9", "10"]);
        assert_eq!(expand_braces("{0..10}").unwrap()[..2], ["0", "1"]);
        assert_eq!(expand_braces("{00..2}").unwrap(), ["00", "01", "02"]);
        assert_eq!(expand_braces("{x,y}-{1..2}").unwrap(), ["x-1", "x-2", "y-1", "y-2"]);
        assert!(expand_braces("{3..1}").is_err());
        assert!(expand_braces("{1..").is_err());
    }

    #[test]
    fn files_dirs_globs_and_list_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["00000.tar", "00001.tar", "00002.parquet", "00000_stats.json", "notes.md"] {
            std::fs::write(d.join(name), b"x").unwrap();
        }
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let dir_list = expand_shards(&[s(d)]).unwrap();
        assert_eq!(dir_list, [d.join("00000.tar"), d.join("00001.tar"), d.join("00002.parquet")]);
        assert_eq!(expand_shards(&[s(&d.join("*.tar"))]).unwrap().len(), 2);
        assert_eq!(
            expand_shards(&[s(&d.join("{00000..00001}.tar"))]).unwrap(),
            [d.join("00000.tar"), d.join("00001.tar")]
        );
        std::fs::write(d.join("list.txt"), "# shards\n00001.tar\n\n{00002..00002}.parquet\n")
            .unwrap();
        assert_eq!(
            expand_shards(&[s(&d.join("list.txt"))]).unwrap(),
            [d.join("00001.tar"), d.join("00002.parquet")]
        );
        let err = expand_shards(&[s(&d.join("missing.tar"))]).unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
        assert!(expand_shards(&[]).is_err());
        assert!(expand_shards(&[s(&d.join("*.webp"))]).is_err());
        // One file named twice, by another spelling, is one shard.
        let twice = expand_shards(&[s(&d.join("00001.tar")), s(&d.join(".").join("00001.tar"))]);
        assert_eq!(twice.unwrap().len(), 1);
        // A list file may start with a byte-order mark; extensions match in any case.
        std::fs::write(d.join("00003.TAR"), b"x").unwrap();
        std::fs::write(d.join("bom.txt"), "\u{feff}00003.TAR\n").unwrap();
        assert_eq!(expand_shards(&[s(&d.join("bom.txt"))]).unwrap(), [d.join("00003.TAR")]);
        // A binary file that is no shard is named as such, not read as a list.
        std::fs::write(d.join("00004.tar.gz"), [0x1f, 0x8b, 0x08, 0xff]).unwrap();
        let err = expand_shards(&[s(&d.join("00004.tar.gz"))]).unwrap_err().to_string();
        assert!(err.contains("00004.tar.gz: neither a shard"), "{err}");
        assert_eq!(stats_marker(&d.join("00000.tar")), d.join("00000_stats.json"));
        // A folder with glob characters in its name is read as the folder it is.
        let odd = d.join("laion[en]");
        std::fs::create_dir(&odd).unwrap();
        std::fs::write(odd.join("00000.tar"), b"x").unwrap();
        assert_eq!(expand_shards(&[s(&odd)]).unwrap(), [odd.join("00000.tar")]);
    }
}
