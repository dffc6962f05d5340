"""Similar-user retrieval benchmark: exact blocked search vs hnswlib, and sharded hnswlib at scale.

    python benchmarks/retrieval.py                      # 200,000 users x 384: exact vs hnsw, recall over all
    users python benchmarks/retrieval.py --users 1000000      # sharded hnsw (2 shards of 500k), recall on a
    sample

Each method runs in a fresh subprocess so its peak memory (``ru_maxrss``) is its own; tracemalloc cannot see
torch or hnswlib allocations. Embeddings are synthetic but structured like real sentence embeddings
(``esrkit.index.synthetic``): recall on isotropic noise would mean nothing. Results go to the
"## Similar-user retrieval" section of benchmarks/RESULTS.md (only that section is touched).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from esrkit.utils.machine import cpu_model, memory_gib

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Similar-user retrieval"
GIB = float(1 << 30)


# ---------------------------------------------------------------------------------------------- machine
def machine_description() -> str:
    model, gib = cpu_model(), memory_gib() or 0.0
    from importlib.metadata import version

    import hnswlib  # noqa: F401
    import torch

    return (
        f"{model}, {os.cpu_count()} cores, {gib:.1f} GiB RAM, no GPU; Python "
        f"{platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"hnswlib {version('hnswlib')}; every method runs with OMP_WAIT_POLICY=PASSIVE"
    )


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def current_rss_gib() -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024 / GIB
    return float("nan")


# ---------------------------------------------------------------------------------------------- children
def child_exact(args: argparse.Namespace) -> dict[str, Any]:
    from esrkit.index import exact_topk

    emb = np.load(args.data)
    import torch  # noqa: F401  (imported before the baseline so it is not counted as search memory)

    base = current_rss_gib()
    t0 = time.perf_counter()
    rows, _ = exact_topk(emb, args.k, num_threads=args.threads or None)
    seconds = time.perf_counter() - t0
    np.save(args.out, rows)
    return {"method": "exact", "search_s": seconds, "baseline_rss_gib": base, "peak_rss_gib": peak_rss_gib()}


def child_hnsw(args: argparse.Namespace) -> dict[str, Any]:
    from esrkit.index import HnswIndex

    emb = np.load(args.data)
    base = current_rss_gib()
    threads = args.threads or None
    t0 = time.perf_counter()
    index = HnswIndex.build(
        emb, M=args.M, ef_construction=args.ef_construction, ef=args.ef, num_threads=threads
    )
    t1 = time.perf_counter()
    rows, _ = index.query(emb, args.k, exclude=np.arange(len(emb)), num_threads=threads)
    t2 = time.perf_counter()
    np.save(args.out, rows.astype(np.int32))
    peak = peak_rss_gib()
    with tempfile.TemporaryDirectory(dir=Path(args.out).parent) as tmp:
        t3 = time.perf_counter()
        path = index.save(Path(tmp) / "users.bin")
        t4 = time.perf_counter()
        HnswIndex.load(path)
        t5 = time.perf_counter()
        size = path.stat().st_size
    return {
        "method": "hnsw",
        "build_s": t1 - t0,
        "query_s": t2 - t1,
        "baseline_rss_gib": base,
        "peak_rss_gib": peak,
        "save_s": t4 - t3,
        "load_s": t5 - t4,
        "index_gib": size / GIB,
        "filter_tradeoff": filter_tradeoff(index, emb, args.k, threads),
    }


def filter_tradeoff(
    index: Any, emb: np.ndarray, k: int, threads: int | None, n: int = 1000
) -> dict[str, float]:
    """Per-user cost of self exclusion: one batched over-fetch (k+1, drop self) vs hnswlib's ``filter=`` (a
    Python callable per visited node, one call per user because each user excludes a different label)."""
    users = np.random.default_rng(0).choice(len(emb), n, replace=False)
    t0 = time.perf_counter()
    fetched, _ = index.query(emb[users], k, exclude=users, num_threads=threads)
    t1 = time.perf_counter()
    raw = index._index  # the raw hnswlib object, only to time its filter= path
    same = 0
    for row, u in enumerate(users):
        labels, _ = raw.knn_query(emb[u : u + 1], k=k, filter=lambda label, u=int(u): label != u)
        same += int(set(labels[0].tolist()) == set(fetched[row].tolist()))
    t2 = time.perf_counter()
    return {
        "users": n,
        "overfetch_ms_per_user": (t1 - t0) / n * 1e3,
        "filter_ms_per_user": (t2 - t1) / n * 1e3,
        "same_answer_fraction": same / n,
    }


def child_sharded(args: argparse.Namespace) -> dict[str, Any]:
    from esrkit.index import build_sharded_neighbours

    emb = np.load(args.data, mmap_mode="r")
    base = current_rss_gib()
    t0 = time.perf_counter()
    table = build_sharded_neighbours(
        emb,
        args.k,
        args.shard_size,
        method="hnsw",
        out_dir=args.shard_dir,
        num_threads=args.threads or None,
        hnsw_m=args.M,
        hnsw_ef_construction=args.ef_construction,
        hnsw_ef=args.ef,
    )
    seconds = time.perf_counter() - t0
    np.save(args.out, table.rows)
    return {
        "method": "sharded-hnsw",
        "total_s": seconds,
        "baseline_rss_gib": base,
        "peak_rss_gib": peak_rss_gib(),
        "shards": table.meta["shard_timings"],
        "shard_size": args.shard_size,
    }


def child_recall(args: argparse.Namespace) -> dict[str, Any]:
    """Exact top-k for a random sample, scanning the (memory-mapped) users in chunks; then, with saved shards,
    recall and per-user query time of the sharded index at several query-time ef values (no rebuild)."""
    from esrkit.index import ShardedIndex, exact_search_chunked, recall_at_k
    from esrkit.index.neighbours import sample_rows

    emb = np.load(args.data, mmap_mode="r")
    approx = np.load(args.rows, mmap_mode="r")
    users = sample_rows(len(emb), args.sample, seed=0)
    queries = np.asarray(emb[users])
    threads = args.threads or None
    t0 = time.perf_counter()
    exact, _ = exact_search_chunked(queries, emb, args.k, query_rows=users, num_threads=threads)
    result: dict[str, Any] = {
        "method": "recall",
        "sample": len(users),
        "recall_at_k": recall_at_k(np.asarray(approx[users]), exact),
        "exact_sample_s": time.perf_counter() - t0,
    }
    if args.shard_dir and args.ef_sweep:
        result["ef_sweep"] = ef_sweep(ShardedIndex.load(args.shard_dir), queries, users, exact, args, threads)
    result["peak_rss_gib"] = peak_rss_gib()
    return result


def ef_sweep(
    sharded: Any,
    queries: np.ndarray,
    users: np.ndarray,
    exact: np.ndarray,
    args: argparse.Namespace,
    threads: Any,
) -> list[dict[str, Any]]:
    """Each shard is loaded once and searched at every ef; times cover the searches only, not the loads."""
    from esrkit.index import merge_topk, recall_at_k
    from esrkit.index.exact import empty_topk

    efs = [int(v) for v in args.ef_sweep.split(",")]
    best = {ef: empty_topk(len(users), args.k) for ef in efs}
    seconds = dict.fromkeys(efs, 0.0)
    for shard in sharded.iter_shards(threads):
        for ef in efs:
            t0 = time.perf_counter()
            part = shard.search(queries, args.k, users, threads, ef)
            seconds[ef] += time.perf_counter() - t0
            best[ef] = merge_topk([best[ef], part], args.k)
    return [
        {
            "ef": ef,
            "recall_at_k": recall_at_k(best[ef][0], exact),
            "ms_per_user": seconds[ef] / len(users) * 1e3,
        }
        for ef in efs
    ]


CHILDREN = {"exact": child_exact, "hnsw": child_hnsw, "sharded": child_sharded, "recall": child_recall}


# ---------------------------------------------------------------------------------------------- parent
def cached_result_path(args: argparse.Namespace, name: str) -> Path:
    return Path(args.workdir) / f"result-{name}-{args.users}x{args.dim}.json"


def run_child(name: str, args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--data",
        str(args.data),
        "-k",
        str(args.k),
        "--M",
        str(args.M),
        "--ef-construction",
        str(args.ef_construction),
        "--ef",
        str(args.ef),
        "--threads",
        str(args.threads),
        "--shard-size",
        str(args.shard_size),
    ]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    print(f"[{time.strftime('%H:%M:%S')}] running {name} ...", flush=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t0
    result["load_avg"] = [load_before, os.getloadavg()[0]]  # other jobs on the machine distort wall times
    cached_result_path(args, name).write_text(json.dumps(result, indent=1))
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {json.dumps(result)}", flush=True)
    return result


def make_data(args: argparse.Namespace) -> Path:
    from esrkit.index import synthetic_user_embeddings

    path = Path(args.workdir) / f"users-{args.users}x{args.dim}-seed{args.seed}.npy"
    if not path.exists():
        t0 = time.perf_counter()
        emb = synthetic_user_embeddings(args.users, args.dim, seed=args.seed)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        os.replace(tmp, path)
        print(f"generated {path} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def command_line() -> str:
    return " ".join(["python benchmarks/retrieval.py", *sys.argv[1:]])


def nxn_memory(n: int) -> str:
    return f"{n * n * 4 / GIB:,.0f} GiB float32 / {n * n * 8 / GIB:,.0f} GiB float64"


def _loads(result: dict[str, Any]) -> str:
    return "/".join(f"{x:.1f}" for x in result.get("load_avg", []))


def single_report(
    args: argparse.Namespace, exact: dict[str, Any], hnsw: dict[str, Any], recall: float
) -> str:
    emb_gib = args.users * args.dim * 4 / GIB
    ft = hnsw["filter_tradeoff"]
    hnsw_total = hnsw["build_s"] + hnsw["query_s"]
    return "\n".join(
        [
            f"### {args.users:,} users x {args.dim} dims, top-{args.k}: exact vs hnswlib",
            "",
            (
                f"Command: `{command_line()}` ({time.strftime('%Y-%m-%d')}). "
                f"Embeddings {emb_gib:.2f} GiB float32; the N x N matrix the official notebook builds "
                "would be "
                f"{nxn_memory(args.users)}. Peak memory is the child process's max RSS (it includes the "
                "embeddings, "
                f"{exact['baseline_rss_gib']:.2f} / {hnsw['baseline_rss_gib']:.2f} GiB before the search "
                "started)."
            ),
            "",
            f"| method | build | query all users | total | peak RSS | recall@{args.k} vs exact |",
            "| --- | --- | --- | --- | --- | --- |",
            (
                "| exact blocked (torch matmul + topk, canonical float64 re-rank) | - | "
                f"{exact['search_s']:.0f} s | "
                f"{exact['search_s']:.0f} s | {exact['peak_rss_gib']:.2f} GiB | 1 (reference) |"
            ),
            (
                f"| hnswlib M={args.M}, ef_construction={args.ef_construction}, ef={args.ef} | "
                f"{hnsw['build_s']:.0f} s | "
                f"{hnsw['query_s']:.0f} s | {hnsw_total:.0f} s | {hnsw['peak_rss_gib']:.2f} GiB | "
                f"**{recall:.4f}** (all {args.users:,} users) |"
            ),
            "",
            (
                f"- CPU time (user+sys, whole child process): exact {exact['cpu_s']:.0f} s, hnswlib "
                f"{hnsw['cpu_s']:.0f} s. "
                f"1-min load average before/after: exact {_loads(exact)}, hnswlib {_loads(hnsw)} "
                f"(above {os.cpu_count()} means other jobs shared the cores and wall times are inflated)."
            ),
            f"- hnswlib index file {hnsw['index_gib']:.2f} GiB; save {hnsw['save_s']:.1f} s, load "
            f"{hnsw['load_s']:.1f} s.",
            (
                f"- Self exclusion, {ft['users']} users: batched over-fetch k+1 and drop self "
                f"{ft['overfetch_ms_per_user']:.2f} ms/user "
                f"vs `filter=` (one Python-callback query per user) {ft['filter_ms_per_user']:.2f} ms/user "
                f"({ft['filter_ms_per_user'] / max(ft['overfetch_ms_per_user'], 1e-9):.1f}x slower; same "
                "set for "
                f"{ft['same_answer_fraction']:.1%} of users). esrkit over-fetches."
            ),
            (
                "- Speed-up of hnswlib over exact for one all-users pass: "
                f"{exact['search_s'] / hnsw_total:.1f}x; "
                "exact cost grows as N^2, hnswlib about N log N."
            ),
            "",
        ]
    )


def sharded_report(args: argparse.Namespace, sharded: dict[str, Any], recall: dict[str, Any]) -> str:
    emb_gib = args.users * args.dim * 4 / GIB
    build = sum(s["build_s"] for s in sharded["shards"])
    query = sum(s.get("query_s", 0.0) for s in sharded["shards"])
    return "\n".join(
        [
            f"### {args.users:,} users x {args.dim} dims, top-{args.k}: sharded hnswlib",
            "",
            (
                f"Command: `{command_line()}` ({time.strftime('%Y-%m-%d')})"
                f"{'; build figures reused from the previous full run' if args.reuse else ''}. "
                f"{len(sharded['shards'])} shards of up to {args.shard_size:,} users, "
                f"hnswlib M={args.M}, ef_construction={args.ef_construction}, ef={args.ef}; embeddings "
                f"{emb_gib:.2f} GiB "
                f"float32, memory-mapped; the N x N matrix would be {nxn_memory(args.users)}."
            ),
            "",
            (
                "| build (all shards, incl. save) | query (every user x every shard) | total | peak RSS | "
                f"recall@{args.k} vs exact ({recall['sample']:,} random users) |"
            ),
            "| --- | --- | --- | --- | --- |",
            (
                f"| {build:.0f} s | {query:.0f} s | {sharded['total_s']:.0f} s | "
                f"{sharded['peak_rss_gib']:.2f} GiB | "
                f"**{recall['recall_at_k']:.4f}** |"
            ),
            "",
            "Per shard: "
            + "; ".join(
                f"[{s['start']:,}, {s['stop']:,}) build {s['build_s']:.0f} s, query "
                f"{s.get('query_s', 0):.0f} s"
                for s in sharded["shards"]
            )
            + ".",
            (
                f"The exact reference for the recall sample took {recall['exact_sample_s']:.0f} s "
                f"(peak {recall['peak_rss_gib']:.2f} GiB, chunked scan)."
            ),
            (
                f"CPU time (user+sys) of the build+query process: {sharded['cpu_s']:.0f} s; 1-min load "
                "average before/after: "
                f"{_loads(sharded)} (above {os.cpu_count()} means other jobs shared the cores and wall "
                "times are inflated)."
            ),
            "",
            *ef_sweep_table(args, recall),
        ]
    )


def ef_sweep_table(args: argparse.Namespace, recall: dict[str, Any]) -> list[str]:
    """Recall vs query-time ef of the saved shards, on the same sample (no rebuild needed to trade speed for
    recall)."""
    if not recall.get("ef_sweep"):
        return []
    lines = [
        (
            f"Query-time ef on the saved shards, same {recall['sample']:,} users (ms per user covers "
            "both shards; "
            "wall time on the shared machine):"
        ),
        "",
        f"| ef | recall@{args.k} | ms per user |",
        "| ---: | ---: | ---: |",
    ]
    lines += [f"| {r['ef']} | {r['recall_at_k']:.4f} | {r['ms_per_user']:.2f} |" for r in recall["ef_sweep"]]
    return [*lines, ""]


def write_section(subsection: str) -> None:
    """Replace (or add) our subsection inside our section, leaving other sections and subsections alone."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    intro = "\n".join(
        [
            SECTION,
            "",
            f"Machine: {machine_description()}.",
            "",
            (
                "Synthetic users from `esrkit.index.synthetic_user_embeddings` (a shared direction, "
                "decaying spectrum, "
                "topics and ~200-user sub-clusters; calibrated on real MiniLM embeddings; never "
                "isotropic noise). "
                "Reproduce with `python benchmarks/retrieval.py [--users N]`."
            ),
            "",
        ]
    )
    start = text.find(SECTION)
    if start < 0:
        body, before, after = "", text.rstrip("\n") + "\n\n", ""
    else:
        end = text.find("\n## ", start + len(SECTION))
        end = len(text) if end < 0 else end + 1
        before, body, after = text[:start], text[start:end], text[end:]
    subs = _subsections(body)
    title = subsection.splitlines()[0]
    subs = sorted([s for s in subs if s.splitlines()[0] != title] + [subsection], key=_user_count)
    new_body = intro + "\n" + "\n".join(s.rstrip("\n") + "\n" for s in subs)
    from esrkit.utils.io import atomic_write_text

    atomic_write_text(RESULTS, before + new_body + ("\n" + after if after else ""))


