"""Learning curve of adapting to a new outlet vs a single-task model trained from scratch.

For each training-set size and repeat, the same labelled articles train

* ``adapt``: a new outlet slice on top of the frozen base model (:func:`train_new_outlet`);
* ``scratch``: the same architecture with one outlet, every weight randomly initialised
  (no shared pretraining), trained on the topic loss only (outlet head + 0.5 x shared head, the
  base trainer's weighting), with the same step budget, batch size and dropout, at the base
  run's learning rate. It reuses the base run's tokenizer, so the comparison isolates the
  learned weights, not the vocabulary.

and both are scored on one fixed held-out set of the new outlet. ``zero_shot`` is the base
model's shared head (what it predicts for an unknown outlet), which needs no labels at all.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual alias

from newsmtl._errors import ConfigError
from newsmtl.analysis._adapt import (
    AdaptConfig,
    NewOutlet,
    _batch,
    _negatives,
    evaluate_new_outlet,
    frozen_outputs,
    load_new_outlet_examples,
    stratified_split,
    train_new_outlet,
)
from newsmtl.analysis._features import iter_batches, subset
from newsmtl.model import EncodedSet, ModelConfig, SharedPrivateNet, encode_examples, load_run

__all__ = ["BBC_TOPIC_MAP", "adapt_learning_curve", "train_scratch"]

logger = logging.getLogger(__name__)

# BBC News topics -> the 11 coarse AllSides topics (see docs/bbc_topic_mapping.md for caveats).
BBC_TOPIC_MAP: dict[str, str] = {
    "business": "business_economy",
    "entertainment": "society_culture",
    "politics": "politics",
    "sport": "society_culture",
    "tech": "science_tech",
}


def train_scratch(model_config: ModelConfig, train_set: EncodedSet, cfg: AdaptConfig, *, lr: float = 6e-3) -> SharedPrivateNet:
    """A one-outlet ``SharedPrivateNet`` trained from random weights on ``train_set``'s topics.

    Same step budget, batch size and schedule as :func:`train_new_outlet` (``cfg``); ``lr`` is
    the whole network's (the learning curve passes the base run's own learning rate).
    """
    torch.manual_seed(cfg.seed)
    net = SharedPrivateNet(replace(model_config, num_publications=1, num_bias=0))
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and not n.endswith("bias")]
    no_decay = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and not n.endswith("bias"))]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    steps = cfg.steps_for(len(train_set))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / max(1, steps))))
    )
    rng = np.random.default_rng([cfg.seed, 0x5C4])
    order, cursor = rng.permutation(len(train_set)), 0
    net.train()
    for _ in range(steps):
        if cursor + min(cfg.batch_size, len(train_set)) > len(order):
            order, cursor = rng.permutation(len(train_set)), 0
        rows = order[cursor : cursor + cfg.batch_size]
        cursor += len(rows)
        ids, mask = _batch(train_set, rows)
        y = torch.from_numpy(train_set.topic[rows])
        out = net(ids, mask.to(torch.int64), torch.zeros(len(rows), dtype=torch.int64))
        loss = F.cross_entropy(out.topic_logits, y) + 0.5 * F.cross_entropy(out.shared_topic_logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    net.eval()
    return net


@torch.no_grad()
def _score_scratch(net: SharedPrivateNet, data: EncodedSet) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    preds = np.zeros(len(data), np.int64)
    for index, ids, mask, _pub, _topic in iter_batches(data, batch_size=128):
        out = net(ids, mask, torch.zeros(len(index), dtype=torch.int64))
        preds[index] = out.topic_logits.argmax(dim=1).numpy()
    present = sorted(set(data.topic.tolist()))
    return {
        "topic.accuracy": float(accuracy_score(data.topic, preds)),
        "topic.macro_f1": float(f1_score(data.topic, preds, labels=present, average="macro", zero_division=0)),
    }


def adapt_learning_curve(
    run_dir: Path,
    data_path: Path,
    *,
    publication: str = "bbc-fulltext",
    label_map: Mapping[str, str] | None = None,
    sizes: Sequence[int] = (25, 50, 100, 200, 400),
    test_size: int = 300,
    repeats: int = 3,
    seed: int = 0,
    cfg: AdaptConfig | None = None,
    negatives_path: Path | None = None,
    scratch: bool = True,
    scratch_lr: float | None = None,
    validation: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the learning curve; returns a JSON-ready dict (``rows`` per run, ``summary`` per cell).

    ``validation=True`` is for choosing learning rates: the fixed test set is set aside unused and
    a second held-out set of ``test_size`` articles, carved from the training pool, is scored
    instead. ``scratch_lr`` defaults to the base run's own learning rate.
    """
    cfg = cfg or AdaptConfig()
    if repeats < 1 or not sizes or min(sizes) < 1:
        raise ConfigError("need repeats >= 1 and positive sizes")
    label_map = dict(BBC_TOPIC_MAP if label_map is None else label_map)
    run = load_run(run_dir)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    topics = list(run.labels["topics"])
    examples = load_new_outlet_examples(Path(data_path), publication=publication, topics=topics, label_map=label_map)
    pool_idx, test_idx = stratified_split([e.topic for e in examples], test_size, seed=seed)
    if validation:
        rest, held = stratified_split([examples[i].topic for i in pool_idx], test_size, seed=seed)
        pool_idx, test_idx = [pool_idx[i] for i in rest], [pool_idx[i] for i in held]
    if max(sizes) > len(pool_idx):
        raise ConfigError("largest size %d exceeds the %d articles left after the test set" % (max(sizes), len(pool_idx)))
    enc_args: dict[str, Any] = {"topics": topics, "publications": [], "bias": []}
    pool = encode_examples(run.encoder, [examples[i] for i in pool_idx], **enc_args)
    test = encode_examples(run.encoder, [examples[i] for i in test_idx], **enc_args)
    negatives, neg_source = _negatives(run, negatives_path, cfg.max_negatives, seed)
    # The base network is frozen: its outputs on every article are computed once for all runs.
    pool_frozen = frozen_outputs(run.net, pool)
    test_frozen = frozen_outputs(run.net, test)
    neg_frozen = frozen_outputs(run.net, negatives) if negatives is not None else None
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "publication": publication,
        "data": str(Path(data_path).resolve()),
        "label_map": label_map,
        "test": {"n": len(test_idx), "topic_counts": dict(Counter(examples[i].topic for i in test_idx).most_common()),
                 "ids": sorted(examples[i].id for i in test_idx)},
        "pool": len(pool_idx),
        "sizes": list(sizes),
        "repeats": repeats,
        "seed": seed,
        "config": asdict(cfg),
        "negatives": neg_source,
        "base_model": {"preset": run.train_config.get("preset"), "publications": len(run.labels["publications"])},
        "rows": [],
    }
    scratch_lr = float(run.train_config.get("lr", 6e-3)) if scratch_lr is None else scratch_lr
    result["held_out"] = "validation set carved from the pool (test set unused)" if validation else "test set"
    result["scratch"] = {"lr": scratch_lr, "weight_decay": cfg.weight_decay, "note": "same architecture and tokenizer, "
                         "one outlet, random weights; topic loss only; same steps and batch size as adapt"}
    # Zero-shot: the base model's shared head on the test set (no labels used).
    zero = evaluate_new_outlet(run.net, NewOutlet(run.net), test, topics=topics, frozen=test_frozen)
    result["zero_shot"] = {"topic.accuracy": zero["shared_head.accuracy"], "topic.macro_f1": zero["shared_head.macro_f1"]}
    counts = Counter(examples[i].topic for i in pool_idx)
    majority = counts.most_common(1)[0][0]
    result["majority_class"] = {"label": majority, "topic.accuracy": float(np.mean(test.topic == topics.index(majority)))}
    for r in range(repeats):
        order = np.random.default_rng([seed, r, 0xC0]).permutation(len(pool_idx))
        for n in sizes:
            rows = order[:n]  # nested: each size extends the previous one within a repeat
            train_set = subset(pool, rows)
            run_cfg = replace(cfg, seed=seed * 1000 + r)
            t0 = time.perf_counter()
            head, info = train_new_outlet(
                run.net, train_set, negatives, run_cfg, positives_frozen=pool_frozen.subset(rows),
                negatives_frozen=neg_frozen,
            )
            metrics = evaluate_new_outlet(run.net, head, test, topics=topics, frozen=test_frozen)
            row = {"method": "adapt", "size": n, "repeat": r, "steps": info["steps"],
                   "topic.accuracy": metrics["topic.accuracy"], "topic.macro_f1": metrics["topic.macro_f1"],
                   "style.top1": metrics["style.top1"], "seconds": round(time.perf_counter() - t0, 1)}
            result["rows"].append(row)
            if progress:
                progress(row)
            if scratch:
                t0 = time.perf_counter()
                net = train_scratch(run.model_config, train_set, run_cfg, lr=scratch_lr)
                row = {"method": "scratch", "size": n, "repeat": r, "steps": run_cfg.steps_for(n),
                       **_score_scratch(net, test), "seconds": round(time.perf_counter() - t0, 1)}
                result["rows"].append(row)
                if progress:
                    progress(row)
    result["summary"] = _summarise(result["rows"])
    return result


def _summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["method"], row["size"]), []).append(row)
    out = []
    for (method, size), group in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        acc = np.array([g["topic.accuracy"] for g in group])
        f1 = np.array([g["topic.macro_f1"] for g in group])
        entry: dict[str, Any] = {
            "method": method,
            "size": size,
            "n_repeats": len(group),
            "accuracy_mean": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "macro_f1_mean": float(f1.mean()),
            "macro_f1_std": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
        }
        if "style.top1" in group[0]:
            entry["style_top1_mean"] = float(np.mean([g["style.top1"] for g in group]))
        out.append(entry)
    return out
