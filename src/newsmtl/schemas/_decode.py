"""Turn raw message bytes into an :class:`Article`, or a precise :class:`InvalidArticleError`."""

from __future__ import annotations

import json

from pydantic import ValidationError

from newsmtl._errors import InvalidArticleError
from newsmtl.schemas._models import Article

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "decode_article", "describe_validation_error"]

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming every failing field and its problem, e.g. ``id: field required``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "<message>"
        parts.append("%s: %s" % (loc, err["msg"]))
    return "; ".join(parts)


def _classify(exc: ValidationError) -> str:
    types = {err["type"] for err in exc.errors(include_url=False)}
    if "json_invalid" in types:
        # Text that Python's json module accepts but pydantic's parser rejects, e.g. a lone
        # surrogate escape ("\ud800") that no UTF-8 string can hold.
        return "invalid_json"
    if "string_too_long" in types:
        return "oversize"
    if types & {"missing"}:
        return "missing_field"
    if any(t.endswith("_type") for t in types):
        return "wrong_type"
    return "schema"


def decode_article(value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Article:
    """Validate one message value.

    Raises :class:`InvalidArticleError` whose ``kind`` is one of ``empty``, ``oversize``,
    ``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``missing_field``, ``wrong_type`` or
    ``schema``, and whose reason names the field and the problem.
    """
    if value is None or len(value) == 0:
        raise InvalidArticleError("empty", "message value is empty (tombstone or empty payload)")
    if len(value) > max_bytes:
        raise InvalidArticleError(
            "oversize", "message is %d bytes, over the limit of %d bytes" % (len(value), max_bytes)
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArticleError(
            "invalid_utf8", "message is not valid UTF-8: %s at byte %d" % (exc.reason, exc.start)
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArticleError(
            "invalid_json", "message is not valid JSON: %s at line %d column %d" % (exc.msg, exc.lineno, exc.colno)
        ) from None
    except RecursionError:
        raise InvalidArticleError("invalid_json", "message JSON is nested too deeply") from None
    if not isinstance(obj, dict):
        raise InvalidArticleError(
            "not_an_object", "message must be a JSON object, got %s" % type(obj).__name__
        )
    try:
        # Re-validate from the JSON text: strict mode still accepts ISO-8601 strings for datetimes
        # in JSON input, which it would not from a Python dict.
        return Article.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise InvalidArticleError(_classify(exc), describe_validation_error(exc)) from None
