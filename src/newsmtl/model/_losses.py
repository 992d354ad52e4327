"""Loss terms of the shared-private model (the network module holds no losses).

Total loss (weights from :class:`~newsmtl.model.TrainConfig`)::

    L = w_topic * CE(topic)                 outlet heads for modelled outlets, shared head otherwise
      + w_shared_topic * CE(shared topic)    shared head on every article: unknown outlets at inference
      + w_style * CE(style)                  which modelled outlet wrote it, from private features
      + w_bias * CE(bias)                    optional, shared features
      + w_adv * CE(discriminator)            behind the gradient-reversal layer (ASP-MTL's L_adv)
      + w_diff * difference                  ||S_p^T P_p||_F^2 per outlet (ASP-MTL's L_diff / DSN)

Labels equal to -1 are ignored (unknown outlet, missing bias label).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812 - the usual alias

from newsmtl.model._network import NetworkOutput

__all__ = ["LossWeights", "LossBreakdown", "dann_schedule", "difference_loss", "multitask_loss"]


def dann_schedule(progress: float, *, gamma: float = 10.0) -> float:
    """Ganin et al. 2016: ``2 / (1 + exp(-gamma p)) - 1``, rising from 0 at p=0 to ~1 at p=1.

    The discriminator is random early on; reversing its gradient at full strength then only
    injects noise into the shared encoder, so the reversal is ramped up with training progress.
    """
    p = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def difference_loss(shared: Tensor, private_own: Tensor, publication_index: Tensor, num_publications: int) -> Tensor:
    """Soft orthogonality between shared and private features, per publication.

    For each outlet p with articles in the batch, S_p [n_p,Ds] and P_p [n_p,Dp] are the shared
    and own-private features of its articles, each row L2-normalised (as DSN does, so the loss
    cannot be won by shrinking features). The loss is ``sum_p ||S_p^T P_p||_F^2`` divided by the
    number of known-outlet articles, computed for all outlets at once: with the one-hot matrix
    O [B,P], ``S_p^T P_p = einsum('bp,bi,bj->pij', O, S, P)``. Articles of unknown outlets have
    no private features and do not count. Zero iff shared and private features are orthogonal
    within every outlet.
    """
    known = publication_index >= 0  # [B]
    if not bool(known.any()):
        return shared.new_zeros(())
    s = F.normalize(shared[known], dim=1)  # [n,Ds]
    p = F.normalize(private_own[known], dim=1)  # [n,Dp]
    onehot = F.one_hot(publication_index[known], num_publications).to(s.dtype)  # [n,P]
    corr = torch.einsum("bp,bi,bj->pij", onehot, s, p)  # [P,Ds,Dp]
    return corr.pow(2).sum() / s.shape[0]


@dataclass(frozen=True, kw_only=True)
class LossWeights:
    topic: float = 1.0
    shared_topic: float = 0.5
    style: float = 1.0
    bias: float = 0.5
    adversarial: float = 0.05
    difference: float = 0.01


@dataclass
class LossBreakdown:
    """The total (for backward) and each detached term (for logging)."""

    total: Tensor
    terms: dict[str, float]


def _ce(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    valid = target >= 0
    if not bool(valid.any()):
        return logits.new_zeros(())
    return F.cross_entropy(logits[valid].float(), target[valid], weight=weight)


def multitask_loss(
    out: NetworkOutput, *, topic: Tensor, publication_index: Tensor, bias: Tensor | None, weights: LossWeights,
    num_publications: int, use_private: bool, topic_class_weights: Tensor | None = None,
) -> LossBreakdown:
    """All weighted terms for one batch; a zero weight skips its term entirely.

    ``topic_class_weights`` [K] re-weights the topic classes (both topic terms), e.g. by inverse
    square-root frequency, which trades a little accuracy for macro-F1 on rare topics.
    """
    terms: dict[str, Tensor] = {}
    terms["topic"] = weights.topic * _ce(out.topic_logits, topic, topic_class_weights)
    if weights.shared_topic:
        terms["shared_topic"] = weights.shared_topic * _ce(out.shared_topic_logits, topic, topic_class_weights)
    if weights.style:
        terms["style"] = weights.style * _ce(out.style_logits, publication_index)
    if weights.bias and bias is not None and out.bias_logits is not None:
        terms["bias"] = weights.bias * _ce(out.bias_logits, bias)
    if weights.adversarial:
        terms["adversarial"] = weights.adversarial * _ce(out.discriminator_logits, publication_index)
    if weights.difference and use_private:
        terms["difference"] = weights.difference * difference_loss(
            out.shared.float(), out.private_own.float(), publication_index, num_publications
        )
    total = torch.stack(list(terms.values())).sum()
    return LossBreakdown(total=total, terms={k: float(v.detach()) for k, v in terms.items()})
