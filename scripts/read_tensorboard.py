"""Reads a stage directory's TensorBoard event files (RUN/stage-N) with TensorBoard's own EventAccumulator and
prints what it found as JSON: scalar tags with their (step, value) lists, image tags with their
sizes. Used by trainer/tests/tensorboard.rs and handy for checking a real run.

Run: .venv-tools/bin/python scripts/read_tensorboard.py RUN/stage-N
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
acc.Reload()
tags = acc.Tags()
out = {
    "scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
    "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)] for t in tags["images"]},
}
print(json.dumps(out))
