"""Launching real multi-process runs from tests: torchrun / accelerate in a subprocess, on CPU (gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # never inherit a launcher's identity
    env.update({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")})
    env.update(extra)
    return env


def torchrun(args: list[str], cwd: Path, nproc: int = 2, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N <args>`` (c10d rendezvous on a free local port)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return _run(cmd, cwd, check, env)


def torchrun_nodes(args: list[str], cwd: Path, nodes: int = 2) -> list[subprocess.CompletedProcess]:
    """``nodes`` torchrun agents with one process each, meeting at one c10d rendezvous endpoint: the multi-node
    command line (``--nnodes --rdzv-backend c10d --rdzv-endpoint``) on one machine."""
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc-per-node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=esrkit-test", *args]
    procs = [subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(nodes)]
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=LAUNCH_TIMEOUT_S)
        out.append(subprocess.CompletedProcess(cmd, p.returncode, stdout, ""))
    for r in out:
        assert r.returncode == 0, r.stdout[-6000:]
    return out


def accelerate_launch(args: list[str], cwd: Path, nproc: int = 2, check: bool = True) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N`` (torchrun underneath; gloo on a CPU-only machine)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={nproc}",
           "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", f"--main_process_port={free_port()}",
           *args]
    return _run(cmd, cwd, check, {})


def _run(cmd: list[str], cwd: Path, check: bool, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=child_env(**env), capture_output=True, text=True,
                            timeout=LAUNCH_TIMEOUT_S, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


def write_training_setup(root: Path, n_users: int = 300, n_items: int = 200) -> Path:
    """A small synthetic dataset with fixed random "LLM" item and user embeddings and PCA table (no provider, no
    PCA fit: the cost is the training) and a base recipe; returns the recipe path."""
    from esrkit.data.synthetic import SyntheticOptions, generate

    data = generate(SyntheticOptions(n_users=n_users, n_items=n_items, seed=3))
    data.save(root / "data", overwrite=True)
    rng = np.random.default_rng(0)
    np.save(root / "items.npy", rng.normal(size=(data.n_items, 24)).astype(np.float32))
    np.save(root / "users.npy", rng.normal(size=(data.n_users, 24)).astype(np.float32))
    np.save(root / "pca.npy", rng.normal(size=(data.n_items, 16)).astype(np.float32))  # no PCA to fit per rank
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
description = "distributed tests"
output_dir = "{root / 'runs'}"
workdir = "{root / 'wd'}"
[data]
path = "{root / 'data'}"
max_len = 20
group_rule = "pareto"
[embedding]
provider = "none"
item_embeddings = "{root / 'items.npy'}"
user_embeddings = "{root / 'users.npy'}"
pca_table = "{root / 'pca.npy'}"
[retrieval]
method = "exact"
n_similar = 5
top_k = 10
[model]
name = "llmesr"
backbone = "sasrec"
hidden = 16
dropout = 0.0
[train]
epochs = 2
patience = 2
batch_size = 23
device = "cpu"
[eval]
protocols = ["sampled", "full"]
""")
    return recipe
