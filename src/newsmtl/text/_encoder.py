"""Tokenizer training and the article -> token ids pipeline, identical in training and serving.

Pipeline of one article (``TextEncoder.encode_batch``)::

    title, body ──strip special-token look-alikes──> cut body at max_length * body_chars_per_token
        ──OutletMasker──> "[OUTLET]" for outlet self-names
        ──tokenizer (NFKC + lower-case, byte-level BPE), batched──> title ids, body ids
        ──> title[:title_max_tokens] + [SEP] + body[:max_length - len(title part) - 1]

Truncation strategy. Articles are long (median ~800 words, ~1,100 tokens) and a CNN over every
token of every article does not fit a CPU training budget, so each article is cut to
``max_length`` tokens: the headline (at most ``title_max_tokens``), a ``[SEP]``, then the *first*
tokens of the body. News is written as an inverted pyramid: the headline and lead paragraphs
state what the story is about (topic), and the lead is where house style is most concentrated
(datelines, attribution formulas, sentence length, the outlet's framing), while the tail is
boilerplate, related links and subscription plugs. Head-only truncation is also the standard
strong choice for long-document classification (Sun et al. 2019, "How to Fine-Tune BERT for Text
Classification?": head-only beat tail-only and was within noise of head+tail on IMDb). The body
is first cut by *characters* (``max_length * body_chars_per_token``, at a word boundary) so that
neither masking nor the tokenizer has to process 10,000-character bodies only to throw most
tokens away; lower-cased English byte-level BPE averages ~4.5 characters per token, so a budget
of 6 characters per token (1,536 characters at ``max_length`` 256) almost always leaves the token
cut, not the character cut, in charge; either way the cut is deterministic and identical in
training and serving.

The tokenizer is a byte-level BPE (no unknown tokens, lossless decode of the normalised text)
with an NFKC + lower-case normaliser, trained on the training split only. ``[OUTLET]`` is a
special token so the mask survives normalisation as one id.

This module never imports torch: the torch-free Predictor uses it as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from newsmtl._errors import ConfigError, ModelError
from newsmtl.text._masking import OUTLET_TOKEN, OutletMasker

__all__ = [
    "PAD_TOKEN",
    "SEP_TOKEN",
    "SPECIAL_TOKENS",
    "TEXT_FORMAT",
    "UNK_TOKEN",
    "TextEncoder",
    "default_text_config",
]

TEXT_FORMAT = "newsmtl-text/1"
PAD_TOKEN = "[PAD]"  # noqa: S105 - a token, not a password
UNK_TOKEN = "[UNK]"  # noqa: S105
SEP_TOKEN = "[SEP]"  # noqa: S105
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, SEP_TOKEN, OUTLET_TOKEN)  # ids 0..3 in a trained tokenizer
# Raw input must not smuggle in the structural tokens (a literal "[PAD]" in a body would become
# the padding id); "[OUTLET]" is allowed, it means what the masker means by it.
_FORBIDDEN_LITERALS = (PAD_TOKEN, UNK_TOKEN, SEP_TOKEN)


def default_text_config(
    *, max_length: int = 256, title_max_tokens: int = 32, body_chars_per_token: int = 6,
    masking: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete, validated text config; ``masking=None`` means the default outlet table."""
    masker = OutletMasker.from_config(None) if masking is None else OutletMasker.from_dict(masking)
    return _validate_config(
        {
            "format": TEXT_FORMAT,
            "max_length": max_length,
            "title_max_tokens": title_max_tokens,
            "body_chars_per_token": body_chars_per_token,
            "masking": masker.to_dict(),
        }
    )


def _validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    cfg = dict(config)
    if cfg.get("format") != TEXT_FORMAT:
        raise ConfigError("unsupported text config format %r (expected %r)" % (cfg.get("format"), TEXT_FORMAT))
    for key in ("max_length", "title_max_tokens", "body_chars_per_token"):
        if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool) or cfg[key] < 1:
            raise ConfigError("text config %s must be a positive integer, got %r" % (key, cfg.get(key)))
    if cfg["max_length"] < 8:
        raise ConfigError("text config max_length must be at least 8")
    if cfg["title_max_tokens"] >= cfg["max_length"] - 1:
        raise ConfigError("text config title_max_tokens must leave room for the body")
    if cfg.get("masking") is not None and not isinstance(cfg["masking"], Mapping):
        raise ConfigError("text config masking must be a masking table or null")
    return cfg


