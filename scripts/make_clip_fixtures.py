"""Writes eval/tests/fixtures/clip: a tiny random Hugging Face CLIPModel (config.json,
model.safetensors), a tiny byte-level CLIP tokenizer (tokenizer.json), a preprocessor config, a few
images and captions, and transformers' token ids, pixel values, image/text embeddings and
cosines for the Rust CLIP tests (eval/tests/clip_parity.rs). No download.

Run: scripts/python_env.sh eval && .venv-eval/bin/python scripts/make_clip_fixtures.py
"""

import pathlib

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "eval" / "tests" / "fixtures" / "clip"
CAPTIONS = [
    "a small red circle in the top left corner on a white background",
    "a large blue square in the center on a black background",
    "a photo of a cat, 2 dogs & a bird!",
]

PREPROCESS_VARIANTS = {
    "height_width": dict(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
    "pad": dict(size={"shortest_edge": 24}, crop_size={"height": 28, "width": 35}),
    "bilinear": dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, resample=2),
    "no_crop": dict(size={"shortest_edge": 32}, do_center_crop=False),
    "no_normalize": dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_normalize=False,
                         rescale_factor=1 / 127.5),
}


def tiny_tokenizer():
    """CLIP's byte-level BPE with the 512 single-byte tokens and a few merges."""
    chars = list(bytes_to_unicode().values())
    merges = [("i", "n"), ("t", "h"), ("th", "e</w>"), ("c", "i"), ("r", "e")]
    vocab = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)


def features(out):
    """transformers 5 returns an output whose pooler_output is the projection; 4.x a tensor."""
    return (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    OUT.mkdir(parents=True, exist_ok=True)
    fast = tiny_tokenizer()
    vocab_size = len(fast)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=24,
                         eos_token_id=2),  # as openai's configs: the end token is the largest id
        vision_config=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=2, num_attention_heads=5,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms (transformers initialises LayerNorms to 1, 0)
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(OUT, safe_serialization=True)
    fast.model_max_length = 24
    fast.save_pretrained(OUT)
    for extra in ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]:
        (OUT / extra).unlink(missing_ok=True)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc.save_pretrained(OUT)

    expected = {}
    sizes = [(48, 40), (30, 64), (32, 32)]
    for i, (h, w) in enumerate(sizes):
        grid = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.uint8)
        img = Image.fromarray(grid).resize((w, h), Image.BICUBIC)
        img.save(OUT / f"image{i}.png")
        pv = proc(images=img, return_tensors="pt")["pixel_values"]
        expected[f"pixel_values{i}"] = pv.numpy()
        with torch.no_grad():
            expected[f"image_embeds{i}"] = features(model.get_image_features(pixel_values=pv))
    # Other preprocessor configs on the same images (no model run): an exact resize to height x
    # width, a crop larger than the resized image (zero padding), bilinear resampling, no crop, no
    # normalising with another rescale factor.
    for name, kwargs in PREPROCESS_VARIANTS.items():
        variant = CLIPImageProcessorPil(**kwargs)
        variant.to_json_file(OUT / f"preprocessor_{name}.json")
        for i in range(len(sizes)):
            img = Image.open(OUT / f"image{i}.png")
            expected[f"pixel_values_{name}{i}"] = variant(images=img, return_tensors="pt")["pixel_values"].numpy()
    for j, cap in enumerate(CAPTIONS):
        ids = fast(cap, truncation=True, max_length=24)["input_ids"]
        expected[f"ids{j}"] = np.array(ids, dtype=np.int64)
        with torch.no_grad():
            expected[f"text_embeds{j}"] = features(model.get_text_features(input_ids=torch.tensor([ids])))
    for i in range(len(sizes)):
        for j in range(len(CAPTIONS)):
            a, b = torch.from_numpy(expected[f"image_embeds{i}"]), torch.from_numpy(expected[f"text_embeds{j}"])
            expected[f"cos{i}{j}"] = np.array(torch.nn.functional.cosine_similarity(a.double(), b.double()).item())
    np.savez_compressed(OUT / "expected.npz", **expected)
    print("transformers", transformers.__version__, "vocab", vocab_size, "wrote", OUT)


if __name__ == "__main__":
    main()
