//! `imagen train`: one stage of the cascade, from the data stream to checkpoints.

mod batch;
mod device;
mod host_memory;
mod r#loop;
mod metrics;
mod model;
mod replicas;
mod resume;
mod run_dir;
mod signals;
mod validate;

pub use batch::images_to_tensor;
pub use device::{prepare_process, resolve_device, use_bf16, visible_cuda};
pub use host_memory::keep_freed_host_memory;
pub use metrics::{bucket_tag, BucketedLoss, StepMetrics, LOSS_BUCKETS};
pub use model::{averaged_unet, param_groups, trained_unet, StageModel};
pub(crate) use r#loop::sample_seeds;
pub use r#loop::{copy_into, train, TrainOptions, TrainOutcome};
pub use replicas::Replicas;
pub use resume::{check_compatible, Resume};
pub use run_dir::stage_dir;
pub use signals::{StopFlag, REPEAT_WINDOW};
pub use validate::{
    log_validation, validation_captions, validation_loss, validation_loss_of, validation_loss_with,
    ValidationLoss, Weights,
};
