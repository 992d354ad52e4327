"""On-disk cache of a run's tokenizer and token ids, shared by runs on the same split.

Tokenizing ~34,000 articles and training the BPE takes minutes on a busy CPU, and every
ablation of the same data, seed and text config would redo exactly the same work. The cache
key is a hash of what determines the result: the train and dev split fingerprints, the text
config, the vocabulary size and the ``tokenizers`` version. Token ids are stored per tokenizer
(by the hash of its JSON), so a resumed run with its own tokenizer never reads foreign ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tokenizers

from newsmtl.model._pretrain import PretrainedVectors
from newsmtl.text import TextEncoder

__all__ = ["TokenCache"]

logger = logging.getLogger(__name__)

IdArrays = tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]


class TokenCache:
    """``root/<key>/tokenizer.json``, ``root/<key>/ids-<tokenizer hash>-<split>.npz`` and
    ``root/<key>/vectors-<hash of tokenizer + pretraining params>.npz``."""

    def __init__(self, root: Path, *, train_fingerprint: str, dev_fingerprint: str, text_config: dict[str, Any],
                 vocab_size: int) -> None:
        material = json.dumps(
            {"v": 1, "train": train_fingerprint, "dev": dev_fingerprint, "text": text_config, "vocab": vocab_size,
             "tokenizers": tokenizers.__version__},
            sort_keys=True,
        )
        self.dir = Path(root) / hashlib.sha256(material.encode("utf-8")).hexdigest()[:24]

    def load_encoder(self, text_config: dict[str, Any]) -> TextEncoder | None:
        path = self.dir / "tokenizer.json"
        if not path.is_file():
            return None
        logger.info("token cache: tokenizer from %s", path)
        return TextEncoder.load(path, text_config)

    def save_encoder(self, encoder: TextEncoder) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic(self.dir / "tokenizer.json", encoder.tokenizer.to_str().encode("utf-8"))

    def _ids_path(self, encoder: TextEncoder, split: str) -> Path:
        digest = hashlib.sha256(encoder.tokenizer.to_str().encode("utf-8")).hexdigest()[:16]
        return self.dir / ("ids-%s-%s.npz" % (digest, split))

    def load_ids(self, encoder: TextEncoder, split: str, n: int) -> IdArrays | None:
        path = self._ids_path(encoder, split)
        if not path.is_file():
            return None
        with np.load(path) as data:
            ids, lengths = data["ids"], data["lengths"]
        if len(ids) != n or ids.shape[1] != encoder.max_length:
            return None
        logger.info("token cache: %s ids from %s", split, path)
        return ids.astype(np.int32), lengths.astype(np.int64)

    def save_ids(self, encoder: TextEncoder, split: str, arrays: IdArrays) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_npz(self._ids_path(encoder, split), ids=arrays[0], lengths=arrays[1])

    def _vectors_path(self, encoder: TextEncoder, params: dict[str, Any]) -> Path:
        material = json.dumps({"tokenizer": encoder.tokenizer.to_str(), **params}, sort_keys=True)
        return self.dir / ("vectors-%s.npz" % hashlib.sha256(material.encode("utf-8")).hexdigest()[:16])

    def load_vectors(self, encoder: TextEncoder, params: dict[str, Any]) -> PretrainedVectors | None:
        """Pretrained token vectors of this tokenizer and pretraining ``params``, if cached."""
        path = self._vectors_path(encoder, params)
        if not path.is_file():
            return None
        with np.load(path) as data:
            vectors, seen, meta = data["vectors"], data["seen"], data["meta"]
        logger.info("token cache: pretrained vectors from %s", path)
        return PretrainedVectors(vectors=vectors.astype(np.float32), seen=seen.astype(bool), tokens=int(meta[0]),
                                 seconds=float(meta[1]))

    def save_vectors(self, encoder: TextEncoder, params: dict[str, Any], pretrained: PretrainedVectors) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_npz(self._vectors_path(encoder, params), vectors=pretrained.vectors, seen=pretrained.seen,
                    meta=np.array([pretrained.tokens, pretrained.seconds], dtype=np.float64))


def _atomic_npz(path: Path, **arrays: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
    os.replace(tmp, path)
