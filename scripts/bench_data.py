"""Data pipeline benchmark: imagen's decode + resize + crop against the Python peer a PyTorch
DataLoader worker runs (Pillow decode, with and without `draft`, + resize + centre crop), on the
same shard of 256-512 px JPEGs, one core each. Prints per-core images/s and the ratios.

Usage:
  scripts/python_env.sh data
  cargo build --release --bin imagen
  .venv-data/bin/python scripts/bench_data.py --imagen target/release/imagen [--count 256] [--runs 5]
The shard is written once (pyarrow, img2dataset's schema) to --shard (default
/tmp/imagen-bench/bench.parquet). Both sides read the JPEG bytes into memory first and time the
median of --passes passes, so the figures are decode work only. The four measurements of a side
alternate --runs times (imagen, imagen full decode, Pillow, Pillow + draft, then again), so a
burst of load on a shared machine falls on both; the table gives the median rate of each column
over the runs and the median and range of the per-run ratios.
"""

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageFilter


def make_shard(path, count, seed=0):
    """Photo-like JPEGs (smooth colour fields + edges + grain), 256-512 px per side, quality 90."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    keys, images, widths, heights = [], [], [], []
    for i in range(count):
        w, h = rng.randint(256, 512), rng.randint(256, 512)
        low = nrng.integers(0, 256, size=(h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((w, h), Image.BICUBIC)
        img = img.filter(ImageFilter.GaussianBlur(2))
        arr = np.asarray(img).astype(np.int16)
        arr += nrng.integers(-12, 13, size=arr.shape, dtype=np.int16)
        for _ in range(6):  # a few hard-edged rectangles, like objects
            x0, y0 = rng.randrange(w), rng.randrange(h)
            arr[y0:y0 + rng.randint(20, 120), x0:x0 + rng.randint(20, 120)] = nrng.integers(0, 256, 3)
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        keys.append(f"{i:09d}")
        images.append(buf.getvalue())
        widths.append(w)
        heights.append(h)
    table = pa.table({
        "key": keys, "jpg": pa.array(images, pa.binary()), "caption": [f"image {k}" for k in keys],
        "status": ["success"] * count, "width": widths, "height": heights,
        "original_width": widths, "original_height": heights,
    })
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


def pillow_once(images, size, draft):
    for data in images:
        img = Image.open(io.BytesIO(data))
        if draft:
            img.draft("RGB", (size, size))
        img = img.convert("RGB")
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        np.asarray(img.crop((left, top, left + size, top + size)))


def pillow_rate(images, size, draft, passes):
    pillow_once(images, size, draft)  # warm-up
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        pillow_once(images, size, draft)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def imagen_rate(binary, shard, size, count, passes, dct):
    cmd = [binary, "data", "bench", shard, "--size", str(size), "--threads", "1",
           "--limit", str(count), "--passes", str(passes), "--json"]
    if not dct:
        cmd.append("--no-dct-scaling")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["images_per_sec_per_thread"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imagen", default="target/release/imagen")
    ap.add_argument("--shard", default="/tmp/imagen-bench/bench.parquet")
    ap.add_argument("--count", type=int, default=256)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="also print every run's rates as JSON")
    args = ap.parse_args()
    if not os.path.exists(args.shard):
        make_shard(args.shard, args.count)
    images = pq.read_table(args.shard, columns=["jpg"]).column("jpg").to_pylist()[:args.count]
    # One core each: pin this process (and so the imagen child) to one CPU when possible.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        runs = []
        for _ in range(args.runs):
            runs.append((
                imagen_rate(args.imagen, args.shard, size, args.count, args.passes, True),
                imagen_rate(args.imagen, args.shard, size, args.count, args.passes, False),
                pillow_rate(images, size, False, args.passes),
                pillow_rate(images, size, True, args.passes),
            ))
        rows.append((size, runs))
    print(f"{len(images)} JPEGs of 256-512 px, one core, median of {args.passes} passes per run, "
          f"{args.runs} alternating runs")
    print("| side | imagen (DCT scaling) | imagen (full decode) | Pillow | Pillow + draft "
          "| vs Pillow (range) | vs Pillow + draft (range) |")
    print("|---|---|---|---|---|---|---|")
    for size, runs in rows:
        ours, full, plain, draft = (statistics.median(col) for col in zip(*runs))
        vs_plain = [r[0] / r[2] for r in runs]
        vs_draft = [r[0] / r[3] for r in runs]
        print(f"| {size} | {ours:.0f}/s | {full:.0f}/s | {plain:.0f}/s | {draft:.0f}/s "
              f"| {ratio(vs_plain)} | {ratio(vs_draft)} |")
    if args.json:
        print(json.dumps([{"side": size, "runs": [dict(zip(
            ["imagen", "imagen_full_decode", "pillow", "pillow_draft"], r)) for r in runs]}
            for size, runs in rows]))


def ratio(values):
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"

if __name__ == "__main__":
    main()
