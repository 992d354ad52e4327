"""``newsmtl adapt``: add a new outlet to a trained shared-private model.

The shared encoder, the embedding and every existing outlet's parameters stay frozen (bit for
bit). What is trained, on a few labelled articles of the new outlet:

* a new private encoder slice: ``C`` more output channels of the batched private conv
  (``PrivateEncoders`` is one Conv1d with ``P*C`` channels, ``C = Dp`` with max pooling and
  ``Dp/2`` with max+mean pooling, so the new outlet ``P`` is channels ``P*C .. (P+1)*C-1``);
* the new outlet's topic head over ``[shared; private_new]``;
* its style weight and bias (the style score of the new outlet).

The topic head starts as the shared topic head (what the base model predicts for an unknown
outlet): with residual heads the new head is a zero-initialised correction on top of it, without
them the shared head's weights are copied into the head's shared rows. So zero labelled
articles reproduce the base model's unknown-outlet behaviour and every label refines it.

The style score needs negatives: articles of the old outlets (sampled from the run's training
split, by default from the data file the run was trained on) teach the new score to stay low on
other outlets' writing. The old outlets' style scores are frozen.

The result is written as a normal run directory (same checkpoint format, P+1 publications), so
``load_run``, ``newsmtl evaluate``, ``newsmtl export`` and ``newsmtl analyze`` work on it unchanged.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - the usual alias

from newsmtl._errors import ConfigError, DataError, ModelError
from newsmtl.analysis._features import iter_batches, subset
from newsmtl.model import (
    EncodedSet,
    Example,
    ModelConfig,
    PrivateEncoders,
    Run,
    SharedPrivateNet,
    encode_examples,
    load_run,
    prepare_data,
)
from newsmtl.model._run import (
    CHECKPOINT,
    CONFIG_JSON,
    METRICS_JSON,
    TOKENIZER_JSON,
    atomic_write_json,
    read_checkpoint,
    save_torch_atomic,
)
from newsmtl.text import TextEncoder, normalize_publication

__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "FrozenOutputs",
    "NewOutlet",
    "adapt_run",
    "evaluate_new_outlet",
    "frozen_outputs",
    "grow_network",
    "load_label_map",
    "load_new_outlet_examples",
    "train_new_outlet",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AdaptConfig:
    """Optimisation of the new outlet's parameters."""

    epochs: int = 30  # passes over the labelled articles ...
    min_steps: int = 100  # ... but at least this many steps (tiny label sets) ...
    max_steps: int = 1500  # ... and at most this many
    batch_size: int = 16
    # Chosen on a validation set carved from the BBC pool, never its test set (bench/adapt_curve.py
    # --validation, 2 repeats, macro-F1 at 25/100/400 articles): 3e-3 0.59/0.64/0.77,
    # 1e-2 0.62/0.68/0.80, 3e-2 0.65/0.66/0.78.
    lr: float = 1e-2
    weight_decay: float = 0.01  # on the new matrices: pulls the residual head towards the shared head
    style_loss: float = 1.0
    negatives_per_positive: float = 1.0
    max_negatives: int = 2000
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.min_steps < 1 or self.max_steps < self.min_steps:
            raise ConfigError("adapt needs epochs >= 1 and 1 <= min_steps <= max_steps")
        if self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0 or self.style_loss < 0:
            raise ConfigError("adapt needs batch_size >= 1, lr > 0, weight_decay >= 0 and style_loss >= 0")
        if self.negatives_per_positive < 0:
            raise ConfigError("negatives_per_positive must be >= 0")

    def steps_for(self, n_train: int) -> int:
        per_epoch = math.ceil(n_train / self.batch_size)
        return int(min(self.max_steps, max(self.min_steps, self.epochs * per_epoch)))


@dataclass
class AdaptResult:
    out_dir: Path
    publication: str
    n_train: int
    n_eval: int
    metrics: dict[str, Any]
    seconds: float


# -- data ---------------------------------------------------------------------------------------


