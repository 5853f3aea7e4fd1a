"""DDP under torchrun: 2 CPU processes with the gloo backend on the synthetic data.

``python -m torch.distributed.run --standalone`` picks a free port itself. Checked: both ranks
train (finite losses), on different shards that together cover the data; rank 0 alone writes
the outputs (one metrics line and one log line per epoch); a resumed DDP run equals an
uninterrupted one bit for bit (per-rank RNG states are in the checkpoint).
"""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import tssd_fast
from tssd_fast.train.checkpoint import load_checkpoint

PKG_ROOT = str(Path(tssd_fast.__file__).resolve().parent.parent)
N_TRAIN = 40  # 20 samples per rank, batch 8 -> 3 steps per epoch (8, 8, 4)
ARGS = ["--dataset", "synthetic", "--data-opt", f"num_samples={N_TRAIN}", "--data-opt", "size=16",
        "--preset", "cpu-tiny", "--batch-size", "8", "--device", "cpu", "--backend", "torch", "--no-progress",
        "--lr-step", "1", "--T-eval", "2", "1"]

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def torchrun(args, cwd, timeout=300):
    env = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "tssd_fast.train", *map(str, args)]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_ddp_two_gloo_processes_train_on_shards_and_resume(tmp_path):
    a = tmp_path / "a"
    r = torchrun(ARGS + ["--epochs", 2, "--out-dir", a, "--debug-trace"], tmp_path)

    # both ranks trained, on different shards covering the training set, with finite losses
    traces = {rank: lines(a / f"trace_rank{rank}.jsonl") for rank in (0, 1)}
    for rank, recs in traces.items():
        assert [t["step"] for t in recs] == list(range(1, 7)), rank
        assert all(t["rank"] == rank and torch.isfinite(torch.tensor(t["loss"])) for t in recs)
    for epoch in (1, 2):
        shard = {rank: [t for t in recs if t["epoch"] == epoch] for rank, recs in traces.items()}
        assert [t["x_sum"] for t in shard[0]] != [t["x_sum"] for t in shard[1]]
        labels = Counter(y for rank in (0, 1) for t in shard[rank] for y in t["labels"])
        assert labels == Counter(i % 10 for i in range(N_TRAIN))  # the two shards partition the data
    assert [t["x_sum"] for t in traces[0] if t["epoch"] == 1] != [t["x_sum"] for t in traces[0] if t["epoch"] == 2]

    # rank 0 alone wrote the outputs: one record / log line per epoch, not one per rank
    m = lines(a / "metrics.jsonl")
    assert [x["epoch"] for x in m] == [1, 2] and all(x["images"] == N_TRAIN for x in m)
    assert all(torch.isfinite(torch.tensor(x["train_loss"])) for x in m)
    assert r.stdout.count("epoch 1/2 ") == 1 and r.stdout.count("summary:") == 1
    ck = load_checkpoint(a / "checkpoint_last.pt")
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["global_step"] == 6
    assert json.loads((a / "config.json").read_text())["world_size"] == 2
    assert not list(a.glob(".*.tmp"))

    # interrupted after epoch 1 and resumed under torchrun == the uninterrupted run
    b = tmp_path / "b"
    torchrun(ARGS + ["--epochs", 1, "--out-dir", b], tmp_path)
    torchrun(["--resume", b / "checkpoint_last.pt", "--epochs", 2, "--no-progress"], tmp_path)
    kb = load_checkpoint(b / "checkpoint_last.pt")
    for k in ck["model"]:
        assert torch.equal(ck["model"][k], kb["model"][k]), k
    assert [x["train_loss"] for x in lines(b / "metrics.jsonl")] == [x["train_loss"] for x in m]
