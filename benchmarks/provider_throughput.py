"""Provider throughput (texts/s, tokens/s) on realistic product prompts; writes the `## Provider throughput`
section of benchmarks/RESULTS.md.

Each measurement runs in its own process, so OMP_WAIT_POLICY can be set before torch is imported and one
model's memory never slows the next. Model loading is timed apart from embedding (a warm-up batch runs first).

    python benchmarks/provider_throughput.py                 # all providers on CPU, writes RESULTS.md
    python benchmarks/provider_throughput.py --only offline tiny-llama --no-write
    python benchmarks/provider_throughput.py --device cuda --only tiny-llama llama-1b-random --json gpu.json
    python benchmarks/provider_throughput.py --from-json gpu.json      # write a run measured elsewhere
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "## Provider throughput"

# name -> (provider definition or "tiny", options, number of texts)
CASES: dict[str, tuple[str, dict, int]] = {
    "offline": ("offline", {}, 3000),
    "tiny-llama": ("tiny", {}, 1000),
    "minilm": ("minilm", {}, 400),
    "smollm2": ("smollm2", {}, 200),
    "llama-1b-random": (
        "random-llama",
        {"dim": 2048},
        4000,
    ),  # GPU only: a LLaMA-shaped 1B model with random weights
    "llama-7b-random": (
        "random-llama",
        {"dim": 4096},
        4000,
    ),  # GPU only: LLaMA-2-7B's shape with random weights
}

# LlamaConfig fields of the random-weight shapes (vocabulary: the tokenizer's)
RANDOM_SHAPES: dict[str, dict[str, int]] = {
    "llama-1b-random": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
    },
    "llama-7b-random": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}
DEFAULT_CASES = ["offline", "tiny-llama", "minilm", "smollm2"]


def product_prompts(n: int) -> list[str]:
    """Item prompts of the synthetic catalogue with the generic template (the shape of real Amazon
    prompts)."""
    from esrkit.data.synthetic import SyntheticOptions, generate
    from esrkit.prompts.templates import build_item_prompts, load_templates

    data = generate(SyntheticOptions(n_items=max(n, 100), n_users=max(n, 100)))
    return build_item_prompts(data, load_templates("generic"))[:n]


def build(case: str, device: str, workdir: Path, budget: int = 0, compile_model: bool = False):
    from esrkit.providers import build_provider, load_provider

    source, options, _ = CASES[case]
    if budget and (source in ("tiny", "random-llama", "smollm2")):
        options = {**options, "token_budget": budget}
    if source in ("tiny", "random-llama"):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tiny LLaMA lives with the tests
        from tests.providers.tiny_llama import save_tiny_llama

        path = save_tiny_llama(workdir / "tiny-llama")
        provider = build_provider("decoder", {"model": str(path), "device": device, **options}, name=case)
        if source == "random-llama":
            provider._model = random_llama(provider, device, RANDOM_SHAPES[case])
        if (
            compile_model
        ):  # the provider's `compile` option, applied here because random_llama bypasses loading
            from esrkit.providers.decoder import compile_model as compiled

            provider._model = compiled(provider.model)
        return provider
    if source in ("minilm", "smollm2") and device != "cpu":
        options = {**options, "device": device}
    return load_provider(source, **options)


def random_llama(provider, device: str, shape: dict[str, int]):
    """A LLaMA of the given shape with random weights: bf16 on the GPU (the paper-scale shapes), fp32 on the
    CPU."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(
        vocab_size=len(provider.tokenizer), max_position_embeddings=4096, attn_implementation="sdpa", **shape
    )
    with torch.device(device):
        model = LlamaModel(config).to(torch.bfloat16 if device.startswith("cuda") else torch.float32)
    return model.eval()


