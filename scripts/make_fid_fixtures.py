"""Writes eval/tests/fixtures/fid: pytorch-fid's reference features, statistics and FID for the
Rust FID parity tests (eval/tests/fid_parity.rs).

The network is pytorch-fid's FID Inception (`InceptionV3(use_fid_inception=True)`), built without
downloading its weights: convolution weights come from a counter-based hash of the parameter name
(`hashed_conv_weight`, mirrored in eval/tests/common/mod.rs, so the 95 MB of weights need not be
committed) and the batch-norm statistics are calibrated on random images (with random weights and
default statistics the signal dies after a few layers). Only the batch-norm tensors are saved.

Run: scripts/python_env.sh eval && .venv-eval/bin/python scripts/make_fid_fixtures.py
"""

import json
import math
import pathlib

import numpy as np
import torch
import torchvision
from PIL import Image
from pytorch_fid import fid_score
from pytorch_fid import inception as pi
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "eval" / "tests" / "fixtures" / "fid"
MASK64 = (1 << 64) - 1


def fid_inception_v3_random():
    """pytorch-fid's `fid_inception_v3` without `load_state_dict_from_url`."""
    inception = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inception.Mixed_5b = pi.FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = pi.FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = pi.FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = pi.FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = pi.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = pi.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = pi.FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = pi.FIDInceptionE_1(1280)
    inception.Mixed_7c = pi.FIDInceptionE_2(2048)
    return inception


pi.fid_inception_v3 = fid_inception_v3_random


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hashed_conv_weight(name: str, shape) -> np.ndarray:
    """Uniform in [-s, s), s = sqrt(3 / fan_in): element i is splitmix64(fnv1a64(name) + i)."""
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name.encode())) + np.arange(n, dtype=np.uint64)
        u24 = (splitmix64(z) >> np.uint64(40)).astype(np.float32)
    unit = u24 * np.float32(2.0**-23) - np.float32(1.0)
    fan_in = int(np.prod(shape[1:]))
    scale = np.float32(math.sqrt(3.0 / fan_in))
    return (unit * scale).reshape(shape)


def smooth_image(rng, height, width, bright):
    """A random smooth colour field: a 4x4 grid upsampled bicubically, plus a little noise."""
    grid = rng.uniform(0, 255, size=(4, 4, 3)) * (0.6 if bright else 1.0) + (100 if bright else 0)
    img = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    arr = np.asarray(img).astype(np.float64) + rng.normal(0, 12, size=(height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def build_model(block):
    return pi.InceptionV3([block]).eval()


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rng = np.random.default_rng(2026)
    model = build_model(3)
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name.endswith("conv.weight"):
                tensor.copy_(torch.from_numpy(hashed_conv_weight(name, tuple(tensor.shape))))
            elif name.endswith("bn.weight"):
                tensor.copy_(torch.from_numpy(rng.uniform(0.8, 1.2, tensor.shape).astype(np.float32)))
            elif name.endswith("bn.bias"):
                tensor.copy_(torch.from_numpy(rng.uniform(-0.1, 0.2, tensor.shape).astype(np.float32)))
    # Batch-norm calibration: cumulative statistics over one batch of random images.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    calib = np.stack([smooth_image(rng, 64, 64, i % 2 == 0) for i in range(16)])
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(calib).permute(0, 3, 1, 2).float() / 255)
    model.eval()
    state = model.state_dict()

    OUT.mkdir(parents=True, exist_ok=True)
    keys = [[k, list(v.shape)] for k, v in state.items()]
    (OUT / "state_dict_keys.json").write_text(json.dumps(keys, indent=0) + "\n")
    save_file({k: v.contiguous() for k, v in state.items() if not k.endswith("conv.weight")},
              str(OUT / "bn.safetensors"))

    # Image sets: A 32x32 darker fields, B 24x40 (HxW) brighter ones.
    sets = {"a": (32, 32, False), "b": (24, 40, True)}
    files = {}
    for key, (h, w, bright) in sets.items():
        folder = OUT / "images" / key
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(80):
            Image.fromarray(smooth_image(rng, h, w, bright)).save(folder / f"{i:03d}.png")
        files[key] = sorted(folder.glob("*.png"))
    # Noise that pytorch-fid skips (extension not an image's), and the CLI must count as skipped.
    (OUT / "images" / "a" / "notes.txt").write_text("not an image\n")

    expected = {}
    few = 10
    for dims, block in pi.InceptionV3.BLOCK_INDEX_BY_DIM.items():
        sub = build_model(block)
        sub.load_state_dict({k: v for k, v in state.items() if k in sub.state_dict()})
        for key in sets:
            chosen = files[key] if dims == 64 else files[key][:few]
            act = fid_score.get_activations(chosen, sub, batch_size=50, dims=dims, device="cpu", num_workers=0)
            expected[f"feat{dims}_{key}"] = act.astype(np.float32)
            mu, sigma = np.mean(act, axis=0), np.cov(act, rowvar=False)
            expected[f"mu{dims}_{key}"] = mu
            if dims >= 768:  # keep the fixture small: 16 columns and the trace
                expected[f"sigma{dims}_{key}_cols"] = sigma[:, :16].copy()
                expected[f"trace_sigma{dims}_{key}"] = np.array(np.trace(sigma))
            else:
                expected[f"sigma{dims}_{key}"] = sigma
            if dims == 64:
                # The layout pytorch-fid's --save-stats writes.
                np.savez_compressed(OUT / f"stats64_{key}.npz", mu=mu, sigma=sigma)
        if dims == 64:
            expected["fid64"] = np.array(fid_score.calculate_frechet_distance(
                expected["mu64_a"], expected["sigma64_a"], expected["mu64_b"], expected["sigma64_b"]))
            print("FID at 64 dims:", float(expected["fid64"]))

    # The Frechet distance alone, on well-conditioned random statistics.
    d = 40
    for i in (1, 2):
        x = rng.normal(size=(200, d)) @ rng.normal(size=(d, d)) * (0.5 + i)
        expected[f"fr_mu{i}"] = x.mean(axis=0) + i
        expected[f"fr_sigma{i}"] = np.cov(x, rowvar=False)
    expected["fr_fid"] = np.array(fid_score.calculate_frechet_distance(
        expected["fr_mu1"], expected["fr_sigma1"], expected["fr_mu2"], expected["fr_sigma2"]))
    np.savez_compressed(OUT / "expected.npz", **expected)
    print("torch", torch.__version__, "torchvision", torchvision.__version__, "wrote", OUT)


if __name__ == "__main__":
    main()
