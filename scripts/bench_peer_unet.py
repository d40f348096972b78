#!/usr/bin/env python3
"""Training throughput of imagen-rs's U-Net against lucidrains' imagen-pytorch Unet, side by side.

Both U-Nets are built from one imagen config stage (same sides, channels, blocks and attention
per resolution, heads, text length and width, batch, precision, device). imagen-pytorch's
Efficient U-Net downsamples before its first level where ours does not, so when our first level
is a single block without attention the peer gets it as its full-resolution init and final
resnet blocks (see `peer_unet`); the peer's optional extras are then chosen, among switches that
leave that topology alone, to bring its parameter count within 5% of ours and its forward FLOPs
(torch's FlopCounterMode) nearest ours (`model summary`); both counts are printed. Each side
runs the same training step on synthetic batches: a diffusion loss (the peer: v-objective under
the cosine schedule; ours: the config's objective and schedule, the same elementwise work),
backward, global-norm clipping, AdamW, and an EMA update; the
median step time after warm-up gives samples/s. Runs alternate (ours, peer, ours, peer, ...) in
this one script and the ratio of medians is printed.

    scripts/python_env.sh bench
    .venv-bench/bin/python scripts/bench_peer_unet.py --imagen target/release/imagen \
        --config configs/bench-cpu.toml --batch 8 --steps 10 --runs 3 --threads 2

imagen-pytorch reads a T5 config from the network when it is imported (a default argument);
this script hands it a local T5Config instead, so nothing is fetched.
"""
import argparse
import gc
import itertools
import json
import math
import resource
import statistics
import subprocess
import sys
import time
import tomllib


def offline_t5_config():
    """imagen-pytorch calls T5Config.from_pretrained(DEFAULT_T5_NAME) at import time."""
    import transformers

    def from_pretrained(name, *args, **kwargs):
        return transformers.T5Config(d_model=768)

    transformers.T5Config.from_pretrained = from_pretrained


def import_peer():
    """Imports imagen-pytorch offline. Its data module imports `datasets` for one user-agent
    string; where the machine's pyarrow or typing-extensions do not suit the carried `datasets`,
    that one function is supplied instead (the U-Net does not use `datasets`)."""
    offline_t5_config()
    try:
        import datasets.utils.file_utils  # noqa: F401
    except Exception as e:  # an ImportError, or an AttributeError from a version mismatch
        import types

        print(f"note: `datasets` does not import here ({e!r}); imagen-pytorch gets a stand-in "
              f"for the one function it imports from it", file=sys.stderr)
        for name in [m for m in sys.modules if m == "datasets" or m.startswith("datasets.")]:
            del sys.modules[name]
        file_utils = types.ModuleType("datasets.utils.file_utils")
        file_utils.get_datasets_user_agent = lambda *a, **k: "imagen-rs-bench"
        utils = types.ModuleType("datasets.utils")
        utils.file_utils = file_utils
        package = types.ModuleType("datasets")
        package.utils = utils
        sys.modules.update({"datasets": package, "datasets.utils": utils,
                            "datasets.utils.file_utils": file_utils})
    import ema_pytorch  # noqa: F401
    import imagen_pytorch  # noqa: F401


def run_imagen(cmd):
    """Runs our binary and returns its stdout; on failure its stderr is shown, not swallowed."""
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as e:
        sys.stderr.write(e.stderr or "")
        sys.exit(f"{' '.join(cmd[:3])} ... failed with exit code {e.returncode}")


def imagen_json(args, *cmd):
    sets = [x for s in args.set for x in ("--set", s)]
    return run_imagen([args.imagen, *cmd, "--config", args.config, *sets])


def stage_config(args):
    cfg = tomllib.loads(imagen_json(args, "config", "show"))
    return cfg, cfg["stages"][args.stage]


def train_side(stage):
    """The side a stage trains at: its crop's where it trains on crops (sr1024), else its own."""
    return stage.get("train_crop") or stage["unet"]["image_side"]


def as_list(value, levels):
    return list(value) if isinstance(value, list) else [value] * levels


