"""Launching real multi-process runs from tests: torchrun / accelerate in a subprocess, on CPU (gloo)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
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
    env.update(
        {
            "OMP_WAIT_POLICY": "PASSIVE",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    env.update(extra)
    return env


def torchrun(
    args: list[str], cwd: Path, nproc: int = 2, check: bool = True, **env: str
) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N <args>`` (c10d rendezvous on a free local port)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return _run(cmd, cwd, check, env)


def torchrun_nodes(args: list[str], cwd: Path, nodes: int = 2) -> list[subprocess.CompletedProcess]:
    """``nodes`` torchrun agents with one process each, meeting at one c10d rendezvous endpoint: the
    multi-node command line (``--nnodes --rdzv-backend c10d --rdzv-endpoint``) on one machine."""
    port, run_id = free_port(), f"esrkit-test-{uuid.uuid4().hex[:8]}"
    procs = []
    for node in range(nodes):  # node 0 hosts the rendezvous store (no race between agents on one host)
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={nodes}",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id={run_id}",
            f"--rdzv-conf=is_host={'true' if node == 0 else 'false'}",
            *args,
        ]
        logs = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed below; a file: a pipe could fill up
        procs.append((cmd, _spawn(cmd, cwd, child_env(), logs), logs))
    out = []
    try:
        for cmd, proc, logs in procs:
            out.append(subprocess.CompletedProcess(cmd, proc.returncode, _wait(proc, logs), ""))
            out[-1].returncode = proc.returncode
    finally:
        for _, proc, logs in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            logs.close()
    for r in out:
        assert r.returncode == 0, r.stdout[-6000:]
    return out


def accelerate_launch(
    args: list[str], cwd: Path, nproc: int = 2, check: bool = True
) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N`` (torchrun underneath; gloo on a CPU-only
    machine)."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        f"--num_processes={nproc}",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={free_port()}",
        *args,
    ]
    return _run(cmd, cwd, check, {})


def _spawn(cmd: list[str], cwd: Path, env: dict[str, str], logs) -> subprocess.Popen:
    """The launcher in a session of its own, so a timeout can stop it together with its workers."""
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=logs, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _wait(proc: subprocess.Popen, logs) -> str:
    try:
        proc.wait(timeout=LAUNCH_TIMEOUT_S)
    finally:
        if proc.poll() is None:  # timed out: the agent and every worker it started
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    logs.seek(0)
    return logs.read()


def _run(cmd: list[str], cwd: Path, check: bool, env: dict[str, str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryFile(mode="w+") as logs:
        proc = _spawn(cmd, cwd, child_env(**env), logs)
        result = subprocess.CompletedProcess(cmd, proc.returncode, _wait(proc, logs), "")
    result.returncode = proc.returncode
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-8000:]}")
    return result


def write_training_setup(root: Path, n_users: int = 300, n_items: int = 200) -> Path:
    """A small synthetic dataset with fixed random "LLM" item and user embeddings and PCA table (no provider,
    no PCA fit: the cost is the training) and a base recipe; returns the recipe path."""
    from esrkit.data.synthetic import SyntheticOptions, generate

    data = generate(SyntheticOptions(n_users=n_users, n_items=n_items, seed=3))
    data.save(root / "data", overwrite=True)
    rng = np.random.default_rng(0)
    np.save(root / "items.npy", rng.normal(size=(data.n_items, 24)).astype(np.float32))
    np.save(root / "users.npy", rng.normal(size=(data.n_users, 24)).astype(np.float32))
    np.save(
        root / "pca.npy", rng.normal(size=(data.n_items, 16)).astype(np.float32)
    )  # no PCA to fit per rank
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
description = "distributed tests"
output_dir = "{root / "runs"}"
workdir = "{root / "wd"}"
[data]
path = "{root / "data"}"
max_len = 20
group_rule = "pareto"
[embedding]
provider = "none"
item_embeddings = "{root / "items.npy"}"
user_embeddings = "{root / "users.npy"}"
pca_table = "{root / "pca.npy"}"
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