def load_label_map(path: Path) -> dict[str, str]:
    """A label map file: a JSON object ``{"raw": "model_topic"}`` or two-column TSV/CSV lines."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("cannot read label map %s: %s" % (path, exc)) from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError("label map %s is not valid JSON: %s" % (path, exc)) from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ConfigError("label map %s must be a JSON object of strings" % path)
        return dict(data)
    out: dict[str, str] = {}
    sep = "," if path.suffix == ".csv" else "\t"
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in line.split(sep)]
        if len(cells) != 2 or not all(cells):
            raise ConfigError("label map %s line %d: expected 'raw%smodel_topic'" % (path, lineno, sep.replace("\t", "<TAB>")))
        out[cells[0]] = cells[1]
    if not out:
        raise ConfigError("label map %s is empty" % path)
    return out


def load_new_outlet_examples(
    path: Path,
    *,
    publication: str,
    topics: Sequence[str],
    label_map: Mapping[str, str] | None = None,
    label_field: str = "topic",
    text_field: str = "text",
    title_field: str = "title",
) -> list[Example]:
    """Read the new outlet's labelled articles (``.jsonl``, ``.jsonl.gz`` or a ``.json`` array).

    Labels are mapped with ``label_map`` (raw -> model topic); unmapped labels must already be
    model topics. The file's own publication field, if any, is ignored: every article belongs
    to ``publication``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("dataset not found: %s" % path)
    topic_set = set(topics)
    if label_map:
        bad = sorted({v for v in label_map.values() if v not in topic_set})
        if bad:
            raise ConfigError("label map targets %s are not topics of the model (%s)" % (bad, ", ".join(topics)))
    rows = _read_rows(path)
    out: list[Example] = []
    unknown: Counter[str] = Counter()
    for n, row in enumerate(rows, start=1):
        if text_field not in row or label_field not in row:
            raise DataError(
                "%s row %d: needs the fields %r and %r (has %s)" % (path, n, text_field, label_field, ", ".join(sorted(row)))
            )
        raw = str(row[label_field]).strip()
        topic = (label_map or {}).get(raw, raw)
        if topic not in topic_set:
            unknown[raw] += 1
            continue
        out.append(
            Example(
                id=str(row.get("id") or "row-%d" % n),
                title=str(row.get(title_field) or ""),
                text=str(row[text_field] or ""),
                topic=topic,
                publication=publication,
                bias=None,
            )
        )
    if unknown:
        raise DataError(
            "%s: labels %s are neither model topics nor mapped by the label map; pass --label-map "
            "(model topics: %s)" % (path, dict(unknown.most_common()), ", ".join(topics))
        )
    if not out:
        raise DataError("%s holds no labelled articles" % path)
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    name = path.name.lower().removesuffix(".gz")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            if name.endswith((".jsonl", ".ndjson")):
                rows = []
                for lineno, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as exc:
                            raise DataError("%s line %d: invalid JSON (%s)" % (path, lineno, exc)) from None
            elif name.endswith(".json"):
                rows = json.load(fh)
            else:
                raise DataError("%s: use a .jsonl, .jsonl.gz or .json file for the new outlet" % path)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise DataError("cannot read %s: %s" % (path, exc)) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError("%s: expected JSON objects, one per article" % path)
    return rows


def stratified_split(labels: Sequence[str], n_holdout: int, *, seed: int) -> tuple[list[int], list[int]]:
    """(rest, holdout): a seeded holdout of ``n_holdout`` items, proportional per label."""
    n = len(labels)
    if not 0 <= n_holdout < n:
        raise ConfigError("cannot hold out %d of %d articles" % (n_holdout, n))
    rng = np.random.default_rng([seed, 0xB0C])
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(lab, []).append(i)
    holdout: list[int] = []
    quotas = {lab: n_holdout * len(idx) / n for lab, idx in sorted(by_label.items())}
    counts = {lab: int(math.floor(q)) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda k: quotas[k] - counts[k], reverse=True)[: n_holdout - sum(counts.values())]:
        counts[lab] += 1
    for lab, idx in sorted(by_label.items()):
        chosen = rng.permutation(np.asarray(idx))[: counts[lab]]
        holdout.extend(int(i) for i in chosen)
    held = set(holdout)
    return [i for i in range(n) if i not in held], sorted(holdout)


# -- the new outlet's parameters -------------------------------------------------------------


