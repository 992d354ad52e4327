"""The shared-private multitask model: network, losses, data, training and evaluation.

Imports torch; the CLI imports this package only inside command bodies. Public API::

    from newsmtl.model import load_run, train, evaluate_run, preset_config
    run = load_run("runs/base")        # Run: net (eval mode), encoder, labels, metrics, train_config
    cfg = preset_config("tiny", seed=1)
    train(Path("articles.jsonl.gz"), Path("runs/tiny"), cfg)
"""

from __future__ import annotations

from newsmtl.model._config import PRESETS, TrainConfig, load_train_config, preset_config
from newsmtl.model._data import (
    DataSplit,
    Example,
    default_data_path,
    load_examples,
    parse_field_overrides,
    select_publications,
    split_examples,
    subsample,
)
from newsmtl.model._evaluate import evaluate_run, report_markdown, write_report
from newsmtl.model._losses import LossWeights, dann_schedule, difference_loss, multitask_loss
from newsmtl.model._network import (
    GradientReversal,
    ModelConfig,
    NetworkOutput,
    OnnxInferenceWrapper,
    PrivateEncoders,
    SharedEncoder,
    SharedPrivateNet,
)
from newsmtl.model._pipeline import EncodedSet, PreparedData, encode_examples, prepare_data, run_forward
from newsmtl.model._run import RUN_FORMAT, Run, load_run
from newsmtl.model._train import NullReporter, TrainReporter, TrainResult, train

__all__ = [
    "PRESETS",
    "RUN_FORMAT",
    "DataSplit",
    "EncodedSet",
    "Example",
    "GradientReversal",
    "LossWeights",
    "ModelConfig",
    "NetworkOutput",
    "NullReporter",
    "OnnxInferenceWrapper",
    "PreparedData",
    "PrivateEncoders",
    "Run",
    "SharedEncoder",
    "SharedPrivateNet",
    "TrainConfig",
    "TrainReporter",
    "TrainResult",
    "dann_schedule",
    "default_data_path",
    "difference_loss",
    "encode_examples",
    "evaluate_run",
    "load_examples",
    "load_run",
    "load_train_config",
    "multitask_loss",
    "parse_field_overrides",
    "prepare_data",
    "preset_config",
    "report_markdown",
    "run_forward",
    "select_publications",
    "split_examples",
    "subsample",
    "train",
    "write_report",
]
