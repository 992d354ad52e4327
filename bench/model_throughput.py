"""Model throughput: torch eager vs ONNX Runtime fp32 / int8, on real articles.

    python bench/model_throughput.py --run runs/base [--bundle-dir DIR] [--quick]

For every engine and batch size (1, 8, 32, 64, 128, 256) it times the *model* on identical
padded inputs (one call per batch, lengths as the articles come: most hit max_length) and
reports articles/second and the p50/p99 batch latency. Tokenization (TextEncoder.encode_batch,
shared by all engines) is timed separately, and so is the whole ``Predictor.predict`` (tokenize
+ length buckets + ORT + building the results) for the ORT variants.

Engines: ``torch`` (eager, inference_mode), ``ort-fp32``, ``ort-int8`` (static QDQ, the export
default), ``ort-int8-dynamic`` (quantize_dynamic) on the CPU; ``torch-cuda`` and ``ort-cuda``
when a GPU is present. Bundles are exported into --bundle-dir (reused when already there).

Writes bench/results/model-throughput-<date>-<host>.json and prints a table. Goal (CPU,
batch 64): ORT fp32 >= 1.5x torch eager, int8 a further >= 1.3x. The figures are what they
are on the machine at hand; the JSON records its load average so shared-CPU noise is visible.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BATCH_SIZES = (1, 8, 32, 64, 128, 256)


def _data_path() -> Path:
    root = os.environ.get("NEWSMTL_DATA_DIR")
    base = Path(root) if root else REPO.parent / "shared" / "data"
    return base / "allsides-article-bias" / "articles.jsonl.gz"


def _articles(path: Path, count: int, seed: int) -> list[Any]:
    import gzip

    from newsmtl.schemas import Article

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
    return [
        Article(
            id=rows[i]["id"], title=rows[i]["title"], text=rows[i]["text"], publication=rows[i]["publication"]
        )
        for i in picked
    ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time_round_robin(
    fns: dict[str, Callable[[], object]], *, min_reps: int, budget_s: float
) -> dict[str, list[float]]:
    """Time every function in turn, rep after rep: on a shared, noisy CPU each engine then sees
    the same background load, which keeps the *ratios* meaningful even when absolute figures drift."""
    for fn in fns.values():
        fn()  # warm-up (allocations, ORT's first-run graph work)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    reps = 0
    while reps < min_reps or (time.perf_counter() - start < budget_s * len(fns) and reps < 200):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        reps += 1
    return times


def _summary(times: list[float], batch: int) -> dict[str, float]:
    p50 = statistics.median(times)
    p99 = float(np.percentile(times, 99)) if len(times) > 1 else times[0]
    return {
        "reps": len(times),
        "min_ms": 1000 * min(times),
        "p50_ms": 1000 * p50,
        "p99_ms": 1000 * p99,
        "articles_per_s": batch / p50,
    }


def _ensure_bundle(run_dir: Path, root: Path, name: str, **options: Any) -> Path:
    from newsmtl.export import read_bundle
    from newsmtl.export._exporter import ExportOptions, export_run

    out = root / name
    try:
        manifest = read_bundle(out).manifest
        if manifest.source.get("run_dir") == str(run_dir.resolve()):
            return out
    except Exception as exc:  # noqa: BLE001 - any unreadable bundle is simply re-exported
        print("no usable %s bundle in %s (%s)" % (name, out, exc), file=sys.stderr)
    print("exporting %s bundle to %s ..." % (name, out), file=sys.stderr)
    export_run(run_dir, out, ExportOptions(overwrite=True, force=True, **options))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, default=REPO / "runs" / "base", help="run directory (default runs/base)"
    )
    parser.add_argument(
        "--bundle-dir", type=Path, default=None, help="where the fp32/int8 bundles are (or go)"
    )
    parser.add_argument("--data", type=Path, default=_data_path(), help="articles for the benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about 1 s per cell)")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads per engine"
    )
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--engines", default="torch,ort-fp32,ort-int8,ort-int8-dynamic,torch-cuda,ort-cuda")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if not (args.run / "checkpoint.pt").is_file():
        parser.error("no run at %s (train one, or pass --run)" % args.run)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    engines = args.engines.split(",")
    budget, min_reps = (1.0, 3) if args.quick else (4.0, 10)

    import onnxruntime as ort
    import torch

    from newsmtl import ModelSettings
    from newsmtl.consumer import Predictor
    from newsmtl.export import build_inputs
    from newsmtl.model import OnnxInferenceWrapper, load_run

    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    bundle_root = args.bundle_dir or Path(tempfile.mkdtemp(prefix="newsmtl-bench-bundles-"))
    bundle_root.mkdir(parents=True, exist_ok=True)
    bundles = {"ort-fp32": _ensure_bundle(args.run, bundle_root, "fp32")}
    if "ort-int8" in engines:
        bundles["ort-int8"] = _ensure_bundle(args.run, bundle_root, "int8", quantize="int8")
    if "ort-int8-dynamic" in engines:
        bundles["ort-int8-dynamic"] = _ensure_bundle(
            args.run, bundle_root, "int8-dynamic", quantize="int8", int8_method="dynamic"
        )
    if "ort-cuda" in engines and "CUDAExecutionProvider" in ort.get_available_providers():
        bundles["ort-cuda"] = bundles["ort-fp32"]

    articles = _articles(args.data, max(batch_sizes), seed=20240601)
    settings = ModelSettings(providers="cpu", intra_op_threads=args.threads, inter_op_threads=1)
    predictors = {
        name: Predictor.load(
            path, settings=settings if name != "ort-cuda" else ModelSettings(providers="cuda")
        )
        for name, path in bundles.items()
    }
    encoder = run.encoder
    token_ids, pubs = predictors["ort-fp32"].encode(articles)
    lengths = [len(ids) for ids in token_ids]

    wrapper = OnnxInferenceWrapper(run.net).eval()
    gpu = torch.cuda.is_available()
    wrapper_cuda = (
        OnnxInferenceWrapper(run.net).eval().to("cuda") if gpu and "torch-cuda" in engines else None
    )

    results: dict[str, Any] = {"tokenization": {}, "model": {}, "predict": {}}
    load_before = os.getloadavg()
    for batch in batch_sizes:
        chunk = articles[:batch]
        titles, texts = [a.title for a in chunk], [a.text for a in chunk]
        feed = build_inputs(token_ids[:batch], pubs[:batch], pad_id=encoder.pad_id)
        tensors = [torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask", "publication_index")]
        fns: dict[str, Callable[[], object]] = {}
        for engine in engines:
            if engine == "torch":

                def torch_cpu(tensors: list[Any] = tensors) -> object:
                    with torch.inference_mode():
                        return wrapper(*tensors)

                fns[engine] = torch_cpu
            elif engine == "torch-cuda" and wrapper_cuda is not None:

                def torch_cuda(tensors: list[Any] = tensors) -> object:
                    with torch.inference_mode():
                        out = wrapper_cuda(*(t.to("cuda", non_blocking=True) for t in tensors))
                        return [o.cpu() for o in out]

                fns[engine] = torch_cuda
            elif engine in predictors:
                fns[engine] = lambda p=predictors[engine], feed=feed: p._run(feed)
        fns["tokenization"] = lambda titles=titles, texts=texts: encoder.encode_batch(titles, texts)
        for name, times in _time_round_robin(fns, min_reps=min_reps, budget_s=budget).items():
            section = (
                results["tokenization"] if name == "tokenization" else results["model"].setdefault(name, {})
            )
            section[str(batch)] = _summary(times, batch)
        predict_fns = {name: (lambda p=p, chunk=chunk: p.predict(chunk)) for name, p in predictors.items()}
        for name, times in _time_round_robin(predict_fns, min_reps=min_reps, budget_s=budget).items():
            results["predict"].setdefault(name, {})[str(batch)] = _summary(times, batch)
        print("batch %d done" % batch, file=sys.stderr)

    def speedup(a: str, b: str, batch: int = 64) -> float | None:
        model = results["model"]
        if a in model and b in model and str(batch) in model[a] and str(batch) in model[b]:
            return float(model[a][str(batch)]["articles_per_s"] / model[b][str(batch)]["articles_per_s"])
        return None

    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "threads": args.threads,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
        },
        "run": str(args.run.resolve()),
        "model": {
            "preset": run.config.preset,
            "max_length": encoder.max_length,
            "publications": len(run.labels["publications"]),
            "topics": len(run.labels["topics"]),
            "parameters": sum(p.numel() for p in run.net.parameters()),
        },
        "bundles": {name: str(path) for name, path in bundles.items()},
        "articles": {
            "count": len(articles),
            "mean_tokens": float(np.mean(lengths)),
            "max_tokens": max(lengths),
        },
        "quick": args.quick,
        "results": results,
        "speedups_batch64": {
            "ort-fp32 / torch": speedup("ort-fp32", "torch"),
            "ort-int8 / ort-fp32": speedup("ort-int8", "ort-fp32"),
            "ort-int8-dynamic / ort-fp32": speedup("ort-int8-dynamic", "ort-fp32"),
            "ort-cuda / torch-cuda": speedup("ort-cuda", "torch-cuda"),
        },
    }
    out = args.out or REPO / "bench" / "results" / (
        "model-throughput-%s-%s.json" % (datetime.now(UTC).strftime("%Y-%m-%d"), socket.gethostname())
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(
        "model %s (max_length %d, %d outlets), %d threads, %s; articles mean %.0f tokens"
        % (
            run.config.preset,
            encoder.max_length,
            len(run.labels["publications"]),
            args.threads,
            report["cpu"],
            report["articles"]["mean_tokens"],
        )
    )
    print("\nmodel only (identical padded inputs, one call per batch): articles/s  [p50 ms / p99 ms]")
    header = "%-18s" % "engine" + "".join("%22s" % ("batch %d" % b) for b in batch_sizes)
    print(header)
    for engine, cells in results["model"].items():
        print(
            "%-18s" % engine
            + "".join(
                "%22s" % ("%.0f [%.1f/%.1f]" % (c["articles_per_s"], c["p50_ms"], c["p99_ms"]))
                for c in (cells.get(str(b)) for b in batch_sizes)
                if c is not None
            )
        )
    print(
        "%-18s" % "tokenization"
        + "".join(
            "%22s" % ("%.0f [%.1f/%.1f]" % (c["articles_per_s"], c["p50_ms"], c["p99_ms"]))
            for c in (results["tokenization"][str(b)] for b in batch_sizes)
        )
    )
    print("\nPredictor.predict end to end (tokenize + buckets + ORT + results): articles/s")
    for engine, cells in results["predict"].items():
        print("%-18s" % engine + "".join("%22.0f" % cells[str(b)]["articles_per_s"] for b in batch_sizes))
    print(
        "\nspeedups at batch 64:",
        json.dumps({k: (round(v, 2) if v else v) for k, v in report["speedups_batch64"].items()}),
    )
    print("load average before/after: %s / %s" % (load_before, report["load_average_after"]))
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
