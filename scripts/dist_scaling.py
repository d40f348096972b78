#!/usr/bin/env python3
"""Data-parallel scaling model: gradient bytes per step of each preset and the time a ring
all-reduce of them takes inside an 8-GPU NVLink node and across nodes on 400 Gb/s, against the
step's compute time at a given MFU. Reads parameter counts and FLOPs from
`imagen model summary --json`; prints a markdown table for BENCHMARKS.md.

    python3 scripts/dist_scaling.py --imagen target/release/imagen
"""
import argparse
import json
import subprocess

# (preset, per-GPU batch, the stage's side, the side it trains at)
PRESETS = [
    ("base64", 64, 64, 64),
    ("base64-small", 128, 64, 64),
    ("sr256", 16, 256, 256),
    ("sr256-small", 64, 256, 256),
    ("sr1024", 16, 1024, 256),  # trains on aligned 256 crops (train_crop)
]


def summary(imagen, preset):
    out = subprocess.run(
        [imagen, "model", "summary", "--config", f"configs/{preset}.toml", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def ring_seconds(nbytes, ranks, busbw):
    """NCCL's ring all-reduce moves 2 (n-1)/n of the buffer through each rank's slowest link."""
    return 2 * (ranks - 1) / ranks * nbytes / busbw


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--imagen", default="target/release/imagen")
    p.add_argument("--peak-tflops", type=float, default=790.0, help="H200 bf16 dense peak")
    p.add_argument("--mfu", type=float, default=0.40)
    p.add_argument("--nvlink-gbs", type=float, default=360.0,
                   help="all-reduce bus bandwidth inside an 8-GPU NVLink node, GB/s")
    p.add_argument("--nic-gbs", type=float, default=45.0,
                   help="bus bandwidth of one 400 Gb/s NIC per GPU, GB/s (50 GB/s line rate)")
    p.add_argument("--nodes", type=int, nargs="+", default=[2, 8, 32])
    args = p.parse_args()

    head = ["preset", "params", "grad bytes (fp32)", "batch/GPU", "compute/step",
            "8 GPUs NVLink"] + [f"{n} nodes x 8, 400 Gb/s" for n in args.nodes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for preset, batch, side, train_side in PRESETS:
        s = summary(args.imagen, preset)
        params = s["total_params"]
        # Convolutions and attention scale with the pixels of what is trained on.
        flops = s["flops_per_sample_train"] * (train_side / side) ** 2
        note = f"{train_side} crops" if train_side != side else ""
        nbytes = 4 * params
        compute = flops * batch / (args.peak_tflops * 1e12 * args.mfu)
        intra = ring_seconds(nbytes, 8, args.nvlink_gbs * 1e9)
        cells = [preset + (f" ({note})" if note else ""), f"{params / 1e6:.0f}M",
                 f"{nbytes / 1e9:.2f} GB", str(batch), f"{compute * 1e3:.0f} ms",
                 f"{intra * 1e3:.1f} ms ({intra / compute:.0%})"]
        for n in args.nodes:
            # Hierarchical: reduce-scatter inside the node over NVLink, all-reduce of each GPU's
            # 1/8 shard across nodes on its own NIC (rail), all-gather inside the node.
            inter = ring_seconds(nbytes / 8, n, args.nic_gbs * 1e9) + intra
            cells.append(f"{inter * 1e3:.1f} ms ({inter / compute:.0%})")
        print("| " + " | ".join(cells) + " |")
    print()
    print(f"Compute at {args.mfu:.0%} MFU of {args.peak_tflops:.0f} TFLOP/s; percentages are "
          "all-reduce time over compute time, the share to hide behind the backward pass.")


if __name__ == "__main__":
    main()
