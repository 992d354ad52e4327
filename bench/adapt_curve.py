"""Learning curve of ``newsmtl adapt`` on BBC News vs a single-task model trained from scratch.

    python bench/adapt_curve.py runs/base --out bench/results/adapt_curve.json

Adds the BBC News corpus (``../shared/data/bbc-news-fulltext``) to a trained run as a new outlet
named ``bbc-fulltext`` (the AllSides data already has ``bbc.com``; the BBC corpus is 2004-05 web
copy with its own topics, so it is kept apart) with 25, 50, 100, 200 and 400 labelled articles,
and trains the same architecture from random weights on the same articles. Both are scored on one
fixed, stratified held-out set of BBC articles. BBC topics are mapped onto the model's 11 coarse
topics (docs/bbc_topic_mapping.md). Prints a table and writes every run's figures as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    root = os.environ.get("NEWSMTL_DATA_DIR")
    return Path(root) if root else REPO.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="trained run directory (e.g. runs/base)")
    parser.add_argument("--data", type=Path, default=_data_dir() / "bbc-news-fulltext" / "articles.jsonl.gz")
    parser.add_argument("--publication", default="bbc-fulltext")
    parser.add_argument("--sizes", default="25,50,100,200,400", help="comma-separated training-set sizes")
    parser.add_argument("--repeats", type=int, default=3, help="random training subsets per size")
    parser.add_argument("--test-size", type=int, default=350, help="fixed held-out BBC articles")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--no-scratch", action="store_true", help="skip the from-scratch baseline")
    parser.add_argument("--lr", type=float, default=None, help="adapt learning rate (default: AdaptConfig's)")
    parser.add_argument("--scratch-lr", type=float, default=None, help="from-scratch learning rate (default: the run's)")
    parser.add_argument("--validation", action="store_true",
                        help="score on a held-out set carved from the pool, never the test set (for choosing lr)")
    parser.add_argument("--negatives", type=Path, default=None, help="old outlets' data (default: the run's data)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file with every run's figures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from newsmtl.analysis import BBC_TOPIC_MAP, AdaptConfig, adapt_learning_curve

    sizes = tuple(int(s) for s in args.sizes.split(","))
    cfg = AdaptConfig(epochs=args.epochs, threads=args.threads, seed=args.seed)
    if args.lr is not None:
        cfg = dataclasses.replace(cfg, lr=args.lr)
    t0 = time.perf_counter()

    def progress(row: dict[str, object]) -> None:
        print("  %-8s n=%-4s repeat %s: accuracy %.3f macro-F1 %.3f (%ss)" % (
            row["method"], row["size"], row["repeat"], row["topic.accuracy"], row["topic.macro_f1"], row["seconds"]
        ), file=sys.stderr, flush=True)

    result = adapt_learning_curve(
        args.run_dir, args.data, publication=args.publication, label_map=BBC_TOPIC_MAP, sizes=sizes,
        test_size=args.test_size, repeats=args.repeats, seed=args.seed, cfg=cfg, negatives_path=args.negatives,
        scratch=not args.no_scratch, scratch_lr=args.scratch_lr, validation=args.validation, progress=progress,
    )
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)

    print("BBC learning curve: %s + new outlet %r, %d held-out BBC articles (%s), %d repeats, mean ± sd"
          % (args.run_dir, args.publication, result["test"]["n"], result["held_out"], args.repeats))
    print("zero-shot (base shared head, no labels): accuracy %.3f, macro-F1 %.3f; majority class (%s) accuracy %.3f"
          % (result["zero_shot"]["topic.accuracy"], result["zero_shot"]["topic.macro_f1"],
             result["majority_class"]["label"], result["majority_class"]["topic.accuracy"]))
    print()
    print("| labelled | adapt accuracy | adapt macro-F1 | adapt style top-1 | scratch accuracy | scratch macro-F1 |")
    print("|---|---|---|---|---|---|")
    cells = {(s["method"], s["size"]): s for s in result["summary"]}
    for n in sizes:
        a, s = cells.get(("adapt", n)), cells.get(("scratch", n))

        def fmt(c: dict[str, float] | None, key: str) -> str:
            if c is None:
                return "-"
            sd = c.get(key.replace("_mean", "_std"))
            return "%.3f ± %.3f" % (c[key], sd) if sd is not None else "%.3f" % c[key]

        print("| %d | %s | %s | %s | %s | %s |" % (
            n, fmt(a, "accuracy_mean"), fmt(a, "macro_f1_mean"),
            "%.3f" % a["style_top1_mean"] if a and "style_top1_mean" in a else "-",
            fmt(s, "accuracy_mean"), fmt(s, "macro_f1_mean"),
        ))
    print("\nwall time %.0fs" % result["wall_seconds"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print("wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
