use std::path::{Path, PathBuf};

use toml::Value;

use crate::checkpoint::{self, Checkpoint};
use crate::config::Config;
use crate::diffusion::DiffusionConfig;
use crate::error::{Result, TrainerError};
use crate::text::identity::encoder_fingerprint;

/// Where a run starts from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Resume {
    /// The newest intact checkpoint of the stage directory when there is one, else from
    /// scratch.
    #[default]
    Auto,
    /// The newest intact checkpoint, which must exist.
    Latest,
    /// A given checkpoint directory.
    Path(PathBuf),
    /// From scratch, even if the stage directory holds checkpoints.
    Never,
}

impl Resume {
    /// `latest`, `auto`, `never`, or a checkpoint directory.
    pub fn parse(text: &str) -> Self {
        match text {
            "latest" => Resume::Latest,
            "auto" => Resume::Auto,
            "never" => Resume::Never,
            path => Resume::Path(PathBuf::from(path)),
        }
    }

    pub fn locate(&self, stage_dir: &Path) -> Result<Option<Checkpoint>> {
        match self {
            Resume::Auto => checkpoint::latest_intact(stage_dir),
            Resume::Latest => checkpoint::latest_intact(stage_dir)?.map(Some).ok_or_else(|| {
                TrainerError::Checkpoint(format!(
                    "--resume latest: {} holds no intact checkpoint",
                    stage_dir.display()
                ))
            }),
            Resume::Path(dir) => {
                let mut ckpt = Checkpoint::open(dir)?;
                ckpt.verify()?;
                Ok(Some(ckpt))
            }
            Resume::Never => Ok(None),
        }
    }
}