class NewOutlet(nn.Module):
    """The trainable parameters of one added outlet; reads the frozen base network's features.

    Shapes as in ``SharedPrivateNet``: E embedding, Ds shared, Dp private, K topics, P old outlets.
    """

    def __init__(self, base: SharedPrivateNet) -> None:
        super().__init__()
        cfg = base.cfg
        if base.private_encoders is None or not cfg.use_private:
            raise ModelError("adapt needs a shared-private model (this run has no private encoders)")
        if not cfg.per_publication_topic_heads:
            raise ModelError("adapt needs per-outlet topic heads (this run uses the shared head for every outlet)")
        self.residual = cfg.residual_topic_heads
        ds, dp, k = cfg.shared_feature_dim, cfg.private_dim, cfg.num_topics
        # The new slice is a one-outlet PrivateEncoders: same conv shape and pooling as each old
        # outlet's slice, so its channels can be appended to the batched conv as they are.
        self.encoder = PrivateEncoders(replace(cfg, num_publications=1))
        head_w = torch.zeros(ds + dp, k)
        head_b = torch.zeros(k)
        if not self.residual:  # start from the shared head (residual heads add it themselves)
            head_w[:ds] = base.shared_topic_head.weight.detach().T
            head_b.copy_(base.shared_topic_head.bias.detach())
        self.topic_weight = nn.Parameter(head_w)  # [Ds+Dp,K]
        self.topic_bias = nn.Parameter(head_b)  # [K]
        self.style_weight = nn.Parameter(torch.randn(dp) * 0.05)  # [Dp]
        self.style_bias = nn.Parameter(torch.zeros(()))
        self.dropout = nn.Dropout(cfg.dropout)
        self.shared_dim = ds

    def private(self, emb: Tensor, mask: Tensor) -> Tensor:
        # emb [B,E,T], mask [B,T] float -> [B,Dp], exactly as PrivateEncoders pools each outlet
        return self.encoder(emb, mask)[:, 0, :]  # type: ignore[no-any-return]

    def topic_logits(self, shared: Tensor, private: Tensor, base_shared_logits: Tensor) -> Tensor:
        # shared [B,Ds], private [B,Dp] -> [B,K]; base_shared_logits = shared head on `shared`
        logits = shared @ self.topic_weight[: self.shared_dim] + private @ self.topic_weight[self.shared_dim :]
        logits = logits + self.topic_bias
        if self.residual:
            logits = logits + base_shared_logits
        return logits

    def style_logit(self, private: Tensor) -> Tensor:
        return private @ self.style_weight + self.style_bias  # [B]


@dataclass
class FrozenOutputs:
    """Frozen base-network outputs of a set of articles (computed once, eval mode)."""

    shared: Tensor  # [N,Ds]
    shared_logits: Tensor  # [N,K] shared head
    style: Tensor  # [N,P] old outlets' style logits

    def subset(self, rows: np.ndarray) -> FrozenOutputs:
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        return FrozenOutputs(shared=self.shared[index], shared_logits=self.shared_logits[index], style=self.style[index])


@torch.no_grad()
def frozen_outputs(base: SharedPrivateNet, data: EncodedSet, *, batch_size: int = 128) -> FrozenOutputs:
    base.eval()
    n = len(data)
    shared = torch.zeros(n, base.cfg.shared_feature_dim)
    logits = torch.zeros(n, base.cfg.num_topics)
    style = torch.zeros(n, base.cfg.num_publications)
    for index, ids, mask, _pub, _topic in iter_batches(data, batch_size=batch_size):
        out = base(ids, mask, torch.full((len(index),), -1, dtype=torch.int64))
        rows = torch.from_numpy(index)
        shared[rows] = out.shared
        logits[rows] = out.shared_topic_logits
        style[rows] = out.style_logits
    return FrozenOutputs(shared=shared, shared_logits=logits, style=style)


