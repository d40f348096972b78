//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use imagen_data::config::ColumnsConfig;
use imagen_data::reader::{ShardReader, Unit};
use imagen_data::shards::ShardFormat;
use imagen_data::synth::{synthesize, ImageEncoding, SynthFormat, SynthOptions};
use imagen_data::SkipStats;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
}

/// A small synthetic dataset in both formats: 5 train shards of 40, 30 held-out samples.
pub fn synth_dataset(dir: &Path, side: u32) -> PathBuf {
    let opts = SynthOptions {
        side,
        count: 200,
        shards: 5,
        heldout: 30,
        seed: 11,
        format: SynthFormat::Both,
        encoding: ImageEncoding::Jpg,
        quality: 95,
        row_group_rows: 16,
    };
    synthesize(dir, &opts).unwrap();
    dir.to_path_buf()
}

/// All units of a shard: (good samples' keys, skip stats).
pub fn read_all(path: &Path) -> (Vec<String>, SkipStats) {
    let format = ShardFormat::from_path(path).unwrap();
    let mut keys = Vec::new();
    let mut stats = SkipStats::default();
    for unit in ShardReader::open(path, format, &ColumnsConfig::default()) {
        match unit {
            Unit::Sample(s) => keys.push(s.key),
            Unit::Skip { reason, .. } => stats.add_skip(reason),
        }
    }
    (keys, stats)
}

/// Writes a parquet file of one row group with the message type `schema`, whose leaf columns are
/// all BYTE_ARRAY: `columns` holds each leaf's values in order, every value present.
pub fn write_parquet(path: &Path, schema: &str, columns: &[Vec<&[u8]>]) {
    write_parquet_groups(path, schema, &[columns.to_vec()]);
}

/// As [`write_parquet`], one row group per entry of `groups`. Values are written as given: a
/// STRING column may hold bytes that are not UTF-8, as a careless writer's would.
pub fn write_parquet_groups(path: &Path, schema: &str, groups: &[Vec<Vec<&[u8]>>]) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::SchemaDescriptor;
    use std::sync::Arc;
    let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
    let descr = SchemaDescriptor::new(schema.clone());
    let file = std::fs::File::create(path).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    for columns in groups {
        let mut group = writer.next_row_group().unwrap();
        for (i, values) in columns.iter().enumerate() {
            let values: Vec<ByteArray> = values.iter().map(|v| v.to_vec().into()).collect();
            let max_def = descr.column(i).max_def_level();
            let defs = vec![max_def; values.len()];
            let mut column = group.next_column().unwrap().unwrap();
            let levels = (max_def > 0).then_some(&defs[..]);
            column.typed::<ByteArrayType>().write_batch(&values, levels, None).unwrap();
            column.close().unwrap();
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
}

/// img2dataset's metadata-only side-car of a WebDataset tar: url, caption, key and status per
/// row, no image column.
pub fn write_sidecar_parquet(path: &Path, rows: usize) {
    let keys: Vec<String> = (0..rows).map(|i| format!("{i:09}")).collect();
    let urls: Vec<String> = keys.iter().map(|k| format!("http://x/{k}.jpg")).collect();
    let captions: Vec<String> = keys.iter().map(|k| format!("caption {k}")).collect();
    fn column(v: &[String]) -> Vec<&[u8]> {
        v.iter().map(|s| s.as_bytes()).collect()
    }
    write_parquet(
        path,
        "message schema { OPTIONAL BYTE_ARRAY url (STRING); OPTIONAL BYTE_ARRAY caption (STRING); \
         OPTIONAL BYTE_ARRAY key (STRING); OPTIONAL BYTE_ARRAY status (STRING); }",
        &[column(&urls), column(&captions), column(&keys), vec![&b"success"[..]; rows]],
    );
}
