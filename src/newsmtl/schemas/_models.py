"""Wire contract: the input article, the two results, the dead letter.

Every output model carries ``schema_version`` so that consumers can branch on it; the JSON
Schemas written by ``newsmtl schemas`` are named ``<model>.v<version>.schema.json``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MAX_ID_CHARS",
    "MAX_TEXT_CHARS",
    "MAX_TITLE_CHARS",
    "SCHEMA_VERSION",
    "Article",
    "ClassificationResult",
    "DeadLetter",
    "FileSource",
    "KafkaSource",
    "Source",
    "StyleResult",
    "TopicResult",
]

SCHEMA_VERSION: Final = 1  # Final: mypy reads it as Literal[1], the type of schema_version

MAX_ID_CHARS = 128
MAX_TITLE_CHARS = 2_000
# The corpus median is ~5,000 characters and its 99.9th percentile is far below 200,000; anything
# longer is a scrape error or an attack, and would only be truncated by the tokenizer anyway.
MAX_TEXT_CHARS = 200_000
MAX_URL_CHARS = 4_096
MAX_PUBLICATION_CHARS = 256

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
# No surrounding whitespace and no line breaks (ECMA-262 "." matches no line terminator).
_ID_PATTERN = r"^\S(.*\S)?$"


class Article(BaseModel):
    """One article to classify, as produced to the input topic (key = ``id``).

    Validation is strict (no type coercion: ``"id": 5`` is an error) and unknown fields are
    ignored so that producers can add fields without breaking the service.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, str_strip_whitespace=False)

    # The validators below give the friendly messages; json_schema_extra repeats their rules as
    # patterns so that the published JSON Schema rejects the same inputs.
    id: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_ID_CHARS,
            description="Stable article id.",
            json_schema_extra={"pattern": _ID_PATTERN},
        ),
    ]
    title: Annotated[str, Field(max_length=MAX_TITLE_CHARS, description="Headline; may be empty.")]
    text: Annotated[
        str,
        Field(min_length=1, max_length=MAX_TEXT_CHARS, description="Body text.", json_schema_extra={"pattern": r"\S"}),
    ]
    publication: Annotated[
        str | None,
        Field(
            None,
            max_length=MAX_PUBLICATION_CHARS,
            description="Outlet domain (e.g. 'foxnews.com'); unknown or absent uses the shared topic head.",
        ),
    ] = None
    url: Annotated[str | None, Field(None, max_length=MAX_URL_CHARS)] = None
    published_at: datetime | None = None
    language: Annotated[
        str | None,
        Field(
            None, max_length=35, description="BCP 47 tag, e.g. 'en'.", json_schema_extra={"pattern": _LANGUAGE.pattern}
        ),
    ] = None

    @field_validator("id")
    @classmethod
    def _id_is_printable(cls, value: str) -> str:
        if value.strip() != value or not value.isprintable():
            raise ValueError("id must be printable and have no surrounding whitespace")
        return value

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or only whitespace")
        return value

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str | None) -> str | None:
        if value is not None and not _LANGUAGE.match(value):
            raise ValueError("language must be a BCP 47 tag such as 'en' or 'en-GB'")
        return value


class KafkaSource(BaseModel):
    """Where a message came from in Kafka."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["kafka"] = "kafka"
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class FileSource(BaseModel):
    """Where a record came from in a replayed file (1-based line or row number)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["file"] = "file"
    path: str
    line: int = Field(ge=1)


Source = Annotated[KafkaSource | FileSource, Field(discriminator="kind")]


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    model_name: str
    model_version: str
    classified_at: datetime
    source: Source | None = None


class TopicResult(_Output):
    """Published to the topics topic (default ``news.topics``), key = article id."""

    topic: str = Field(description="The most probable topic label.")
    topic_scores: dict[str, float] = Field(description="Label -> probability; sums to 1.")
    topic_head: Literal["publication", "shared"] = Field(
        description="'publication' when the article's outlet has its own private encoder, else 'shared'."
    )
    publication: str | None = Field(None, description="The outlet the article claimed, normalized.")
    shared_share: float = Field(
        ge=0.0,
        le=1.0,
        description="Share of the topic decision that comes from shared (outlet-agnostic) features.",
    )
    bias: str | None = Field(None, description="Most probable political-bias label, if the model has one.")
    bias_scores: dict[str, float] | None = None


class StyleResult(_Output):
    """Published to the styles topic (default ``news.styles``), key = article id."""

    styles: dict[str, float] = Field(description="Modelled publication -> style score; sums to 1.")
    top_style: str = Field(description="The publication the article reads most like.")


class ClassificationResult(BaseModel):
    """Both results of one article; the value stored in Redis at ``<prefix>article:<id>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    id: str
    topic: TopicResult
    style: StyleResult


class DeadLetter(BaseModel):
    """Published to the DLQ topic (default ``news.articles.dlq``) for every unusable message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    original_base64: str = Field(description="The message value exactly as received, base64-encoded.")
    original_key_base64: str | None = None
    error_class: str = Field(description="Machine-readable kind: invalid_utf8, invalid_json, schema, ...")
    reason: str = Field(description="Human-readable reason naming the field and the problem.")
    source: Source | None = None
    failed_at: datetime
    service_version: str
