"""The wire contract: decode_article on bad input, round trips, and the JSON Schema files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsmtl import InvalidArticleError
from newsmtl.cli import main
from newsmtl.schemas import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    SCHEMA_VERSION,
    WIRE_MODELS,
    Article,
    decode_article,
    json_schemas,
)

GOOD = {"id": "a-1", "title": "A headline", "text": "Some body text."}


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode("utf-8")


# (value, expected kind, text the reason must contain: the field, or "message" for the whole payload)
BAD_INPUTS = {
    "invalid_json": (b'{"id": "a-1", "title": ', "invalid_json", "message"),
    "trailing_garbage": (_json(GOOD) + b"}", "invalid_json", "message"),
    "utf8_bom": (b"\xef\xbb\xbf" + _json(GOOD), "invalid_json", "BOM"),
    "lone_surrogate_escape": (b'{"id": "a-1", "title": "\\ud800", "text": "x"}', "invalid_json", "message"),
    "deeply_nested": (
        b'{"id": "a", "title": "t", "text": "x", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        "invalid_json",
        "nested",
    ),
    "invalid_utf8": (b'{"id": "a-1", "title": "\xff\xfe", "text": "x"}', "invalid_utf8", "UTF-8"),
    "json_array": (_json([GOOD]), "not_an_object", "object"),
    "json_string": (b'"just a string"', "not_an_object", "object"),
    "json_null": (b"null", "not_an_object", "object"),
    "empty_payload": (b"", "empty", "empty"),
    "tombstone": (None, "empty", "empty"),
    "id_is_int": (_json({**GOOD, "id": 5}), "wrong_type", "id"),
    "id_is_bool": (_json({**GOOD, "id": True}), "wrong_type", "id"),
    "title_is_null": (_json({**GOOD, "title": None}), "wrong_type", "title"),
    "text_is_list": (_json({**GOOD, "text": ["a"]}), "wrong_type", "text"),
    "text_is_nan": (b'{"id": "a", "title": "t", "text": NaN}', "wrong_type", "text"),
    "publication_is_int": (_json({**GOOD, "publication": 3}), "wrong_type", "publication"),
    "published_at_is_int": (_json({**GOOD, "published_at": 1_700_000_000}), "wrong_type", "published_at"),
    "missing_id": (_json({"title": "t", "text": "x"}), "missing_field", "id"),
    "missing_title": (_json({"id": "a", "text": "x"}), "missing_field", "title"),
    "missing_text": (_json({"id": "a", "title": "t"}), "missing_field", "text"),
    "empty_text": (_json({**GOOD, "text": ""}), "schema", "text"),
    "blank_text": (_json({**GOOD, "text": " \n\t "}), "schema", "text"),
    "empty_id": (_json({**GOOD, "id": ""}), "schema", "id"),
    "blank_id": (_json({**GOOD, "id": "   "}), "schema", "id"),
    "id_with_newline": (_json({**GOOD, "id": "a\nb"}), "schema", "id"),
    "bad_language_tag": (_json({**GOOD, "language": "english!"}), "schema", "language"),
    "bad_published_at": (_json({**GOOD, "published_at": "yesterday"}), "schema", "published_at"),
    "id_too_long": (_json({**GOOD, "id": "x" * (MAX_ID_CHARS + 1)}), "oversize", "id"),
    "message_over_limit": (_json({**GOOD, "text": "x" * 20_000_000}), "oversize", "bytes"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_names_its_kind_and_field(name: str) -> None:
    value, kind, needle = BAD_INPUTS[name]
    with pytest.raises(InvalidArticleError) as info:
        decode_article(value)
    assert info.value.kind == kind
    assert needle in info.value.reason
    assert str(info.value) == info.value.reason
    assert info.value.retriable is False


def test_20_mb_text_is_oversize_even_under_a_raised_byte_limit() -> None:
    value = _json({**GOOD, "text": "x" * 20_000_000})
    with pytest.raises(InvalidArticleError) as at_default:
        decode_article(value)
    assert at_default.value.kind == "oversize"
    assert str(DEFAULT_MAX_MESSAGE_BYTES) in at_default.value.reason

    with pytest.raises(InvalidArticleError) as raised:
        decode_article(value, max_bytes=64 * 1024 * 1024)
    assert raised.value.kind == "oversize"
    assert raised.value.reason.startswith("text:")
    assert str(MAX_TEXT_CHARS) in raised.value.reason


def test_several_problems_are_all_named() -> None:
    with pytest.raises(InvalidArticleError) as info:
        decode_article(_json({"id": 7, "text": ""}))
    for field in ("id", "title", "text"):
        assert field in info.value.reason


def test_unknown_fields_are_ignored() -> None:
    article = decode_article(_json({**GOOD, "extra": 1, "nested": {"deep": [1, 2]}, "tags": ["x"]}))
    assert article == Article(**GOOD)
    assert not hasattr(article, "extra")


def test_optional_fields_are_parsed() -> None:
    article = decode_article(
        _json(
            {
                **GOOD,
                "publication": "www.foxnews.com",
                "language": "en-GB",
                "published_at": "2024-01-02T03:04:05Z",
                "url": "https://example.org/a",
            }
        )
    )
    assert article.published_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert article.language == "en-GB"
    assert article.publication == "www.foxnews.com"


_ID_CHARS = st.characters(categories=("L", "N", "P", "S"))
_TEXT_CHARS = st.characters(exclude_categories=("Cs",))
_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])

_ARTICLE_VALIDATOR = jsonschema.Draft202012Validator(json_schemas()["article"])

articles = st.builds(
    Article,
    id=st.text(_ID_CHARS, min_size=1, max_size=MAX_ID_CHARS).filter(
        lambda s: s.isprintable() and s.strip() == s
    ),
    title=st.text(_TEXT_CHARS, max_size=200),
    text=st.text(_TEXT_CHARS, min_size=1, max_size=2_000).filter(lambda s: s.strip() != ""),
    publication=st.none() | st.text(_TEXT_CHARS, max_size=60),
    url=st.none() | st.text(_TEXT_CHARS, max_size=100),
    published_at=st.none()
    | st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1))
    | st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=_OFFSETS),
    language=st.none() | st.from_regex(r"\A[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,2}\Z"),
)


@settings(max_examples=150, deadline=None)
@given(articles)
def test_any_valid_article_round_trips_through_json(article: Article) -> None:
    decoded = decode_article(article.model_dump_json().encode("utf-8"))
    assert decoded == article
    assert (decoded.published_at is None) == (article.published_at is None)
    if article.published_at is not None and decoded.published_at is not None:
        assert (decoded.published_at.tzinfo is None) == (article.published_at.tzinfo is None)
    # Also through the plain json module, the way a producer in another language would write it.
    as_json = article.model_dump(mode="json")
    assert decode_article(json.dumps(as_json).encode("utf-8")) == article
    # And the published JSON Schema accepts it.
    assert list(_ARTICLE_VALIDATOR.iter_errors(as_json)) == []


def _write_schemas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    out = tmp_path / "schemas"
    assert main(["schemas", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    files = sorted(out.iterdir())
    assert sorted(Path(p) for p in printed) == files
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in files}


def test_schemas_command_writes_one_valid_schema_per_wire_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas = _write_schemas(tmp_path, capsys)
    assert sorted(schemas) == sorted("%s.v%d.schema.json" % (name, SCHEMA_VERSION) for name in WIRE_MODELS)
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert str(schema["$id"]).endswith("v%d" % SCHEMA_VERSION), name

    article = schemas["article.v%d.schema.json" % SCHEMA_VERSION]
    assert {"id", "title", "text"} <= set(article["required"])  # type: ignore[arg-type]


def test_article_schema_agrees_with_the_decoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = _write_schemas(tmp_path, capsys)["article.v%d.schema.json" % SCHEMA_VERSION]
    validator = jsonschema.Draft202012Validator(schema)
    good = {**GOOD, "language": "en", "publication": "cnn.com"}
    assert list(validator.iter_errors(good)) == []
    decode_article(_json(good))
    bad_inputs = [
        {**GOOD, "id": 5},
        {"title": "t", "text": "x"},
        {**GOOD, "text": ""},
        {**GOOD, "text": " \n "},
        {**GOOD, "id": " padded"},
        {**GOOD, "id": "two\nlines"},
        {**GOOD, "id": "x" * (MAX_ID_CHARS + 1)},
        {**GOOD, "language": "english!"},
        {**GOOD, "published_at": 5},
    ]
    for bad in bad_inputs:
        assert list(validator.iter_errors(bad)), bad
        with pytest.raises(InvalidArticleError):
            decode_article(_json(bad))


def test_result_schemas_validate_real_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.foundation.test_redis import _topic_result

    schemas = _write_schemas(tmp_path, capsys)
    result = json.loads(_topic_result("x-1").model_dump_json())
    validator = jsonschema.Draft202012Validator(schemas["topic_result.v%d.schema.json" % SCHEMA_VERSION])
    assert list(validator.iter_errors(result)) == []
    assert list(validator.iter_errors({**result, "shared_share": 1.5}))
