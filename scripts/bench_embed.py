"""captions/s of `imagen embed` against Hugging Face transformers' T5EncoderModel, same captions,
model, dtype and device, side by side in one run. Prints a Markdown table for BENCHMARKS.md.

The model is a random-weight T5 v1.1 (no download) of the size given by --d-model/--layers/...
(default: t5-v1_1-small's encoder: d_model 512, 8 layers, 6 heads of 64, d_ff 1024) with the
fixture Unigram tokenizer. Both sides batch captions sorted by length, pad to the batch's
longest caption, and keep only the real tokens' embeddings (in the cache dtype).

Usage: scripts/python_env.sh text && cargo build --release -p imagen-trainer &&
       .venv-text/bin/python scripts/bench_embed.py [--binary target/release/imagen]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

sys.path.insert(0, os.path.dirname(__file__))
from make_t5_fixtures import corpus  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def make_model(dir_, args):
    torch.manual_seed(0)
    tok = os.path.join(ROOT, "trainer/tests/fixtures/t5/tokenizer.json")
    vocab = json.load(open(tok))["model"]["vocab"]
    cfg = T5Config(vocab_size=len(vocab), d_model=args.d_model, d_kv=64, num_heads=args.heads,
                   d_ff=args.d_ff, num_layers=args.layers, feed_forward_proj="gated-gelu",
                   tie_word_embeddings=False, dropout_rate=0.0)
    T5EncoderModel(cfg).save_pretrained(dir_)
    shutil.copy(tok, os.path.join(dir_, "tokenizer.json"))


def bench_hf(model_dir, captions, dtype, batch, max_length):
    model = T5EncoderModel.from_pretrained(model_dir, dtype=dtype).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"),
                                  pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    start = time.perf_counter()
    kept = 0
    with torch.inference_mode():
        for b in range(0, len(order), batch):
            texts = [captions[i] for i in order[b:b + batch]]
            enc = tok(texts, max_length=max_length, truncation=True, padding="longest", return_tensors="pt")
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            for i, n in enumerate(enc["attention_mask"].sum(1).tolist()):
                kept += h[i, :n].to(dtype).contiguous().numel()
    return len(captions) / (time.perf_counter() - start)


def bench_ours(binary, model_dir, shard, work, dtype, batch, max_length):
    cache = os.path.join(work, f"cache-{dtype}")
    shutil.rmtree(cache, ignore_errors=True)
    cfg = os.path.join(work, f"embed-{dtype}.toml")
    with open(cfg, "w") as f:
        f.write(f'[text]\nmodel = "{model_dir}"\nmax_length = {max_length}\ndtype = "{dtype}"\n'
                f'cache_dir = "{cache}"\nembed_batch_size = {batch}\n')
    out = subprocess.run([binary, "embed", "--config", cfg, "--captions", shard],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"\(([0-9.]+) captions/s\)", out).group(1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=os.path.join(ROOT, "target/release/imagen"))
    p.add_argument("--captions", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    all_caps = list(corpus())
    captions = [all_caps[(i * 7919) % len(all_caps)] for i in range(args.captions)]
    with tempfile.TemporaryDirectory() as work:
        model_dir = os.path.join(work, "model")
        make_model(model_dir, args)
        shard = os.path.join(work, "00000.jsonl")
        with open(shard, "w") as f:
            for i, c in enumerate(captions):
                f.write(json.dumps({"key": f"{i:06d}", "caption": c}) + "\n")
        print(f"| dtype | HF T5EncoderModel captions/s | imagen embed captions/s | ratio |")
        print(f"|---|---|---|---|")
        for name, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
            hf = bench_hf(model_dir, captions, dtype, args.batch, args.max_length)
            ours = bench_ours(args.binary, model_dir, shard, work, name, args.batch, args.max_length)
            print(f"| {name} | {hf:.1f} | {ours:.1f} | {ours / hf:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
