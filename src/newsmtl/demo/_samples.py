"""The demo's sample articles, shipped as package data (``newsmtl/demo/samples.jsonl``).

They were written for this project (no text from any dataset or outlet): 28 short articles in
the styles the model knows (wire dispatches, opinion columns, local news, features, reviews),
on every coarse topic, in US and UK spelling, 150-600 words. Some claim an outlet the model
has a private encoder for (``foxnews.com``, ``www.Reuters.com`` in raw form), some an outlet it
does not know, and some no outlet at all, so the table shows both topic heads at work.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from newsmtl._errors import DataError, InvalidArticleError
from newsmtl.schemas import Article, decode_article

__all__ = ["SAMPLES_RESOURCE", "load_samples", "read_samples_bytes"]

SAMPLES_RESOURCE = "samples.jsonl"


def read_samples_bytes() -> bytes:
    """The packaged samples file, byte for byte."""
    try:
        return resources.files("newsmtl.demo").joinpath(SAMPLES_RESOURCE).read_bytes()
    except (FileNotFoundError, OSError) as exc:
        raise DataError(
            "the demo samples (newsmtl/demo/%s) are missing from this install: %s" % (SAMPLES_RESOURCE, exc)
        ) from None


def load_samples(path: Path | None = None) -> list[Article]:
    """The articles of ``path`` (JSON Lines), or the packaged samples; every line must be valid."""
    if path is None:
        data, name = read_samples_bytes(), "newsmtl/demo/%s" % SAMPLES_RESOURCE
    else:
        try:
            data, name = path.read_bytes(), str(path)
        except OSError as exc:
            raise DataError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    articles: list[Article] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            articles.append(decode_article(line))
        except InvalidArticleError as exc:
            raise DataError("%s line %d is not a valid article: %s" % (name, number, exc.reason)) from None
    if not articles:
        raise DataError("%s holds no articles" % name)
    return articles