def _batch(data: EncodedSet, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    width = max(int(data.lengths[rows].max()), 1)
    ids = torch.from_numpy(data.ids[rows, :width].astype(np.int64))
    mask = (torch.arange(width).unsqueeze(0) < torch.from_numpy(data.lengths[rows]).unsqueeze(1)).to(torch.float32)
    return ids, mask


def train_new_outlet(
    base: SharedPrivateNet,
    positives: EncodedSet,
    negatives: EncodedSet | None,
    cfg: AdaptConfig,
    *,
    positives_frozen: FrozenOutputs | None = None,
    negatives_frozen: FrozenOutputs | None = None,
) -> tuple[NewOutlet, dict[str, Any]]:
    """Train a :class:`NewOutlet` on ``positives`` (topic labels) and style ``negatives``.

    ``positives.topic`` are model topic indices; ``negatives.publication`` old outlet indices.
    The base network is only read (under ``no_grad``): none of its parameters can change.
    ``*_frozen`` may pass precomputed :func:`frozen_outputs` of the same sets (learning curves).
    """
    if len(positives) == 0:
        raise DataError("no labelled articles of the new outlet to train on")
    if (positives.topic < 0).any():
        raise DataError("every training article of the new outlet needs a topic label")
    torch.manual_seed(cfg.seed)  # new weights and dropout masks
    head = NewOutlet(base)
    base.eval()
    pos_frozen = positives_frozen or frozen_outputs(base, positives)
    use_neg = negatives is not None and len(negatives) > 0 and cfg.style_loss > 0
    neg_frozen = None
    if use_neg and negatives is not None:
        neg_frozen = negatives_frozen or frozen_outputs(base, negatives)
    decay = [p for p in head.parameters() if p.ndim >= 2]  # conv kernel and head matrix
    no_decay = [p for p in head.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    steps = cfg.steps_for(len(positives))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(1.0, s / max(1, steps))))
    )
    rng = np.random.default_rng([cfg.seed, 0xADA])
    n_neg_batch = max(1, int(round(cfg.batch_size * cfg.negatives_per_positive))) if use_neg else 0
    p_dropout = base.cfg.dropout
    pos_order = rng.permutation(len(positives))
    cursor = 0
    head.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for _step in range(steps):
        if cursor + min(cfg.batch_size, len(positives)) > len(pos_order):
            pos_order, cursor = rng.permutation(len(positives)), 0
        rows = pos_order[cursor : cursor + cfg.batch_size]
        cursor += len(rows)
        ids, mask = _batch(positives, rows)
        with torch.no_grad():
            emb_full = base.embedding(ids)  # frozen table, [B,T,E]
        emb = head.dropout(emb_full).transpose(1, 2)
        private = head.dropout(head.private(emb, mask))
        t_rows = torch.from_numpy(rows)
        shared = F.dropout(pos_frozen.shared[t_rows], p_dropout, training=True)
        logits = head.topic_logits(shared, private, base.shared_topic_head(shared).detach())
        loss = F.cross_entropy(logits, torch.from_numpy(positives.topic[rows]))
        if use_neg and negatives is not None and neg_frozen is not None:
            n_rows = rng.choice(len(negatives), size=min(n_neg_batch, len(negatives)), replace=False)
            n_ids, n_mask = _batch(negatives, n_rows)
            with torch.no_grad():
                n_emb_full = base.embedding(n_ids)
            n_private = head.dropout(head.private(head.dropout(n_emb_full).transpose(1, 2), n_mask))
            old = torch.cat([pos_frozen.style[t_rows], neg_frozen.style[torch.from_numpy(n_rows)]])  # [B',P]
            new = torch.cat([head.style_logit(private), head.style_logit(n_private)]).unsqueeze(1)  # [B',1]
            target = torch.cat(
                [
                    torch.full((len(rows),), base.cfg.num_publications, dtype=torch.int64),
                    torch.from_numpy(negatives.publication[n_rows].astype(np.int64)),
                ]
            )
            loss = loss + cfg.style_loss * F.cross_entropy(torch.cat([old, new], dim=1), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    head.eval()
    info = {
        "steps": steps,
        "n_train": len(positives),
        "n_negatives": len(negatives) if use_neg and negatives is not None else 0,
        "final_loss": float(np.mean(losses[-10:])),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return head, info


@torch.no_grad()
def evaluate_new_outlet(
    base: SharedPrivateNet, head: NewOutlet, data: EncodedSet, *, topics: Sequence[str], batch_size: int = 128,
    frozen: FrozenOutputs | None = None,
) -> dict[str, Any]:
    """Topic accuracy / macro-F1 of the new head (and of the base shared head) plus style top-1."""
    from sklearn.metrics import accuracy_score, f1_score

    frozen = frozen or frozen_outputs(base, data, batch_size=batch_size)
    head.eval()
    preds = np.zeros(len(data), np.int64)
    style_top = np.zeros(len(data), np.int64)
    for index, ids, mask, _pub, _topic in iter_batches(data, batch_size=batch_size):
        rows = torch.from_numpy(index)
        emb = base.embedding(ids).transpose(1, 2)
        private = head.private(emb, mask.to(torch.float32))
        logits = head.topic_logits(frozen.shared[rows], private, frozen.shared_logits[rows])
        preds[index] = logits.argmax(dim=1).numpy()
        style = torch.cat([frozen.style[rows], head.style_logit(private).unsqueeze(1)], dim=1)
        style_top[index] = style.argmax(dim=1).numpy()
    y = data.topic
    present = sorted(set(y.tolist()))
    shared_pred = frozen.shared_logits.argmax(dim=1).numpy()
    p = base.cfg.num_publications
    return {
        "n": len(data),
        "topic.accuracy": float(accuracy_score(y, preds)),
        "topic.macro_f1": float(f1_score(y, preds, labels=present, average="macro", zero_division=0)),
        "shared_head.accuracy": float(accuracy_score(y, shared_pred)),
        "shared_head.macro_f1": float(f1_score(y, shared_pred, labels=present, average="macro", zero_division=0)),
        "style.top1": float(np.mean(style_top == p)),
        "labels_present": [topics[i] for i in present],
    }


# -- merging into a grown network ------------------------------------------------------------


def grow_network(base: SharedPrivateNet, head: NewOutlet) -> SharedPrivateNet:
    """A ``SharedPrivateNet`` with P+1 outlets: the base's weights plus the new outlet's.

    Every tensor of the base is copied unchanged; the grown ones (private conv, topic heads,
    style weights, the discriminator's output layer) get the new outlet appended as the last
    row/channel block.
    """
    cfg = base.cfg
    p = cfg.num_publications
    cfg2 = replace(cfg, num_publications=p + 1)
    sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
    conv_bias = head.encoder.conv.bias
    if conv_bias is None:  # nn.Conv1d default; guards against a future bias=False
        raise ModelError("the new private conv has no bias")
    with torch.no_grad():
        sd["private_encoders.conv.weight"] = torch.cat([sd["private_encoders.conv.weight"], head.encoder.conv.weight])
        sd["private_encoders.conv.bias"] = torch.cat([sd["private_encoders.conv.bias"], conv_bias])
        sd["topic_head_weight"] = torch.cat([sd["topic_head_weight"], head.topic_weight.unsqueeze(0)])
        sd["topic_head_bias"] = torch.cat([sd["topic_head_bias"], head.topic_bias.unsqueeze(0)])
        sd["style_weight"] = torch.cat([sd["style_weight"], head.style_weight.unsqueeze(0)])
        sd["style_bias"] = torch.cat([sd["style_bias"], head.style_bias.reshape(1)])
        # The discriminator only matters in training (it reads the frozen shared features); the
        # new outlet's output row starts neutral: zero weights, the old rows' mean bias.
        last = len(base.discriminator) - 1
        w_key, b_key = "discriminator.%d.weight" % last, "discriminator.%d.bias" % last
        sd[w_key] = torch.cat([sd[w_key], torch.zeros(1, sd[w_key].shape[1])])
        sd[b_key] = torch.cat([sd[b_key], sd[b_key].mean().reshape(1)])
    grown = SharedPrivateNet(cfg2)
    grown.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=True)
    grown.eval()
    return grown


@torch.no_grad()
def _check_grown(base: SharedPrivateNet, head: NewOutlet, grown: SharedPrivateNet, data: EncodedSet) -> float:
    """Largest topic-logit gap between the grown net and base/head on a few articles."""
    sample = subset(data, np.arange(min(len(data), 16)))
    gap = 0.0
    p = base.cfg.num_publications
    frozen = frozen_outputs(base, sample)
    for index, ids, mask, _pub, _topic in iter_batches(sample, batch_size=16):
        rows = torch.from_numpy(index)
        new_idx = torch.full((len(index),), p, dtype=torch.int64)
        out = grown(ids, mask, new_idx)
        emb = base.embedding(ids).transpose(1, 2)
        private = head.private(emb, mask.to(torch.float32))
        expected = head.topic_logits(frozen.shared[rows], private, frozen.shared_logits[rows])
        gap = max(gap, float((out.topic_logits - expected).abs().max()))
        old_idx = torch.zeros(len(index), dtype=torch.int64)
        gap = max(gap, float((grown(ids, mask, old_idx).topic_logits - base(ids, mask, old_idx).topic_logits).abs().max()))
    return gap


# -- the command -----------------------------------------------------------------------------


def _negatives(run: Run, path: Path | None, n: int, seed: int) -> tuple[EncodedSet | None, str | None]:
    source = Path(path) if path is not None else (Path(run.data["path"]) if run.data.get("path") else None)
    if n <= 0:
        return None, None
    if source is None or not source.is_file():
        raise DataError(
            "the style score of the new outlet needs articles of the old outlets as negatives; the run's data "
            "file %s is not available: pass --negatives PATH (or --no-style to skip the style head)" % source
        )
    data = prepare_data(source, run.config)
    pubs = run.labels["publications"]
    pool = [i for i in data.split.train if data.examples[i].publication in set(pubs)]
    if not pool:
        raise DataError("%s has no training articles of the run's outlets to use as negatives" % source)
    rng = np.random.default_rng([seed, 0x9E6])
    chosen = sorted(int(i) for i in rng.choice(np.asarray(pool), size=min(n, len(pool)), replace=False))
    enc = encode_examples(
        run.encoder, [data.examples[i] for i in chosen], topics=run.labels["topics"], publications=pubs, bias=[]
    )
    return enc, str(source)


def adapt_run(
    run_dir: Path,
    data_path: Path,
    *,
    publication: str,
    out_dir: Path,
    label_map: Mapping[str, str] | None = None,
    max_train: int | None = None,
    eval_fraction: float = 0.2,
    negatives_path: Path | None = None,
    train_style: bool = True,
    self_names: Sequence[str] = (),
    cfg: AdaptConfig | None = None,
) -> AdaptResult:
    """Add ``publication`` to the run in ``run_dir`` and write the grown run to ``out_dir``."""
    t0 = time.perf_counter()
    cfg = cfg or AdaptConfig()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    name = normalize_publication(publication)
    if not name:
        raise ConfigError("--publication must be a non-empty outlet name")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError("%s already exists and is not empty; choose another --out" % out_dir)
    if not 0 <= eval_fraction < 1:
        raise ConfigError("eval_fraction must be in [0, 1)")
    if max_train is not None and max_train < 1:
        raise ConfigError("--max-train must be positive")
    run = load_run(run_dir)
    topics = list(run.labels["topics"])
    if name in run.labels["publications"]:
        raise ConfigError("%s is already modelled by %s; give the new outlet another name" % (name, run_dir))
    encoder = _encoder_with_names(run, name, self_names)
    examples = load_new_outlet_examples(Path(data_path), publication=name, topics=topics, label_map=label_map)
    n_eval = int(round(eval_fraction * len(examples)))
    if n_eval >= len(examples):
        raise DataError("not enough articles to hold out %d for evaluation" % n_eval)
    train_idx, eval_idx = stratified_split([e.topic for e in examples], n_eval, seed=cfg.seed)
    if max_train is not None and len(train_idx) > max_train:
        rng = np.random.default_rng([cfg.seed, 0x7A1])
        train_idx = sorted(int(i) for i in rng.choice(np.asarray(train_idx), size=max_train, replace=False))
    enc_args: dict[str, Any] = {"topics": topics, "publications": [], "bias": []}
    train_set = encode_examples(encoder, [examples[i] for i in train_idx], **enc_args)
    eval_set = encode_examples(encoder, [examples[i] for i in eval_idx], **enc_args) if eval_idx else None
    n_neg = min(cfg.max_negatives, int(math.ceil(cfg.negatives_per_positive * len(train_idx)) * 4)) if train_style else 0
    negatives, neg_source = _negatives(run, negatives_path, max(n_neg, 64) if train_style else 0, cfg.seed)
    if not train_style:
        cfg = replace(cfg, style_loss=0.0)
    logger.info(
        "adapting %s: %d training articles, %d held out, %d style negatives", name, len(train_set),
        len(eval_idx), len(negatives) if negatives is not None else 0,
    )
    before = {k: v.detach().clone() for k, v in run.net.state_dict().items()}
    head, info = train_new_outlet(run.net, train_set, negatives, cfg)
    changed = [k for k, v in run.net.state_dict().items() if not torch.equal(v, before[k])]
    if changed:
        raise ModelError("adapting modified frozen base parameters: %s" % ", ".join(changed))
    grown = grow_network(run.net, head)
    gap = _check_grown(run.net, head, grown, train_set)
    if gap > 1e-4:
        raise ModelError("the grown network disagrees with the trained outlet head by %.3g" % gap)
    metrics: dict[str, Any] = {"train": info, "grown_network_max_logit_gap": gap}
    if eval_set is not None:
        metrics["eval"] = evaluate_new_outlet(run.net, head, eval_set, topics=topics)
        logger.info(
            "held-out %s: topic accuracy %.3f (shared head %.3f), style top-1 %.3f", name,
            metrics["eval"]["topic.accuracy"], metrics["eval"]["shared_head.accuracy"], metrics["eval"]["style.top1"],
        )
    adapt_info = {
        "base_run": str(Path(run_dir).resolve()),
        "publication": name,
        "data": str(Path(data_path).resolve()),
        "label_map": dict(label_map or {}),
        "n_train": len(train_set),
        "n_eval": len(eval_idx),
        "train_topic_counts": dict(Counter(examples[i].topic for i in train_idx).most_common()),
        "negatives": neg_source,
        "self_names": list(self_names),
        "frozen": ["embedding", "shared_encoder", "shared_topic_head", "bias_head", "every old outlet's private "
                   "channels, topic head and style weights"],
        "config": asdict(cfg),
        "metrics": metrics,
    }
    _write_run(Path(run_dir), out_dir, grown, encoder, run, name, adapt_info)
    seconds = time.perf_counter() - t0
    return AdaptResult(out_dir=out_dir, publication=name, n_train=len(train_set), n_eval=len(eval_idx), metrics=metrics,
                       seconds=seconds)


def _encoder_with_names(run: Run, name: str, self_names: Sequence[str]) -> TextEncoder:
    """The run's encoder, with the new outlet's self-names added to the masking table."""
    names = [n for n in (s.strip() for s in self_names) if n]
    if not names:
        return run.encoder
    config = run.encoder.config
    if config.get("masking") is None:
        raise ConfigError("this run does not mask outlet names, so --self-name cannot be used")
    masking = dict(config["masking"])
    outlets = {k: list(v) for k, v in masking["outlets"].items()}
    outlets[name] = names
    masking["outlets"] = outlets
    return TextEncoder(run.encoder.tokenizer, {**config, "masking": masking})


def _write_run(
    base_dir: Path, out_dir: Path, net: SharedPrivateNet, encoder: TextEncoder, run: Run, name: str,
    adapt_info: dict[str, Any],
) -> None:
    ckpt = read_checkpoint(base_dir / CHECKPOINT)
    labels = {k: list(v) for k, v in ckpt["labels"].items()}
    labels["publications"] = [*labels["publications"], name]
    cfg2: ModelConfig = net.cfg
    metrics = dict(ckpt.get("metrics", {}))
    metrics["adapt"] = adapt_info["metrics"]
    from datetime import UTC, datetime

    ckpt.update(
        model_config=cfg2.to_dict(),
        state_dict={k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        labels=labels,
        text_config=encoder.config,
        tokenizer_json=encoder.tokenizer.to_str(),
        metrics=metrics,
        adapt=adapt_info,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    save_torch_atomic(ckpt, out_dir / CHECKPOINT)
    encoder.save(out_dir / TOKENIZER_JSON)
    atomic_write_json(
        out_dir / CONFIG_JSON,
        {"format": ckpt["format"], "model_config": cfg2.to_dict(), "train_config": ckpt["train_config"], "labels": labels,
         "text_config": encoder.config, "data": ckpt.get("data", {}), "adapt": adapt_info},
    )
    atomic_write_json(out_dir / METRICS_JSON, metrics)
    del run
