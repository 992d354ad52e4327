"""Torch-free text preprocessing shared by training (``newsmtl.model``) and serving.

Public API::

    normalize_publication("WWW.FoxNews.com")  # -> "foxnews.com"
    masker = OutletMasker.default()           # outlet self-names -> "[OUTLET]"
    encoder = TextEncoder.load(Path("tokenizer.json"), config)
    ids = encoder.encode_batch(titles, texts)  # title + [SEP] + body lead, <= max_length
"""

from __future__ import annotations

from newsmtl.text._encoder import (
    PAD_TOKEN,
    SEP_TOKEN,
    SPECIAL_TOKENS,
    TEXT_FORMAT,
    UNK_TOKEN,
    TextEncoder,
    default_text_config,
)
from newsmtl.text._masking import DEFAULT_OUTLET_NAMES, OUTLET_TOKEN, OutletMasker
from newsmtl.text._publication import normalize_publication

__all__ = [
    "DEFAULT_OUTLET_NAMES",
    "OUTLET_TOKEN",
    "PAD_TOKEN",
    "SEP_TOKEN",
    "SPECIAL_TOKENS",
    "TEXT_FORMAT",
    "UNK_TOKEN",
    "OutletMasker",
    "TextEncoder",
    "default_text_config",
    "normalize_publication",
]