def level0_is_one_plain_block(u, levels):
    """Whether our first level is a single residual block without attention (bench-cpu's shape),
    the case the peer can express as its full-resolution init and final resnet blocks."""
    return (levels > 1 and as_list(u["num_resnet_blocks"], levels)[0] == 1
            and not as_list(u["layer_attns"], levels)[0]
            and not as_list(u["layer_cross_attns"], levels)[0])


def peer_unet(stage, text_len, extras, mapping):
    """The peer's Efficient U-Net for our stage.

    Its `memory_efficient` U-Net downsamples at the start of EVERY level, the first included,
    where ours keeps the first level at full resolution; mapping level i to level i ("same")
    therefore runs each of the peer's levels at half our side, a quarter of our FLOPs. With
    "shifted", our full-resolution first level (one block, no attention) becomes the peer's
    `init_resnet_block` and `final_resnet_block`, and our levels 1.. its levels 0..: the same
    sides, channels, blocks and attention per resolution as ours. With "standard", the peer is
    its plain U-Net (`memory_efficient=False`, how imagen-pytorch builds its BaseUnet64): level i
    at our side, its up path at our channels, but its down path's blocks at the previous level's
    width (it widens when it downsamples, ours before a level's blocks), so its width `dim` is
    searched to bring parameters within 5% of ours.
    """
    from imagen_pytorch import Unet

    u = stage["unet"]
    levels = len(u["dim_mults"])
    mults = list(u["dim_mults"])
    blocks = as_list(u["num_resnet_blocks"], levels)
    attns = as_list(u["layer_attns"], levels)
    cross = as_list(u["layer_cross_attns"], levels)
    shape = {}
    extras = dict(extras)
    dim = extras.pop("dim", u["dim"])
    if mapping == "standard":
        shape = {"init_dim": dim * mults[0]}
    elif mapping == "shifted":
        mults, blocks, attns, cross = mults[1:], blocks[1:], attns[1:], cross[1:]
        shape = {"init_dim": u["dim"] * u["dim_mults"][0], "final_resnet_block": True}
    return Unet(
        dim=dim,
        dim_mults=tuple(mults),
        # imagen-pytorch counts the blocks after each level's first (init) block.
        num_resnet_blocks=tuple(max(n - 1, 0) for n in blocks),
        layer_attns=tuple(attns),
        layer_cross_attns=tuple(cross),
        attn_heads=u["attn_heads"],
        attn_dim_head=u["attn_dim_head"],
        text_embed_dim=u["text_embed_dim"],
        cond_dim=u["cond_dim"],
        max_text_len=text_len,
        lowres_cond=u.get("lowres_cond", False),
        # The Efficient U-Net of Imagen's appendix B, as ours, except for "standard".
        memory_efficient=mapping != "standard",
        # Ours gives the middle blocks the lowest level's attention.
        attend_at_middle=attns[-1] or cross[-1],
        # Ours: a plain 3x3 input conv (not the peer's default cross-embed stem of 3/7/15
        # kernels, which init_conv_kernel_size alone leaves in place), and nearest-neighbour
        # 2x + 3x3 conv to upsample.
        init_cross_embed=False,
        init_conv_kernel_size=3,
        pixel_shuffle_upsample=False,
        **shape,
        **extras,
    )


# Switches of the peer that add or remove parts without changing levels, blocks, sides or
# where attention sits (its cross-embed stem is switched off in peer_unet: ours is a plain 3x3
# conv); among the
# combinations within 5% of our parameters, the one whose forward FLOPs are nearest ours wins.
EXTRAS = {
    "use_global_context_attn": [False, True],
    "final_resnet_block": [False, True],
    "ff_mult": [1.0, 2.0],
    "attn_pool_text": [True, False],
}


