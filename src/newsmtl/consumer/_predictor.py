"""Torch-free inference: a model bundle in ONNX Runtime, articles in, results out.

One :meth:`Predictor.predict` call::

    articles ──TextEncoder.encode_batch (one batched tokenizers call)──> token ids
        ──sort by length, cut into buckets of `length_bucket` tokens──> one session.run per
          bucket, each padded only to its own longest article
        ──restore input order──> TopicResult + StyleResult per article

The network masks its padding exactly (zero pad embedding, masked max-pool), so bucketing
changes only how much padding is computed, not the results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from newsmtl._errors import BundleError, ModelError, NewsmtlError
from newsmtl._settings import ModelSettings
from newsmtl.consumer._providers import CPU, CUDA, TENSORRT, create_session
from newsmtl.export._bundle import OUTPUT_NAMES, Bundle, BundleManifest, build_inputs, read_bundle
from newsmtl.schemas import Article, ClassificationResult, Source, StyleResult, TopicResult
from newsmtl.text import TextEncoder, normalize_publication

__all__ = ["DEFAULT_BUNDLE_RESOURCE", "Predictor", "bucket_by_length"]

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE_RESOURCE = ("_resources", "default_bundle")


def bucket_by_length(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices grouped so that lengths within a group differ by less than ``width``.

    Sorted by length, then cut wherever a group would span ``width`` tokens or more, so each
    group pads to at most ``width - 1`` tokens beyond its shortest member.
    """
    if width < 1:
        raise ValueError("width must be >= 1")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    buckets: list[list[int]] = []
    for index in order:
        if buckets and lengths[index] - lengths[buckets[-1][0]] < width:
            buckets[-1].append(index)
        else:
            buckets.append([index])
    return buckets


def _default_bundle_dir() -> Path:
    root = resources.files("newsmtl")
    for part in DEFAULT_BUNDLE_RESOURCE:
        root = root / part
    path = Path(str(root))
    if not path.is_dir() or not (path / "manifest.json").is_file():
        raise BundleError(
            "no default bundle packaged with this newsmtl (newsmtl/%s is missing); "
            "pass --bundle or set NEWSMTL_MODEL__BUNDLE_PATH to a directory written by `newsmtl export`"
            % "/".join(DEFAULT_BUNDLE_RESOURCE)
        )
    return path


