"""Which tokens and n-grams drive the shared and the private features.

Attribution is exact, not a gradient approximation (see :mod:`._credit`): every feature splits
into a bias part plus one term per token position, and the heads are linear in the features, so
every topic margin and style score splits exactly over the tokens of the article. So

* **shared** tokens: credit to the *margin* of a topic (its logit minus the mean logit over
  topics) through the shared half of the article's own-outlet topic head. Using the margin
  cancels what pushes every topic up alike. Reported per predicted topic as a *lift*: the mean
  credit to topic ``t`` on articles predicted ``t`` minus the mean credit to ``t`` on the other
  articles, so tokens that are merely frequent everywhere (function words) drop out.
* **private** tokens of outlet ``p``: credit to outlet ``p``'s style logit through its own private
  encoder. Reported as a *lift*: the mean per-article credit on ``p``'s own articles minus the
  mean credit the same encoder gives on other outlets' articles, i.e. what makes encoder ``p``
  fire more on ``p``'s writing than on everyone else's.
* **n-grams**: each article's strongest non-overlapping 3-token windows (largest summed credit),
  aggregated by their token sequence.

``[OUTLET]`` (the text encoder's mask for outlet self-names), other special tokens and
pure-punctuation tokens are left out of the rankings; the share of the positive attribution
they received is reported so that nothing is hidden.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from newsmtl.analysis._features import BatchView, effective_topic_heads
from newsmtl.model import SharedPrivateNet

__all__ = ["LanguageAccumulator", "TokenClasses"]

_PREFIXES = ("##", "Ġ", "▁", "Ċ")


class TokenClasses:
    """Sorts vocabulary ids into content, outlet mask, other special and punctuation tokens.

    Classification and display use each token's *decoded* text, so byte-level BPE pieces such
    as ``âĢĻ`` (a curly apostrophe) count as punctuation. Display: a word-initial token shows
    as the word, a word-internal piece with a leading ``-`` (``-ing``).
    """

    def __init__(self, tokenizer: Tokenizer, pad_id: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.kind = np.zeros(self.vocab_size, np.int8)  # 0 content, 1 outlet, 2 special, 3 punctuation
        self.display: list[str] = []
        added = tokenizer.get_added_tokens_decoder()
        for i in range(self.vocab_size):
            raw = tokenizer.id_to_token(i) or ""
            text = tokenizer.decode([i], skip_special_tokens=False) if i not in added else raw
            if i in added and "OUTLET" in raw.upper():
                self.kind[i] = 1
            elif i == pad_id or (i in added and added[i].special):
                self.kind[i] = 2
            elif not any(ch.isalnum() for ch in text):
                self.kind[i] = 3
            if i in added or text.startswith(" ") or raw.startswith(_PREFIXES[1:]):
                self.display.append(text.strip() or raw)
            else:
                self.display.append("-" + text.strip() if text.strip() else raw)
        self.pad_id = pad_id

    def token(self, i: int) -> str:
        return self.display[int(i)]

    def decode(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
        return " ".join(text.split())

    def content(self, ids: Sequence[int]) -> bool:
        return any(self.kind[int(i)] == 0 for i in ids)


class _NgramTable:
    def __init__(self) -> None:
        self.score: dict[tuple[int, ...], float] = defaultdict(float)
        self.count: dict[tuple[int, ...], int] = defaultdict(int)

    def add(self, key: tuple[int, ...], value: float) -> None:
        self.score[key] += value
        self.count[key] += 1

    def top(self, classes: TokenClasses, n: int) -> list[dict[str, Any]]:
        keys = [k for k in self.score if classes.content(k)]
        repeated = [k for k in keys if self.count[k] >= 2]
        pool = repeated if len(repeated) >= min(n, 5) else keys
        pool.sort(key=lambda k: self.score[k], reverse=True)
        return [
            {
                "ngram": classes.decode(k),
                "score": float(self.score[k]),
                "count": int(self.count[k]),
                "has_outlet_mask": bool(any(classes.kind[i] == 1 for i in k)),
            }
            for k in pool[:n]
        ]


class LanguageAccumulator:
    """Collects token and n-gram attributions batch by batch (pass ``update`` as ``on_batch``)."""

    def __init__(self, net: SharedPrivateNet, classes: TokenClasses, *, ngram: int = 3, top_windows: int = 4) -> None:
        cfg = net.cfg
        self.cfg = cfg
        self.classes = classes
        self.ngram = ngram
        self.top_windows = top_windows
        v, k, p, dp = classes.vocab_size, cfg.num_topics, cfg.num_publications, cfg.private_dim
        with torch.no_grad():
            per_outlet, shared_head, self.outlet_heads = effective_topic_heads(net)
            head = per_outlet.double()  # [P,Ds,K]
            self.margin = head - head.mean(dim=2, keepdim=True)  # [P,Ds,K]
            fallback = shared_head.double()  # [Ds,K]
            self.margin_unknown = fallback - fallback.mean(dim=1, keepdim=True)
            # Style read-out through each outlet's own encoder: block-diagonal [P*Dp, P].
            self.style = torch.zeros(p * dp, p, dtype=torch.float64)
            if cfg.use_private:
                weights = net.style_weight.detach().double()  # [P,Dp]
                for q in range(p):
                    self.style[q * dp : (q + 1) * dp, q] = weights[q]
        self.topic_sum = torch.zeros(k * v, dtype=torch.float64)  # credit to the predicted topic, per topic
        self.topic_all_sum = torch.zeros(k * v, dtype=torch.float64)  # credit to each topic, all articles
        self.topic_count = np.zeros(k, np.int64)
        self.topic_df = np.zeros((k, v), np.int32)
        self.own_sum = torch.zeros(p * v, dtype=torch.float64)  # outlet q's encoder on q's articles
        self.all_sum = torch.zeros(p * v, dtype=torch.float64)  # outlet q's encoder on every article
        self.own_count = np.zeros(p, np.int64)
        self.own_df = np.zeros((p, v), np.int32)
        self.shared_ngrams = [_NgramTable() for _ in range(k)]
        self.private_ngrams = [_NgramTable() for _ in range(p)]
        self.shared_bias_mass = 0.0
        self.private_bias_mass = 0.0
        self.n = 0

    # -- accumulation -------------------------------------------------------------------------
    def update(self, view: BatchView) -> None:
        v = self.classes.vocab_size
        pub = view.publication
        pred = view.predicted_topic
        ids = view.input_ids
        batch, length = ids.shape
        real = view.mask.double()  # [B,T]
        known = (pub >= 0) & self.outlet_heads
        # Margin weights of the shared features for every topic: [B,Ds,K].
        w_all = torch.where(known.view(-1, 1, 1), self.margin[pub.clamp(min=0)], self.margin_unknown.unsqueeze(0))
        credit, bias = view.shared.readout(w_all)  # [B,K,T], [B,K]
        credit = credit * real.unsqueeze(1)
        k_topics = credit.shape[1]
        flat_all = ids.unsqueeze(1) + (torch.arange(k_topics) * v).view(1, -1, 1)  # [B,K,T]
        self.topic_all_sum.index_add_(0, flat_all.reshape(-1), credit.reshape(-1))
        rows = torch.arange(batch)
        own_credit = credit[rows, pred]  # [B,T] credit to the predicted topic
        self.topic_sum.index_add_(0, (pred.view(-1, 1) * v + ids).reshape(-1), own_credit.reshape(-1))
        self.shared_bias_mass += float(bias[rows, pred].clamp(min=0).sum())
        for b in range(batch):
            t = int(pred[b])
            self.topic_count[t] += 1
            self.topic_df[t, np.unique(ids[b][view.mask[b] > 0].numpy())] += 1
            self._windows(self.shared_ngrams[t], ids[b], own_credit[b], int(view.mask[b].sum()))
        self._update_private(view)
        self.n += batch
        del length

    def _windows(self, table: _NgramTable, ids: torch.Tensor, credit: torch.Tensor, length: int) -> None:
        """Add the article's strongest non-overlapping ``ngram``-token windows to ``table``."""
        n = self.ngram
        if length < n:
            return
        sums = credit[:length].unfold(0, n, 1).sum(-1)  # [L-n+1]
        taken = np.zeros(length, bool)
        for start in torch.argsort(sums, descending=True).tolist():
            if sums[start] <= 0 or len(table.count) > 10**6:
                break
            if taken[start : start + n].any():
                continue
            taken[start : start + n] = True
            table.add(tuple(int(i) for i in ids[start : start + n].tolist()), float(sums[start]))
            if taken.sum() >= n * self.top_windows:
                break

    def _update_private(self, view: BatchView) -> None:
        v = self.classes.vocab_size
        p = self.cfg.num_publications
        pub = view.publication
        ids = view.input_ids
        batch = ids.shape[0]
        credit, bias = view.private.readout(self.style)  # [B,P,T], [B,P]
        credit = credit * view.mask.double().unsqueeze(1)
        flat = ids.unsqueeze(1) + (torch.arange(p) * v).view(1, -1, 1)  # [B,P,T]
        self.all_sum.index_add_(0, flat.reshape(-1), credit.reshape(-1))
        known = pub >= 0
        if not bool(known.any()):
            return
        rows = torch.arange(batch)[known]
        own = credit[rows, pub[known]]  # [B',T]
        self.own_sum.index_add_(0, (pub[known].view(-1, 1) * v + ids[known]).reshape(-1), own.reshape(-1))
        self.private_bias_mass += float(bias[rows, pub[known]].clamp(min=0).sum())
        for j, b in enumerate(rows.tolist()):
            q = int(pub[b])
            self.own_count[q] += 1
            self.own_df[q, np.unique(ids[b][view.mask[b] > 0].numpy())] += 1
            self._windows(self.private_ngrams[q], ids[b], own[j], int(view.mask[b].sum()))

    # -- results ------------------------------------------------------------------------------
    def _excluded_shares(self, mass: np.ndarray, bias_mass: float) -> dict[str, float]:
        positive = np.clip(mass, 0, None)
        total = float(positive.sum()) + max(bias_mass, 0.0)
        if total <= 0:
            return {"outlet_mask": 0.0, "special": 0.0, "punctuation": 0.0, "conv_bias": 0.0}
        kind = self.classes.kind
        return {
            "outlet_mask": float(positive[kind == 1].sum() / total),
            "special": float(positive[kind == 2].sum() / total),
            "punctuation": float(positive[kind == 3].sum() / total),
            "conv_bias": float(max(bias_mass, 0.0) / total),
        }

    def _rank(self, score: np.ndarray, df: np.ndarray, n_docs: int, top: int) -> list[dict[str, Any]]:
        if n_docs < 2:
            return []  # one article says nothing about what drives a group
        min_df = max(2, math.ceil(0.02 * n_docs))
        ok = (self.classes.kind == 0) & (df >= min_df)
        idx = np.flatnonzero(ok)
        idx = idx[np.argsort(-score[idx], kind="stable")][:top]
        return [
            {"token": self.classes.token(int(i)), "score": float(score[i]), "df": int(df[i])}
            for i in idx
            if score[i] > 0
        ]

    def results(
        self, topics: Sequence[str], publications: Sequence[str], *, top: int = 15
    ) -> dict[str, Any]:
        v = self.classes.vocab_size
        k, p = len(topics), len(publications)
        topic_sum = self.topic_sum.view(k, v).numpy()
        all_sum = self.topic_all_sum.view(k, v).numpy()
        own_sum = self.own_sum.view(p, v).numpy()
        bg_sum = self.all_sum.view(p, v).numpy() - own_sum
        # Lift of token v for topic t: mean credit to t's margin on articles predicted t minus
        # the mean credit to t's margin on all other articles.
        lift = np.full((k, v), -np.inf)
        for t in range(k):
            n_t = int(self.topic_count[t])
            if n_t < 2:
                continue
            rest = all_sum[t] - topic_sum[t]
            row = topic_sum[t] / n_t - (rest / (self.n - n_t) if self.n > n_t else 0.0)
            min_df = max(2, math.ceil(0.02 * n_t))
            lift[t] = np.where((self.classes.kind == 0) & (self.topic_df[t] >= min_df), row, -np.inf)
        best_topic = lift.argmax(axis=0)
        best = lift.max(axis=0)
        order = [i for i in np.argsort(-best, kind="stable")[:top] if np.isfinite(best[i]) and best[i] > 0]
        shared: dict[str, Any] = {
            "target": "margin of the predicted topic's logit (shared features through the own-outlet head); tokens "
            "ranked by lift (mean credit to topic t on articles predicted t - mean credit to t on other articles)",
            "overall": [
                {"token": self.classes.token(int(i)), "topic": topics[int(best_topic[i])], "score": float(best[i]),
                 "df": int(self.topic_df[best_topic[i], i])}
                for i in order
            ],
            "per_topic": {},
            "ngrams": {},
            "excluded_share": self._excluded_shares(topic_sum.sum(axis=0), self.shared_bias_mass),
        }
        for t, name in enumerate(topics):
            n_t = int(self.topic_count[t])
            if n_t == 0:
                continue
            rest = all_sum[t] - topic_sum[t]
            score = topic_sum[t] / n_t - (rest / (self.n - n_t) if self.n > n_t else 0.0)
            shared["per_topic"][name] = {
                "n_articles": n_t,
                "tokens": self._rank(score, self.topic_df[t], n_t, top),
            }
            shared["ngrams"][name] = self.shared_ngrams[t].top(self.classes, top)
        private: dict[str, Any] = {}
        own_total = np.zeros(v)
        for q, name in enumerate(publications):
            n_own = int(self.own_count[q])
            if n_own == 0:
                continue
            n_bg = max(self.n - n_own, 1)
            lift = own_sum[q] / n_own - bg_sum[q] / n_bg
            own_total += own_sum[q]
            private[name] = {
                "n_articles": n_own,
                "tokens": self._rank(lift, self.own_df[q], n_own, top),
                "ngrams": self.private_ngrams[q].top(self.classes, top),
            }
        return {
            "shared": shared,
            "private": {
                "target": "outlet's style logit through its own private encoder; tokens ranked by lift "
                "(mean credit on own articles - mean credit on other outlets' articles)",
                "per_publication": private,
                "excluded_share": self._excluded_shares(own_total, self.private_bias_mass),
            },
        }
