"""The shared-private multitask network (after ASP-MTL, Liu, Qiu & Huang 2017, and DSN).

Only ``nn.Module``s and their config live here; losses, data and training are elsewhere.

Shapes: B = batch, T = tokens, E = embedding dim, P = modelled publications, K = topics,
Ds = shared feature dim, Dp = private feature dim (per publication).

    token ids [B,T] ──embedding──> [B,T,E]
        ├── SharedEncoder ──────────> shared  [B,Ds]  ──> shared topic head (unknown outlets;
        │                                     │           residual base of every outlet head)
        │                                     ├──> GRL ──> publication discriminator (training only)
        │                                     └──> bias head (optional)
        └── PrivateEncoders (all P at once, one grouped conv)
                                   ──> private [B,P,Dp] ──> style head: score of every outlet
                                                         └─> topic head of the article's outlet
                                                             over [shared; private_own]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - the usual alias

__all__ = [
    "GradientReversal",
    "ModelConfig",
    "NetworkOutput",
    "PrivateEncoders",
    "SharedEncoder",
    "SharedPrivateNet",
    "OnnxInferenceWrapper",
]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`SharedPrivateNet`; stored verbatim in every checkpoint."""

    vocab_size: int
    num_topics: int
    num_publications: int
    num_bias: int = 0  # 0 disables the bias head
    pad_id: int = 0
    max_length: int = 256
    embed_dim: int = 128
    shared_dim: int = 192  # split evenly over shared_kernel_sizes
    shared_kernel_sizes: tuple[int, ...] = (3, 5, 7)  # odd widths: "same" padding stays symmetric
    private_dim: int = 32  # per publication
    private_kernel_size: int = 3
    discriminator_hidden: int = 128
    dropout: float = 0.3
    # Ablation switch: False gives a fully-shared model (no private encoders; the style head
    # then reads the shared features and the per-outlet topic heads collapse onto them).
    use_private: bool = True
    # False: every article uses the shared topic head (the single-task ablation).
    per_publication_topic_heads: bool = True
    # True: an outlet's topic logits are the shared head's plus a zero-initialised per-outlet
    # correction over [shared; private_own]. Each outlet head then starts as (and is pulled
    # towards, by weight decay) the shared head instead of learning K classes from its own
    # few hundred articles; rare topics of small outlets stop collapsing.
    residual_topic_heads: bool = True
    # "max": features are the max over time of each conv channel (Kim 2014). "max_mean": half
    # the channels, each pooled by max *and* by masked mean, for the same feature dims. Max says
    # whether a pattern occurs, the mean how often; house style is largely about frequencies
    # (of attribution verbs, quotes, sentence shapes) and the convs cost half as much.
    pooling: str = "max"
    # Bag-of-n-grams branch of the shared encoder (fastText, Joulin et al. 2017): the masked mean
    # of the token embeddings (E dims) and, with bigram_buckets > 0, of hashed-bigram embeddings
    # (bigram_dim dims) is appended to the CNN features. Max-pooled convs say which n-gram
    # detectors fired somewhere in the text; the means say how much of the text is about what,
    # which is what TF-IDF models exploit for topics.
    bag_of_words: bool = False
    bigram_buckets: int = 0
    bigram_dim: int = 64
    # Multiplies the gradient that the private encoders send into the token embeddings, which
    # every encoder shares. At 1.0 the style loss reshapes the shared embedding table through the
    # private encoders, around the adversary; below 1 the table is learned mostly for the shared
    # (topic) path and the private encoders read it. Training only: the forward pass is unchanged.
    private_embedding_grad_scale: float = 1.0

    @property
    def pool_factor(self) -> int:
        return 2 if self.pooling == "max_mean" else 1

    @property
    def shared_feature_dim(self) -> int:
        """Ds of the docs: CNN features plus the bag-of-n-grams means, if any."""
        bow = self.embed_dim if self.bag_of_words else 0
        return self.shared_dim + bow + (self.bigram_dim if self.bigram_buckets > 0 else 0)

    def __post_init__(self) -> None:
        if self.pooling not in ("max", "max_mean"):
            raise ValueError("pooling must be 'max' or 'max_mean'")
        if self.shared_dim % (len(self.shared_kernel_sizes) * self.pool_factor):
            raise ValueError("shared_dim must be divisible by the number of shared kernel sizes (x2 for max_mean)")
        if self.private_dim % self.pool_factor:
            raise ValueError("private_dim must be even with max_mean pooling")
        if self.bigram_buckets < 0 or self.bigram_dim < 1:
            raise ValueError("bigram_buckets must be >= 0 and bigram_dim >= 1")
        if not 0.0 <= self.private_embedding_grad_scale <= 1.0:
            raise ValueError("private_embedding_grad_scale must be in [0, 1]")
        if self.num_publications < 1 or self.num_topics < 2:
            raise ValueError("need at least 1 modelled publication and 2 topics")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        data["shared_kernel_sizes"] = tuple(data["shared_kernel_sizes"])
        return cls(**data)


