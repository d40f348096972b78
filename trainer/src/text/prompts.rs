//! Reading caption files: one caption per line, UTF-8 checked line by line.

use std::path::Path;

use crate::error::{Result, TrainerError};

/// The lines of `path` (a trailing newline does not add an empty caption; `\r\n` is accepted).
/// Invalid UTF-8 is refused with the line number; empty lines are kept as empty captions.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let bytes =
        std::fs::read(path).map_err(|source| TrainerError::Io { path: path.to_owned(), source })?;
    // A file saved by a Windows editor may start with a byte-order mark.
    let text = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            String::from_utf8(line.to_vec()).map_err(|e| {
                TrainerError::Text(format!("{}:{}: invalid UTF-8 ({e})", path.display(), i + 1))
            })
        })
        .collect()
}
