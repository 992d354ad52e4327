"""Rate of ``newsmtl replay`` on real articles from a file, end to end through the real CLI.

    python bench/replay_rate.py [--bundle BUNDLE_DIR] [--articles 20000] [--batch-size 64]

The first ``--articles`` articles of ../shared/data/allsides-article-bias (or ``--data``) are
written as wire records (id, title, text, publication, published_at) to a temporary
JSONL.gz; then the real ``newsmtl replay`` runs as a subprocess three ways:

1. ``--dry-run``: read and validate only (the input side's ceiling);
2. the full replay into a JSONL file, with the checkpoint after every batch (the default);
3. the same replay once more, to check that the output is byte-identical (determinism).

The rate is the replay's own ``read_this_run / elapsed`` (model load excluded); the wall time
of the subprocess (interpreter start and model load included) is reported beside it. Without
``--bundle`` the packaged default bundle is used. Prints a table and writes
bench/results/replay_rate.json. Figures depend on the machine and on what else it runs.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("NEWSMTL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_BUNDLE = REPO_ROOT / "src" / "newsmtl" / "_resources" / "default_bundle"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def write_input(data_dir: Path, count: int, path: Path) -> int:
    source = data_dir / "allsides-article-bias" / "articles.jsonl.gz"
    written = 0
    with gzip.open(source, "rt", encoding="utf-8") as src, gzip.open(path, "wt", encoding="utf-8") as dst:
        for line in islice(src, count):
            raw = json.loads(line)
            row = {
                "id": raw["id"],
                "title": raw["title"],
                "text": raw["text"],
                "publication": raw["publication"],
            }
            if _DATE.match(raw.get("date") or "") and raw["date"] > "1990":
                row["published_at"] = raw["date"] + "T12:00:00Z"
            dst.write(json.dumps(row) + "\n")
            written += 1
    return written


def replay(bundle: Path, args: list[str], summary: Path) -> tuple[dict[str, Any], float, int]:
    """Run ``newsmtl replay``; return its summary, the wall time and the child's peak RSS (KiB)."""
    command = [
        sys.executable,
        "-c",
        "from newsmtl.cli import run; run()",
        "replay",
        "--bundle",
        str(bundle),
        "--no-progress",
        "--summary-json",
        str(summary),
        *args,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode not in (0, 1):
        sys.exit("newsmtl replay failed (%d):\n%s" % (proc.returncode, proc.stderr[-4000:]))
    return json.loads(summary.read_text()), wall, max(peak, before)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundle", type=Path, default=None, help="Bundle directory (default: the packaged one)."
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="The shared data directory.")
    parser.add_argument("--articles", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "replay_rate.json")
    args = parser.parse_args()
    bundle = args.bundle or DEFAULT_BUNDLE
    if not (bundle / "manifest.json").is_file():
        sys.exit("no bundle at %s: pass --bundle DIR (a directory written by `newsmtl export`)" % bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())

    with tempfile.TemporaryDirectory(prefix="newsmtl-replay-bench-") as tmp:
        work = Path(tmp)
        source = work / "articles.jsonl.gz"
        count = write_input(args.data, args.articles, source)
        batch = ["--batch-size", str(args.batch_size)]
        dry, dry_wall, _ = replay(bundle, ["--input", str(source), "--dry-run", *batch], work / "dry.json")
        out1, out2 = work / "a.jsonl", work / "b.jsonl"
        full, full_wall, peak_kib = replay(
            bundle, ["--input", str(source), "--output", str(out1), *batch], work / "a.json"
        )
        again, again_wall, _ = replay(
            bundle, ["--input", str(source), "--output", str(out2), *batch], work / "b.json"
        )
        identical = sha256(out1) == sha256(out2)
        output_bytes = out1.stat().st_size

    record = {
        "benchmark": "replay_rate",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "model": {
            "name": manifest.get("model_name"),
            "version": manifest.get("model_version"),
            "variant": manifest.get("variant"),
            "bundle": str(bundle),
            "model_onnx_bytes": (bundle / "model.onnx").stat().st_size,
        },
        "input": {
            "articles": count,
            "source": "allsides-article-bias (first %d)" % count,
            "format": "jsonl.gz",
        },
        "batch_size": args.batch_size,
        "dry_run": {
            "rate_per_s": dry["rate_per_s"],
            "elapsed_s": dry["elapsed_s"],
            "wall_s": round(dry_wall, 2),
        },
        "replay": {
            "read": full["read"],
            "classified": full["classified"],
            "failed": full["failed"],
            "rate_per_s": full["rate_per_s"],
            "elapsed_s": full["elapsed_s"],
            "wall_s": round(full_wall, 2),
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "output_bytes": output_bytes,
        },
        "second_replay_rate_per_s": again["rate_per_s"],
        "byte_identical_outputs": identical,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    print(
        "newsmtl replay on %d real articles (batch %d), model %s %s (%s), %s CPUs"
        % (
            count,
            args.batch_size,
            record["model"]["name"],
            record["model"]["version"],
            record["model"]["variant"],
            os.cpu_count(),
        )
    )
    print("%-26s %12s %10s %10s" % ("run", "articles/s", "replay s", "wall s"))
    print(
        "%-26s %12.0f %10.1f %10.1f"
        % ("dry run (read+validate)", dry["rate_per_s"], dry["elapsed_s"], dry_wall)
    )
    print(
        "%-26s %12.0f %10.1f %10.1f" % ("replay -> JSONL", full["rate_per_s"], full["elapsed_s"], full_wall)
    )
    print(
        "%-26s %12.0f %10.1f %10.1f" % ("replay again", again["rate_per_s"], again["elapsed_s"], again_wall)
    )
    print(
        "peak RSS %.0f MiB; output %.1f MB; outputs byte-identical: %s"
        % (peak_kib / 1024, output_bytes / 1e6, identical)
    )
    print("wrote %s" % args.out)


if __name__ == "__main__":
    main()
