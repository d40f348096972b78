//! `imagen eval run`: a trained cascade's samples for a prompt file, scored by the metrics of
//! `imagen-eval` (conditioning accuracy, CLIP score, FID) and the held-out validation loss, with
//! each metric's spread over the samples.

mod metric;
mod report;
mod run;
mod summary;

pub use metric::Metric;
pub use report::{
    metrics_table, write_report, ClipReport, ConditioningReport, EvalReport, FidReport, Row,
    StageCheckpoint, ValLossReport, SPREAD_NOTE,
};
pub(crate) use run::check_options;
pub use run::{conditioning, evaluate, EvalOptions};
pub use summary::Summary;
