//! What a run writes for people to read: TensorBoard event files and `metrics.jsonl`.

pub mod jsonl;
pub mod tensorboard;

pub use jsonl::MetricsJsonl;
pub use tensorboard::EventWriter;

/// Writes `scalars` at `step` to TensorBoard and as one `metrics.jsonl` record: the step, then
/// `fields` (figures that are not TensorBoard scalars), then the scalars by tag.
pub fn write_scalars(
    events: &mut EventWriter,
    jsonl: &mut MetricsJsonl,
    step: u64,
    fields: &[(&str, serde_json::Value)],
    scalars: &[(String, f64)],
) -> crate::error::Result<()> {
    let refs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    events.scalars(step as i64, &refs)?;
    events.flush()?;
    let mut record = serde_json::Map::new();
    record.insert("step".into(), step.into());
    for (k, v) in fields {
        record.insert((*k).into(), v.clone());
    }
    for (k, v) in scalars {
        record.insert(k.clone(), serde_json::json!(v));
    }
    jsonl.write(&serde_json::Value::Object(record))
}
