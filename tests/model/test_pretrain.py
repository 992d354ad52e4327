"""Skip-gram pretraining of the token embeddings (newsmtl.model._pretrain) and its cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from newsmtl.model import TrainConfig, preset_config, train
from newsmtl.model._data import Example
from newsmtl.model._network import ModelConfig, SharedPrivateNet
from newsmtl.model._pretrain import PretrainedVectors, pretrain_token_vectors, scale_like_init
from newsmtl.model._train import _init_pretrained_embeddings, _param_groups
from newsmtl.text import TextEncoder, default_text_config

# Two vocabularies that never share a sentence: skip-gram must put each group's words close
# together and far from the other group's.
SPORT = ["striker", "goalkeeper", "penalty", "referee", "stadium", "midfielder"]
MARKET = ["dividend", "investor", "inflation", "bondholder", "treasury", "earnings"]


def _corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    titles, bodies = [], []
    for i in range(n):
        words = SPORT if i % 2 else MARKET
        titles.append(" ".join(rng.choice(words, 3)))
        bodies.append(" ".join(rng.choice(words, 60)))
    return titles, bodies


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    titles, bodies = _corpus(200, seed=1)
    return TextEncoder.train(titles, bodies, vocab_size=320, config=default_text_config(max_length=16, title_max_tokens=4))


def _word_vector(encoder: TextEncoder, vectors: np.ndarray, word: str) -> np.ndarray:
    ids = encoder.tokenizer.encode(" " + word, add_special_tokens=False).ids
    return np.asarray(vectors[ids].mean(axis=0))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_skip_gram_vectors_group_words_that_share_contexts(encoder: TextEncoder) -> None:
    titles, bodies = _corpus(300, seed=2)
    result = pretrain_token_vectors(encoder, titles, bodies, dim=16, epochs=5, window=4, seed=3, min_count=1)
    assert result.vectors.shape == (encoder.vocab_size, 16)
    # Every body token is read, not only the max_length lead the classifier sees.
    assert result.tokens >= sum(len(b.split()) for b in bodies)
    assert not result.seen[encoder.pad_id] and not result.vectors[encoder.pad_id].any()
    sport = [_word_vector(encoder, result.vectors, w) for w in SPORT]
    market = [_word_vector(encoder, result.vectors, w) for w in MARKET]
    within = np.mean([_cos(a, b) for group in (sport, market) for i, a in enumerate(group) for b in group[i + 1 :]])
    across = np.mean([_cos(a, b) for a in sport for b in market])
    assert within > across + 0.3, (within, across)
    again = pretrain_token_vectors(encoder, titles, bodies, dim=16, epochs=5, window=4, seed=3, min_count=1)
    np.testing.assert_array_equal(again.vectors, result.vectors)  # one worker + seed: reproducible


def test_scale_like_init_keeps_unseen_rows_and_matches_the_init_scale() -> None:
    rng = np.random.default_rng(0)
    init = (rng.standard_normal((6, 4)) * 0.1).astype(np.float32)
    vectors = np.zeros((6, 4), dtype=np.float32)
    vectors[2:] = rng.standard_normal((4, 4)) * 3.0
    seen = np.array([False, False, True, True, True, True])
    table = scale_like_init(PretrainedVectors(vectors=vectors, seen=seen, tokens=10, seconds=0.0), init)
    np.testing.assert_array_equal(table[:2], init[:2])
    assert table[2:].std() == pytest.approx(init.std(), rel=1e-5)
    # Direction is the pretrained one: rows are positive multiples of the vectors.
    assert all(_cos(table[i], vectors[i]) > 0.999 for i in range(2, 6))


def test_training_with_pretrained_embeddings_records_and_caches_them(
    allsides_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = preset_config(
        "tiny", max_articles=400, min_publication_articles=20, vocab_size=600, max_length=32, title_max_tokens=8,
        embed_dim=16, epochs=1, threads=1, seed=5, pretrain_embeddings=True, pretrain_epochs=1,
    )
    cache = tmp_path / "cache"
    train(allsides_path, tmp_path / "a", cfg, cache_dir=cache)
    info = json.loads((tmp_path / "a" / "config.json").read_text())["data"]["pretraining"]
    assert info["method"] == "skip-gram" and info["dim"] == 16 and info["tokens"] > 0
    assert info["ids_seen"] > 300
    vector_files = list(cache.glob("*/vectors-*.npz"))
    assert len(vector_files) == 1
    # A second run with the same tokenizer and pretraining params reads the cached vectors (the
    # recorded pretraining time is the cached one, to the tenth of a second).
    with caplog.at_level(logging.INFO, logger="newsmtl.model._cache"):
        train(allsides_path, tmp_path / "b", cfg, cache_dir=cache)
    assert "pretrained vectors from" in caplog.text
    assert list(cache.glob("*/vectors-*.npz")) == vector_files
    assert json.loads((tmp_path / "b" / "config.json").read_text())["data"]["pretraining"] == info
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["dev"] == json.loads(
        (tmp_path / "a" / "metrics.json").read_text()
    )["dev"]
    train(allsides_path, tmp_path / "c", cfg.replace(pretrain_embeddings=False), cache_dir=cache)
    assert "pretraining" not in json.loads((tmp_path / "c" / "config.json").read_text())["data"]


def test_pretrained_vectors_become_the_initial_embeddings(encoder: TextEncoder) -> None:
    titles, bodies = _corpus(60, seed=4)
    cfg = preset_config("tiny", embed_dim=8, pretrain_embeddings=True, pretrain_epochs=1, seed=7)
    net = SharedPrivateNet(ModelConfig(vocab_size=encoder.vocab_size, num_topics=3, num_publications=2, embed_dim=8,
                                       shared_dim=12, private_dim=4, pad_id=encoder.pad_id))
    examples = [Example(id=str(i), title=t, text=b, topic="x", publication=None, bias=None) for i, (t, b) in enumerate(zip(titles, bodies, strict=True))]
    info = _init_pretrained_embeddings(net, cfg, encoder, examples, None)
    expected = pretrain_token_vectors(encoder, titles, bodies, dim=8, epochs=1, window=5, seed=7)
    table = net.embedding.weight.detach().numpy()
    assert info["ids_seen"] == int(expected.seen.sum()) > 0
    assert not table[encoder.pad_id].any()
    rows = np.flatnonzero(expected.seen)
    ratios = table[rows] / expected.vectors[rows]  # one global scale for every pretrained row
    np.testing.assert_allclose(ratios, ratios.flat[0], rtol=1e-4)


def test_embedding_lr_scale_gives_the_embeddings_their_own_learning_rate() -> None:
    net = SharedPrivateNet(ModelConfig(vocab_size=40, num_topics=3, num_publications=2, embed_dim=8, shared_dim=12,
                                       private_dim=4))
    plain = _param_groups(net, 0.01, lr=1e-2)
    assert len(plain) == 2  # unchanged layout: resume states of earlier runs still load
    groups = _param_groups(net, 0.01, lr=1e-2, embedding_lr_scale=0.1)
    assert len(groups) == 3 and groups[2]["params"] == [net.embedding.weight]
    assert groups[2]["lr"] == pytest.approx(1e-3)
    counted = sum(len(g["params"]) for g in groups)
    assert counted == len(list(net.parameters()))
    optimizer = torch.optim.AdamW(groups, lr=1e-2)
    before = net.embedding.weight.detach().clone()
    conv_before = net.shared_encoder.convs[0].weight.detach().clone()
    net(torch.randint(4, 40, (3, 9)), torch.ones(3, 9, dtype=torch.long), torch.tensor([0, 1, -1])).topic_logits.sum().backward()
    optimizer.step()
    # Adam's first step moves every coordinate with a gradient by about its group's lr.
    emb_step = (net.embedding.weight.detach() - before).abs().max().item()
    conv_step = (net.shared_encoder.convs[0].weight.detach() - conv_before).abs().max().item()
    assert emb_step == pytest.approx(1e-3, rel=0.05) and conv_step == pytest.approx(1e-2, rel=0.05)


def test_stored_configs_from_before_pretraining_describe_what_those_runs_did() -> None:
    base = preset_config("base")
    assert base.pretrain_embeddings and base.embedding_lr_scale == 0.2  # today's recipe
    assert not preset_config("tiny").pretrain_embeddings
    old = base.to_dict()
    for key in ("pretrain_embeddings", "embedding_lr_scale", "private_embedding_grad_scale"):
        del old[key]
    stored = TrainConfig.from_stored(old)
    assert not stored.pretrain_embeddings and stored.embedding_lr_scale == 1.0
    assert stored.private_embedding_grad_scale == 1.0
    assert TrainConfig.from_stored(base.to_dict()) == base  # a current config round-trips unchanged
    assert TrainConfig.from_dict(old).pretrain_embeddings  # a partial *new* config gets the defaults