class Predictor:
    """A loaded model bundle; :meth:`predict` is synchronous and thread-safe.

    Build it with :meth:`load`. The ONNX Runtime session is shared by all threads
    (``InferenceSession.run`` is thread-safe); nothing else here is mutated after loading.
    """

    def __init__(
        self, *, bundle: Bundle, encoder: TextEncoder, session: Any, settings: ModelSettings
    ) -> None:
        self._bundle = bundle
        self._manifest = bundle.manifest
        self._encoder = encoder
        self._session = session
        self._settings = settings
        labels = bundle.manifest.labels
        self._topics = list(labels.topics)
        self._publications = list(labels.publications)
        self._bias = list(labels.bias)
        self._publication_index = {name: i for i, name in enumerate(self._publications)}
        graph_outputs = [out.name for out in session.get_outputs()]
        self._outputs = [name for name in OUTPUT_NAMES if name in graph_outputs]
        missing = [name for name in OUTPUT_NAMES[:5] if name not in graph_outputs]
        if missing:
            raise BundleError("model.onnx of %s lacks the outputs %s" % (bundle.root, ", ".join(missing)))
        self._has_bias = "bias_probs" in self._outputs and bool(self._bias)
        # A label list that does not match the graph would mislabel every score: refuse it.
        widths = {"topic_probs": self._topics, "style_scores": self._publications, "bias_probs": self._bias}
        for out in session.get_outputs():
            labels_for = widths.get(out.name)
            shape = list(out.shape)
            if (
                labels_for is not None
                and len(shape) == 2
                and isinstance(shape[1], int)
                and shape[1] != len(labels_for)
            ):
                raise BundleError(
                    "bundle %s: output %s has %d columns but the manifest lists %d labels"
                    % (bundle.root, out.name, shape[1], len(labels_for))
                )
        providers = list(session.get_providers())
        self._providers = providers
        # IOBinding keeps inputs and outputs in place on the GPU provider instead of staging
        # them through the session's default host copies on every run.
        self._io_device: str | None = "cuda" if providers and providers[0] in (CUDA, TENSORRT) else None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(
        cls, bundle_dir: Path | str | None = None, *, settings: ModelSettings | None = None
    ) -> Predictor:
        """Load and verify a bundle; ``None`` means ``settings.bundle_path``, else the packaged default.

        Raises :class:`~newsmtl.BundleError` for a missing or corrupt bundle (checksums are
        verified), :class:`~newsmtl.ProviderUnavailableError` when an explicitly requested GPU
        provider does not load, :class:`~newsmtl.ModelError` for an unusable ONNX Runtime install.
        """
        settings = settings or ModelSettings()
        if bundle_dir is None:
            bundle_dir = settings.bundle_path
        root = Path(bundle_dir) if bundle_dir is not None else _default_bundle_dir()
        bundle = read_bundle(root)
        manifest = bundle.manifest
        try:
            encoder = TextEncoder.load(bundle.tokenizer_path, manifest.text_config)
        except (NewsmtlError, ValueError) as exc:
            raise BundleError("bundle %s: unusable tokenizer or text config: %s" % (root, exc)) from None
        if encoder.pad_id != manifest.pad_id:
            raise BundleError(
                "bundle %s: tokenizer pad id %d differs from the manifest's %d"
                % (root, encoder.pad_id, manifest.pad_id)
            )
        session = create_session(bundle.model_path, settings)
        predictor = cls(bundle=bundle, encoder=encoder, session=session, settings=settings)
        if manifest.variant == "fp16" and predictor.providers[0] == CPU:
            logger.warning(
                "bundle %s holds the fp16 variant, which ONNX Runtime runs slowly on the CPU", root
            )
        logger.info(
            "loaded model %s %s (%s) from %s on %s",
            manifest.model_name,
            manifest.model_version,
            manifest.variant,
            root,
            ", ".join(predictor.providers),
        )
        return predictor

    # -- description ----------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._manifest.model_name

    @property
    def model_version(self) -> str:
        return self._manifest.model_version

    @property
    def topic_labels(self) -> list[str]:
        return list(self._topics)

    @property
    def publication_labels(self) -> list[str]:
        return list(self._publications)

    @property
    def bias_labels(self) -> list[str]:
        return list(self._bias)

    @property
    def manifest(self) -> BundleManifest:
        return self._manifest

    @property
    def bundle_dir(self) -> Path:
        return self._bundle.root

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually runs on, most preferred first."""
        return list(self._providers)

    @property
    def encoder(self) -> TextEncoder:
        return self._encoder

    def publication_index(self, publication: str | None) -> int:
        """Index of the outlet's private encoder and topic head, or -1 (shared head)."""
        key = normalize_publication(publication)
        return -1 if key is None else self._publication_index.get(key, -1)

    # -- inference ------------------------------------------------------------------------
    def encode(self, articles: Sequence[Article]) -> tuple[list[list[int]], list[int]]:
        """Token ids and publication indices; the torch-free half of :meth:`predict`."""
        token_ids = self._encoder.encode_batch([a.title for a in articles], [a.text for a in articles])
        return token_ids, [self.publication_index(a.publication) for a in articles]

    def run_model(
        self, token_ids: Sequence[Sequence[int]], publication_index: Sequence[int]
    ) -> dict[str, np.ndarray]:
        """Model outputs for already-encoded articles, in input order, one session run per length bucket."""
        count = len(token_ids)
        outputs: dict[str, np.ndarray] = {}
        for rows in bucket_by_length([len(ids) for ids in token_ids], self._settings.length_bucket):
            feed = build_inputs(
                [token_ids[i] for i in rows],
                [publication_index[i] for i in rows],
                pad_id=self._encoder.pad_id,
            )
            values = self._run(feed)
            for name, value in zip(self._outputs, values, strict=True):
                if name not in outputs:
                    outputs[name] = np.empty((count, *value.shape[1:]), dtype=np.float32)
                outputs[name][rows] = value
        return outputs

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._io_device is None:
            return [np.asarray(v) for v in self._session.run(self._outputs, feed)]
        return self._run_bound(feed, self._io_device)

    def _run_bound(self, feed: dict[str, np.ndarray], device: str) -> list[np.ndarray]:
        # Inputs are copied to the device once, outputs come back to host memory; the binding
        # object is per call, so concurrent calls do not share state.
        import onnxruntime as ort

        binding = self._session.io_binding()
        for name, array in feed.items():
            binding.bind_ortvalue_input(
                name, ort.OrtValue.ortvalue_from_numpy(array, device, self._settings.cuda_device_id)
            )
        for name in self._outputs:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return [np.asarray(v) for v in binding.copy_outputs_to_cpu()]

    def predict(
        self,
        articles: Sequence[Article],
        sources: Sequence[Source | None] | None = None,
        *,
        classified_at: datetime | None = None,
    ) -> list[ClassificationResult]:
        """Classify ``articles``; results are in input order.

        ``sources[i]`` (if given) is copied into both results of article ``i``.
        ``classified_at=None`` stamps the whole batch with one "now" (UTC).
        """
        if sources is not None and len(sources) != len(articles):
            raise ValueError("got %d sources for %d articles" % (len(sources), len(articles)))
        if not articles:
            return []
        stamp = classified_at if classified_at is not None else datetime.now(UTC)
        token_ids, pub_index = self.encode(articles)
        out = self.run_model(token_ids, pub_index)
        topic_probs, style_scores, shared_share = out["topic_probs"], out["style_scores"], out["shared_share"]
        bias_probs = out.get("bias_probs") if self._has_bias else None
        if not (
            np.all(np.isfinite(topic_probs))
            and np.all(np.isfinite(style_scores))
            and np.all(np.isfinite(shared_share))
        ):
            raise ModelError(
                "model %s %s produced non-finite outputs" % (self.model_name, self.model_version)
            )
        topic_best = np.argmax(topic_probs, axis=1)
        style_best = np.argmax(style_scores, axis=1)
        bias_best = np.argmax(bias_probs, axis=1) if bias_probs is not None else None
        results = []
        for i, article in enumerate(articles):
            source = sources[i] if sources is not None else None
            common: dict[str, Any] = {
                "id": article.id,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "classified_at": stamp,
                "source": source,
            }
            bias_label = bias_scores = None
            if bias_probs is not None and bias_best is not None:
                bias_scores = dict(zip(self._bias, (float(p) for p in bias_probs[i]), strict=True))
                bias_label = self._bias[int(bias_best[i])]
            topic = TopicResult(
                **common,
                topic=self._topics[int(topic_best[i])],
                topic_scores=dict(zip(self._topics, (float(p) for p in topic_probs[i]), strict=True)),
                topic_head="publication" if pub_index[i] >= 0 else "shared",
                publication=normalize_publication(article.publication),
                shared_share=min(1.0, max(0.0, float(shared_share[i]))),
                bias=bias_label,
                bias_scores=bias_scores,
            )
            style = StyleResult(
                **common,
                styles=dict(zip(self._publications, (float(p) for p in style_scores[i]), strict=True)),
                top_style=self._publications[int(style_best[i])],
            )
            results.append(ClassificationResult(id=article.id, topic=topic, style=style))
        return results
