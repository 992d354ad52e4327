"""SharedPrivateNet behaviour that the trainer and the exporter rely on."""

from __future__ import annotations

import pytest
import torch

from newsmtl.model import ModelConfig, OnnxInferenceWrapper, SharedPrivateNet


def _net(**changes: object) -> SharedPrivateNet:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"vocab_size": 50, "num_topics": 4, "num_publications": 3, "num_bias": 3, "max_length": 16,
                         "embed_dim": 8, "shared_dim": 12, "private_dim": 4, "dropout": 0.0, **changes})  # type: ignore[arg-type]
    return SharedPrivateNet(cfg).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, 50, (4, 16))
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[1, 10:] = 0
    return ids, mask, torch.tensor([0, 2, -1, 1])


def test_shapes_and_unknown_outlet_uses_shared_head() -> None:
    net = _net(residual_topic_heads=False)
    ids, mask, pub = _batch()
    out = net(ids, mask, pub)
    assert out.topic_logits.shape == (4, 4) and out.style_logits.shape == (4, 3)
    assert out.bias_logits is not None and out.bias_logits.shape == (4, 3)
    assert torch.equal(out.topic_logits[2], out.shared_topic_logits[2])
    assert not torch.allclose(out.topic_logits[0], out.shared_topic_logits[0])
    assert out.private_contribution[2] == 0 and out.private_own[2].abs().sum() == 0


@pytest.mark.parametrize(
    "changes",
    [{}, {"pooling": "max_mean"}, {"bag_of_words": True, "bigram_buckets": 101, "bigram_dim": 6}],
)
def test_padding_length_does_not_change_the_result(changes: dict[str, object]) -> None:
    # The serving side pads batches to different lengths: [PAD] embeds to zeros, exactly what
    # the convolutions' own "same" padding adds, and the bag-of-n-grams means divide by the
    # real length, so extra padding changes nothing.
    net = _net(**changes)
    ids, mask, pub = _batch()
    ids[1, 10:] = 0  # pad_id under the mask
    longer_ids = torch.cat([ids, torch.zeros(4, 5, dtype=torch.long)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(4, 5, dtype=torch.long)], dim=1)
    a, b = net(ids, mask, pub), net(longer_ids, longer_mask, pub)
    alone = net(ids[1:2, :10], mask[1:2, :10], pub[1:2])
    assert torch.allclose(a.topic_logits, b.topic_logits, atol=1e-6)
    assert torch.allclose(a.style_logits, b.style_logits, atol=1e-6)
    assert torch.allclose(alone.topic_logits, a.topic_logits[1:2], atol=1e-6)


def test_residual_heads_start_as_the_shared_head() -> None:
    net = _net()
    ids, mask, pub = _batch()
    out = net(ids, mask, pub)
    assert torch.allclose(out.topic_logits, out.shared_topic_logits, atol=1e-6)
    with torch.no_grad():
        net.topic_head_weight[0].fill_(0.5)  # outlet 0's correction only
    out = net(ids, mask, pub)
    assert not torch.allclose(out.topic_logits[0], out.shared_topic_logits[0])
    assert torch.allclose(out.topic_logits[1:], out.shared_topic_logits[1:], atol=1e-6)


@pytest.mark.parametrize("use_private", [True, False])
def test_single_task_switch_always_uses_the_shared_head(use_private: bool) -> None:
    net = _net(per_publication_topic_heads=False, use_private=use_private, residual_topic_heads=False)
    ids, mask, pub = _batch()
    out = net(ids, mask, pub)
    assert torch.equal(out.topic_logits, out.shared_topic_logits)
    assert (out.private_contribution == 0).all()


def test_contributions_add_up_for_known_outlets() -> None:
    net = _net()
    with torch.no_grad():
        net.topic_head_weight.normal_()
    ids, mask, pub = _batch()
    out = net(ids, mask, pub)
    pred = out.topic_logits.argmax(1)
    bias = net.topic_head_bias[pub.clamp(min=0), pred] + net.shared_topic_head.bias[pred]
    total = out.shared_contribution + out.private_contribution + bias
    known = pub >= 0
    assert torch.allclose(total[known], out.topic_logits[known].gather(1, pred[known, None]).squeeze(1), atol=1e-5)
    probs, styles, share, *_ = OnnxInferenceWrapper(net)(ids, mask, pub)
    assert torch.allclose(probs.sum(1), torch.ones(4)) and ((share >= 0) & (share <= 1)).all()


def test_model_config_round_trip_and_old_dicts() -> None:
    cfg = _net().cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["per_publication_topic_heads"], old["residual_topic_heads"]
    assert ModelConfig.from_dict(old).residual_topic_heads is True


@pytest.mark.parametrize("scale", [0.0, 0.25])
def test_private_embedding_grad_scale_scales_only_the_private_path(scale: float) -> None:
    ids, mask, pub = _batch()

    def embedding_grads(**changes: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedding gradient of the style loss (private path only) and of the shared topic loss."""
        net = _net(**changes)
        style = net(ids, mask, pub).style_logits.logsumexp(dim=1).sum()
        (style_grad,) = torch.autograd.grad(style, net.embedding.weight)
        shared = net(ids, mask, pub).shared_topic_logits.logsumexp(dim=1).sum()
        (shared_grad,) = torch.autograd.grad(shared, net.embedding.weight)
        return style_grad, shared_grad, net(ids, mask, pub).topic_logits

    full_style, full_shared, full_logits = embedding_grads()
    style, shared, logits = embedding_grads(private_embedding_grad_scale=scale)
    assert full_style.abs().sum() > 0
    torch.testing.assert_close(style, full_style * scale)
    torch.testing.assert_close(shared, full_shared)  # the shared path is untouched
    torch.testing.assert_close(logits, full_logits)  # and so is the forward pass
    with pytest.raises(ValueError, match="private_embedding_grad_scale"):
        _net(private_embedding_grad_scale=1.5)
