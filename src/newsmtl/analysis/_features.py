"""Frozen-feature extraction: one eval-mode pass that keeps everything the analyses need.

Besides the network outputs (shared features, every outlet's private features, logits and the
shared/private logit contributions) the pass can hand each batch's exact token credit
(:mod:`._credit`) to accumulators such as the language analysis. The credit is checked against
the network's own features on every batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from newsmtl._errors import ModelError
from newsmtl.analysis._credit import TokenCredit, conv_parts, mean_part
from newsmtl.model import EncodedSet, SharedPrivateNet
from newsmtl.model._network import _BIGRAM_PRIME  # the shared encoder's bigram hash (same project)

__all__ = [
    "BatchView",
    "Features",
    "effective_topic_heads",
    "extract_features",
    "iter_batches",
    "shared_credit",
    "private_credit",
    "subset",
]

logger = logging.getLogger(__name__)


@dataclass
class BatchView:
    """One batch of the extraction pass, handed to accumulators (e.g. the language analysis)."""

    index: np.ndarray  # [B] rows of the EncodedSet
    input_ids: Tensor  # [B,T]
    mask: Tensor  # [B,T] float
    publication: Tensor  # [B]
    predicted_topic: Tensor  # [B]
    shared: TokenCredit  # block of the Ds shared features
    private: TokenCredit  # block of the P*Dp private features (outlet p: columns p*Dp .. p*Dp+Dp-1)


@dataclass
class Features:
    """Frozen features and outputs of a set of articles (numpy, float32)."""

    shared: np.ndarray  # [N,Ds]
    private: np.ndarray  # [N,P,Dp] every outlet's private encoder on every article
    private_own: np.ndarray  # [N,Dp] the article's own outlet's private features
    topic_logits: np.ndarray  # [N,K]
    style_logits: np.ndarray  # [N,P]
    shared_contribution: np.ndarray  # [N]
    private_contribution: np.ndarray  # [N]
    publication: np.ndarray  # [N]
    topic: np.ndarray  # [N]

    @property
    def predicted_topic(self) -> np.ndarray:
        return np.asarray(self.topic_logits.argmax(axis=1))

    @property
    def shared_share(self) -> np.ndarray:
        # Same definition as the exported ``shared_share`` output (OnnxInferenceWrapper).
        s = np.abs(self.shared_contribution)
        return np.asarray(s / (s + np.abs(self.private_contribution) + 1e-9))


def subset(data: EncodedSet, index: np.ndarray) -> EncodedSet:
    """The rows ``index`` of an encoded set (a copy)."""
    return EncodedSet(
        ids=data.ids[index],
        lengths=data.lengths[index],
        topic=data.topic[index],
        publication=data.publication[index],
        bias=data.bias[index],
    )


def iter_batches(
    data: EncodedSet, *, batch_size: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, Tensor, Tensor, Tensor, Tensor]]:
    """Yield ``(index, input_ids [B,T], mask [B,T], publication [B], topic [B])``.

    Batches follow ``order`` (default: by length, which keeps padding small) and are cut to
    their longest article.
    """
    if order is None:
        order = np.argsort(data.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        lengths = torch.from_numpy(data.lengths[index].astype(np.int64))
        width = max(int(lengths.max()), 1)
        ids = torch.from_numpy(data.ids[index, :width].astype(np.int64))
        mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.int64)
        yield (
            index,
            ids,
            mask,
            torch.from_numpy(data.publication[index].astype(np.int64)),
            torch.from_numpy(data.topic[index].astype(np.int64)),
        )


def effective_topic_heads(net: SharedPrivateNet) -> tuple[Tensor, Tensor, bool]:
    """Shared-feature weights of the topic heads as the forward pass applies them.

    Returns ``(per_outlet [P,Ds,K], shared_head [Ds,K], outlet_heads_used)``; with residual
    heads the shared head's weights are part of every outlet head.
    """
    cfg = net.cfg
    shared_head = net.shared_topic_head.weight.detach().T  # [Ds,K]
    per_outlet = net.topic_head_weight.detach()[:, : cfg.shared_feature_dim, :]
    if cfg.residual_topic_heads:
        per_outlet = per_outlet + shared_head.unsqueeze(0)
    return per_outlet, shared_head, bool(cfg.per_publication_topic_heads)


def shared_credit(net: SharedPrivateNet, emb: Tensor, mask: Tensor, input_ids: Tensor) -> TokenCredit:
    """Token credit of the shared features, in ``SharedEncoder`` order (convs, bag of words, bigrams)."""
    cfg = net.cfg
    encoder = net.shared_encoder
    parts = []
    offset = 0
    for conv in encoder.convs:
        if not isinstance(conv, nn.Conv1d):  # pragma: no cover - SharedEncoder holds Conv1d only
            raise ModelError("unexpected shared encoder layer %r" % type(conv).__name__)
        c = conv.out_channels
        max_index = torch.arange(offset, offset + c)
        offset += c
        mean_index = None
        if cfg.pooling == "max_mean":
            mean_index = torch.arange(offset, offset + c)
            offset += c
        parts += conv_parts(conv, emb, mask, max_index=max_index, mean_index=mean_index)
    if cfg.bag_of_words:
        parts.append(mean_part(emb, mask, torch.arange(offset, offset + emb.shape[1])))
        offset += emb.shape[1]
    if encoder.bigram_embedding is not None:
        buckets = encoder.bigram_embedding.num_embeddings
        pairs = input_ids[:, :-1] * _BIGRAM_PRIME + input_ids[:, 1:]  # the network's bigram hash
        bigrams = encoder.bigram_embedding(torch.remainder(pairs, buckets)).transpose(1, 2)  # [B,Db,T-1]
        parts.append(mean_part(bigrams, mask, torch.arange(offset, offset + bigrams.shape[1]), pairs=True))
        offset += bigrams.shape[1]
    return TokenCredit(parts, offset, emb.shape[0], emb.shape[2])


def private_credit(net: SharedPrivateNet, emb: Tensor, mask: Tensor) -> TokenCredit:
    """Token credit of all private features, flattened as ``[B, P*Dp]`` (``PrivateEncoders`` layout)."""
    cfg = net.cfg
    if net.private_encoders is None:
        raise ModelError("this run has no private encoders")
    p, dp = cfg.num_publications, cfg.private_dim
    per = dp // cfg.pool_factor  # conv channels per outlet
    channel = torch.arange(p * per)
    outlet, within = channel // per, channel % per
    max_index = outlet * dp + within
    mean_index = outlet * dp + per + within if cfg.pooling == "max_mean" else None
    parts = conv_parts(net.private_encoders.conv, emb, mask, max_index=max_index, mean_index=mean_index)
    return TokenCredit(parts, p * dp, emb.shape[0], emb.shape[2])


@torch.no_grad()
def extract_features(
    net: SharedPrivateNet,
    data: EncodedSet,
    *,
    batch_size: int = 64,
    on_batch: Sequence[Callable[[BatchView], None]] = (),
) -> Features:
    """Run ``net`` (switched to eval mode) over ``data`` and collect :class:`Features`.

    Articles of unknown outlets (``publication == -1``) are allowed; their private_own is zero.
    ``on_batch`` callbacks see each batch's exact token credit (see :class:`BatchView`).
    """
    if net.private_encoders is None:
        raise ModelError("the analysis needs a shared-private model (this run was trained with use_private=False)")
    if len(data) == 0:
        raise ModelError("no articles to extract features from")
    net.eval()
    cfg = net.cfg
    n = len(data)
    out_shared = np.zeros((n, cfg.shared_feature_dim), np.float32)
    out_private = np.zeros((n, cfg.num_publications, cfg.private_dim), np.float32)
    out_own = np.zeros((n, cfg.private_dim), np.float32)
    out_topic = np.zeros((n, cfg.num_topics), np.float32)
    out_style = np.zeros((n, cfg.num_publications), np.float32)
    out_sc = np.zeros(n, np.float32)
    out_pc = np.zeros(n, np.float32)
    max_gap = 0.0
    for index, ids, mask, pub, _topic in iter_batches(data, batch_size=batch_size):
        out = net(ids, mask, pub)
        fmask = mask.to(torch.float32)
        emb = net.embedding(ids).transpose(1, 2)  # [B,E,T]; eval mode: no dropout
        private = net.private_encoders(emb, fmask)  # [B,P,Dp]
        out_shared[index] = out.shared.numpy()
        out_private[index] = private.numpy()
        out_own[index] = out.private_own.numpy()
        out_topic[index] = out.topic_logits.numpy()
        out_style[index] = out.style_logits.numpy()
        out_sc[index] = out.shared_contribution.numpy()
        out_pc[index] = out.private_contribution.numpy()
        if on_batch:
            s_credit = shared_credit(net, emb, fmask, ids)
            p_credit = private_credit(net, emb, fmask)
            # The decomposition must rebuild the network's own features (up to fp error).
            flat_private = private.reshape(private.shape[0], -1)
            scale = max(1.0, float(out.shared.abs().max()), float(flat_private.abs().max()))
            max_gap = max(
                max_gap,
                float((s_credit.features() - out.shared).abs().max()) / scale,
                float((p_credit.features() - flat_private).abs().max()) / scale,
            )
            view = BatchView(
                index=index,
                input_ids=ids,
                mask=fmask,
                publication=pub,
                predicted_topic=out.topic_logits.argmax(dim=1),
                shared=s_credit,
                private=p_credit,
            )
            for callback in on_batch:
                callback(view)
    if max_gap > 1e-3:
        raise ModelError("token-credit decomposition disagrees with the network's features by %.3g" % max_gap)
    return Features(
        shared=out_shared,
        private=out_private,
        private_own=out_own,
        topic_logits=out_topic,
        style_logits=out_style,
        shared_contribution=out_sc,
        private_contribution=out_pc,
        publication=data.publication.copy(),
        topic=data.topic.copy(),
    )
