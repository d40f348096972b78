"""Reference trajectories of torch.optim.AdamW and clip_grad_norm_ for trainer/tests/optim.rs.

Run with the bootstrap venv (it has torch):  .venv/bin/python scripts/make_optim_fixtures.py
Writes trainer/tests/fixtures/adamw.json.
"""
import json
import pathlib

import torch

torch.manual_seed(0)
shapes = [(3, 4), (5,), (2, 2, 2)]
params = [torch.randn(s, dtype=torch.float32, requires_grad=True) for s in shapes]
init = [p.detach().clone() for p in params]
cfg = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
lrs = [1e-3, 2e-3, 3e-3, 3e-3, 2.5e-3, 1e-3]
max_norm = 1.0
opt = torch.optim.AdamW(params, lr=lrs[0], **cfg)
steps = []
for lr in lrs:
    grads = [torch.randn(s) * 3.0 for s in shapes]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    steps.append(
        dict(
            lr=lr,
            grads=[g.flatten().tolist() for g in grads],
            norm=float(norm),
            params=[p.detach().flatten().tolist() for p in params],
        )
    )
out = dict(
    shapes=[list(s) for s in shapes],
    init=[p.flatten().tolist() for p in init],
    beta1=cfg["betas"][0],
    beta2=cfg["betas"][1],
    eps=cfg["eps"],
    weight_decay=cfg["weight_decay"],
    max_norm=max_norm,
    torch_version=torch.__version__,
    steps=steps,
)
path = pathlib.Path(__file__).resolve().parent.parent / "trainer/tests/fixtures/adamw.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
