"""Writes TensorBoard events with TensorBoard's own protobufs and record writer, for
trainer/tests/tensorboard.rs to compare byte for byte with imagen's writer.

Run: scripts/python_env.sh && .venv-tools/bin/python scripts/make_tensorboard_fixture.py
Writes trainer/tests/fixtures/tensorboard_reference.tfevents.
"""
import pathlib

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

out = pathlib.Path(__file__).resolve().parent.parent / "trainer/tests/fixtures"
path = out / "tensorboard_reference.tfevents"
with open(path, "wb") as f:
    w = RecordWriter(f)
    w.write(event_pb2.Event(wall_time=1700000000.5, step=0, file_version="brain.Event:2").SerializeToString())
    s = summary_pb2.Summary(
        value=[
            summary_pb2.Summary.Value(tag="loss", simple_value=0.25),
            summary_pb2.Summary.Value(tag="lr", simple_value=1e-4),
        ]
    )
    w.write(event_pb2.Event(wall_time=1700000001.0, step=7, summary=s).SerializeToString())
    img = summary_pb2.Summary.Image(height=2, width=3, colorspace=3, encoded_image_string=b"\x89PNGfake")
    s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="samples", image=img)])
    w.write(event_pb2.Event(wall_time=1700000002.0, step=8, summary=s).SerializeToString())
    start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
    w.write(event_pb2.Event(wall_time=1700000003.0, step=5, session_log=start).SerializeToString())
print(f"wrote {path}")
