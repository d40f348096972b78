"""Reference fixtures for the Rust T5 encoder and tokenizer (trainer/tests/t5_parity.rs).

Builds, with Hugging Face `tokenizers` and `transformers` and without any network access:
- a small Unigram tokenizer trained on synthetic captions, wrapped as T5's is (Metaspace
  pre-tokenizer, `</s>` appended by the post-processor, ids 0/1/2 = <pad>/</s>/<unk>);
- two random-weight `T5EncoderModel`s: v1.0 (ReLU, one model.safetensors) and v1.1
  (gated-GELU, d_kv * heads != d_model, saved sharded with model.safetensors.index.json);
- test captions (empty, unicode, unknown characters, over-long) tokenized by
  `PreTrainedTokenizerFast(max_length, truncation, padding="max_length")`, and each model's
  `last_hidden_state` in fp32 and bf16.

Usage: scripts/python_env.sh text && .venv-text/bin/python scripts/make_t5_fixtures.py
"""

import itertools
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

OUT = os.path.join(os.path.dirname(__file__), "..", "trainer", "tests", "fixtures", "t5")
MAX_LENGTH = 56

SIZES = ["small", "large"]
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
PLACES = ["in the top left corner", "in the top right corner", "in the bottom left corner",
          "in the bottom right corner", "in the center"]
BACKGROUNDS = ["white", "black", "gray"]


def corpus():
    for s, c, sh, p, b in itertools.product(SIZES, COLORS, SHAPES, PLACES, BACKGROUNDS):
        yield f"a {s} {c} {sh} {p} on a {b} background"


CAPTIONS = [
    "a small red circle in the top left corner on a white background",
    "a large purple triangle in the center on a gray background",
    "",
    "  a   blue    square  ",
    "ünïcödé café circle",
    "日本語 square",
    "a small red circle in the top left corner on a white background and a large blue square in the center",
    "background",
]


def make_tokenizer():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(list(corpus()), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tok


def make_model(name, tok_path, vocab_size, **cfg):
    torch.manual_seed({"v1_0": 1, "v1_1": 2}[name])
    config = T5Config(vocab_size=vocab_size, dropout_rate=0.0, **cfg)
    model = T5EncoderModel(config).eval()
    with torch.no_grad():
        # Layer norms start at 1; perturb them so that the test sees whether they are applied.
        for n, p in model.named_parameters():
            if "layer_norm" in n:
                p.uniform_(0.5, 1.5)
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    shard = "40KB" if name == "v1_1" else "10GB"
    model.save_pretrained(d, max_shard_size=shard, safe_serialization=True)
    shutil.copy(tok_path, os.path.join(d, "tokenizer.json"))
    return model


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = make_tokenizer()
    tok_path = os.path.join(OUT, "tokenizer.json")
    tok.save(tok_path)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=tok_path, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    enc = hf_tok(CAPTIONS, max_length=MAX_LENGTH, truncation=True, padding="max_length", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    full = hf_tok(CAPTIONS)["input_ids"]
    truncated = sum(len(x) > MAX_LENGTH for x in full)
    with open(os.path.join(OUT, "captions.json"), "w") as f:
        json.dump({"max_length": MAX_LENGTH, "truncated": truncated, "captions": CAPTIONS}, f,
                  ensure_ascii=False, indent=1)

    vocab = tok.get_vocab_size() + 5  # like T5's 32128, larger than the tokenizer
    common = dict(d_model=32, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                  relative_attention_max_distance=8, layer_norm_epsilon=1e-6)
    models_ = {
        "v1_0": make_model("v1_0", tok_path, vocab, d_kv=8, d_ff=64, feed_forward_proj="relu", **common),
        "v1_1": make_model("v1_1", tok_path, vocab, d_kv=16, d_ff=48, feed_forward_proj="gated-gelu",
                           tie_word_embeddings=False, **common),
    }
    for name, model in models_.items():
        with torch.no_grad():
            h32 = model(input_ids=ids, attention_mask=mask).last_hidden_state
            h16 = model.to(torch.bfloat16)(input_ids=ids, attention_mask=mask).last_hidden_state
        save_file({"input_ids": ids.contiguous(), "attention_mask": mask.contiguous(),
                   "last_hidden_state": h32.contiguous(), "last_hidden_state_bf16": h16.float().contiguous()},
                  os.path.join(OUT, f"expected_{name}.safetensors"))
    print("wrote", os.path.abspath(OUT), "vocab", tok.get_vocab_size(), "truncated", truncated)


if __name__ == "__main__":
    main()