def forward_flops(unet, stage, text_len):
    """FLOPs of one sample's forward pass as torch's FlopCounterMode counts them (convolutions,
    matmuls, attention: what our `model summary` counts too)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    u = stage["unet"]
    side = train_side(stage)
    kwargs = {}
    if u.get("lowres_cond", False):
        kwargs = {"lowres_cond_img": torch.zeros(1, 3, side, side),
                  "lowres_noise_times": torch.zeros(1)}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(torch.zeros(1, 3, side, side), torch.zeros(1),
             text_embeds=torch.zeros(1, text_len, u["text_embed_dim"]),
             text_mask=torch.ones(1, text_len, dtype=torch.bool), **kwargs)
    return counter.get_total_flops()


def matched_peer(stage, text_len, ours_params, ours_flops, mapping="auto", peer_dim=None):
    """(params gap, flops gap, mapping, extras, params, flops) of the closest peer: within 5%
    of our parameters where possible, then nearest our forward FLOPs. The candidates are built
    on torch's meta device: no memory and no kernels, so a 2B-parameter config is sized in
    seconds."""
    import torch

    with torch.device("meta"):
        return closest_peer(stage, text_len, ours_params, ours_flops, mapping, peer_dim)


def closest_peer(stage, text_len, ours_params, ours_flops, mapping, peer_dim=None):
    u = stage["unet"]
    mappings = ["same", "standard"]
    if level0_is_one_plain_block(u, len(u["dim_mults"])):
        mappings.append("shifted")
    if mapping != "auto":
        if mapping not in mappings:
            sys.exit(f"mapping {mapping!r} does not fit this config's first level")
        mappings = [mapping]
    keys = list(EXTRAS)
    candidates = []
    for mapping in mappings:
        if mapping == "standard":
            # Its width instead of its extras: ours' defaults (no global context, ff_mult 2,
            # attention-pooled text), widths in steps of 8 (GroupNorm's groups) from -16% to +24%.
            base = {"use_global_context_attn": False, "final_resnet_block": False,
                    "ff_mult": 2.0, "attn_pool_text": True}
            dims = range(max(8, round(u["dim"] * 0.84 / 8) * 8), u["dim"] * 5 // 4 + 1, 8)
            # A width found before (BENCHMARKS.md) skips the search: 20-40 s for a 2B model.
            for dim in [peer_dim] if peer_dim else dims:
                extras = {**base, "dim": dim}
                n = sum(p.numel() for p in peer_unet(stage, text_len, extras, mapping).parameters())
                candidates.append([abs(n - ours_params) / ours_params, None, mapping, extras, n,
                                   None])
            continue
        for values in itertools.product(*(EXTRAS[k] for k in keys)):
            extras = dict(zip(keys, values))
            if mapping == "shifted":
                if not extras["final_resnet_block"]:
                    continue
                del extras["final_resnet_block"]  # it stands for our first up level
            n = sum(p.numel() for p in peer_unet(stage, text_len, extras, mapping).parameters())
            candidates.append([abs(n - ours_params) / ours_params, None, mapping, extras, n, None])
    within = [c for c in candidates if c[0] <= 0.05] or [min(candidates, key=lambda c: c[0])]
    for c in within:
        c[5] = forward_flops(peer_unet(stage, text_len, c[3], c[2]), stage, text_len)
        c[1] = abs(c[5] - ours_flops) / ours_flops
    return tuple(min(within, key=lambda c: (c[1], c[0])))


def cosine_alpha_sigma(t):
    import torch

    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def peer_steps(unet, stage, args, text_len):
    import torch
    from ema_pytorch import EMA

    device = torch.device(args.device)
    unet = unet.to(device)
    # The peer gets the same AdamW kernel as ours (torch's fused one, on CPU and CUDA) unless
    # --peer-optimizer default asks for what imagen-pytorch's trainer builds (foreach on CUDA).
    fused = {"fused": True} if args.peer_optimizer == "fused" else {}
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0, **fused)
    ema = EMA(unet, beta=0.9999, update_after_step=0, update_every=1)
    u = stage["unet"]
    side, b, width = train_side(stage), args.batch, u["text_embed_dim"]
    bf16 = args.precision == "bf16"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup and device.type == "cuda":
            # The peak of the steps after warm-up (autotuning, the allocator's first growth),
            # as ours reports it.
            sync()
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        start = time.perf_counter()
        x0 = torch.rand(b, 3, side, side, device=device) * 2 - 1
        text = torch.randn(b, text_len, width, device=device)
        mask = torch.ones(b, text_len, dtype=torch.bool, device=device)
        t = torch.rand(b, device=device)
        noise = torch.randn_like(x0)
        alpha, sigma = cosine_alpha_sigma(t.view(-1, 1, 1, 1))
        x_t = alpha * x0 + sigma * noise
        kwargs = {}
        if u.get("lowres_cond", False):
            kwargs["lowres_cond_img"] = torch.rand_like(x0) * 2 - 1
            kwargs["lowres_noise_times"] = torch.rand(b, device=device) * 0.5
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = unet(x_t, t, text_embeds=text, text_mask=mask, cond_drop_prob=0.1, **kwargs)
        target = alpha * noise - sigma * x0
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        ema.update()
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return statistics.median(times), peak


def ours(args):
    sets = [x for s in args.set for x in ("--set", s)]
    cmd = [args.imagen, "--log-level", "warn", "bench", "train", "--config", args.config, *sets,
           "--set", f"train.threads={args.threads}", "--set", f"train.device={args.device}",
           "--set", f"train.precision={args.precision}", "--stage", str(args.stage),
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--json"]
    return json.loads(run_imagen(cmd))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--imagen", default="target/release/imagen")
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[], help="config override (both sides)")
    p.add_argument("--stage", type=int, default=0)
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=3, help="alternating runs of each side")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mapping", choices=["auto", "same", "shifted", "standard"], default="auto",
                   help="how our levels map onto the peer's (see peer_unet); auto: the "
                        "closest in FLOPs")
    p.add_argument("--peer-dim", type=int,
                   help="with --mapping standard: the peer's width, instead of searching the "
                        "widths for the closest in parameters")
    p.add_argument("--peer-optimizer", choices=["fused", "default"], default="fused",
                   help="the peer's AdamW: torch's fused kernel (as ours) or torch's default")
    p.add_argument("--json", action="store_true")
    p.add_argument("--check-imports", action="store_true",
                   help="only import the peer (offline, as a run does) and print {}")
    args = p.parse_args()
    if args.check_imports:
        import_peer()
        print("{}")
        return
    if args.config is None or args.batch is None:
        p.error("--config and --batch are required")
    if args.peer_dim and args.mapping != "standard":
        p.error("--peer-dim goes with --mapping standard")
    # imagen-pytorch prints advice when a U-Net is built; with --json, stdout is the report alone.
    report_to = sys.stdout
    if args.json:
        sys.stdout = sys.stderr

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import_peer()
    cfg, stage = stage_config(args)
    text_len = cfg["text"]["max_length"]
    # Counted at the side and text length training runs at, as the peer runs.
    summary = json.loads(imagen_json(args, "model", "summary", "--stage", str(args.stage),
                                     "--text-len", str(text_len), "--at-train-side", "--json"))
    if args.device.startswith("cuda"):
        # cuDNN's autotuning as our side runs it (`train.cudnn_benchmark`, on by default).
        torch.backends.cudnn.benchmark = bool(cfg["train"].get("cudnn_benchmark", True))
    gap, flops_gap, mapping, extras, peer_params, peer_flops = matched_peer(
        stage, text_len, summary["total_params"], summary["flops_per_sample_fwd"], args.mapping,
        args.peer_dim)
    if gap > 0.05:
        sys.exit(f"no peer configuration within 5% of {summary['total_params']} parameters "
                 f"(closest {peer_params}, {gap:.1%}); adjust the config")
    if flops_gap > 0.10:
        print(f"warning: the peer's forward pass is {peer_flops / 1e9:.3f} GFLOP/sample against "
              f"our {summary['flops_per_sample_fwd'] / 1e9:.3f}: the ratio is not at matched "
              f"work (mapping {mapping!r}; 'shifted' needs our first level to be one block "
              f"without attention)", file=sys.stderr)

    # The match first, on stderr: a run cut short by a time limit still says what was compared.
    print(json.dumps({"params_ours": summary["total_params"], "params_peer": peer_params,
                      "flops_fwd_ours": summary["flops_per_sample_fwd"],
                      "flops_fwd_peer": peer_flops, "peer_mapping": mapping,
                      "peer_extras": extras}), file=sys.stderr, flush=True)
    our_rates, peer_rates, our_mem, peer_mem, our_reports = [], [], [], [], []
    for run in range(args.runs):
        r = ours(args)
        our_reports.append(r)
        our_rates.append(r["samples_per_sec"])
        our_mem.append(r["peak_memory_bytes"])
        torch.manual_seed(0)
        try:
            # Built where it trains: initialising 2B parameters on one CPU thread and copying
            # them over took longer than the peer's timed steps.
            with torch.device(args.device):
                unet = peer_unet(stage, text_len, extras, mapping)
            step, mem = peer_steps(unet, stage, args, text_len)
        except torch.OutOfMemoryError as e:
            # A peer that does not fit at this batch is a result too (ours did), not a crash
            # that loses our figures.
            print(json.dumps({"run": run, "samples_per_sec_ours": our_rates[-1],
                              "peak_memory_ours": our_mem[-1], "peer_oom": str(e)[:300]}),
                  file=sys.stderr, flush=True)
            result = {"config": args.config, "batch": args.batch, "device": args.device,
                      "samples_per_sec_ours": our_rates[-1], "peak_memory_ours": our_mem[-1],
                      "peer_oom_at_batch": args.batch}
            print(json.dumps(result, indent=2), file=report_to)
            return
        finally:
            unet = None
        peer_rates.append(args.batch / step)
        peer_mem.append(mem)
        # Each run as it ends, on stderr: a run cut short by a time limit still leaves these.
        print(json.dumps({"run": run, "samples_per_sec_ours": our_rates[-1],
                          "samples_per_sec_peer": peer_rates[-1], "peak_memory_ours": our_mem[-1],
                          "peak_memory_peer": mem, "mfu_ours": r.get("mfu"),
                          "phases_ours": r.get("phases")}), file=sys.stderr, flush=True)
        # Hand the peer's cached blocks back before our next run, a separate process on the
        # same GPU.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result = {
        "config": args.config, "stage": args.stage, "batch": args.batch, "device": args.device,
        "precision": args.precision, "threads": args.threads, "runs": args.runs,
        "peer_optimizer": args.peer_optimizer,
        "params_ours": summary["total_params"], "params_peer": peer_params,
        "peer_mapping": mapping, "peer_extras": extras,
        "flops_fwd_ours": summary["flops_per_sample_fwd"], "flops_fwd_peer": peer_flops,
        "samples_per_sec_ours": statistics.median(our_rates),
        "samples_per_sec_peer": statistics.median(peer_rates),
        "samples_per_sec_ours_runs": our_rates, "samples_per_sec_peer_runs": peer_rates,
        "peak_memory_ours": max(our_mem), "peak_memory_peer": max(peer_mem),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        # Our whole report of each run: phases, MFU, whether AdamW ran fused, precision.
        "ours_reports": our_reports,
    }
    result["ratio"] = result["samples_per_sec_ours"] / result["samples_per_sec_peer"]
    # Where the two forward passes differ in FLOPs (a config whose first level the peer cannot
    # mirror), the ratio of achieved FLOP/s says which runs the same work faster.
    result["flops_per_sec_ratio"] = (result["ratio"] * summary["flops_per_sample_fwd"]
                                     / peer_flops)
    if args.json:
        print(json.dumps(result, indent=2), file=report_to)
        return
    print(f"params: ours {result['params_ours']:,}, imagen-pytorch {peer_params:,} "
          f"({gap:.1%} apart; peer mapping {mapping!r}, extras {extras})")
    print(f"forward GFLOP/sample: ours {summary['flops_per_sample_fwd'] / 1e9:.3f}, "
          f"imagen-pytorch {peer_flops / 1e9:.3f} ({flops_gap:.1%} apart)")
    print(f"samples/s (median of {args.runs} runs x {args.steps} steps): ours "
          f"{result['samples_per_sec_ours']:.2f} {our_rates}, imagen-pytorch "
          f"{result['samples_per_sec_peer']:.2f} {peer_rates}")
    print(f"ratio ours / imagen-pytorch: {result['ratio']:.2f}x samples/s, "
          f"{result['flops_per_sec_ratio']:.2f}x forward FLOP/s")
    kind = "CUDA allocator peak" if args.device.startswith("cuda") else "process peak RSS"
    print(f"peak memory ({kind}): ours {max(our_mem) / 2**20:.0f} MiB, imagen-pytorch "
          f"{max(peer_mem) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
