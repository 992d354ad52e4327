"""Training configuration and its presets (torch-free).

A run is fully described by one :class:`TrainConfig`; it is stored in the checkpoint and in
``config.json``, so a run can be reproduced (and its split recomputed) from it and the data.

Presets: ``tiny`` (tests: 3,000 articles, 6 modelled outlets, trains in about 20 seconds on
one core; no embedding pretraining), ``base`` (= ``full``: the full shared-private adversarial
model on the whole pool, its token embeddings initialised by skip-gram pretraining on the full
training articles and then fine-tuned at 0.2x the learning rate), ``wide`` (base with twice the
shared CNN features), ``topic-first`` (base with half the style and bias loss weights) and the
ablations ``single-task`` (topic only), ``fully-shared`` (no private encoders, no adversary) and
``shared-private`` (private encoders, but no adversarial and no difference loss).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from newsmtl._errors import ConfigError

__all__ = ["PRESETS", "TrainConfig", "load_train_config", "preset_config"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything a training run depends on besides the data file itself."""

    preset: str = "base"
    seed: int = 13

    # -- data ------------------------------------------------------------------------------
    label_field: str = "topic_coarse"
    fields: dict[str, str] = field(default_factory=dict)  # logical -> column overrides
    max_articles: int | None = None  # seeded random subset of the file (before splitting)
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    min_publication_articles: int = 300  # training articles an outlet needs to be modelled
    max_publications: int | None = None
    publications: list[str] | None = None  # explicit modelled outlets (overrides the threshold)
    bias_head: bool = True  # train the bias head when the data has bias labels

    # -- text ------------------------------------------------------------------------------
    vocab_size: int = 16_000
    max_length: int = 256
    title_max_tokens: int = 32
    mask_outlets: bool = True
    masking: dict[str, Any] | None = None  # OutletMasker.from_config override table

    # Initialise the token embeddings with skip-gram vectors trained on the training split's
    # full articles (newsmtl.model._pretrain): text beyond the lead the classifier reads.
    pretrain_embeddings: bool = True
    pretrain_epochs: int = 3
    pretrain_window: int = 5

    # -- network (see ModelConfig) ---------------------------------------------------------
    embed_dim: int = 128
    shared_dim: int = 192  # CNN features (64 per kernel width)
    shared_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    private_dim: int = 16
    private_kernel_size: int = 3
    discriminator_hidden: int = 128
    dropout: float = 0.3
    use_private: bool = True
    per_publication_topic_heads: bool = True
    residual_topic_heads: bool = True
    pooling: Literal["max", "max_mean"] = "max"
    bag_of_words: bool = True
    bigram_buckets: int = 0  # hashed-bigram embeddings off: 131,072 x 64 would not fit a 10 MB bundle
    bigram_dim: int = 64
    private_embedding_grad_scale: float = 1.0  # see ModelConfig

    # -- optimisation ----------------------------------------------------------------------
    epochs: int = 4
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 6e-3
    # Learning rate of the token embeddings relative to ``lr``. Below 1 keeps pretrained
    # embeddings closer to where pretraining put them (AdamW moves every coordinate of a frequent
    # token by up to ``lr`` per step, far more than their 0.1 scale over an epoch).
    embedding_lr_scale: float = 0.2
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    schedule: Literal["cosine", "linear"] = "cosine"
    grad_clip: float = 1.0
    patience: int = 2  # epochs without dev topic macro-F1 improvement before stopping
    # Topic class weights from the training split, normalised to mean 1: "none", "sqrt_inverse"
    # ((n_max / n_class) ** 0.5) or "inverse" (n_max / n_class, scikit-learn's "balanced" up to
    # scale). The coarse topics are skewed (politics is 42%), and macro-F1 weighs every topic
    # equally, so re-weighting trades a little accuracy for a lot of macro-F1.
    topic_class_weighting: Literal["none", "sqrt_inverse", "inverse"] = "sqrt_inverse"

    # -- loss weights (ASP-MTL: adversarial 0.05, difference 0.01) --------------------------
    loss_topic: float = 1.0
    loss_shared_topic: float = 0.5
    loss_style: float = 1.0
    loss_bias: float = 0.5
    loss_adversarial: float = 0.05
    loss_difference: float = 0.01
    adversarial_max_strength: float = 1.0  # GRL strength = max * DANN schedule(progress)
    adversarial_gamma: float = 10.0

    # -- runtime ---------------------------------------------------------------------------
    threads: int = 0  # 0 = auto: the CPUs this process may use, fewer on a loaded machine
    amp: bool = True  # mixed precision, CUDA only
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append("epochs must be >= 1")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            problems.append("batch sizes must be >= 1")
        if self.lr <= 0:
            problems.append("lr must be > 0")
        if not 0 < self.embedding_lr_scale <= 10:
            problems.append("embedding_lr_scale must be in (0, 10]")
        if not 0 <= self.warmup_fraction < 1:
            problems.append("warmup_fraction must be in [0, 1)")
        if self.schedule not in ("cosine", "linear"):
            problems.append("schedule must be 'cosine' or 'linear'")
        if self.topic_class_weighting not in ("none", "sqrt_inverse", "inverse"):
            problems.append("topic_class_weighting must be 'none', 'sqrt_inverse' or 'inverse'")
        if self.min_publication_articles < 1:
            problems.append("min_publication_articles must be >= 1")
        if self.max_articles is not None and self.max_articles < 10:
            problems.append("max_articles must be >= 10")
        if self.pretrain_epochs < 1 or self.pretrain_window < 1:
            problems.append("pretrain_epochs and pretrain_window must be >= 1")
        if self.patience < 1:
            problems.append("patience must be >= 1")
        for name in ("loss_topic", "loss_shared_topic", "loss_style", "loss_bias", "loss_adversarial", "loss_difference"):
            if getattr(self, name) < 0:
                problems.append("%s must be >= 0" % name)
        if self.loss_topic <= 0 and self.loss_shared_topic <= 0:
            problems.append("at least one topic loss weight must be > 0")
        if problems:
            raise ConfigError("invalid train config: %s" % "; ".join(problems))

    @property
    def trains_style(self) -> bool:
        return self.loss_style > 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["shared_kernel_sizes"] = list(self.shared_kernel_sizes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("unknown train config keys: %s" % ", ".join(unknown))
        values = dict(data)
        if "shared_kernel_sizes" in values:
            values["shared_kernel_sizes"] = tuple(int(k) for k in values["shared_kernel_sizes"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError("invalid train config: %s" % exc) from None

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> TrainConfig:
        """A run's stored config. Keys added after the run was trained take the value that
        describes what that run actually did (e.g. no embedding pretraining), not today's default."""
        return cls.from_dict({**_BEFORE_FIELD_EXISTED, **data})

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


# What a run trained before a field existed did, for TrainConfig.from_stored.
_BEFORE_FIELD_EXISTED: dict[str, Any] = {
    "pretrain_embeddings": False,
    "embedding_lr_scale": 1.0,
    "private_embedding_grad_scale": 1.0,
}

_BASE: dict[str, Any] = {}
_SINGLE_TASK: dict[str, Any] = {
    "use_private": False,
    "per_publication_topic_heads": False,
    "bias_head": False,
    "loss_shared_topic": 0.0,  # the topic term already is the shared head's
    "loss_style": 0.0,
    "loss_bias": 0.0,
    "loss_adversarial": 0.0,
    "loss_difference": 0.0,
}
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "max_articles": 3_000,
        "min_publication_articles": 60,
        "max_publications": 6,  # the 6 biggest outlets of 3,000 random articles
        "vocab_size": 4_000,
        "max_length": 128,
        "title_max_tokens": 24,
        "embed_dim": 48,
        "shared_dim": 96,
        "bigram_buckets": 4_096,
        "bigram_dim": 16,
        "private_dim": 8,
        "discriminator_hidden": 32,
        "dropout": 0.1,
        "epochs": 5,
        "patience": 5,
        "batch_size": 32,
        "lr": 1e-2,
        "warmup_fraction": 0.1,
        # No pretraining (it would add ~35 s to a 20 s run); the embeddings learn at full rate.
        "pretrain_embeddings": False,
        "embedding_lr_scale": 1.0,
    },
    "base": _BASE,
    "full": _BASE,
    # Twice the shared CNN features: the best dev macro-F1 of the 10k-article sweeps (0.61 against
    # 0.57 for base; adding hashed bigrams on top gave 0.60). On the full pool it does not beat
    # base (test topic macro-F1 0.643 vs 0.649, docs/ablations.md), so it stays an option.
    "wide": {"shared_dim": 384},
    # Half the style and bias loss weights: less pull of the auxiliary tasks on the shared
    # embedding and features. Over seeds 13 and 14: dev topic macro-F1 +0.9 and test +0.3 over
    # base (within run-to-run noise on test), for style top-1 -1.3 and bias macro-F1 -2.5 points
    # (docs/ablations.md). The product's edge is style and bias, so it stays an option.
    "topic-first": {"loss_style": 0.5, "loss_bias": 0.25},
    "single-task": _SINGLE_TASK,
    "fully-shared": {"use_private": False, "loss_adversarial": 0.0, "loss_difference": 0.0},
    "shared-private": {"loss_adversarial": 0.0, "loss_difference": 0.0},
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError("unknown preset %r (choose from %s)" % (name, ", ".join(PRESETS)))
    return TrainConfig.from_dict({**PRESETS[name], "preset": name, **overrides})


def load_train_config(path: Path | None, *, preset: str | None = None, **overrides: Any) -> TrainConfig:
    """Preset (from ``preset``, else the file's ``preset`` key, else ``base``), updated by the
    JSON/TOML file, updated by ``overrides`` whose value is not None."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            raw = Path(path).read_bytes()
            data = tomllib.loads(raw.decode("utf-8")) if path.suffix == ".toml" else json.loads(raw)
        except (OSError, ValueError) as exc:
            raise ConfigError("cannot read train config %s: %s" % (path, exc)) from None
        if not isinstance(data, dict):
            raise ConfigError("train config %s must be a JSON/TOML object" % path)
    name = preset or data.pop("preset", None) or "base"
    data.pop("preset", None)
    if name not in PRESETS:
        raise ConfigError("unknown preset %r (choose from %s)" % (name, ", ".join(PRESETS)))
    merged = {**PRESETS[name], **data, **{k: v for k, v in overrides.items() if v is not None}, "preset": name}
    return TrainConfig.from_dict(merged)