class _GradientReversalFn(torch.autograd.Function):
    """Identity forward; multiplies the gradient by -lambda backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, strength: float) -> Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.strength * grad, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """Identity forward; multiplies the gradient by ``scale`` (in [0, 1]) backward."""
    if scale == 1.0:
        return x
    # The reversal multiplies the gradient by -strength, so strength -scale scales it by +scale.
    return _GradientReversalFn.apply(x, -scale)  # type: ignore[no-any-return]


class GradientReversal(nn.Module):
    """Gradient-reversal layer whose strength the trainer schedules (``self.strength``)."""

    def __init__(self) -> None:
        super().__init__()
        self.strength = 0.0

    def forward(self, x: Tensor) -> Tensor:
        return _GradientReversalFn.apply(x, self.strength)  # type: ignore[no-any-return]


def _pool(x: Tensor, mask: Tensor, pooling: str) -> Tensor:
    # x: [B,C,T] after ReLU (>= 0), mask: [B,T] in {0,1}. Zeroing padded steps cannot raise
    # the max of non-negative activations, so the max is an exact masked max-pool; the mean
    # divides by the real length. -> [B,C] ("max") or [B,2C] ("max_mean": [max | mean]).
    masked = x * mask.unsqueeze(1)
    if pooling == "max":
        return masked.amax(dim=2)
    mean = masked.sum(dim=2) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    return torch.cat([masked.amax(dim=2), mean], dim=1)


_BIGRAM_PRIME = 1_000_003  # hash(a, b) = (a * prime + b) mod buckets; ids < 2^20 keep it in int64


class SharedEncoder(nn.Module):
    """Multi-width text CNN (Kim 2014) shared by every publication, optionally with a
    bag-of-n-grams branch (see ``ModelConfig.bag_of_words``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pooling = cfg.pooling
        self.bag_of_words = cfg.bag_of_words
        self.bigram_buckets = cfg.bigram_buckets
        per_kernel = cfg.shared_dim // (len(cfg.shared_kernel_sizes) * cfg.pool_factor)
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.embed_dim, per_kernel, k, padding="same") for k in cfg.shared_kernel_sizes
        )
        self.bigram_embedding = (
            nn.Embedding(cfg.bigram_buckets, cfg.bigram_dim) if cfg.bigram_buckets > 0 else None
        )

    def forward(self, emb: Tensor, mask: Tensor, input_ids: Tensor) -> Tensor:
        # emb: [B,E,T] (channels first for Conv1d), mask: [B,T] float, input_ids: [B,T] -> [B,Ds]
        feats = [_pool(F.relu(conv(emb)), mask, self.pooling) for conv in self.convs]
        length = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # [B,1]
        if self.bag_of_words:
            feats.append((emb * mask.unsqueeze(1)).sum(dim=2) / length)  # [B,E]
        if self.bigram_embedding is not None:
            pairs = input_ids[:, :-1] * _BIGRAM_PRIME + input_ids[:, 1:]  # [B,T-1]
            pair_mask = (mask[:, :-1] * mask[:, 1:]).unsqueeze(2)  # [B,T-1,1]
            bigrams = self.bigram_embedding(torch.remainder(pairs, self.bigram_buckets))  # [B,T-1,Db]
            feats.append((bigrams * pair_mask).sum(dim=1) / length)  # [B,Db]
        return torch.cat(feats, dim=1)


