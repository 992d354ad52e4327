"""The wire contract: pydantic v2 models and their JSON Schemas. Torch-free."""

from __future__ import annotations

from newsmtl.schemas._decode import DEFAULT_MAX_MESSAGE_BYTES, decode_article, describe_validation_error
from newsmtl.schemas._jsonschema import WIRE_MODELS, json_schemas, write_json_schemas
from newsmtl.schemas._models import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    MAX_TITLE_CHARS,
    SCHEMA_VERSION,
    Article,
    ClassificationResult,
    DeadLetter,
    FileSource,
    KafkaSource,
    Source,
    StyleResult,
    TopicResult,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_ID_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TITLE_CHARS",
    "SCHEMA_VERSION",
    "WIRE_MODELS",
    "Article",
    "ClassificationResult",
    "DeadLetter",
    "FileSource",
    "KafkaSource",
    "Source",
    "StyleResult",
    "TopicResult",
    "decode_article",
    "describe_validation_error",
    "json_schemas",
    "write_json_schemas",
]