def _user_count(subsection: str) -> int:
    """Order subsections by scale: '### 200,000 users ...' -> 200000."""
    head = subsection.removeprefix("### ").split(" users")[0].replace(",", "")
    return int(head) if head.isdigit() else 0


def _subsections(body: str) -> list[str]:
    parts = body.split("\n### ")
    return ["### " + p for p in parts[1:]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--M", type=int, default=None, help="hnsw M (default 32; 16 in sharded mode)")
    parser.add_argument("--ef-construction", type=int, default=None, help="default 200; 100 in sharded mode")
    parser.add_argument("--ef", type=int, default=None, help="default 200; 128 in sharded mode")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--shard-size", type=int, default=0, help="sharded mode (default when --users > 200000: 500000)"
    )
    parser.add_argument(
        "--recall-sample", type=int, default=1000, help="sharded mode: users in the recall sample"
    )
    parser.add_argument(
        "--ef-sweep",
        default="64,128,256,512",
        help="sharded mode: query-time ef values for the recall sample",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="sharded mode: reuse the last build (its shards and figures)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the synthetic embeddings are cached")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    # child-process plumbing
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--shard-dir", help=argparse.SUPPRESS)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported anywhere
    args = parser.parse_args(argv)
    if args.child:
        result = CHILDREN[args.child](args)
        result["cpu_s"] = cpu_seconds()
        print(json.dumps(result))
        return
    sharded = bool(args.shard_size) or args.users > 200_000
    if sharded and not args.shard_size:
        args.shard_size = 500_000
    args.M = args.M or (16 if sharded else 32)
    args.ef_construction = args.ef_construction or (100 if sharded else 200)
    args.ef = args.ef or (128 if sharded else 200)
    args.workdir = args.workdir or os.environ.get("ESRKIT_BENCH_DIR", tempfile.gettempdir() + "/esrkit-bench")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    args.data = make_data(args)
    work = Path(args.workdir)
    if sharded:
        rows_path = work / f"sharded-{args.users}.npy"
        shard_dir = work / f"shards-{args.users}-{args.shard_size}"
        cached = cached_result_path(args, "sharded")
        if args.reuse and cached.exists() and rows_path.exists():
            result = json.loads(cached.read_text())  # the last build's figures; its shards are still on disk
            print(f"reusing {cached}", flush=True)
        else:
            shutil.rmtree(shard_dir, ignore_errors=True)  # time a fresh build, not a resumed one
            result = run_child("sharded", args, out=rows_path, shard_dir=shard_dir)
        recall = run_child(
            "recall",
            args,
            rows=rows_path,
            sample=args.recall_sample,
            shard_dir=shard_dir,
            ef_sweep=args.ef_sweep,
        )
        report = sharded_report(args, result, recall)
    else:
        exact = run_child("exact", args, out=work / f"exact-{args.users}.npy")
        hnsw = run_child("hnsw", args, out=work / f"hnsw-{args.users}.npy")
        from esrkit.index import recall_at_k

        recall = recall_at_k(
            np.load(work / f"hnsw-{args.users}.npy"), np.load(work / f"exact-{args.users}.npy")
        )
        report = single_report(args, exact, hnsw, recall)
    print(report)
    if not args.no_write:
        write_section(report)
        print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
