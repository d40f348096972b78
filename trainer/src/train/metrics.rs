use tch::{Kind, Tensor};

/// Timestep buckets of the bucketed loss: t in [0, 0.25), [0.25, 0.5), [0.5, 0.75), [0.75, 1].
pub const LOSS_BUCKETS: i64 = 4;

/// Training figures accumulated over one logging window. Per-sample losses are summed on the
/// device, so the window costs no host synchronisation until it is read.
pub struct StepMetrics {
    bucket_sum: Option<Tensor>,
    bucket_count: Option<Tensor>,
    pub loss_sum: f64,
    pub steps: u64,
    pub samples: u64,
    pub data_wait_secs: f64,
    pub elapsed_secs: f64,
    pub last_grad_norm: f64,
}

impl Default for StepMetrics {
    fn default() -> Self {
        Self {
            bucket_sum: None,
            bucket_count: None,
            loss_sum: 0.0,
            steps: 0,
            samples: 0,
            data_wait_secs: 0.0,
            elapsed_secs: 0.0,
            last_grad_norm: 0.0,
        }
    }
}

impl StepMetrics {
    /// Adds per-sample losses [B] at times t [B] to the buckets.
    pub fn add_bucketed(&mut self, losses: &Tensor, t: &Tensor) {
        let losses = losses.detach().to_kind(Kind::Float);
        let index = (t.detach() * LOSS_BUCKETS as f64)
            .floor()
            .clamp(0.0, (LOSS_BUCKETS - 1) as f64)
            .to_kind(Kind::Int64);
        let zeros = || Tensor::zeros([LOSS_BUCKETS], (Kind::Float, losses.device()));
        let sum = self.bucket_sum.take().unwrap_or_else(zeros);
        let count = self.bucket_count.take().unwrap_or_else(zeros);
        self.bucket_sum = Some(sum.index_add(0, &index, &losses));
        self.bucket_count = Some(count.index_add(0, &index, &losses.ones_like()));
    }

    /// Mean loss of each timestep bucket (NaN where a bucket saw no sample).
    pub fn bucket_means(&self) -> Vec<f64> {
        match (&self.bucket_sum, &self.bucket_count) {
            (Some(sum), Some(count)) => {
                let means = (sum / count).to_device(tch::Device::Cpu);
                Vec::<f64>::try_from(means.to_kind(Kind::Double)).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Sums the window's bucket figures and sample count over the ranks through `sum` (an
    /// in-place all-reduce), so rank 0 logs the whole job's. Every rank calls it at the same step.
    pub fn reduce_over_ranks(
        &mut self,
        device: tch::Device,
        sum: impl FnOnce(&[&Tensor]) -> crate::error::Result<()>,
    ) -> crate::error::Result<()> {
        let zeros = || Tensor::zeros([LOSS_BUCKETS], (Kind::Float, device));
        let bucket_sum = self.bucket_sum.take().unwrap_or_else(zeros);
        let bucket_count = self.bucket_count.take().unwrap_or_else(zeros);
        let samples = Tensor::from(self.samples as f64).to_device(device);
        sum(&[&bucket_sum, &bucket_count, &samples])?;
        self.samples = samples.double_value(&[]) as u64;
        self.bucket_sum = Some(bucket_sum);
        self.bucket_count = Some(bucket_count);
        Ok(())
    }

    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.steps.max(1) as f64
    }
}
