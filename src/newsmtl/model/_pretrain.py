"""Word2vec pretraining of the token embeddings on the *whole* training articles.

Why: the classifier reads only the title and the first ``max_length`` tokens of each article
(see ``newsmtl.text`` for the truncation strategy), about a quarter of a median article, and
learns its 2 M embedding weights from 27,000 labelled leads. The rest of every training
article is unlabelled text the model never sees. Skip-gram with negative sampling (Mikolov et
al. 2013) over the full training articles, tokenized with the run's own BPE tokenizer and
outlet masking, turns that text into initial embeddings in which tokens of similar meaning
start close together (Kim 2014 saw the same CNN gain several points from pretrained vectors).
Only the training split is read, so dev and test stay unseen, and nothing is downloaded.

gensim's C implementation does the work (about a minute per pass over ~30 M tokens on one
core); with one worker and a fixed seed the vectors are reproducible.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from newsmtl._errors import ConfigError
from newsmtl.text import TextEncoder

__all__ = ["PretrainedVectors", "pretrain_token_vectors", "scale_like_init"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainedVectors:
    vectors: npt.NDArray[np.float32]  # [V,E], row i = token id i; zeros for tokens never seen
    seen: npt.NDArray[np.bool_]  # [V] tokens that occurred at least min_count times
    tokens: int  # corpus size in tokens
    seconds: float


def pretrain_token_vectors(
    encoder: TextEncoder, titles: Sequence[str], texts: Sequence[str], *, dim: int, epochs: int, window: int,
    seed: int, workers: int = 1, negative: int = 5, min_count: int = 3, chunk: int = 2048,
) -> PretrainedVectors:
    """Skip-gram vectors for every token id of ``encoder`` from the full articles given."""
    try:
        from gensim.models import Word2Vec
    except ImportError:  # pragma: no cover - gensim ships with the train extra
        raise ConfigError("embedding pretraining needs gensim: pip install 'newsmtl[train]'") from None
    t0 = time.perf_counter()
    fd, corpus_path = tempfile.mkstemp(prefix="newsmtl-w2v-", suffix=".txt")
    tokens = 0
    try:
        # One article per line, tokens as their ids: gensim's corpus_file mode reads it in C
        # (and splits lines longer than 10,000 tokens, which only cuts a few context windows).
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            for start in range(0, len(titles), chunk):
                for ids in encoder.encode_full_batch(titles[start : start + chunk], texts[start : start + chunk]):
                    fh.write(" ".join(map(str, ids)))
                    fh.write("\n")
                    tokens += len(ids)
        t_corpus = time.perf_counter()
        model = Word2Vec(
            corpus_file=corpus_path, vector_size=dim, window=window, min_count=min_count, sg=1, negative=negative,
            epochs=epochs, seed=seed, workers=max(1, workers),
        )
    finally:
        os.unlink(corpus_path)
    vocab = encoder.vocab_size
    vectors = np.zeros((vocab, dim), dtype=np.float32)
    seen = np.zeros(vocab, dtype=bool)
    for key, index in model.wv.key_to_index.items():
        token_id = int(key)
        if 0 <= token_id < vocab:
            vectors[token_id] = model.wv.vectors[index]
            seen[token_id] = True
    seconds = time.perf_counter() - t0
    logger.info(
        "pretrained %d-dim token vectors: %d tokens of %d articles, %d of %d ids seen, %d epochs, %.0fs "
        "(corpus %.0fs)", dim, tokens, len(titles), int(seen.sum()), vocab, epochs, seconds, t_corpus - t0,
    )
    return PretrainedVectors(vectors=vectors, seen=seen, tokens=tokens, seconds=seconds)


def scale_like_init(pretrained: PretrainedVectors, init: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Embedding table: pretrained rows rescaled to the random init's overall standard deviation
    (so the learning rate tuned for that init still fits), the init's rows for unseen ids."""
    out = init.copy()
    rows = pretrained.vectors[pretrained.seen]
    if len(rows):
        scale = float(init.std()) / max(float(rows.std()), 1e-8)
        out[pretrained.seen] = rows * scale
    return out
