#!/usr/bin/env python3
"""Training throughput of imagen-rs's U-Net against lucidrains' imagen-pytorch Unet, side by side.

Both U-Nets are built from one imagen config stage (same levels, blocks per level, attention
placement, heads, text length and width, batch, precision, device); the peer's optional extras
are chosen, among switches that leave that topology alone, to bring its parameter count within
5% of ours. Each side runs the same training step on synthetic batches: v-objective diffusion
loss under the cosine schedule, backward, global-norm clipping, AdamW, and an EMA update; the
median step time after warm-up gives samples/s. Runs alternate (ours, peer, ours, peer, ...) in
this one script and the ratio of medians is printed.

    scripts/python_env.sh bench
    .venv-bench/bin/python scripts/bench_peer_unet.py --imagen target/release/imagen \
        --config configs/bench-cpu.toml --batch 8 --steps 10 --runs 3 --threads 2

imagen-pytorch reads a T5 config from the network when it is imported (a default argument);
this script hands it a local T5Config instead, so nothing is fetched.
"""
import argparse
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


def imagen_json(args, *cmd):
    sets = [x for s in args.set for x in ("--set", s)]
    out = subprocess.run([args.imagen, *cmd, "--config", args.config, *sets],
                         check=True, capture_output=True, text=True).stdout
    return out


def stage_config(args):
    cfg = tomllib.loads(imagen_json(args, "config", "show"))
    return cfg, cfg["stages"][args.stage]


def as_list(value, levels):
    return list(value) if isinstance(value, list) else [value] * levels


def peer_unet(stage, text_len, extras):
    from imagen_pytorch import Unet

    u = stage["unet"]
    levels = len(u["dim_mults"])
    return Unet(
        dim=u["dim"],
        dim_mults=tuple(u["dim_mults"]),
        # imagen-pytorch counts the blocks after each level's first (init) block.
        num_resnet_blocks=tuple(max(n - 1, 0) for n in as_list(u["num_resnet_blocks"], levels)),
        layer_attns=tuple(as_list(u["layer_attns"], levels)),
        layer_cross_attns=tuple(as_list(u["layer_cross_attns"], levels)),
        attn_heads=u["attn_heads"],
        attn_dim_head=u["attn_dim_head"],
        text_embed_dim=u["text_embed_dim"],
        cond_dim=u["cond_dim"],
        max_text_len=text_len,
        lowres_cond=u.get("lowres_cond", False),
        memory_efficient=True,  # the Efficient U-Net of Imagen's appendix B, as ours
        # Ours gives the middle blocks the lowest level's attention.
        attend_at_middle=as_list(u["layer_attns"], levels)[-1]
        or as_list(u["layer_cross_attns"], levels)[-1],
        **extras,
    )


# Switches of the peer that add or remove parts without changing levels, blocks or where
# attention sits; the closest parameter count wins.
EXTRAS = {
    "use_global_context_attn": [False, True],
    "init_cross_embed": [False, True],
    "final_resnet_block": [False, True],
    "ff_mult": [1.0, 2.0],
    "attn_pool_text": [True, False],
}


def matched_peer(stage, text_len, ours_params):
    best = None
    keys = list(EXTRAS)
    for values in itertools.product(*(EXTRAS[k] for k in keys)):
        extras = dict(zip(keys, values))
        n = sum(p.numel() for p in peer_unet(stage, text_len, extras).parameters())
        gap = abs(n - ours_params) / ours_params
        if best is None or gap < best[0]:
            best = (gap, extras, n)
    return best


def cosine_alpha_sigma(t):
    import torch

    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def peer_steps(unet, stage, args, text_len):
    import torch
    from ema_pytorch import EMA

    device = torch.device(args.device)
    unet = unet.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    ema = EMA(unet, beta=0.9999, update_after_step=0, update_every=1)
    u = stage["unet"]
    side, b, width = u["image_side"], args.batch, u["text_embed_dim"]
    bf16 = args.precision == "bf16"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for step in range(args.warmup + args.steps):
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
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--imagen", default="target/release/imagen")
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], help="config override (both sides)")
    p.add_argument("--stage", type=int, default=0)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=3, help="alternating runs of each side")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    offline_t5_config()
    cfg, stage = stage_config(args)
    text_len = cfg["text"]["max_length"]
    summary = json.loads(imagen_json(args, "model", "summary", "--stage", str(args.stage),
                                     "--json"))
    gap, extras, peer_params = matched_peer(stage, text_len, summary["total_params"])
    if gap > 0.05:
        sys.exit(f"no peer configuration within 5% of {summary['total_params']} parameters "
                 f"(closest {peer_params}, {gap:.1%}); adjust the config")

    our_rates, peer_rates, our_mem, peer_mem = [], [], [], []
    for _ in range(args.runs):
        r = ours(args)
        our_rates.append(r["samples_per_sec"])
        our_mem.append(r["peak_memory_bytes"])
        torch.manual_seed(0)
        step, mem = peer_steps(peer_unet(stage, text_len, extras), stage, args, text_len)
        peer_rates.append(args.batch / step)
        peer_mem.append(mem)
    result = {
        "config": args.config, "stage": args.stage, "batch": args.batch, "device": args.device,
        "precision": args.precision, "threads": args.threads, "runs": args.runs,
        "params_ours": summary["total_params"], "params_peer": peer_params,
        "peer_extras": extras,
        "samples_per_sec_ours": statistics.median(our_rates),
        "samples_per_sec_peer": statistics.median(peer_rates),
        "samples_per_sec_ours_runs": our_rates, "samples_per_sec_peer_runs": peer_rates,
        "peak_memory_ours": max(our_mem), "peak_memory_peer": max(peer_mem),
    }
    result["ratio"] = result["samples_per_sec_ours"] / result["samples_per_sec_peer"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"params: ours {result['params_ours']:,}, imagen-pytorch {peer_params:,} "
          f"({gap:.1%} apart; peer extras {extras})")
    print(f"samples/s (median of {args.runs} runs x {args.steps} steps): ours "
          f"{result['samples_per_sec_ours']:.2f} {our_rates}, imagen-pytorch "
          f"{result['samples_per_sec_peer']:.2f} {peer_rates}")
    print(f"ratio ours / imagen-pytorch: {result['ratio']:.2f}x")
    kind = "CUDA allocator peak" if args.device.startswith("cuda") else "process peak RSS"
    print(f"peak memory ({kind}): ours {max(our_mem) / 2**20:.0f} MiB, imagen-pytorch "
          f"{max(peer_mem) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
