#!/usr/bin/env python3
"""An external trainer for globalbrain: trains the round's model with PyTorch.

The node runs it each round it trains, as its node.yaml says:

    trainer:
      command: [/usr/bin/python3, /path/to/examples/pytorch/train.py]

and appends the path of the round's JSON config. This script reads the
global model (safetensors) and the node's data (the IDX files of MNIST or
Fashion-MNIST in data.dir), trains for the round's epochs with plain SGD
(and the FedProx term when prox_mu > 0), and writes the trained model
(safetensors) and result.json: {"examples": N, "metrics": {...}}.

The models are the manifest's architectures with the parameter names and
shapes of the node's files: logreg, 2nn (784-200-200-10) and cnn (two 5x5
"same" convolutions 32/64, each with ReLU and 2x2 max-pool, FC 512, FC 10).

Needs torch and numpy only (Debian: apt-get install python3-torch).
"""
import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


# ---- the models -----------------------------------------------------------

class LogReg(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.fc = nn.Linear(m["height"] * m["width"] * m["channels"], m["classes"])

    def forward(self, x):
        return self.fc(x.flatten(1))


class TwoNN(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.fc1 = nn.Linear(m["height"] * m["width"] * m["channels"], 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, m["classes"])

    def forward(self, x):
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.conv1 = nn.Conv2d(m["channels"], 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * (m["height"] // 4) * (m["width"] // 4), 512)
        self.fc2 = nn.Linear(512, m["classes"])

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))  # NCHW flattened (c, h, w)
        return self.fc2(x)


ARCHS = {"logreg": LogReg, "2nn": TwoNN, "cnn": CNN}


def build_model(m):
    """The model of the round config's "model" section."""
    if m["arch"] not in ARCHS:
        raise SystemExit("train.py: model arch %r unknown (want one of %s)" % (m["arch"], ", ".join(ARCHS)))
    return ARCHS[m["arch"]](m)


# ---- safetensors, float32 only (the format: 8-byte header length, JSON, data)

def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            raise SystemExit("train.py: %s: tensor %s is %s, want F32" % (path, name, t["dtype"]))
        lo, hi = t["data_offsets"]
        a = np.frombuffer(data[lo:hi], dtype="<f4").reshape(t["shape"])
        out[name] = torch.from_numpy(a.copy())
    return out


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().cpu().contiguous().numpy().astype("<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---- the data: IDX files as in MNIST ------------------------------------

def _open(path):
    for p in (path + ".gz", path):
        if os.path.exists(p):
            with open(p, "rb") as f:
                magic = f.read(2)
            return gzip.open(p, "rb") if magic == b"\x1f\x8b" else open(p, "rb")
    raise SystemExit("train.py: neither %s.gz nor %s found" % (path, path))


def read_idx(directory, split):
    """Images scaled to [0, 1] as N x H x W float32, and labels, of split
    "train" or "t10k" in directory."""
    with _open(os.path.join(directory, split + "-images-idx3-ubyte")) as f:
        magic, n, h, w = struct.unpack(">IIII", f.read(16))
        if magic != 0x803:
            raise SystemExit("train.py: %s images: magic %#x, want 0x803" % (split, magic))
        x = np.frombuffer(f.read(n * h * w), dtype=np.uint8).reshape(n, h, w)
    with _open(os.path.join(directory, split + "-labels-idx1-ubyte")) as f:
        magic, m = struct.unpack(">II", f.read(8))
        if magic != 0x801 or m != n:
            raise SystemExit("train.py: %s labels: magic %#x, %d labels for %d images" % (split, magic, m, n))
        y = np.frombuffer(f.read(m), dtype=np.uint8)
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def local_part(n, data):
    """This node's part of the n training examples: part data.index of
    data.members, an IID split seeded with data.seed (a stand-in for the
    institution's own data, as in the node's built-in trainer)."""
    if data.get("partition", "iid") != "iid":
        raise SystemExit("train.py: data.partition %r: this example splits iid only" % data["partition"])
    members, index = int(data.get("members", 1)), int(data.get("index", 0))
    perm = np.random.default_rng(int(data.get("seed", 1))).permutation(n)
    return np.array_split(perm, members)[index]


def as_input(x, m):
    """Images N x H x W as the model's input: NCHW for the CNN, flat rows
    (channel-last, as the node's data) for the dense models."""
    t = torch.from_numpy(x)
    return t.unsqueeze(1) if m["arch"] == "cnn" else t.reshape(len(x), -1)


# ---- one round ------------------------------------------------------------

def train_round(cfg):
    m = cfg["model"]
    model = build_model(m)
    global_state = load_safetensors(cfg["global"])
    model.load_state_dict(global_state)  # strict: names and shapes must match
    x, y = read_idx(cfg["data"]["dir"], "train")
    if x.shape[1:] != (m["height"], m["width"]) or m["channels"] != 1:
        raise SystemExit("train.py: data is %s images, the model %dx%dx%d" % (x.shape[1:], m["height"], m["width"], m["channels"]))
    part = local_part(len(x), cfg["data"])
    x, y = as_input(x[part], m), torch.from_numpy(y[part])

    torch.manual_seed(cfg["seed"] % (1 << 63))
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    anchor = [p.detach().clone() for p in model.parameters()]
    mu, bs = cfg.get("prox_mu", 0.0), cfg["batch_size"]
    total, seen = 0.0, 0
    model.train()
    for _ in range(cfg["epochs"]):
        order = torch.randperm(len(y))
        for s in range(0, len(y), bs):
            idx = order[s:s + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            total += loss.item() * len(idx)
            seen += len(idx)
            if mu > 0:
                loss = loss + mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
            opt.zero_grad()
            loss.backward()
            opt.step()
    save_safetensors(cfg["trained"], model.state_dict())
    examples = len(y)
    if cfg.get("max_examples", 0) > 0:
        examples = min(examples, cfg["max_examples"])
    result = {"examples": examples, "metrics": {"train_loss": total / max(seen, 1)}}
    with open(cfg["result"], "w") as f:
        json.dump(result, f)
    print("train.py: round %d: %d examples, train loss %.4f" % (cfg["round"], len(y), result["metrics"]["train_loss"]))


def main():
    if len(sys.argv) < 2:
        raise SystemExit("usage: train.py ROUND_CONFIG (the node appends it)")
    with open(sys.argv[-1]) as f:
        cfg = json.load(f)
    if cfg.get("version") != 1:
        raise SystemExit("train.py: round config version %r, this script speaks 1" % cfg.get("version"))
    train_round(cfg)


if __name__ == "__main__":
    main()