class PrivateEncoders(nn.Module):
    """One CNN encoder per modelled publication, all run as a single convolution.

    A Conv1d with P*Dp output channels is exactly P independent Conv1d(E, Dp) stacked, so all
    outlets are encoded in one kernel call instead of a Python loop (and export as one ONNX op).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_publications = cfg.num_publications
        self.private_dim = cfg.private_dim
        self.pooling = cfg.pooling
        self.conv = nn.Conv1d(
            cfg.embed_dim, cfg.num_publications * cfg.private_dim // cfg.pool_factor, cfg.private_kernel_size,
            padding="same"
        )

    def forward(self, emb: Tensor, mask: Tensor) -> Tensor:
        # emb: [B,E,T] -> conv [B,P*C,T] (C = Dp, or Dp/2 for max_mean) -> pooled -> [B,P,Dp]
        batch, p = emb.shape[0], self.num_publications
        pooled = _pool(F.relu(self.conv(emb)), mask, self.pooling)  # [B,P*C] or [B,2*P*C]
        if self.pooling == "max":
            return pooled.view(batch, p, self.private_dim)
        # [max over P*C | mean over P*C] -> per outlet [max C | mean C]
        return pooled.view(batch, 2, p, self.private_dim // 2).transpose(1, 2).reshape(batch, p, self.private_dim)


@dataclass
class NetworkOutput:
    """Everything one forward pass yields; the trainer picks what each loss needs."""

    topic_logits: Tensor  # [B,K] from the outlet's head where known, else the shared head
    shared_topic_logits: Tensor  # [B,K] shared-only head, for every article
    style_logits: Tensor  # [B,P]
    bias_logits: Tensor | None  # [B,num_bias]
    discriminator_logits: Tensor  # [B,P] publication guessed from shared features (behind GRL)
    shared: Tensor  # [B,Ds]
    private_own: Tensor  # [B,Dp] the article's own outlet's private features (zeros if unknown)
    shared_contribution: Tensor  # [B] shared half's logit contribution to the predicted topic
    private_contribution: Tensor  # [B] private half's contribution (0 for the shared head)
    extras: dict[str, Tensor] = field(default_factory=dict)


class SharedPrivateNet(nn.Module):
    """Shared-private multitask network; see the module docstring for the data flow."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, k, ds, dp = cfg.num_publications, cfg.num_topics, cfg.shared_feature_dim, cfg.private_dim
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.dropout = nn.Dropout(cfg.dropout)
        self.shared_encoder = SharedEncoder(cfg)
        self.private_encoders = PrivateEncoders(cfg) if cfg.use_private else None
        own_dim = dp if cfg.use_private else 0
        # Per-publication topic heads over [shared; private_own], stored as one tensor so the
        # head of each article is gathered, not looped: weight [P, Ds+Dp, K], bias [P, K].
        self.topic_head_weight = nn.Parameter(torch.empty(p, ds + own_dim, k))
        self.topic_head_bias = nn.Parameter(torch.zeros(p, k))
        self.shared_topic_head = nn.Linear(ds, k)
        if cfg.use_private:
            # Style score of outlet p reads only outlet p's private features: [P, Dp] + [P].
            self.style_weight = nn.Parameter(torch.empty(p, dp))
            self.style_bias = nn.Parameter(torch.zeros(p))
            self.style_from_shared: nn.Linear | None = None
        else:
            self.style_from_shared = nn.Linear(ds, p)
        self.bias_head = nn.Linear(ds, cfg.num_bias) if cfg.num_bias > 0 else None
        self.grl = GradientReversal()
        self.discriminator = nn.Sequential(
            nn.Linear(ds, cfg.discriminator_hidden), nn.ReLU(), nn.Linear(cfg.discriminator_hidden, p)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.embedding.weight, std=0.1)
        if self.shared_encoder.bigram_embedding is not None:
            nn.init.normal_(self.shared_encoder.bigram_embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[self.cfg.pad_id].zero_()
        if self.cfg.residual_topic_heads:
            nn.init.zeros_(self.topic_head_weight)
        else:
            nn.init.xavier_uniform_(self.topic_head_weight.view(-1, self.cfg.num_topics))
        if self.cfg.use_private:
            nn.init.normal_(self.style_weight, std=0.05)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, publication_index: Tensor) -> NetworkOutput:
        # input_ids, attention_mask: [B,T] int64; publication_index: [B] int64, -1 = unknown outlet
        mask = attention_mask.to(torch.float32)
        emb = self.dropout(self.embedding(input_ids)).transpose(1, 2)  # [B,E,T]
        shared = self.dropout(self.shared_encoder(emb, mask, input_ids))  # [B,Ds]
        batch = shared.shape[0]

        known = publication_index >= 0  # [B] bool
        own = publication_index.clamp(min=0)  # [B] safe gather index; masked by `known` below
        head_w = self.topic_head_weight[own]  # [B, Ds(+Dp), K]
        head_b = self.topic_head_bias[own]  # [B, K]
        ds = self.cfg.shared_feature_dim

        if self.private_encoders is not None:
            private_in = scale_gradient(emb, self.cfg.private_embedding_grad_scale)
            private = self.dropout(self.private_encoders(private_in, mask))  # [B,P,Dp]
            private_own = private[torch.arange(batch, device=private.device), own]  # [B,Dp]
            private_own = private_own * known.unsqueeze(1).to(private_own.dtype)
            style_logits = (private * self.style_weight.unsqueeze(0)).sum(-1) + self.style_bias  # [B,P]
            shared_part = torch.bmm(shared.unsqueeze(1), head_w[:, :ds, :]).squeeze(1)  # [B,K]
            private_part = torch.bmm(private_own.unsqueeze(1), head_w[:, ds:, :]).squeeze(1)  # [B,K]
        else:
            if self.style_from_shared is None:  # pragma: no cover - built together with use_private
                raise RuntimeError("fully-shared network without a shared style head")
            private_own = shared.new_zeros(batch, self.cfg.private_dim)
            style_logits = self.style_from_shared(shared)
            shared_part = torch.bmm(shared.unsqueeze(1), head_w).squeeze(1)
            private_part = torch.zeros_like(shared_part)

        shared_topic_logits = self.shared_topic_head(shared)  # [B,K]
        if self.cfg.residual_topic_heads:
            # The shared head's weights count as shared contribution of the outlet head too.
            shared_part = shared_part + (shared_topic_logits - self.shared_topic_head.bias)
        own_logits = shared_part + private_part + head_b
        if self.cfg.residual_topic_heads:
            own_logits = own_logits + self.shared_topic_head.bias
        if not self.cfg.per_publication_topic_heads:
            known = torch.zeros_like(known)
        topic_logits = torch.where(known.unsqueeze(1), own_logits, shared_topic_logits)

        # Contribution of each half to the predicted topic's logit (shared head: all shared).
        predicted = topic_logits.argmax(dim=1, keepdim=True)  # [B,1]
        shared_contribution = torch.where(
            known,
            shared_part.gather(1, predicted).squeeze(1),
            (shared_topic_logits - self.shared_topic_head.bias).gather(1, predicted).squeeze(1),
        )
        private_contribution = torch.where(
            known, private_part.gather(1, predicted).squeeze(1), torch.zeros_like(shared_contribution)
        )
        return NetworkOutput(
            topic_logits=topic_logits,
            shared_topic_logits=shared_topic_logits,
            style_logits=style_logits,
            bias_logits=self.bias_head(shared) if self.bias_head is not None else None,
            discriminator_logits=self.discriminator(self.grl(shared)),
            shared=shared,
            private_own=private_own,
            shared_contribution=shared_contribution,
            private_contribution=private_contribution,
        )


class OnnxInferenceWrapper(nn.Module):
    """Inference graph for export: probabilities and contribution figures as a flat tuple.

    Outputs (in order): topic_probs [B,K], style_scores [B,P], shared_share [B],
    shared_contribution [B], private_contribution [B], and bias_probs [B,C] if trained.
    ``shared_share`` = |shared| / (|shared| + |private|) of the predicted topic's logit.
    """

    def __init__(self, net: SharedPrivateNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids: Tensor, attention_mask: Tensor, publication_index: Tensor) -> tuple[Tensor, ...]:
        out = self.net(input_ids, attention_mask, publication_index)
        shared_abs = out.shared_contribution.abs()
        share = shared_abs / (shared_abs + out.private_contribution.abs() + 1e-9)
        result: tuple[Tensor, ...] = (
            F.softmax(out.topic_logits, dim=-1),
            F.softmax(out.style_logits, dim=-1),
            share,
            out.shared_contribution,
            out.private_contribution,
        )
        if out.bias_logits is not None:
            result = result + (F.softmax(out.bias_logits, dim=-1),)
        return result
