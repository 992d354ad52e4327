"""Exact token credit: how much each token position adds to each pooled feature.

Every feature of the shared and private encoders is piecewise linear in the token embeddings:

* a conv channel ``c`` (width ``k``, "same" padding ``h = (k-1)/2``) has pre-activations
  ``pre[c,t] = b_c + sum_j W_c[:, j] . emb[t + j - h]``; after ReLU, max-pooling picks one
  position and mean-pooling averages the positive ones, so with the *selection weights*
  ``A[c,t]`` (max: 1 at the arg-max if the max is positive; mean: ``1/L`` where ``pre > 0``)
  the pooled value is exactly ``sum_t A[c,t] pre[c,t]``;
* the bag-of-words branch is the masked mean of the embeddings;
* the hashed-bigram branch is the masked mean of bigram embeddings.

So a feature splits exactly into a bias part (``b_c sum_t A[c,t]``) plus one term per token
position ``s``: ``H[c,s] = sum_j A[c, s - j + h] W_c[:, j] . emb[s]`` (for bigrams, half of each
bigram's term goes to each of its two tokens). Any *linear read-out* of the features (a topic
margin, a style score) therefore splits exactly over token positions too:
:meth:`TokenCredit.readout`. For this architecture that equals gradient x input on the embeddings,
without approximation, apart from the conv biases which are kept apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - the usual alias

__all__ = ["TokenCredit", "conv_parts"]


@dataclass
class _Part:
    index: Tensor  # [C] positions of these features in the block
    per_token: Tensor  # [B,C,T] token-position credit of each feature (per_pair: [B,C,T-1])
    bias: Tensor | None  # [B,C] bias part of each feature
    pairs: bool = False  # per_token holds bigram terms (positions t, t+1)


class TokenCredit:
    """Exact split of a block of ``F`` pooled features over the ``T`` positions of each article."""

    def __init__(self, parts: list[_Part], num_features: int, batch: int, length: int) -> None:
        self.parts = parts
        self.num_features = num_features
        self.batch = batch
        self.length = length

    def readout(self, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Credit of each position to ``R`` linear read-outs of the block.

        ``weights``: [F,R] (same for every article) or [B,F,R]. Returns ``(credit [B,R,T],
        bias [B,R])`` with ``credit.sum(-1) + bias == features @ weights`` (up to fp error).
        """
        per_article = weights.dim() == 3
        r = weights.shape[-1]
        credit = torch.zeros(self.batch, r, self.length, dtype=weights.dtype)
        bias = torch.zeros(self.batch, r, dtype=weights.dtype)
        for part in self.parts:
            w = weights[:, part.index, :] if per_article else weights[part.index, :]
            eq = "bct,bcr->brt" if per_article else "bct,cr->brt"
            terms = torch.einsum(eq, part.per_token.to(weights.dtype), w)
            if part.pairs:  # a bigram's credit is shared equally by its two tokens
                credit[:, :, :-1] += terms / 2
                credit[:, :, 1:] += terms / 2
            else:
                credit += terms
            if part.bias is not None:
                bias += torch.einsum("bc,bcr->br" if per_article else "bc,cr->br", part.bias.to(weights.dtype), w)
        return credit, bias

    def features(self) -> Tensor:
        """The block's feature values rebuilt from the parts [B,F] (for consistency checks)."""
        out = torch.zeros(self.batch, self.num_features)
        for part in self.parts:
            value = part.per_token.sum(-1)
            if part.bias is not None:
                value = value + part.bias
            out[:, part.index] = value
        return out


def _shift(a: Tensor, d: int) -> Tensor:
    # out[..., s] = a[..., s + d], zero where s + d falls outside [0, T)
    if d == 0:
        return a
    out = torch.zeros_like(a)
    if d > 0:
        out[..., :-d] = a[..., d:]
    else:
        out[..., -d:] = a[..., :d]
    return out


def conv_parts(
    conv: nn.Conv1d, emb: Tensor, mask: Tensor, *, max_index: Tensor, mean_index: Tensor | None
) -> list[_Part]:
    """Credit parts of one conv's pooled features (ReLU, masked max and optionally mean).

    ``emb`` [B,E,T], ``mask`` [B,T] float; ``max_index`` / ``mean_index`` [C]: where the conv's
    max- and mean-pooled channels sit in the feature block.
    """
    k = int(conv.kernel_size[0])
    half = (k - 1) // 2  # "same" padding with an odd width pads (k-1)/2 on each side
    pre = conv(emb)  # [B,C,T]
    active = (pre > 0) & (mask.unsqueeze(1) > 0)  # [B,C,T]
    token_terms = torch.einsum("cej,bet->bcjt", conv.weight, emb)  # [B,C,k,T]: token t through tap j
    bias = conv.bias if conv.bias is not None else torch.zeros(pre.shape[1])
    selections: list[tuple[Tensor, Tensor]] = []
    values, pos = (F.relu(pre) * mask.unsqueeze(1)).max(dim=2)
    a_max = F.one_hot(pos, pre.shape[2]).to(pre.dtype) * (values > 0).unsqueeze(-1).to(pre.dtype)
    selections.append((max_index, a_max))
    if mean_index is not None:
        length = mask.sum(dim=1).clamp(min=1.0).view(-1, 1, 1)
        selections.append((mean_index, active.to(pre.dtype) / length))
    parts = []
    for index, a in selections:
        # H[b,c,s] = sum_j A[b,c,s-j+h] * token_terms[b,c,j,s]
        h = sum(_shift(a, half - j) * token_terms[:, :, j, :] for j in range(k))
        parts.append(_Part(index=index, per_token=torch.as_tensor(h), bias=a.sum(-1) * bias.unsqueeze(0)))
    return parts


def mean_part(values: Tensor, mask: Tensor, index: Tensor, *, pairs: bool = False) -> _Part:
    """Credit part of a masked mean: ``values`` [B,D,T] (or [B,D,T-1] bigram terms), mask [B,T]."""
    length = mask.sum(dim=1).clamp(min=1.0).view(-1, 1, 1)
    if pairs:
        m = (mask[:, :-1] * mask[:, 1:]).unsqueeze(1)
    else:
        m = mask.unsqueeze(1)
    return _Part(index=index, per_token=values * m / length, bias=None, pairs=pairs)
