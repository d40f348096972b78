use tch::{Kind, Tensor};

/// Timestep buckets of the bucketed loss: t in [0, 0.25), [0.25, 0.5), [0.5, 0.75), [0.75, 1].
pub const LOSS_BUCKETS: i64 = 4;

/// The log tag of bucket `i` under `prefix` ("train" -> `train/loss_t0`), shared by the
/// training and the validation loss so that both read alike in TensorBoard.
pub fn bucket_tag(prefix: &str, i: usize) -> String {
    format!("{prefix}/loss_t{i}")
}

/// Per-sample losses summed by timestep bucket, on the device: adding costs no host
/// synchronisation until the sums are read.
#[derive(Default)]
pub struct BucketedLoss {
    sum: Option<Tensor>,
    count: Option<Tensor>,
}

impl BucketedLoss {
    /// Adds per-sample losses [B] at times t [B] in [0, 1].
    pub fn add(&mut self, losses: &Tensor, t: &Tensor) {
        let losses = losses.detach().to_kind(Kind::Float);
        let index = (t.detach().to_kind(Kind::Float) * LOSS_BUCKETS as f64)
            .floor()
            .clamp(0.0, (LOSS_BUCKETS - 1) as f64)
            .to_kind(Kind::Int64);
        let zeros = || Tensor::zeros([LOSS_BUCKETS], (Kind::Float, losses.device()));
        let sum = self.sum.take().unwrap_or_else(zeros);
        let count = self.count.take().unwrap_or_else(zeros);
        self.sum = Some(sum.index_add(0, &index, &losses));
        self.count = Some(count.index_add(0, &index, &losses.ones_like()));
    }

    /// The (sum, count) tensors, zeros where nothing was added yet (every rank must hand the
    /// same tensors to a collective), for reducing in place.
    pub fn tensors(&mut self, device: tch::Device) -> (&Tensor, &Tensor) {
        let zeros = || Tensor::zeros([LOSS_BUCKETS], (Kind::Float, device));
        let sum = self.sum.get_or_insert_with(zeros);
        let count = self.count.get_or_insert_with(zeros);
        (sum, count)
    }

    fn host(t: &Option<Tensor>) -> Vec<f64> {
        t.as_ref()
            .map(|t| Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(tch::Device::Cpu)))
            .and_then(|v| v.ok())
            .unwrap_or_default()
    }

    /// Mean loss of each bucket (NaN where a bucket saw no sample; empty before any `add`).
    pub fn means(&self) -> Vec<f64> {
        let (sum, count) = (Self::host(&self.sum), Self::host(&self.count));
        sum.iter().zip(&count).map(|(s, c)| s / c).collect()
    }

    /// Samples per bucket (empty before any `add`).
    pub fn counts(&self) -> Vec<u64> {
        Self::host(&self.count).iter().map(|c| *c as u64).collect()
    }
}

/// Training figures accumulated over one logging window. Per-sample losses are summed on the
/// device, so the window costs no host synchronisation until it is read.
#[derive(Default)]
pub struct StepMetrics {
    buckets: BucketedLoss,
    pub loss_sum: f64,
    pub steps: u64,
    pub samples: u64,
    pub data_wait_secs: f64,
    pub elapsed_secs: f64,
    pub last_grad_norm: f64,
    /// GiB allocated on the training GPU at the window's end (None on the CPU).
    pub gpu_memory_gb: Option<f64>,
    /// Good samples and skipped ones (corrupt, filtered, ...) the data loader has counted since
    /// the run began: this rank's, then the job's after `reduce_over_ranks`.
    pub data_good: u64,
    pub data_skipped: u64,
}

impl StepMetrics {
    /// Adds per-sample losses [B] at times t [B] to the buckets.
    pub fn add_bucketed(&mut self, losses: &Tensor, t: &Tensor) {
        self.buckets.add(losses, t);
    }

    /// Mean loss of each timestep bucket (NaN where a bucket saw no sample).
    pub fn bucket_means(&self) -> Vec<f64> {
        self.buckets.means()
    }

    /// Sums the window's bucket figures, sample count and data counts over the ranks through
    /// `sum` (an in-place all-reduce), so rank 0 logs the whole job's. Every rank calls it at the
    /// same step.
    pub fn reduce_over_ranks(
        &mut self,
        device: tch::Device,
        sum: impl FnOnce(&[&Tensor]) -> crate::error::Result<()>,
    ) -> crate::error::Result<()> {
        // f64 holds these counts exactly (below 2^53).
        let counts = [self.samples, self.data_good, self.data_skipped].map(|c| c as f64);
        let counts = Tensor::from_slice(&counts).to_device(device);
        let (bucket_sum, bucket_count) = self.buckets.tensors(device);
        sum(&[bucket_sum, bucket_count, &counts])?;
        let summed = Vec::<f64>::try_from(counts.to_device(tch::Device::Cpu))
            .map_err(crate::error::TrainerError::Torch)?;
        self.samples = summed[0] as u64;
        self.data_good = summed[1] as u64;
        self.data_skipped = summed[2] as u64;
        Ok(())
    }

    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.steps.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_split_time_in_quarters() {
        let mut b = BucketedLoss::default();
        let t = Tensor::from_slice(&[0.0f32, 0.24, 0.25, 0.6, 0.99, 1.0]);
        let l = Tensor::from_slice(&[1.0f32, 3.0, 5.0, 7.0, 9.0, 11.0]);
        b.add(&l, &t);
        assert_eq!(b.counts(), vec![2, 1, 1, 2]);
        assert_eq!(b.means(), vec![2.0, 5.0, 7.0, 10.0]);
        assert_eq!(bucket_tag("val", 3), "val/loss_t3");
    }
}
