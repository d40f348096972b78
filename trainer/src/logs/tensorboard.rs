//! TensorBoard event files, written directly: TFRecord framing (length, masked CRC-32C, payload,
//! masked CRC-32C) around `tensorflow.Event` protocol buffers. The messages below carry the field
//! numbers of tensorflow/core/util/event.proto and framework/summary.proto; only the fields
//! imagen writes are declared.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::error::{Result, TrainerError};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "7")]
    pub session_log: Option<SessionLog>,
}

/// `tensorflow.SessionLog`: only its status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// 1 = START.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "4")]
    pub image: Option<SummaryImage>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryImage {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 3 = RGB.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// CRC-32C masked as TFRecord does, so that a CRC of data containing CRCs stays well-behaved.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// Frames one record.
pub fn tfrecord(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
    out
}

/// Appends events to `events.out.tfevents.<time>.<host>.<pid>` in a run directory.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl EventWriter {
    pub fn create(dir: &Path) -> Result<Self> {
        let io = |source| TrainerError::Io { path: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        // A counter after the process id, as PyTorch's writer has: two runs of one process in
        // one second (a resume, the arms of an ablation) get two files, in the order written.
        static WRITERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name =
            format!("events.out.tfevents.{}.{host}.{}.{n}", now() as u64, std::process::id());
        let path = dir.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| TrainerError::Io { path: path.clone(), source })?;
        let mut writer = Self { path, out: BufWriter::new(file) };
        writer.write_event(&Event {
            wall_time: now(),
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
            session_log: None,
        })?;
        writer.flush()?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_event(&mut self, event: &Event) -> Result<()> {
        let record = tfrecord(&event.encode_to_vec());
        self.out
            .write_all(&record)
            .map_err(|source| TrainerError::Io { path: self.path.clone(), source })
    }

    /// Marks a (re)start of the run whose first logged step is `first_step`: TensorBoard drops
    /// whatever earlier event files of the directory logged at that step or later (the steps a
    /// killed run logged after its last checkpoint, a rolled-back timeline), so every step shows
    /// once. A `SessionLog` START, as TensorFlow's supervisors wrote at each (re)start.
    pub fn start_session(&mut self, first_step: i64) -> Result<()> {
        self.write_event(&Event {
            wall_time: now(),
            step: first_step,
            file_version: None,
            summary: None,
            session_log: Some(SessionLog { status: 1 }),
        })?;
        self.flush()
    }

    /// Scalars that share a step, in one event.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        let value = values
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: (*tag).to_owned(),
                simple_value: Some(*v as f32),
                image: None,
            })
            .collect();
        self.write_event(&Event {
            wall_time: now(),
            step,
            file_version: None,
            summary: Some(Summary { value }),
            session_log: None,
        })
    }

    /// An RGB image (u8, HWC) stored as PNG.
    pub fn image(
        &mut self,
        step: i64,
        tag: &str,
        rgb: &[u8],
        width: u32,
        height: u32,
    ) -> Result<()> {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
            .map_err(|e| TrainerError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
        let image = SummaryImage {
            height: height as i32,
            width: width as i32,
            colorspace: 3,
            encoded_image_string: png,
        };
        self.write_event(&Event {
            wall_time: now(),
            step,
            file_version: None,
            summary: Some(Summary {
                value: vec![SummaryValue {
                    tag: tag.to_owned(),
                    simple_value: None,
                    image: Some(image),
                }],
            }),
            session_log: None,
        })
    }

    /// Makes everything written so far visible to readers.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| TrainerError::Io { path: self.path.clone(), source })
    }
}

use image::ImageEncoder as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_of_known_input() {
        // CRC-32C("123456789") = 0xE3069283 (RFC 3720 check value), then masked.
        let crc: u32 = 0xE306_9283;
        assert_eq!(crc32c::crc32c(b"123456789"), crc);
        assert_eq!(masked_crc32c(b"123456789"), crc.rotate_right(15).wrapping_add(0xa282_ead8));
    }
}
