#!/usr/bin/env bash
# The README's demo, from nothing: bootstrap and build, synthesise the captioned scenes, make the
# DEMO-ONLY T5, cache its embeddings of the captions, train the 32x32 base and the 32->64 super-resolution stage on CPU, and sample a
# grid for held-out captions. Everything goes under checkpoints/demo/.
# Environment: DEMO_BASE_STEPS, DEMO_SR_STEPS (training steps per stage), DEMO_THREADS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
make --no-print-directory build
bin=target/release/imagen
demo=checkpoints/demo
config=configs/demo.toml
threads=${DEMO_THREADS:-$(nproc)}
# libtorch's OpenMP threads spin while they wait for each other; when anything else holds a core,
# the spinning starves training (measured on 2 busy cores: 30 steps in 225 s spinning, 21 s
# passive).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
common=(--config "$config" --run-dir "$demo/run")

captions() { # shard dir -> one caption per line
  "$bin" data inspect "$1" --json --no-decode --examples 1000000 |
    python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["example_captions"]))'
}

if [[ ! -f "$demo/data/synth.json" ]]; then
  echo "== synthetic scenes"
  "$bin" data synth --out "$demo/data" --side 64 --count 4320 --shards 4 --heldout 48 --format parquet
fi
captions "$demo/data/parquet/train" >"$demo/captions.txt"
captions "$demo/data/parquet/heldout" >"$demo/heldout_prompts.txt"
if [[ ! -f "$demo/t5/model.safetensors" ]]; then
  echo "== demo T5 (random weights, demo only)"
  "$bin" text make-demo --captions "$demo/captions.txt" --out "$demo/t5"
fi

echo "== T5 embedding cache of the training captions"
"$bin" embed --config "$config"

# The two stages train independently (stage 1 learns from the real low-res images), so with two or
# more cores they train side by side, each on half of them: on 2 cores two one-thread trainings
# got 106 samples/s between them, where one two-thread training got 80 with spinning OpenMP
# threads and 40 with passive ones (BENCHMARKS.md, "Demo").
base=(train "${common[@]}" --stage 0 --max-steps "${DEMO_BASE_STEPS:-3000}")
sr=(train "${common[@]}" --stage 1 --max-steps "${DEMO_SR_STEPS:-1000}")
if ((threads >= 2)); then
  half=(--set "train.threads=$((threads / 2))")
  echo "== stage 0 (text -> 32x32) and stage 1 (32 -> 64) side by side, $((threads / 2)) thread(s) each"
  echo "   (stage 1's log: $demo/stage-1.log)"
  "$bin" "${sr[@]}" "${half[@]}" >"$demo/stage-1.log" 2>&1 &
  sr_pid=$!
  "$bin" "${base[@]}" "${half[@]}" || { kill "$sr_pid" 2>/dev/null; exit 1; }
  wait "$sr_pid" || { echo "stage 1 failed; its log:" >&2; tail -n 20 "$demo/stage-1.log" >&2; exit 1; }
  tail -n 1 "$demo/stage-1.log"
else
  echo "== stage 0: text -> 32x32"
  "$bin" "${base[@]}" --set "train.threads=$threads"
  echo "== stage 1: 32 -> 64"
  "$bin" "${sr[@]}" --set "train.threads=$threads"
fi
echo "== samples for held-out captions"
"$bin" sample --config "$config" --run-dir "$demo/run" --prompts "$demo/heldout_prompts.txt" \
  --out "$demo/samples" --seed 0
echo "== do the samples follow their captions? (a deterministic detector scores each attribute)"
"$bin" eval conditioning "$demo/samples"
echo
echo "sample grid:      $root/$demo/samples/grid.png (prompts in order: $demo/samples/prompts.txt,"
echo "                  each image with its caption: $demo/samples/index.html)"
echo "TensorBoard logs: tensorboard --logdir $root/$demo/run"