/// Refuses to resume (or sample) when the config changes what the checkpoint's tensors mean: the
/// stage's U-Net topology, the text encoder and its mode. Lists every differing field. The
/// encoder at another path is the same encoder where its fingerprint matches the checkpoint's.
pub fn check_compatible(ckpt: &Checkpoint, current: &Config, stage: usize) -> Result<()> {
    let saved = saved_config(ckpt)?;
    let now: Value = toml::from_str(&current.to_toml()).expect("a config round-trips through TOML");
    let mut diffs = Vec::new();
    let unet = |v: &Value, stage: usize| {
        v.get("stages").and_then(|s| s.get(stage)).and_then(|s| s.get("unet")).cloned()
    };
    let (saved_unet, now_unet) = (unet(&saved, ckpt.trained_stage(stage)), unet(&now, stage));
    diff(&format!("stages[{stage}].unet"), saved_unet.as_ref(), now_unet.as_ref(), &mut diffs);
    let text = |v: &Value, key: &str| v.get("text").and_then(|t| t.get(key)).cloned();
    let length = |v: &Value| text(v, "max_length");
    diff("text.max_length", length(&saved).as_ref(), length(&now).as_ref(), &mut diffs);
    let (saved_model, now_model) = (text(&saved, "model"), text(&now, "model"));
    // Whether the encoder folder holds what the checkpoint recorded (None: nothing recorded).
    let fingerprint = ckpt
        .state
        .text_encoder
        .as_ref()
        .map(|recorded| encoder_fingerprint(&current.text.model).map(|now| &now == recorded));
    let same_encoder = fingerprint.as_ref().and_then(|f| f.as_ref().ok().copied());
    if saved_model == now_model && same_encoder == Some(false) {
        diffs.push(format!(
            "text.model ({} holds another encoder than the checkpoint trained with: its \
             config.json, tokenizer.json or weight files changed since)",
            current.text.model.display()
        ));
    } else if saved_model != now_model {
        if same_encoder == Some(true) {
            tracing::info!(
                "text.model: {} holds the encoder the checkpoint was trained with (at {})",
                current.text.model.display(),
                saved_model.as_ref().and_then(toml::Value::as_str).unwrap_or("?")
            );
        } else if let Some(Err(e)) = &fingerprint {
            // Not another encoder: none at all where the config points.
            diffs.push(format!(
                "text.model ({} has no readable encoder, where the checkpoint's was at {}: {e})",
                current.text.model.display(),
                saved_model.as_ref().and_then(toml::Value::as_str).unwrap_or("?")
            ));
        } else {
            diff("text.model", saved_model.as_ref(), now_model.as_ref(), &mut diffs);
        }
    }
    // The two frozen modes hold the same tensors (none of the encoder's): a run may switch
    // between the cache and the online encoder. Fine-tuning adds the encoder's weights and
    // optimizer state, and which of them train.
    let mode = |v: &Value| {
        let m = text(v, "mode");
        match m.as_ref().and_then(Value::as_str) {
            Some("frozen-cached" | "frozen-online") => {
                Some(Value::from("frozen-cached or frozen-online"))
            }
            _ => m,
        }
    };
    let (saved_mode, now_mode) = (mode(&saved), mode(&now));
    diff("text.mode", saved_mode.as_ref(), now_mode.as_ref(), &mut diffs);
    // The frozen encoder's precision shapes nothing, but the U-Net was trained on embeddings
    // of the other one: allowed, said.
    let (saved_dtype, now_dtype) = (text(&saved, "dtype"), text(&now, "dtype"));
    if saved_dtype.is_some() && saved_dtype != now_dtype {
        tracing::warn!(
            "text.dtype was {} and is now {}: the U-Net goes on from embeddings of another \
             precision",
            saved_dtype.as_ref().map_or("?".into(), ToString::to_string),
            now_dtype.as_ref().map_or("default".into(), ToString::to_string)
        );
    }
    if now_mode.as_ref().and_then(Value::as_str) == Some("finetune") && saved_mode == now_mode {
        for key in ["freeze_embedding", "freeze_lowest_blocks"] {
            let (a, b) = (text(&saved, key), text(&now, key));
            diff(&format!("text.{key}"), a.as_ref(), b.as_ref(), &mut diffs);
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    Err(TrainerError::Checkpoint(format!(
        "the config changes the model's shape since the checkpoint was written; differing fields: {}",
        diffs.join(", ")
    )))
}

/// The config a checkpoint trained under, as a TOML tree with today's defaults filled in, so
/// that a field added since compares as the default the checkpoint trained with. A config this
/// build cannot read (a newer one) is compared as written.
fn saved_config(ckpt: &Checkpoint) -> Result<Value> {
    if let Ok(cfg) = toml::from_str::<Config>(&ckpt.config_toml) {
        return Ok(toml::from_str(&cfg.to_toml()).expect("a config round-trips through TOML"));
    }
    toml::from_str(&ckpt.config_toml)
        .map_err(|e| TrainerError::Checkpoint(format!("{}: config.toml: {e}", ckpt.dir.display())))
}

/// Whether `ckpt` is a checkpoint of the stage directory `stage_dir` (a run going on), rather than
/// another run's (a warm start).
pub fn continues_here(ckpt: &Checkpoint, stage_dir: &Path) -> bool {
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    // Canonical before the parent is taken: a bare `--resume step-…` has the parent "".
    canonical(&ckpt.dir).parent().is_some_and(|parent| parent == canonical(stage_dir))
}

/// Diffusion settings that give the U-Net's inputs and output their meaning: continuing a run
/// under another one trains its weights toward another target.
const DIFFUSION_MEANING: [&str; 5] =
    ["objective", "schedule", "shift_base_side", "logsnr_min", "logsnr_max"];

/// Compares the stage's diffusion settings (the sampler aside) with those the checkpoint trained
/// under. A run continuing in its own stage directory (`continuing`) is refused a change of what
/// the output means ([`DIFFUSION_MEANING`]); a warm start from another run's checkpoint may
/// change it, said. Other changes (loss weighting, conditioning dropout, augmentation) are
/// training choices: allowed, said.
pub fn check_diffusion_kept(
    ckpt: &Checkpoint,
    current: &Config,
    stage: usize,
    continuing: bool,
) -> Result<()> {
    // The saved config is read with today's defaults, so a field added since compares as the
    // default the checkpoint trained with.
    let saved =
        toml::from_str::<Config>(&ckpt.config_toml).map_err(|e| e.to_string()).and_then(|c| {
            let trained = c.stage(ckpt.trained_stage(stage));
            trained.map(|s| s.diffusion.clone()).map_err(|e| e.to_string())
        });
    let saved = match saved {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(
                "{}: cannot read the diffusion settings it trained under ({e}); not compared",
                ckpt.dir.display()
            );
            return Ok(());
        }
    };
    let now = current.stage(stage)?.diffusion.clone();
    let as_value = |d: DiffusionConfig| {
        let mut v = Value::try_from(d).expect("a diffusion config serialises");
        if let Some(table) = v.as_table_mut() {
            table.remove("sampler");
        }
        v
    };
    let mut diffs = Vec::new();
    let path = format!("stages[{stage}].diffusion");
    diff(&path, Some(&as_value(saved)), Some(&as_value(now)), &mut diffs);
    let meaning =
        |d: &String| DIFFUSION_MEANING.iter().any(|k| d.starts_with(&format!("{path}.{k} ")));
    let (hard, soft): (Vec<String>, Vec<String>) = diffs.into_iter().partition(meaning);
    if !soft.is_empty() {
        tracing::warn!(
            "training goes on under other diffusion settings than {} trained with: {}",
            ckpt.dir.display(),
            soft.join(", ")
        );
    }
    if hard.is_empty() {
        return Ok(());
    }
    if !continuing {
        tracing::warn!(
            "warm start from {}: the U-Net's target changes ({}); sampling reads it as this \
             run's",
            ckpt.dir.display(),
            hard.join(", ")
        );
        return Ok(());
    }
    Err(TrainerError::Checkpoint(format!(
        "the config changes what the U-Net predicts or is conditioned on since {} was written; \
         differing fields: {}. Continuing would train the weights toward another target; to \
         start a new run from these weights, give it another --run-dir and --resume {}",
        ckpt.dir.display(),
        hard.join(", "),
        ckpt.dir.display()
    )))
}

/// The `train.max_steps` a checkpoint's run trained under (the horizon of its cosine decay).
pub fn saved_max_steps(saved_toml: &str) -> Option<u64> {
    let saved: Value = toml::from_str(saved_toml).ok()?;
    let steps = saved.get("train")?.get("max_steps")?.as_integer()?;
    u64::try_from(steps).ok()
}

fn diff(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(Value::Table(x)), Some(Value::Table(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (x, y) if x == y => {}
        (x, y) => out.push(format!(
            "{path} ({} -> {})",
            x.map_or("absent".to_owned(), Value::to_string),
            y.map_or("absent".to_owned(), Value::to_string)
        )),
    }
}
