"""Building blocks of the analysis, on small random networks and constructed matrices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

VARIANTS = [
    {"pooling": "max"},
    {"pooling": "max_mean"},
    {"pooling": "max_mean", "bag_of_words": True, "bigram_buckets": 50, "bigram_dim": 6},
]


def _net(*, residual: bool = True, publications: int = 3, **options: Any) -> Any:
    import torch

    from newsmtl.model import ModelConfig, SharedPrivateNet

    torch.manual_seed(0)
    net = SharedPrivateNet(
        ModelConfig(
            vocab_size=60, num_topics=4, num_publications=publications, embed_dim=8, shared_dim=12,
            shared_kernel_sizes=(3, 5, 7), private_dim=4, residual_topic_heads=residual, **options,
        )
    )
    with torch.no_grad():  # residual heads start at zero; give them something to carry
        net.topic_head_weight.normal_(0, 0.3)
    return net.eval()


def _encoded(n: int, *, publications: int = 3, seed: int = 0) -> Any:
    from newsmtl.model import EncodedSet

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 20, size=n)
    ids = np.zeros((n, 20), np.int32)
    for i, length in enumerate(lengths):
        ids[i, :length] = rng.integers(1, 60, size=length)
    return EncodedSet(
        ids=ids, lengths=lengths.astype(np.int64), topic=rng.integers(0, 4, size=n),
        publication=rng.integers(0, publications, size=n), bias=np.full(n, -1),
    )


def test_linear_cka_properties() -> None:
    from newsmtl.analysis import linear_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)  # rotation, scale and shift invariant
    assert linear_cka(x, rng.normal(size=(200, 6))) < 0.2
    assert linear_cka(x, np.zeros((200, 3))) == 0.0


def test_bias_agreement_detects_block_structure() -> None:
    from newsmtl.analysis._relatedness import bias_agreement, cluster_order

    # 9 outlets in 3 bias groups of 3: only 6 of the 1,680 distinct relabellings are as good.
    labels = list("abcdefghi")
    names = ["left", "right", "center"]
    groups = np.repeat([0, 1, 2], 3)
    bias = {lab: names[g] for lab, g in zip(labels, groups, strict=True)}
    sim = np.where(groups[:, None] == groups[None, :], 0.9, 0.2)
    np.fill_diagonal(sim, 1.0)
    clusters = cluster_order(sim)
    assert sorted(clusters["order"]) == list(range(9))
    result = bias_agreement(sim, labels, bias, clusters["clusters"], permutations=1000)
    assert result["gap"] == pytest.approx(0.7)
    assert result["adjusted_rand"] == pytest.approx(1.0)
    assert result["p_value"] < 0.02
    flat = np.full((9, 9), 0.5)
    np.fill_diagonal(flat, 1.0)
    even = bias_agreement(flat, labels, bias, [1] * 9, permutations=100)
    assert even["gap"] == pytest.approx(0.0)
    assert even["p_value"] == pytest.approx(1.0)


@pytest.mark.parametrize("options", VARIANTS)
def test_token_credit_is_exact(options: dict[str, Any]) -> None:
    """Per-token credit + bias parts rebuild every feature and every linear read-out exactly."""
    import torch

    from newsmtl.analysis._features import BatchView, extract_features

    net = _net(**options)
    data = _encoded(30)
    seen: list[BatchView] = []
    features = extract_features(net, data, batch_size=8, on_batch=[seen.append])
    assert sum(len(v.index) for v in seen) == 30
    for view in seen:
        shared = torch.from_numpy(features.shared[view.index])
        assert torch.allclose(view.shared.features(), shared, atol=1e-5)
        private = torch.from_numpy(features.private[view.index]).reshape(len(view.index), -1)
        assert torch.allclose(view.private.features(), private, atol=1e-5)
        # A read-out (here random weights, per article) splits exactly over the positions.
        weights = torch.randn(len(view.index), shared.shape[1], 5, dtype=torch.float64)
        credit, bias = view.shared.readout(weights)
        expected = torch.einsum("bf,bfr->br", shared.double(), weights)
        assert torch.allclose(credit.sum(-1) + bias, expected, atol=1e-4)
        # Padding positions get no credit.
        assert torch.all(credit.abs().sum(1)[view.mask == 0] < 1e-9)
    own = features.private[np.arange(30), data.publication]
    assert np.allclose(own, features.private_own, atol=1e-6)


@pytest.mark.parametrize("options", VARIANTS)
def test_grow_network_keeps_old_outlets_and_matches_the_head(options: dict[str, Any]) -> None:
    import torch

    from newsmtl.analysis import NewOutlet, grow_network
    from newsmtl.analysis._features import iter_batches

    for residual in (True, False):
        base = _net(residual=residual, **options)
        head = NewOutlet(base)
        with torch.no_grad():
            for param in head.parameters():
                param.normal_(0, 0.2)
        grown = grow_network(base, head)
        assert grown.cfg.num_publications == 4
        data = _encoded(16)
        for _index, ids, mask, _pub, _topic in iter_batches(data, batch_size=16):
            with torch.no_grad():
                for q in (0, 1, 2, -1):
                    pub = torch.full((ids.shape[0],), q, dtype=torch.int64)
                    assert torch.equal(grown(ids, mask, pub).topic_logits, base(ids, mask, pub).topic_logits)
                new = grown(ids, mask, torch.full((ids.shape[0],), 3, dtype=torch.int64))
                out = base(ids, mask, torch.full((ids.shape[0],), -1, dtype=torch.int64))
                emb = base.embedding(ids).transpose(1, 2)
                private = head.private(emb, mask.float())
                expected = head.topic_logits(out.shared, private, out.shared_topic_logits)
                assert torch.allclose(new.topic_logits, expected, atol=1e-5)
                assert torch.allclose(new.style_logits[:, 3], head.style_logit(private), atol=1e-5)


def test_untrained_new_outlet_predicts_like_the_shared_head() -> None:
    import torch

    from newsmtl.analysis import NewOutlet

    for residual in (True, False):
        base = _net(residual=residual)
        head = NewOutlet(base)
        shared = torch.randn(5, base.cfg.shared_feature_dim)
        logits = base.shared_topic_head(shared)
        assert torch.allclose(head.topic_logits(shared, torch.rand(5, 4), logits), logits, atol=1e-6)


def test_label_map_files(tmp_path: Path) -> None:
    from newsmtl import ConfigError
    from newsmtl.analysis import BBC_TOPIC_MAP, load_label_map

    js = tmp_path / "m.json"
    js.write_text(json.dumps(BBC_TOPIC_MAP), encoding="utf-8")
    assert load_label_map(js) == BBC_TOPIC_MAP
    tsv = tmp_path / "m.tsv"
    tsv.write_text("# raw\tmodel\nsport\tsociety_culture\ntech\tscience_tech\n", encoding="utf-8")
    assert load_label_map(tsv) == {"sport": "society_culture", "tech": "science_tech"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("sport society_culture\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1"):
        load_label_map(bad)


def test_stratified_split_is_proportional_and_seeded() -> None:
    from newsmtl.analysis._adapt import stratified_split

    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    rest, held = stratified_split(labels, 20, seed=3)
    assert sorted(rest + held) == list(range(100))
    counts = {k: sum(1 for i in held if labels[i] == k) for k in "abc"}
    assert counts == {"a": 12, "b": 6, "c": 2}
    assert stratified_split(labels, 20, seed=3) == (rest, held)
    assert stratified_split(labels, 20, seed=4)[1] != held
