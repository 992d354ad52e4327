"""JSON Schema files for the wire contract."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from newsmtl.schemas._models import (
    SCHEMA_VERSION,
    Article,
    ClassificationResult,
    DeadLetter,
    StyleResult,
    TopicResult,
)

__all__ = ["WIRE_MODELS", "json_schemas", "write_json_schemas"]

WIRE_MODELS: dict[str, type[BaseModel]] = {
    "article": Article,
    "topic_result": TopicResult,
    "style_result": StyleResult,
    "classification_result": ClassificationResult,
    "dead_letter": DeadLetter,
}


def json_schemas() -> dict[str, dict[str, object]]:
    """Name -> JSON Schema (draft 2020-12) of every wire model."""
    out: dict[str, dict[str, object]] = {}
    for name, model in WIRE_MODELS.items():
        schema = model.model_json_schema(mode="validation" if model is Article else "serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = "urn:newsmtl:%s:v%d" % (name, SCHEMA_VERSION)
        out[name] = schema
    return out


def write_json_schemas(out_dir: Path) -> list[Path]:
    """Write ``<name>.v<version>.schema.json`` for every wire model; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = out_dir / ("%s.v%d.schema.json" % (name, SCHEMA_VERSION))
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
