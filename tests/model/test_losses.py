"""Loss terms and the gradient-reversal layer."""

from __future__ import annotations

import pytest
import torch

from newsmtl.model import GradientReversal, LossWeights, dann_schedule, difference_loss, multitask_loss
from newsmtl.model._network import NetworkOutput


def test_difference_loss_is_zero_for_orthogonal_features() -> None:
    # S [n,Ds] and P [n,Dp] are orthogonal when every column of S is orthogonal to every column
    # of P in sample space: here both samples share s, and their private features cancel.
    s = torch.tensor([[1.0, 2.0, 0.5], [2.0, 4.0, 1.0]])
    p = torch.tensor([[3.0, -1.0], [-3.0, 1.0]])
    pub = torch.tensor([1, 1])
    assert difference_loss(s, p, pub, 2).item() == pytest.approx(0.0, abs=1e-7)
    # The same rows under two different outlets no longer cancel: the loss is per outlet.
    assert difference_loss(s, p, torch.tensor([0, 1]), 2).item() > 0.5
    # And a non-orthogonal pair is penalised.
    assert difference_loss(s, p.abs(), pub, 2).item() > 0.5


def test_difference_loss_values() -> None:
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    p = torch.tensor([[6.0, 8.0], [0.0, 0.0]])  # 2nd row has no private signal
    pub = torch.tensor([0, -1])  # unknown outlets do not count
    # Row 1 only: normalised s=(.6,.8), p=(.6,.8): S^T P = outer(s,p); ||.||_F^2 = |s|^2 |p|^2 = 1.
    assert difference_loss(s, p, pub, 3).item() == pytest.approx(1.0, rel=1e-5)
    # Scaling the features does not change it (rows are L2-normalised first).
    assert difference_loss(10 * s, 0.1 * p, pub, 3).item() == pytest.approx(1.0, rel=1e-5)
    assert difference_loss(s, p, torch.tensor([-1, -1]), 3).item() == 0.0


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    grl = GradientReversal()
    grl.strength = 0.25
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grl(x)
    assert torch.equal(y, x)  # identity forward
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad is not None
    assert torch.allclose(x.grad, torch.tensor([-0.25, -0.5, -0.75]))


def test_dann_schedule() -> None:
    assert dann_schedule(0.0) == 0.0
    values = [dann_schedule(p / 10) for p in range(11)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert 0.99 < values[-1] < 1.0
    assert dann_schedule(2.0) == dann_schedule(1.0)


def _output(b: int = 4, k: int = 3, p: int = 2) -> NetworkOutput:
    torch.manual_seed(0)
    return NetworkOutput(
        topic_logits=torch.randn(b, k, requires_grad=True), shared_topic_logits=torch.randn(b, k),
        style_logits=torch.randn(b, p), bias_logits=torch.randn(b, 3), discriminator_logits=torch.randn(b, p),
        shared=torch.rand(b, 6), private_own=torch.rand(b, 5), shared_contribution=torch.zeros(b),
        private_contribution=torch.zeros(b),
    )


def test_multitask_loss_ignores_missing_labels_and_zero_weights() -> None:
    out = _output()
    full = multitask_loss(
        out, topic=torch.tensor([0, 1, 2, 0]), publication_index=torch.tensor([0, 1, -1, -1]),
        bias=torch.tensor([-1, -1, -1, -1]), weights=LossWeights(), num_publications=2, use_private=True,
    )
    assert set(full.terms) == {"topic", "shared_topic", "style", "bias", "adversarial", "difference"}
    assert full.terms["bias"] == 0.0  # no bias label in the batch
    expected_style = torch.nn.functional.cross_entropy(out.style_logits[:2], torch.tensor([0, 1])).item()
    assert full.terms["style"] == pytest.approx(expected_style, rel=1e-5)
    only_topic = multitask_loss(
        out, topic=torch.tensor([0, 1, 2, 0]), publication_index=torch.tensor([0, 1, -1, -1]), bias=None,
        weights=LossWeights(shared_topic=0, style=0, bias=0, adversarial=0, difference=0),
        num_publications=2, use_private=True,
    )
    assert set(only_topic.terms) == {"topic"}
    only_topic.total.backward()
    assert out.topic_logits.grad is not None
