"""Batch replay: re-score history through the service's Predictor and sinks. Torch-free.

Public API::

    from newsmtl.replay import FileReader, KafkaRangeReader, RangeSpec, ReplayOptions, run_replay

    reader = FileReader(Path("articles.jsonl.gz"), max_bytes=1_048_576)
    summary = asyncio.run(run_replay(reader, ReplayOptions(settings=load_settings(), output=Path("out.jsonl"))))

The command line is ``newsmtl replay`` (see ``newsmtl replay --help``).
"""

from __future__ import annotations

from newsmtl.replay._inputs import (
    ARTICLE_FIELDS,
    FileReader,
    InputFormat,
    RawRecord,
    RecordReader,
    parse_field_mapping,
)
from newsmtl.replay._kafka_input import (
    KafkaRangeReader,
    PartitionRange,
    RangeSpec,
    parse_partition_range,
    parse_timestamp,
)
from newsmtl.replay._output import CHECKPOINT_FORMAT, AppendFile, Checkpoint, stable_json
from newsmtl.replay._runner import EPOCH, ClassifiedAt, ReplayOptions, ReplaySummary, run_replay

__all__ = [
    "ARTICLE_FIELDS",
    "CHECKPOINT_FORMAT",
    "EPOCH",
    "AppendFile",
    "Checkpoint",
    "ClassifiedAt",
    "FileReader",
    "InputFormat",
    "KafkaRangeReader",
    "PartitionRange",
    "RangeSpec",
    "RawRecord",
    "RecordReader",
    "ReplayOptions",
    "ReplaySummary",
    "parse_field_mapping",
    "parse_partition_range",
    "parse_timestamp",
    "run_replay",
    "stable_json",
]
