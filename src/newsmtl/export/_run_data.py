"""A run directory + its data -> :class:`~newsmtl.export._exporter.ExportInputs`.

The dev split is recomputed exactly as training made it (``prepare_data`` with the run's stored
config and seed) and checked against the run's training-split fingerprint, so the accuracy
figures of the bundle are on articles the model never trained on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from newsmtl._errors import DataError, ExportError, NewsmtlError
from newsmtl.export._bundle import sha256_file
from newsmtl.export._exporter import ExportInputs, ExportOptions
from newsmtl.export._verify import EncodedSet
from newsmtl.model._data import Example
from newsmtl.model._pipeline import prepare_data
from newsmtl.model._run import CHECKPOINT, METRICS_JSON, Run, load_run
from newsmtl.text import TextEncoder

__all__ = ["encode_for_export", "export_inputs_from_run"]

logger = logging.getLogger(__name__)


def encode_for_export(
    encoder: TextEncoder, examples: Sequence[Example], labels: dict[str, list[str]], *, chunk: int = 2048
) -> EncodedSet:
    topics = {t: i for i, t in enumerate(labels["topics"])}
    pubs = {p: i for i, p in enumerate(labels["publications"])}
    token_ids: list[list[int]] = []
    for start in range(0, len(examples), chunk):
        part = examples[start : start + chunk]
        token_ids.extend(encoder.encode_batch([e.title for e in part], [e.text for e in part]))
    return EncodedSet(
        token_ids,
        [pubs.get(e.publication or "", -1) for e in examples],
        [topics.get(e.topic, -1) for e in examples],
    )


def _run_metrics(run: Run) -> dict[str, Any]:
    """metrics.json (dev, and test once evaluated) if readable, else the checkpoint's dev metrics."""
    path = run.run_dir / METRICS_JSON
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except ValueError:
            logger.warning("%s is not valid JSON; using the checkpoint's metrics", path)
    return dict(run.metrics)


def export_inputs_from_run(run_dir: Path, options: ExportOptions) -> ExportInputs:
    try:
        run = load_run(run_dir)
    except NewsmtlError as exc:
        raise ExportError("cannot load run %s: %s" % (run_dir, exc)) from None
    recorded = run.data.get("path")
    if options.data_path is not None:
        data_path = Path(options.data_path)
    elif recorded:
        data_path = Path(recorded)
    else:
        raise ExportError("run %s records no data path; pass --data" % run_dir)
    if not data_path.is_file():
        raise ExportError(
            "data file %s (%s) not found; pass --data PATH to recompute the dev split"
            % (data_path, "from --data" if options.data_path is not None else "recorded in the run")
        )
    try:
        data = prepare_data(data_path, run.config)
    except NewsmtlError as exc:
        raise ExportError("cannot recompute the run's split from %s: %s" % (data_path, exc)) from None
    expected = run.data.get("train_fingerprint")
    if expected is not None and data.info.get("train_fingerprint") != expected:
        raise DataError(
            "%s does not reproduce the training split of run %s (different data file, fields or max_articles); "
            "the dev figures would include training articles" % (data_path, run_dir)
        )
    dev_examples = [data.examples[i] for i in data.split.dev]
    # Calibration and parity top-up come from the training split, in a seeded random order so
    # that the first few hundred cover many outlets and topics.
    rng = np.random.default_rng([run.config.seed, 0xE5])
    train_order = [data.split.train[i] for i in rng.permutation(len(data.split.train))]
    extra_count = max(options.calibration_articles, options.parity_articles)
    extra_examples = [data.examples[i] for i in train_order[:extra_count]]
    logger.info(
        "export data: %s, %d dev articles, %d training articles for calibration/parity",
        data_path,
        len(dev_examples),
        len(extra_examples),
    )
    labels = {key: list(run.labels.get(key, [])) for key in ("topics", "publications", "bias")}
    checkpoint = run.run_dir / CHECKPOINT
    cfg = run.config
    source = {
        "run_dir": str(run.run_dir.resolve()),
        "run_created_at": run.created_at,
        "checkpoint_sha256": sha256_file(checkpoint),
        "preset": cfg.preset,
        "data_path": str(data_path.resolve()),
        "seed": cfg.seed,
        "train_fingerprint": data.info.get("train_fingerprint"),
        "split_sizes": data.split.sizes(),
    }
    summary = {
        "file": data_path.name,
        "examples in file": data.info.get("examples_in_file"),
        "subsample (max_articles)": cfg.max_articles,
        "split (train/dev/test)": "%(train)d / %(dev)d / %(test)d" % data.split.sizes(),
        "split": "stratified by publication, seed %d" % cfg.seed,
        "topic label field": cfg.label_field,
        "modelled publications": "%d (>= %d training articles each)"
        % (len(labels["publications"]), cfg.min_publication_articles),
    }
    pretraining = run.data.get("pretraining")
    if isinstance(pretraining, dict):
        summary["token embeddings"] = (
            "initialised by %s pretraining (window %s, %s epochs) on the %s tokens of the full training "
            "articles, then fine-tuned at %sx the learning rate"
            % (pretraining.get("method"), pretraining.get("window"), pretraining.get("epochs"),
               "{:,}".format(pretraining.get("tokens", 0)), cfg.embedding_lr_scale)
        )
    return ExportInputs(
        net=run.net,
        encoder=run.encoder,
        labels=labels,
        metrics=_run_metrics(run),
        dev=encode_for_export(run.encoder, dev_examples, labels),
        extra=encode_for_export(run.encoder, extra_examples, labels),
        source=source,
        data_summary=summary,
    )
