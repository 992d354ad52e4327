"""Publication (outlet) name normalisation, shared by training and serving."""

from __future__ import annotations

import re

__all__ = ["normalize_publication"]

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")
_WWW = re.compile(r"^www\d*\.")


def normalize_publication(name: str | None) -> str | None:
    """Canonical outlet key: lower-case host without scheme, ``www.``/``www1.``, port or path.

    ``"WWW.FoxNews.com"`` -> ``"foxnews.com"``; ``"https://www.cnn.com:443/politics"`` ->
    ``"cnn.com"``; ``None`` or a blank string -> ``None``. Sub-domains other than ``www`` are kept
    (``money.cnn.com`` stays): reducing hosts to registrable domains needs the public-suffix list,
    and the training data already carries reduced names.
    """
    if name is None:
        return None
    value = name.strip().lower()
    if not value:
        return None
    value = _SCHEME.sub("", value)
    value = value.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    value = value.rsplit("@", 1)[-1]  # user-info of a URL
    if value.count(":") == 1:  # host:port (bare IPv6 literals are left alone)
        value = value.split(":", 1)[0]
    value = _WWW.sub("", value).strip(".")
    return value or None
