#!/usr/bin/env python3
"""A small network trained in checkpointed segments (numpy only; no weights downloaded).

Gridwork runs this script once a segment. Segment 0 starts from a seeded initialisation;
every later one loads the checkpoint in $GRIDWORK_CHECKPOINT. Each trains --steps steps and
writes the next checkpoint to $GRIDWORK_OUTPUTS: the weights as .npy files and the loss of
every step so far in loss.csv. A segment depends on its checkpoint alone: the data come from
a fixed seed and each step's minibatch from the step's number, so a council member replaying
segment k from the executor's checkpoint k trains exactly what the executor did.

The model: a 1-64-1 tanh network fitting y = sin(3x) + noise on 1,024 points, plain SGD.
"""
import argparse
import os

# One thread: the same sums in the same order on every run of this machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HIDDEN = 64
BATCH = 64


def data():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1.0, 1.0, (1024, 1))
    y = np.sin(3.0 * x) + 0.05 * rng.standard_normal((1024, 1))
    return x, y


def initial():
    rng = np.random.default_rng(11)
    return {
        "w1": rng.standard_normal((1, HIDDEN)) * 1.0,
        "b1": np.zeros((1, HIDDEN)),
        "w2": rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN),
        "b2": np.zeros((1, 1)),
    }


def load(path):
    params = {name: np.load(os.path.join(path, name + ".npy")) for name in ("w1", "b1", "w2", "b2")}
    with open(os.path.join(path, "loss.csv")) as f:
        losses = f.read().splitlines()[1:]
    return params, losses


def step(params, x, y, lr):
    h = np.tanh(x @ params["w1"] + params["b1"])
    pred = h @ params["w2"] + params["b2"]
    err = pred - y
    loss = float(np.mean(err**2))
    g = 2.0 * err / len(x)
    gw2 = h.T @ g
    gb2 = g.sum(axis=0, keepdims=True)
    gh = (g @ params["w2"].T) * (1.0 - h**2)
    gw1 = x.T @ gh
    gb1 = gh.sum(axis=0, keepdims=True)
    for name, grad in (("w1", gw1), ("b1", gb1), ("w2", gw2), ("b2", gb2)):
        params[name] -= lr * grad
    return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True, help="steps of this segment")
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    segment = int(os.environ.get("GRIDWORK_SEGMENT", "0"))
    out = os.environ["GRIDWORK_OUTPUTS"]
    checkpoint = os.environ.get("GRIDWORK_CHECKPOINT")
    if segment > 0 and not checkpoint:
        raise SystemExit("segment %d needs $GRIDWORK_CHECKPOINT" % segment)
    params, losses = load(checkpoint) if checkpoint else (initial(), [])
    x, y = data()
    first = segment * args.steps
    for n in range(first, first + args.steps):
        batch = np.random.default_rng(1000 + n).integers(0, len(x), BATCH)
        loss = step(params, x[batch], y[batch], args.lr)
        losses.append("%d,%.12g" % (n, loss))
    for name, value in params.items():
        np.save(os.path.join(out, name + ".npy"), value)
    with open(os.path.join(out, "loss.csv"), "w") as f:
        f.write("step,loss\n" + "\n".join(losses) + "\n")
    print("segment %d: steps %d-%d, loss %s" % (segment, first, first + args.steps - 1, losses[-1]))


if __name__ == "__main__":
    main()
