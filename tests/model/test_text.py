"""newsmtl.text: publication normalisation, outlet masking, tokenizer and TextEncoder."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from newsmtl._errors import ConfigError
from newsmtl.text import (
    DEFAULT_OUTLET_NAMES,
    OutletMasker,
    TextEncoder,
    default_text_config,
    normalize_publication,
)

BIG_OUTLETS = [
    "foxnews.com", "cnn.com", "washingtontimes.com", "politico.com", "npr.org", "usatoday.com", "nytimes.com",
    "vox.com", "townhall.com", "thehill.com", "csmonitor.com", "nationalreview.com", "reuters.com", "bbc.com",
    "newsmax.com", "salon.com", "theguardian.com", "reason.com", "cbn.com", "breitbart.com", "apnews.com",
    "spectator.org", "abcnews.go.com", "wsj.com", "dailycaller.com",
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("WWW.FoxNews.com", "foxnews.com"),
        ("https://www.cnn.com:443/politics/x.html?a=1", "cnn.com"),
        ("http://www1.reuters.com", "reuters.com"),
        ("money.cnn.com", "money.cnn.com"),
        ("  nytimes.com/ ", "nytimes.com"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_normalize_publication(raw: str | None, expected: str | None) -> None:
    assert normalize_publication(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("WASHINGTON (Reuters) - Lawmakers met.", "WASHINGTON ([OUTLET]) - Lawmakers met."),
        ("NEW YORK (AP) — Stocks fell.", "NEW YORK [OUTLET] — Stocks fell."),
        ("The Associated Press reported it.", "[OUTLET] reported it."),
        ("He told Fox News on Sunday", "He told [OUTLET] on Sunday"),
        ("CNN's anchor asked", "[OUTLET]'s anchor asked"),
        ("said NPR and Breitbart News", "said [OUTLET] and [OUTLET]"),
        ("a story in The New York Times today", "a story in [OUTLET] today"),
        ("USA TODAY Network reporters", "[OUTLET] reporters"),
    ],
)
def test_default_masker_masks_outlet_self_names(text: str, expected: str) -> None:
    assert OutletMasker.default().mask(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a map of the CNNs of the world",  # no word boundary after the name
        "the snap election",  # 'ap' inside a word, and lower case
        "a reasonable salon owner in Voxhall",  # Reason, Salon and Vox only as capitalised words
        "the hill behind the house",
    ],
)
def test_default_masker_leaves_ordinary_words(text: str) -> None:
    assert OutletMasker.default().mask(text) == text


def test_default_table_covers_the_big_outlets() -> None:
    for outlet in BIG_OUTLETS:
        assert DEFAULT_OUTLET_NAMES[outlet], outlet


def test_masker_override_per_outlet_and_round_trip(tmp_path: Path) -> None:
    config = {"outlets": {"cnn.com": [], "example.org": ["Example Daily"]}, "token": "<O>"}
    path = tmp_path / "mask.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    masker = OutletMasker.from_json_file(path)
    assert masker.mask("CNN and Example Daily and Reuters") == "CNN and <O> and <O>"
    restored = OutletMasker.from_dict(json.loads(json.dumps(masker.to_dict())))
    assert restored == masker
    assert restored.mask("Example Daily, CNN") == "<O>, CNN"

    only = OutletMasker.from_config({"outlets": {"x.com": ["X News"]}, "replace_defaults": True})
    assert only.mask("Reuters and X News") == "Reuters and [OUTLET]"


@pytest.mark.parametrize(
    "bad", [{"outlets": {"cnn.com": "CNN"}}, {"outlet": {}}, {"outlets": ["CNN"]}, {"token": ""}]
)
def test_masker_rejects_bad_config(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        OutletMasker.from_config(bad)


TITLES = [
    "Senate passes the budget bill", "Storm hits the coast", "Reuters: markets rally",
    "Court rules on immigration", "New vaccine trial results",
] * 8
BODIES = [
    "WASHINGTON (Reuters) - The Senate passed a budget bill on Tuesday after a long debate over spending.",
    "A powerful storm hit the coast overnight, cutting power to thousands of homes, officials said.",
    "Stocks rallied on Wall Street as investors cheered strong earnings from technology companies.",
    "The Supreme Court ruled on Monday that the immigration policy could remain in place for now.",
    "Researchers reported promising results from a vaccine trial involving ten thousand volunteers.",
] * 8


@pytest.fixture(scope="module")
def small_encoder() -> TextEncoder:
    return TextEncoder.train(TITLES, BODIES, vocab_size=400, config=default_text_config(max_length=24, title_max_tokens=6))


def test_encoder_layout_and_truncation(small_encoder: TextEncoder) -> None:
    long_body = " ".join(BODIES) * 3
    ids = small_encoder.encode_batch(["A very long title " * 20, ""], [long_body, "short"])
    for seq in ids:
        assert 1 <= len(seq) <= small_encoder.max_length
        assert seq.count(small_encoder.sep_id) == 1
    assert len(ids[0]) == small_encoder.max_length
    assert ids[0].index(small_encoder.sep_id) == small_encoder.title_max_tokens  # title cut to 6 tokens
    assert ids[1][0] == small_encoder.sep_id  # empty title: the body follows [SEP] directly
    padded, mask = small_encoder.pad(ids)
    assert padded.shape == mask.shape == (2, small_encoder.max_length)
    assert mask[1].sum() == len(ids[1]) and (padded[1, len(ids[1]) :] == small_encoder.pad_id).all()


def test_encoder_masks_outlets_and_round_trips(small_encoder: TextEncoder) -> None:
    title = "Reuters: Senate passes the budget bill"
    body = "WASHINGTON (Reuters) - The Senate passed a bill. Ünïcode ﬁne"
    roomy = TextEncoder(small_encoder.tokenizer, default_text_config(max_length=256, title_max_tokens=64))
    ids = roomy.encode_batch([title], [body])[0]
    assert len(ids) < 256 and ids.count(roomy.outlet_id) == 2
    masked_title, masked_body = roomy.prepare([title], [body])
    assert masked_title == ["[OUTLET]: Senate passes the budget bill"]
    # Byte-level BPE is lossless on the NFKC + lower-cased text (only the spaces that the
    # tokenizer puts around special tokens differ), and [OUTLET] survives as one token.
    expected = unicodedata.normalize("NFKC", masked_title[0] + "[SEP]" + masked_body[0]).lower()
    expected = expected.replace("[outlet]", "[OUTLET]").replace("[sep]", "[SEP]")
    decoded = roomy.decode(ids)
    assert "".join(decoded.split()) == "".join(expected.split())
    assert "fine" in decoded  # NFKC folded the ligature


def test_encoder_save_load_identical(small_encoder: TextEncoder, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    small_encoder.save(path)
    loaded = TextEncoder.load(path, json.loads(json.dumps(small_encoder.config)))
    assert loaded.config == small_encoder.config
    assert loaded.vocab_size == small_encoder.vocab_size and loaded.pad_id == small_encoder.pad_id
    assert loaded.encode_batch(TITLES[:5], BODIES[:5]) == small_encoder.encode_batch(TITLES[:5], BODIES[:5])


def test_structural_tokens_cannot_be_smuggled_in(small_encoder: TextEncoder) -> None:
    ids = small_encoder.encode_batch(["[PAD] [SEP]"], ["[PAD][PAD] [SEP] text"])[0]
    assert small_encoder.pad_id not in ids
    assert ids.count(small_encoder.sep_id) == 1


@pytest.mark.parametrize(
    "change", [{"max_length": 4}, {"title_max_tokens": 300}, {"format": "other"}, {"body_chars_per_token": 0}]
)
def test_text_config_validation(change: dict[str, object]) -> None:
    config = {**default_text_config(max_length=64), **change}
    with pytest.raises(ConfigError):
        TextEncoder.train(TITLES, BODIES, vocab_size=400, config=config)


def test_text_package_does_not_import_torch() -> None:
    code = "import sys, newsmtl.text; assert 'torch' not in sys.modules, 'newsmtl.text imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_full_encoding_keeps_the_whole_masked_article(small_encoder: TextEncoder) -> None:
    long_body = "WASHINGTON (Reuters) - " + " ".join(BODIES) * 3
    cut = small_encoder.encode_batch(["Storm hits the coast"], [long_body])[0]
    full = small_encoder.encode_full_batch(["Storm hits the coast"], [long_body])[0]
    assert len(cut) == small_encoder.max_length < len(full)
    assert full[: len(cut)] == cut  # same title, [SEP] and masking; only the cut differs
    assert small_encoder.outlet_id in full and full.count(small_encoder.sep_id) == 1