def _cut(text: str, limit: int) -> str:
    """The first ``limit`` characters of ``text``, ending at a word boundary when one is near."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    space = head.rfind(" ", max(0, limit - 40))
    return head[:space] if space > 0 else head


class TextEncoder:
    """Masking + truncation + a ``tokenizers.Tokenizer``; see the module docstring."""

    def __init__(self, tokenizer: Tokenizer, config: Mapping[str, Any]) -> None:
        self._config = _validate_config(config)
        self.tokenizer = tokenizer
        masking = self._config.get("masking")
        self.masker = OutletMasker.from_dict(masking) if masking is not None else OutletMasker.disabled()
        self.max_length: int = self._config["max_length"]
        self.title_max_tokens: int = self._config["title_max_tokens"]
        self._body_chars: int = self.max_length * self._config["body_chars_per_token"]
        ids = {tok: tokenizer.token_to_id(tok) for tok in (PAD_TOKEN, SEP_TOKEN, self.masker.token)}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise ModelError("tokenizer lacks the special tokens %s" % ", ".join(missing))
        self.pad_id: int = ids[PAD_TOKEN]  # type: ignore[assignment]
        self.sep_id: int = ids[SEP_TOKEN]  # type: ignore[assignment]
        self.outlet_id: int = ids[self.masker.token]  # type: ignore[assignment]
        tokenizer.no_padding()
        tokenizer.no_truncation()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, tokenizer_json: Path, config: Mapping[str, Any]) -> TextEncoder:
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception subclasses
            raise ModelError("cannot load tokenizer %s: %s" % (tokenizer_json, exc)) from None
        return cls(tokenizer, config)

    @classmethod
    def train(
        cls, titles: Sequence[str], texts: Sequence[str], *, vocab_size: int, config: Mapping[str, Any],
        min_frequency: int = 2,
    ) -> TextEncoder:
        """Train a byte-level BPE on exactly the text the model will see (masked and cut)."""
        if len(titles) != len(texts):
            raise ValueError("titles and texts differ in length")
        if vocab_size < 300:
            raise ConfigError("vocab_size must be at least 300 (256 byte symbols + specials)")
        cfg = _validate_config(config)
        tokenizer = Tokenizer(models.BPE())
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        # An encoder with an empty vocabulary would fail on the special-token lookup, so the
        # preparation helpers are used through a throwaway instance only after training.
        masking = cfg.get("masking")
        masker = OutletMasker.from_dict(masking) if masking is not None else OutletMasker.disabled()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(dict.fromkeys([*SPECIAL_TOKENS, masker.token])),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        body_chars = cfg["max_length"] * cfg["body_chars_per_token"]

        def corpus() -> Iterator[str]:
            for title, text in zip(titles, texts, strict=True):
                yield masker.mask(_sanitize(title))
                yield masker.mask(_cut(_sanitize(text), body_chars))

        tokenizer.train_from_iterator(corpus(), trainer=trainer, length=2 * len(titles))
        return cls(tokenizer, cfg)

    # -- properties -----------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable config; with ``tokenizer.json`` it fully rebuilds this encoder."""
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self._config.items()}

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def save(self, tokenizer_json: Path) -> None:
        self.tokenizer.save(str(tokenizer_json))

    # -- encoding -------------------------------------------------------------------------
    def prepare(
        self, titles: Iterable[str], texts: Iterable[str], *, cut: bool = True
    ) -> tuple[list[str], list[str]]:
        """Sanitised, masked (title, body) strings before tokenization; bodies cut unless ``cut=False``."""
        limit = self._body_chars if cut else None
        masked_titles = [self.masker.mask(_sanitize(t or "")) for t in titles]
        bodies = [
            self.masker.mask(_sanitize(t or "") if limit is None else _cut(_sanitize(t or ""), limit)) for t in texts
        ]
        if len(masked_titles) != len(bodies):
            raise ValueError("titles and texts differ in length")
        return masked_titles, bodies

    def encode_batch(self, titles: Sequence[str], texts: Sequence[str]) -> list[list[int]]:
        """Token ids per article: title + [SEP] + lead of the body, at most ``max_length``.

        Never empty (the [SEP] is always there), so every article has at least one real token.
        """
        if not titles and not texts:
            return []
        prepared_titles, bodies = self.prepare(titles, texts)
        title_enc = self.tokenizer.encode_batch(prepared_titles, add_special_tokens=False)
        body_enc = self.tokenizer.encode_batch(bodies, add_special_tokens=False)
        out: list[list[int]] = []
        for t, b in zip(title_enc, body_enc, strict=True):
            head = t.ids[: self.title_max_tokens]
            head.append(self.sep_id)
            head.extend(b.ids[: self.max_length - len(head)])
            out.append(head)
        return out

    def encode_full_batch(self, titles: Sequence[str], texts: Sequence[str]) -> list[list[int]]:
        """Token ids of the *whole* article (title + [SEP] + every body token), masked like
        :meth:`encode_batch` but never cut: the corpus for embedding pretraining."""
        masked_titles, bodies = self.prepare(titles, texts, cut=False)
        title_enc = self.tokenizer.encode_batch(masked_titles, add_special_tokens=False)
        body_enc = self.tokenizer.encode_batch(bodies, add_special_tokens=False)
        return [[*t.ids, self.sep_id, *b.ids] for t, b in zip(title_enc, body_enc, strict=True)]

    def pad(
        self, batch: Sequence[Sequence[int]], *, length: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Right-pad to ``length`` (default: the longest sequence): (input_ids, attention_mask) [B,T]."""
        width = length if length is not None else max((len(s) for s in batch), default=1)
        ids = np.full((len(batch), max(width, 1)), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), max(width, 1)), dtype=np.int64)
        for row, seq in enumerate(batch):
            seq = seq[:width]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))


def _sanitize(text: str) -> str:
    for literal in _FORBIDDEN_LITERALS:
        if literal in text:
            text = text.replace(literal, " ")
    return text
