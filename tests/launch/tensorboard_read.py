#!/usr/bin/python3
"""Reads a Loom run's TensorBoard event files with the `tensorboard` package and checks that they
hold the numbers of the run's metrics.jsonl.

Usage: tensorboard_read.py RUN_DIR
RUN_DIR holds metrics.jsonl and the events.out.tfevents.* files that `loom train` wrote beside it.

1. Every record of every event file, in name order, read with TensorBoard's own record reader
   (which checks both CRCs of each record): the first event of a file is the version
   "brain.Event:2", and the events that follow are, one for one, the JSON records in order: a
   "train" or "eval" record is a summary at its step and time whose tags are train/<key> or
   eval/<key> for each of its numbers that is not null (the values rounded to float32), a "resume"
   or "rollback" event record a SessionLog START at the step after it.
2. What TensorBoard shows, from its EventAccumulator: every tag has, step by step, the value of
   the last JSON record of that step (a resumed or rolled-back run logs some steps again, and
   TensorBoard drops the earlier attempt's), with that record's time as its wall time.
Exit code 0: they agree; 1: they differ (each difference on stderr); 3: tensorboard is missing.
"""
import glob
import json
import os
import struct
import sys

try:
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
except ImportError as e:
    sys.stderr.write("tensorboard_read.py: error: cannot import the Python package `tensorboard` for %s (%s); "
                     "run scripts/setup.sh (it installs it from PyPI with pip)\n" % (sys.executable, e))
    sys.exit(3)

NOT_SCALARS = {"time", "kind", "step", "steps"}
problems = []


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def scalars_of(record):
    """{tag: float32 value} of a train or eval record's numbers."""
    prefix = record["kind"] + "/"
    return {prefix + k: f32(v) for k, v in record.items()
            if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_events(path):
    reader = pywrap_tensorflow.PyRecordReader_New(path)
    events = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return events
        except errors.DataLossError as e:
            problems.append("%s: record %d: %s" % (path, len(events), e))
            return events
        events.append(event_pb2.Event.FromString(reader.record()))


def expected_events(records):
    """(kind, step, wall_time, payload) of each event the records should have made, in order."""
    out = []
    for r in records:
        if r["kind"] in ("train", "eval"):
            scalars = scalars_of(r)
            if scalars:
                out.append(("summary", r["step"], r["time"], scalars))
        elif r["kind"] == "event" and r["event"] in ("resume", "rollback"):
            out.append(("restart", r["step"] + 1, r["time"], None))
    return out


def found_event(e):
    if e.HasField("summary"):
        return ("summary", e.step, e.wall_time, {v.tag: v.simple_value for v in e.summary.value})
    if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START:
        return ("restart", e.step, e.wall_time, None)
    return ("other", e.step, e.wall_time, str(e))


def check_records(run_dir, records):
    files = sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")))
    if not files:
        problems.append("%s: no events.out.tfevents.* file" % run_dir)
    found = []
    for path in files:
        events = read_events(path)
        if not events or events[0].file_version != "brain.Event:2":
            problems.append("%s: the first event is not the file version brain.Event:2: %s" %
                            (path, events[0] if events else "no events"))
            continue
        found += [found_event(e) for e in events[1:]]
    expected = expected_events(records)
    for i in range(max(len(found), len(expected))):
        got = found[i] if i < len(found) else "(none)"
        want = expected[i] if i < len(expected) else "(none)"
        if got != want:
            problems.append("event %d: got %s, expected %s" % (i, got, want))
    return len(found)


def check_accumulator(run_dir, records):
    want = {}  # tag -> step -> (wall_time, value); the last record of a step wins
    for r in records:
        if r["kind"] in ("train", "eval"):
            for tag, value in scalars_of(r).items():
                want.setdefault(tag, {})[r["step"]] = (r["time"], value)
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = sorted(acc.Tags()["scalars"])
    if tags != sorted(want):
        problems.append("TensorBoard's tags %s, expected %s" % (tags, sorted(want)))
    points = 0
    for tag in sorted(want):
        got = [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)] if tag in tags else []
        expected = [(step, t, v) for step, (t, v) in sorted(want[tag].items())]
        points += len(got)
        if got != expected:
            problems.append("%s: TensorBoard has %s, expected %s" % (tag, got, expected))
    return len(tags), points


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    run_dir = sys.argv[1]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    n_events = check_records(run_dir, records)
    n_tags, n_points = check_accumulator(run_dir, records)
    for p in problems:
        sys.stderr.write("tensorboard_read.py: %s\n" % p)
    if problems:
        return 1
    print("tensorboard_read.py: %d events agree with %d JSON records; TensorBoard shows %d tags, %d points" %
          (n_events, len(records), n_tags, n_points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
