#!/usr/bin/env bash
# The GPU checks of issues 6, 7 and 9 as one script, so a session lent a GPU machine for a few
# minutes spends them measuring, not setting up.
#
#   scripts/gpu_checks.sh prepare       # here: release build, stripped binary and the peer's
#                                       # wheels in .device/ (git-ignored; about 32 MB to carry)
#   scripts/gpu_checks.sh run OUT       # there: every check, results in OUT/results.jsonl
#
# `run` finds libtorch through the machine's own python3 torch (2.11.0), as README's "Running on
# a GPU machine" says, and installs the carried wheels of lucidrains' imagen-pytorch into
# /tmp/site. Each check has its own time limit and a failed check does not stop the others;
# OUT/log.txt has everything they printed. GPU_CHECKS_SMALL=1 runs the same checks with tiny
# configs and batches (how the script itself is tried on a machine without a GPU).
#
# All of it takes longer than one device call may run (10 minutes), and a session has 15 minutes
# of device time with the machine's start-up (1-2 minutes) in them, so GPU_CHECKS_ONLY (a bash
# regex over the check names) picks a part, by priority: issue 9's targets first (each peer run
# embeds our own full bench report: samples/s, phases, peak memory, MFU), then issue 7's
# world-size-1 NCCL run and issue 6's bf16 training, sent at once after the first (the machine
# goes back after 30 s idle, and a new one costs minutes):
#   GPU_CHECKS_ONLY='^(env|peer_.*)$' scripts/gpu_checks.sh run OUT                 # ~7 min
#   GPU_CHECKS_BUDGET=<what is left> GPU_CHECKS_ONLY='^(env|nccl_match|base64_bf16_launch1|demo_.*)$' ...
# and where time is left, or in a later session, the levers:
#   GPU_CHECKS_ONLY='^(env|base64_bf16|base64_bf16_(loop_adamw|act_ckpt|channels_last|no_cudnn_benchmark)|base64_fp32|sr256_bf16)$'
#   GPU_CHECKS_ONLY='^(env|demo_data|ckpt_write_.*)$'
# A call cut short still returns the lines that results.jsonl had by then, but a check killed
# mid-way is lost: GPU_CHECKS_BUDGET (seconds, default 540, under the device's 600 s per call)
# caps each check's limit at the time left and skips the checks that no longer fit, so the call
# ends by itself. Run `prepare` right before the device calls: `.device/imagen` must be the
# binary of the commit being measured (`run` prints .device/COMMIT).
# GPU_CHECKS_DEMO_STEPS sets the GPU demo's training steps (default 1500).
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
  set -e
  make build
  mkdir -p .device
  strip -o .device/imagen target/release/imagen
  echo "$(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')" \
    >.device/COMMIT
  rm -rf .device/whl
  # The peer and whichever of its imports the GPU machine's image lacks (device KINDS.md), for
  # its Python 3.12.
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .device/whl -r scripts/requirements-device-peer.txt
  du -sh .device
}

