"""TF-IDF + logistic regression baseline on the model's split and outlet masking.

Usage::

    python bench/tfidf_baseline.py --data ../shared/data/allsides-article-bias/articles.jsonl.gz \\
        [--run runs/base | --preset base --seed 13] [--text full|lead] --out runs/tfidf/report.json

The split (and the subset, label field and modelled publications) are recomputed exactly as
``newsmtl train`` does, from a run's stored config (``--run``) or from a preset; outlet
self-names are masked with the same default table. ``--text full`` (default) gives the baseline
the whole article, ``lead`` only what the neural model sees (title + the first
``max_length * 6`` characters of the body). C and class weighting are chosen on dev macro-F1,
then the chosen model is scored on test. Prints topic macro-F1/accuracy, style top-1/top-3 of a
TF-IDF publication classifier and bias macro-F1, and writes them as JSON (same flat keys as
``newsmtl evaluate``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from newsmtl.model import load_train_config, prepare_data
from newsmtl.model._metrics import accuracy, macro_f1, topk_accuracy
from newsmtl.text import OutletMasker

GRID = [(c, w) for c in (2.0, 8.0, 32.0) for w in (None, "balanced")]


def _texts(examples: list[Any], masker: OutletMasker, mode: str, lead_chars: int) -> list[str]:
    out = []
    for e in examples:
        body = e.text if mode == "full" else e.text[:lead_chars]
        out.append(masker.mask(e.title) + "\n" + masker.mask(body))
    return out


def _fit(x: Any, y: list[str], c: float, weight: str | None) -> LogisticRegression:
    return LogisticRegression(C=c, class_weight=weight, max_iter=300, solver="lbfgs").fit(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run", type=Path, help="take the split config from this run directory")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--text", choices=["full", "lead"], default="full")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    t0, c0 = time.perf_counter(), time.process_time()
    if args.run is not None:
        from newsmtl.model import TrainConfig

        stored = json.loads((args.run / "config.json").read_text(encoding="utf-8"))
        cfg = TrainConfig.from_stored(stored["train_config"])
    else:
        cfg = load_train_config(None, preset=args.preset, seed=args.seed)
    data = prepare_data(args.data, cfg)
    ex = data.examples
    train, dev, test = ([ex[i] for i in part] for part in (data.split.train, data.split.dev, data.split.test))
    masker = OutletMasker.from_config(cfg.masking) if cfg.mask_outlets else OutletMasker.disabled()
    lead = cfg.max_length * 6
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=0.5, ngram_range=(1, 2), max_features=300_000,
                          dtype=np.float32)
    x_train = vec.fit_transform(_texts(train, masker, args.text, lead))
    x_dev = vec.transform(_texts(dev, masker, args.text, lead))
    x_test = vec.transform(_texts(test, masker, args.text, lead))
    t_vec = time.perf_counter()
    print("vectorised %d/%d/%d articles, %d features in %.0fs" % (len(train), len(dev), len(test), x_train.shape[1], t_vec - t0))

    # -- topic: pick C / class weight on dev, score on test ----------------------------------
    y_train, y_dev, y_test = ([e.topic for e in part] for part in (train, dev, test))
    best: tuple[float, float, str | None] = (-1.0, 0.0, None)
    for c, w in GRID:
        f1 = macro_f1(y_dev, list(_fit(x_train, y_train, c, w).predict(x_dev)))
        print("  topic C=%-5g class_weight=%-8s dev macro-F1 %.4f" % (c, w, f1))
        if f1 > best[0]:
            best = (f1, c, w)
    topic_model = _fit(x_train, y_train, best[1], best[2])
    pred = list(topic_model.predict(x_test))
    report: dict[str, Any] = {
        "topic.macro_f1": macro_f1(y_test, pred),
        "topic.accuracy": accuracy(y_test, pred),
    }

    # -- style: publication classifier over the modelled outlets ------------------------------
    pubs = set(data.publications)
    rows_tr = [i for i, e in enumerate(train) if e.publication in pubs]
    rows_dev = [i for i, e in enumerate(dev) if e.publication in pubs]
    rows_te = [i for i, e in enumerate(test) if e.publication in pubs]
    best_s: tuple[float, float] = (-1.0, 0.0)
    for c in (2.0, 8.0, 32.0):
        m = _fit(x_train[rows_tr], [train[i].publication or "" for i in rows_tr], c, None)
        acc = accuracy([dev[i].publication for i in rows_dev], list(m.predict(x_dev[rows_dev])))
        if acc > best_s[0]:
            best_s = (acc, c)
    style_model = _fit(x_train[rows_tr], [train[i].publication or "" for i in rows_tr], best_s[1], None)
    scores = style_model.predict_proba(x_test[rows_te])
    index = {p: i for i, p in enumerate(style_model.classes_)}
    target = np.array([index[test[i].publication] for i in rows_te])
    report["style.top1"] = topk_accuracy(scores, target, 1)
    report["style.top3"] = topk_accuracy(scores, target, 3)

    # -- bias ---------------------------------------------------------------------------------
    b_tr = [i for i, e in enumerate(train) if e.bias is not None]
    b_te = [i for i, e in enumerate(test) if e.bias is not None]
    if b_tr and b_te:
        bias_model = _fit(x_train[b_tr], [train[i].bias or "" for i in b_tr], best[1], None)
        report["bias.macro_f1"] = macro_f1([test[i].bias for i in b_te], list(bias_model.predict(x_test[b_te])))
    else:
        report["bias.macro_f1"] = None

    seconds = time.perf_counter() - t0
    report.update(
        {
            "model": "tfidf-logreg",
            "text": args.text,
            "topic_C": best[1],
            "topic_class_weight": best[2],
            "topic_dev_macro_f1": best[0],
            "style_C": best_s[1],
            "split_sizes": data.split.sizes(),
            "seed": cfg.seed,
            "preset": cfg.preset,
            "n_features": int(x_train.shape[1]),
            "wall_seconds": round(seconds, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        "TF-IDF (%s text) test: topic macro-F1 %.4f accuracy %.4f | style top1 %.4f top3 %.4f | bias macro-F1 %s | %.0fs"
        % (args.text, report["topic.macro_f1"], report["topic.accuracy"], report["style.top1"], report["style.top3"],
           "%.4f" % report["bias.macro_f1"] if report["bias.macro_f1"] is not None else "-", seconds)
    )


if __name__ == "__main__":
    main()
