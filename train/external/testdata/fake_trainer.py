"""A fake external trainer for the error tests: standard library only.

Usage: fake_trainer.py MODE[@ROUND] ROUND_CONFIG. MODE misbehaves in round
ROUND (every round without @ROUND); other rounds are "ok", which adds 0.001
to every parameter and claims 100 examples.
"""
import json, os, struct, subprocess, sys, time

spec, cfg_path = sys.argv[1], sys.argv[2]
mode, _, when = spec.partition("@")
cfg = json.load(open(cfg_path))
if when and int(when) != cfg["round"]:
    mode = "ok"

raw = open(cfg["global"], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = bytearray(raw[8 + n:])
meta = header.pop("__metadata__", {})
print("fake trainer: round", cfg["round"], "mode", mode, "tensors", len(header))

vals = list(struct.unpack("<%df" % (len(data) // 4), data))
vals = [v + 0.001 for v in vals]
examples = 100
if mode == "nan":
    vals[5] = float("nan")
if mode == "examples":
    examples = cfg["max_examples"] + 1
if mode == "exit":
    print("fake trainer: cannot read the data", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    # A child in the same process group: killed with the script.
    child = subprocess.Popen(["sleep", "3600"])
    with open(os.path.join(os.path.dirname(cfg_path), "..", "hang.pid"), "w") as f:
        f.write(str(child.pid))
    time.sleep(3600)
if mode == "noisy":
    for i in range(3000):
        print("line", i, "x" * 5000 if i == 0 else "")
data = struct.pack("<%df" % len(vals), *vals)
if mode == "shape":
    name = [k for k in sorted(header) if len(header[k]["shape"]) > 1][0]
    header[name]["shape"] = list(reversed(header[name]["shape"]))
if mode == "dtype":
    for t in header.values():
        t["dtype"] = "I32"

if mode != "noresult":
    h = json.dumps(dict(header, __metadata__=meta)).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(cfg["trained"], "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
    with open(cfg["result"], "w") as f:
        json.dump({"examples": examples, "metrics": {"train_loss": 0.5}}, f)