run_checks() {
  local out=$1
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  local results="$out/results.jsonl" log="$out/log.txt" work
  work=$(mktemp -d)
  : >"$results"
  exec > >(tee -a "$log") 2>&1
  local bin=${IMAGEN:-.device/imagen}
  if [ ! -x "$bin" ]; then
    echo "no $bin: run 'scripts/gpu_checks.sh prepare' here and carry .device" >&2
    return 1
  fi
  echo "binary: $bin, commit $(cat .device/COMMIT 2>/dev/null || echo unknown)"
  # Nothing may reach for the network (imagen-pytorch's import asks Hugging Face's hub).
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
  # NCCL's warnings (its first run on these machines) into files that come back, not into the
  # checks' JSON on stdout.
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN} NCCL_DEBUG_FILE=${NCCL_DEBUG_FILE:-$out/nccl.%h.%p.log}
  local deadline=$(($(date +%s) + ${GPU_CHECKS_BUDGET:-540}))
  local torch_dir
  if torch_dir=$("${PYTHON:-python3}" -c 'import torch, os; print(os.path.dirname(torch.__file__))' \
    2>/dev/null); then
    export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  else
    # Not "/lib": the binary's own library path (this checkout's .venv) is left to find it.
    echo "warning: ${PYTHON:-python3} cannot import torch; libtorch comes from the binary's own" \
      "library path" >&2
  fi
  if [ -d .device/whl ]; then
    # PYTHONPATH puts the carried wheels before the image's own packages for every python3 of
    # the run: typing-extensions only where the image's is older than pydantic needs (4.16).
    local whls=(.device/whl/*.whl)
    if python3 -c 'import importlib.metadata as m, sys
v = tuple(int(x) for x in m.version("typing_extensions").split(".")[:2])
sys.exit(0 if v >= (4, 16) else 1)' 2>/dev/null; then
      whls=("${whls[@]/*typing_extensions-*/}")
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site ${whls[@]} && export PYTHONPATH=/tmp/site
  fi

  # Sizes: the issue's base-64 and SR-256 models at training batches on the H200, or tiny ones.
  local base=configs/base64.toml sr=configs/sr256.toml base_batch=64 sr_batch=16 steps=20
  local peer_steps=10 demo_steps=${GPU_CHECKS_DEMO_STEPS:-1500} timeout=240 peer_timeout=330
  local ckpt_dim=256
  # The least time worth starting a 2B-parameter check with (start-up, autotuning, a few steps):
  # one cut short reports nothing.
  local big=120
  # On the GPU every command asks for CUDA: "auto" would fall back to the CPU where CUDA does not
  # load, and spend each check's limit on a 2B-parameter model there.
  local dev=(--set train.device=cuda)
  # The peer's widths the search finds (BENCHMARKS.md, "Training step against imagen-pytorch";
  # the search takes 20-40 s a check).
  local peer_base=(--mapping standard --peer-dim 584) peer_sr=(--mapping standard --peer-dim 152)
  if [ "${GPU_CHECKS_SMALL:-0}" = 1 ]; then
    base=configs/bench-cpu.toml sr=configs/bench-cpu.toml base_batch=2 sr_batch=2 steps=2
    peer_steps=2 demo_steps=20 timeout=600 peer_timeout=600 ckpt_dim=32 dev=() peer_base=()
    peer_sr=() big=60
  fi

  # check NAME SECONDS[:NEED] CMD...: runs CMD for at most SECONDS, appends {"check": NAME,
  # "rc": .., "secs": .., "report": the JSON documents CMD printed} to results.jsonl. It is
  # skipped when less than NEED seconds (default 60, or SECONDS where that is less) of the budget
  # are left: a check cut short reports nothing and only spends the budget.
  wants() { [ -z "${GPU_CHECKS_ONLY:-}" ] || [[ $1 =~ $GPU_CHECKS_ONLY ]]; }
  last_rc=0
  check() {
    local name=$1 limit=${2%%:*} need
    need=$((limit < 60 ? limit : 60))
    [[ $2 == *:* ]] && need=${2#*:}
    shift 2
    if ! wants "$name"; then
      return 0
    fi
    local left=$((deadline - $(date +%s) - 10))
    if ((left < need)); then
      echo "== $name: skipped, ${left}s left of GPU_CHECKS_BUDGET"
      echo "{\"check\": \"$name\", \"skipped\": \"budget\"}" >>"$results"
      return 0
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s): $*"
    local start rc
    start=$(date +%s.%N)
    # SIGTERM first (a training saves and exits), SIGKILL 15 s later (a process stuck in a CUDA
    # or NCCL call does not answer SIGTERM).
    timeout -k 15 "$limit" "$@" >"$work/$name.json"
    rc=$?
    python3 - "$name" "$rc" "$start" "$work/$name.json" >>"$results" <<'PY'
import json, sys, time
name, rc, start, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
text = open(path).read()
dec, docs, i = json.JSONDecoder(), [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    try:
        doc, i = dec.raw_decode(text, i)
    except ValueError:
        docs.append({"unparsed": text[i:][-4000:]})
        break
    docs.append(doc)
print(json.dumps({"check": name, "rc": rc, "secs": round(time.time() - start, 1), "report": docs}))
PY
    echo "   rc $rc"
    last_rc=$rc
  }

  echo "checks selected: ${GPU_CHECKS_ONLY:-all}"
  nvidia-smi || true
  check env 60 "$bin" env --json
  if [ "${GPU_CHECKS_SMALL:-0}" != 1 ] && wants env &&
    ! grep -q '"cuda_available": *true' "$work/env.json"; then
    echo "CUDA is not available to $bin (see env above): no GPU check can run"
    return 1
  fi
  # The shim lays out ProcessGroupNCCL's options with the NCCL headers it was built against; the
  # machine's libtorch must carry the same NCCL, or the group would be built on a wrong layout.
  check nccl_match 60 python3 -c '
import json, subprocess, sys, torch
ours = json.loads(subprocess.run([sys.argv[1], "env", "--json"], capture_output=True,
                                 text=True, check=True).stdout)["nccl_header_version"]
major, minor, patch = torch.cuda.nccl.version()[:3]
theirs = major * 10000 + minor * 100 + patch
print(json.dumps({"shim_nccl": ours, "torch_nccl": theirs, "torch": torch.__version__,
                  "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0)}))
sys.exit(0 if ours == theirs else 1)
' "$bin"
  local nccl_rc=$last_rc

  # Issue 9: samples/s, phases, peak memory and MFU in bf16; AdamW fused (auto) against the loop.
  local bench=(bench train --steps "$steps" --warmup 3 --json "${dev[@]}")
  check base64_bf16 "$timeout:$big" "$bin" "${bench[@]}" --config "$base" --batch "$base_batch"
  check base64_bf16_loop_adamw "$timeout:$big" "$bin" "${bench[@]}" --config "$base" \
    --batch "$base_batch" --set train.optimizer_kernel=loop
  # fp32 only to price the bf16 lever: a few steps (about 10x slower per step), at half the
  # batch (fp32 feature maps at batch 64 may not fit beside 40 GB of weights and moments).
  check base64_fp32 "$timeout:$big" "$bin" bench train --steps 3 --warmup 1 --json "${dev[@]}" \
    --config "$base" \
    --batch "$((base_batch / 2 > 0 ? base_batch / 2 : 1))" --set train.precision=fp32
  check sr256_bf16 "$timeout:$big" "$bin" "${bench[@]}" --config "$sr" --batch "$sr_batch"

  # Issue 7: world size 1 through ProcessGroupNCCL (the all-reduce's overhead and its overlap
  # with the backward pass), set against the runs above without a process group.
  # Fewer steps: in a process group the bench times each step twice over (with and without the
  # all-reduce), and flattens the 2B parameters for its rounds.
  if [ "$nccl_rc" = 0 ] || ! wants nccl_match; then
    check base64_bf16_launch1 "$timeout:$big" "$bin" launch --nproc-per-node 1 -- bench train \
      --steps 8 --warmup 3 --json "${dev[@]}" --config "$base" --batch "$base_batch"
  fi

  # Issue 9: the same steps of lucidrains' imagen-pytorch Unet, alternating with ours.
  # Two alternating runs of each side on the GPU (its timings are steady; each run of the peer
  # builds a 2 B-parameter model), three on the CPU. Each run's figures also go to log.txt as it
  # ends.
  local peer=("${PYTHON:-python3}" scripts/bench_peer_unet.py --imagen "$bin" --steps "$peer_steps"
    --precision bf16 --json)
  if [ "${GPU_CHECKS_SMALL:-0}" = 1 ]; then
    peer+=(--device cpu --precision fp32 --runs 3)
  else
    peer+=(--device cuda --runs 2)
  fi
  # The carried wheels sit beside the image's own packages: import them once before relying
  # on them.
  last_rc=0
  check peer_import 120 "${PYTHON:-python3}" scripts/bench_peer_unet.py --check-imports
  if [ "$last_rc" = 0 ]; then
    check peer_base64 "$peer_timeout:200" "${peer[@]}" "${peer_base[@]}" --config "$base" \
      --batch "$base_batch"
    check peer_sr256 "$peer_timeout:200" "${peer[@]}" "${peer_sr[@]}" --config "$sr" --batch "$sr_batch"
  fi

  # The demo's data, encoder and embedding cache, made once for the checks that train on them.
  local demo=$work/demo
  local sets=(--run-dir "$demo/run"
    --set "data.shards=[\"$demo/data/parquet/train\"]"
    --set "data.heldout_shards=[\"$demo/data/parquet/heldout\"]"
    --set "text.model=\"$demo/t5\"" --set "text.cache_dir=\"$demo/t5-cache\"")
  demo_data() {
    [ -f "$demo/t5-cache.done" ] && return 0
    "$bin" data synth --out "$demo/data" --side 64 --count 4320 --shards 4 --heldout 48 \
      --format parquet >/dev/null
    local split
    for split in train heldout; do
      "$bin" data inspect "$demo/data/parquet/$split" --json --no-decode --examples 1000000 |
        python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["example_captions"]))' \
          >"$demo/$split.txt"
    done
    "$bin" text make-demo --captions "$demo/train.txt" --out "$demo/t5" >/dev/null
    # `embed` takes its device from --cuda, not train.device.
    "$bin" embed --config configs/demo.toml "${sets[@]:2}" ${dev[@]:+--cuda} >/dev/null &&
      touch "$demo/t5-cache.done"
  }
  # As a check: its time counts against the budget, and its failure shows in results.jsonl.
  demo_ready() {
    [ -f "$demo/t5-cache.done" ] && return 0
    # Whatever GPU_CHECKS_ONLY picks, the checks that train on the demo's data need it made.
    GPU_CHECKS_ONLY='' check demo_data 180 bash -c "$(declare -p demo sets dev bin); $(declare -f demo_data); demo_data"
    [ -f "$demo/t5-cache.done" ]
  }

  # Issue 6: `imagen train` on the GPU (bf16 autocast, fused AdamW, GPU memory in the metrics)
  # with the demo's data and stage 0, then its samples scored.
  if (wants demo_train || wants demo_metrics || wants demo_sample || wants demo_score) &&
    demo_ready; then
    check demo_train "$timeout:$big" "$bin" train --config configs/demo.toml --stage 0 \
      --max-steps "$demo_steps" "${sets[@]}" "${dev[@]}" --set train.precision=bf16
    tail -n 3 "$demo/run/stage-0/metrics.jsonl" >"$work/demo_metrics.txt"
    cp "$demo/run/stage-0/metrics.jsonl" "$out/demo_metrics.jsonl" 2>/dev/null
    check demo_metrics 10 cat "$work/demo_metrics.txt"
    check demo_sample "$timeout" "$bin" sample --config configs/demo.toml "${sets[@]}" \
      "${dev[@]}" --prompts "$demo/heldout.txt" --out "$demo/samples" --stop-at-stage 0
    cp "$demo/samples/grid.png" "$out/demo_grid.png" 2>/dev/null
    check demo_score 120 "$bin" eval conditioning "$demo/samples" --json
  fi

  # Issue 9, checkpoint writes: the demo's stage 0 widened to dim 256 (105 M parameters, 1.7 GB
  # a checkpoint), 20 steps with a save every 5, written in place and in the background. Each
  # save logs how long it held training up (perf/checkpoint_stall_secs); the steps' own speed
  # leaves the save out, but a background write still running may slow the steps after it.
  local write
  for write in in-place background; do
    local name=ckpt_write_${write/-/_}
    wants "${name}_train" || wants "${name}_steps" || continue
    demo_ready || continue
    check "${name}_train" "$timeout" "$bin" train --config configs/demo.toml --stage 0 \
      --max-steps 20 "${sets[@]:2}" "${dev[@]}" --run-dir "$demo/ckpt-$write" \
      --set train.precision=bf16 \
      --set "stages.0.unet.dim=$ckpt_dim" --set train.checkpoint.every_steps=5 \
      --set "train.checkpoint.write=$write" --set log.every_steps=1
    check "${name}_steps" 30 python3 -c '
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
stall = [round(r["perf/checkpoint_stall_secs"], 3) for r in rows if "perf/checkpoint_stall_secs" in r]
secs = {r["step"]: 8 / r["perf/samples_per_sec"] for r in rows if "perf/samples_per_sec" in r}
after = [round(secs[s], 3) for s in (6, 11, 16) if s in secs]
other = sorted(v for s, v in secs.items() if s > 2 and s not in (6, 11, 16))
print(json.dumps({"save_stall_s": stall, "step_after_save_s": after,
                  "median_other_step_s": other[len(other) // 2],
                  "steps": {s: round(v, 3) for s, v in secs.items()}}))
' "$demo/ckpt-$write/stage-0/metrics.jsonl"
  done

  # Issue 9, last (a run cut short by its time limit loses these first): three more levers,
  # fewer steps each: activation checkpointing (peak memory saved against one more forward
  # pass), channels-last feature maps (cuDNN's NHWC convolutions), and cuDNN's autotuning (on
  # by default) switched off.
  local lever=(bench train --steps 10 --warmup 2 --json "${dev[@]}" --config "$base"
    --batch "$base_batch")
  check base64_bf16_act_ckpt "$timeout:$big" "$bin" "${lever[@]}" --set train.activation_checkpointing=true
  check base64_bf16_channels_last "$timeout:$big" "$bin" "${lever[@]}" --set train.channels_last=true
  check base64_bf16_no_cudnn_benchmark "$timeout:$big" "$bin" "${lever[@]}" --set train.cudnn_benchmark=false
  rm -rf "$work"
  echo "results in $results"
  # Close the pipe into tee and give it a moment, so log.txt is whole when the call returns.
  exec >/dev/null 2>&1
  sleep 1
}

case "${1:-}" in
  prepare) prepare ;;
  run) run_checks "${2:?usage: scripts/gpu_checks.sh run OUT}" ;;
  *) echo "usage: scripts/gpu_checks.sh prepare | run OUT" >&2; exit 2 ;;
esac