def measured_peak_tflops(device: str, n: int = 8192, repeats: int = 20) -> float:
    """The device's dense matmul rate, measured (not the datasheet): bf16 on CUDA, fp32 on the CPU.
    Utilisation is quoted against this, as the issue asks ("utilisation of the measured bf16 peak")."""
    import torch

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    n = n if cuda else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = _cuda_sync if cuda else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def forward_flops_per_token(model, mean_tokens: float) -> float | None:
    """Kaplan et al.'s forward estimate: 2 x non-embedding parameters + 2 x layers x context x width
    (attention)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "num_hidden_layers"):
        return None
    params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    return 2 * params + 2 * config.num_hidden_layers * mean_tokens * config.hidden_size


def worker(
    case: str,
    device: str,
    n_texts: int = 0,
    budget: int = 0,
    compile_model: bool = False,
    profile_dir: Path | None = None,
) -> dict:
    """Runs in a child process: load, warm up, time the embedding of the case's texts. A compiled model embeds
    everything once untimed first, so that every shape it meets is compiled before the clock starts."""
    texts = product_prompts(n_texts or CASES[case][2])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        provider = build(case, device, Path(tmp), budget, compile_model)
        provider.embed(texts[:8])  # loads the model, builds caches, first kernels
        if compile_model:
            provider.embed(texts)
        load_s = time.perf_counter() - t0
        tokens = sum(provider.count_tokens(texts))
        sync = _cuda_sync if device.startswith("cuda") else (lambda: None)
        sync()
        t0 = time.perf_counter()
        vectors = provider.embed(texts)
        sync()
        seconds = time.perf_counter() - t0
        if profile_dir is not None:
            label = f"{case}{'-compiled' if compile_model else ''}-{provider.budget}"
            profile_batches(provider, texts, device, profile_dir / f"profile-{label}.txt")
        utilisation = None
        if provider.kind == "decoder":
            flops = forward_flops_per_token(provider.model, tokens / len(texts))
            peak = measured_peak_tflops(device)
            if flops:
                utilisation = {"peak_tflops": peak, "achieved_tflops": flops * tokens / seconds / 1e12}
    return {
        "case": case,
        "provider": provider.name,
        "kind": provider.kind,
        "device": device,
        "texts": len(texts),
        "dim": int(vectors.shape[1]),
        "tokens": tokens,
        "tokens_exact": bool(provider.tokens_exact),
        "mean_tokens": tokens / len(texts),
        "seconds": seconds,
        "load_s": load_s,
        "texts_per_s": len(texts) / seconds,
        "tokens_per_s": tokens / seconds,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "token_budget": getattr(provider, "budget", None),
        "compiled": compile_model,
        "utilisation": utilisation,
    }


def profile_batches(provider, texts: list[str], device: str, path: Path) -> None:
    """Where the time goes: the top kernels of embedding about two token budgets' worth of texts, and the
    share of the wall time the device was busy (kernel time / wall; below 1 means the host kept it
    waiting)."""
    from torch.profiler import ProfilerActivity, profile

    per_text = max(1.0, sum(provider.count_tokens(texts[:200])) / len(texts[:200]))
    sample = texts[: max(8, int(2 * provider.budget / per_text))]
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = _cuda_sync if cuda else (lambda: None)
    sync()
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        provider.embed(sample)
        sync()
        wall_us = (time.perf_counter() - t0) * 1e6
    averages = prof.key_averages()
    if (
        cuda
    ):  # kernels only: an op's "self device" time repeats its kernels' time, and CUPTI's "Command Buffer
        # Full" records (the host waiting on a full launch queue) are not device work
        from torch.autograd import DeviceType

        busy_us = sum(
            e.time_range.elapsed_us()
            for e in prof.events()
            if e.device_type == DeviceType.CUDA and not e.name.startswith("Command Buffer")
        )
    else:
        busy_us = sum(e.self_cpu_time_total for e in averages)
    try:
        table = averages.table(
            sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=25
        )
    except (AttributeError, KeyError, ValueError):
        table = averages.table(sort_by="self_cuda_time_total", row_limit=25)
    header = (
        f"{len(sample)} texts, {sum(provider.count_tokens(sample))} tokens, wall {wall_us / 1e3:.1f} ms, "
        f"{'device' if cuda else 'cpu'} busy {busy_us / 1e3:.1f} ms ({100 * busy_us / wall_us:.0f}% of "
        "wall)\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + table + "\n")
    print(header.strip(), file=sys.stderr)


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def run_case(
    case: str,
    device: str,
    policy: str,
    n_texts: int = 0,
    budget: int = 0,
    compile_model: bool = False,
    profile_dir: Path | None = None,
) -> dict | str:
    env = dict(
        os.environ,
        OMP_WAIT_POLICY=policy,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        case,
        "--device",
        device,
        "--texts",
        str(n_texts),
        "--budget",
        str(budget),
    ]
    cmd += ["--compile"] if compile_model else []
    cmd += ["--profile", str(profile_dir)] if profile_dir is not None else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return (
            f"{case}: failed "
            f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    from _results import machine as describe

    return describe(("torch", "transformers", "sentence_transformers", "sklearn", "numpy"))


def render_intro() -> str:
    return "\n".join(
        [
            SECTION,
            "",
            "`python benchmarks/provider_throughput.py [--device cuda]` rewrites the subsection of its "
            "device. Texts: "
            "item prompts of the synthetic catalogue rendered with the `generic` template (about 60 "
            "words each). "
            "Load = building the provider, loading the model and a first batch of 8; the rates exclude "
            "it. Tokens are "
            "the provider's own (model tokenizer; words for `offline`). `tiny-llama` is a random "
            "2-layer, 64-wide "
            "LLaMA built from a config (the tests' model): it measures the decoder provider's own overhead "
            "(tokenising, length-sorted token-budget batching, pooling). The decoder provider also caps "
            "a batch at "
            "`max_batch_size` texts: 4,096 now, 256 before 2026-11-27's second GPU session, which held "
            "the first "
            "session's 131072 budget to about 48k tokens. `(compiled)`: `--compile`, the provider's "
            "`compile=true` "
            "(torch.compile, dynamic shapes; its compile time is in the load column). `--profile DIR` "
            "writes each case's "
            "top kernels and the device's busy share. `llama-1b-random` and `llama-7b-random` have "
            "LLaMA-3.2-1B's and LLaMA-2-7B's shapes with random weights, bf16 (GPU only; `--only "
            "llama-7b-random "
            "--device cuda --budgets 32768 131072`). Utilisation (decoders): model FLOP/s (2 x "
            "non-embedding parameters "
            "+ attention, per token) against the dense matmul rate measured on the same device in the "
            "same run (bf16 "
            "8192^3 on CUDA, fp32 1024^3 on the CPU). `smollm2`'s load is the reload of its dequantised "
            "safetensors copy; the "
            "first use ever also dequantises the GGUF (about 30 s). The 2-core machine is shared: rates "
            "follow the load "
            "average recorded with each run (runs at lower load were up to 2.5x faster for offline and "
            "tiny-llama).",
            "",
            "",
        ]
    )


def render_device(run: dict) -> str:
    lines = [
        f"### {run['device']}",
        "",
        f"Measured {run['date']} on: {run['machine']}.",
        "",
        "| provider | kind | OMP_WAIT_POLICY | token budget | texts | dim | tokens/text | load s | texts/s "
        "| tokens/s | model TFLOP/s (share of measured peak) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for r in run["rows"]:
        if isinstance(r, str):
            notes.append(f"- {r}")
            continue
        lines.append(
            f"| {r['case']}{' (compiled)' if r.get('compiled') else ''} | {r['kind']} | "
            f"{r['omp_wait_policy']} | {r.get('token_budget') or '-'} | {r['texts']} | "
            f"{r['dim']} | "
            f"{r['mean_tokens']:.0f} | {r['load_s']:.1f} | {r['texts_per_s']:,.1f} | "
            f"{r['tokens_per_s']:,.0f} | "
            f"{_utilisation_cell(r.get('utilisation'))} |"
        )
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def _utilisation_note(u: dict | None) -> str:
    return f", {_utilisation_cell(u)} of peak" if u else ""


def _utilisation_cell(u: dict | None) -> str:
    if not u:
        return "-"
    return (
        f"{u['achieved_tflops']:.2f} of {u['peak_tflops']:.1f} "
        f"({100 * u['achieved_tflops'] / u['peak_tflops']:.0f}%)"
    )


def write_section(run: dict) -> None:
    """Replace this device's subsection of `## Provider throughput`, keeping other devices and other
    sections."""
    from esrkit.utils.io import atomic_write_text

    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    start = old.find(SECTION)
    end = len(old)
    subsections: dict[str, str] = {}
    if start >= 0:
        nxt = old.find("\n## ", start + len(SECTION))
        end = nxt + 1 if nxt >= 0 else len(old)
        for chunk in old[start:end].split("\n### ")[1:]:
            subsections[chunk.split("\n", 1)[0].strip()] = "### " + chunk.rstrip("\n") + "\n"
    subsections[run["device"]] = render_device(run)
    order = sorted(subsections, key=lambda d: (d != "cpu", d))
    text = render_intro() + "\n".join(subsections[d] for d in order)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        new = old[:start] + text + ("\n" + old[end:] if end < len(old) else "")
    atomic_write_text(RESULTS, new)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=None, help=f"cases (default: {' '.join(DEFAULT_CASES)})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--texts", type=int, default=0, help="texts per case (default: the case's own)")
    parser.add_argument(
        "--budgets",
        type=int,
        nargs="*",
        default=[0],
        help="decoder token budgets to compare (0 = the provider's default)",
    )
    parser.add_argument("--budget", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--compare-omp",
        action="store_true",
        help="also run the torch cases with OMP_WAIT_POLICY=ACTIVE (the spin-wait trap)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the decoder models under torch.compile (its compile time counts as load)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write each case's top kernels and device-busy share to DIR/profile-*.txt",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the subsection instead of writing RESULTS.md"
    )
    parser.add_argument(
        "--json", type=Path, help="also save the measurements as JSON (e.g. from a GPU machine)"
    )
    parser.add_argument(
        "--from-json", type=Path, help="write RESULTS.md from a saved JSON run, measuring nothing"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(
            json.dumps(worker(args.worker, args.device, args.texts, args.budget, args.compile, args.profile))
        )
        return
    if args.from_json:
        run = json.loads(args.from_json.read_text())
    else:
        run = {"device": args.device, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "rows": []}
        for case in args.only or DEFAULT_CASES:
            policies = ["PASSIVE"] + (["ACTIVE"] if args.compare_omp and case != "offline" else [])
            budgets = args.budgets if CASES[case][0] in ("tiny", "random-llama", "smollm2") else [0]
            compiled = args.compile and CASES[case][0] in ("tiny", "random-llama")
            for policy in policies:
                for budget in budgets:
                    row = run_case(case, args.device, policy, args.texts, budget, compiled, args.profile)
                    print(
                        row
                        if isinstance(row, str)
                        else f"{case:>16}{' compiled' if compiled else ''} {policy:>7} budget "
                        f"{row['token_budget']}: {row['texts_per_s']:9.1f} texts/s "
                        f"{row['tokens_per_s']:10.0f} tokens/s (load {row['load_s']:.1f} s)"
                        f"{_utilisation_note(row.get('utilisation'))}",
                        flush=True,
                    )
                    run["rows"].append(row)
    if args.json:
        args.json.write_text(json.dumps(run, indent=1))
    if args.no_write:
        print(render_device(run))
    else:
        write_section(run)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
