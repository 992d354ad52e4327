"""The torch-free Predictor on a real ONNX Runtime session (random weights, real tokenizer)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.export._helpers import REPO_ROOT

from newsmtl import BundleError, ModelError, ModelSettings, ProviderUnavailableError
from newsmtl.consumer import Predictor
from newsmtl.consumer import _predictor as predictor_module
from newsmtl.consumer._predictor import bucket_by_length
from newsmtl.consumer._providers import (
    CPU,
    CUDA,
    TENSORRT,
    check_active_providers,
    check_onnxruntime_install,
    resolve_providers,
)
from newsmtl.schemas import Article, FileSource, KafkaSource

STAMP = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _articles(raw: list[dict[str, Any]], count: int, *, start: int = 700) -> list[Article]:
    # Alternate full articles with short ones so that a batch spans many lengths.
    out = []
    for i, row in enumerate(raw[start : start + count]):
        text = row["text"] if i % 3 else " ".join(row["text"].split()[: 3 + 7 * i])
        out.append(Article(id=row["id"], title=row["title"], text=text, publication=row["publication"]))
    return out


@pytest.fixture(scope="module")
def predictor(random_bundle: Path) -> Predictor:
    return Predictor.load(random_bundle, settings=ModelSettings(providers="cpu", intra_op_threads=1))


def test_loads_labels_and_names(predictor: Predictor, random_bundle: Path) -> None:
    manifest = json.loads((random_bundle / "manifest.json").read_text())
    assert predictor.model_name == "random-test"
    assert predictor.model_version == "0.0.1"
    assert predictor.topic_labels == manifest["labels"]["topics"]
    assert predictor.publication_labels == manifest["labels"]["publications"]
    assert predictor.providers == [CPU]


def test_predict_returns_valid_results_in_input_order(
    predictor: Predictor, raw_articles: list[dict[str, Any]]
) -> None:
    articles = _articles(raw_articles, 40)
    sources = [KafkaSource(topic="news.articles", partition=0, offset=i) for i in range(len(articles))]
    results = predictor.predict(articles, sources, classified_at=STAMP)
    assert [r.id for r in results] == [a.id for a in articles]
    for article, source, result in zip(articles, sources, results, strict=True):
        topic, style = result.topic, result.style
        assert topic.id == style.id == article.id
        assert topic.source == style.source == source
        assert topic.classified_at == style.classified_at == STAMP
        assert topic.model_name == "random-test" and style.model_version == "0.0.1"
        assert set(topic.topic_scores) == set(predictor.topic_labels)
        assert sum(topic.topic_scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert topic.topic == max(topic.topic_scores, key=topic.topic_scores.__getitem__)
        assert sum(style.styles.values()) == pytest.approx(1.0, abs=1e-5)
        assert style.top_style == max(style.styles, key=style.styles.__getitem__)
        assert 0.0 <= topic.shared_share <= 1.0
        assert topic.bias in predictor.bias_labels
        assert topic.bias_scores is not None and sum(topic.bias_scores.values()) == pytest.approx(
            1.0, abs=1e-5
        )


def test_bucketing_matches_unbucketed_and_keeps_order(
    random_bundle: Path, raw_articles: list[dict[str, Any]]
) -> None:
    articles = _articles(raw_articles, 60)
    bucketed = Predictor.load(random_bundle, settings=ModelSettings(providers="cpu", length_bucket=4))
    single = Predictor.load(random_bundle, settings=ModelSettings(providers="cpu", length_bucket=100_000))
    lengths = [len(ids) for ids in bucketed.encode(articles)[0]]
    assert len(bucket_by_length(lengths, 4)) > 3  # the test must actually split the batch
    assert len(bucket_by_length(lengths, 100_000)) == 1
    got = bucketed.predict(articles, classified_at=STAMP)
    want = single.predict(articles, classified_at=STAMP)
    # One by one: no padding at all, the reference for both.
    alone = [single.predict([a], classified_at=STAMP)[0] for a in articles]
    for a, b, c in zip(got, want, alone, strict=True):
        assert a.id == b.id == c.id
        assert a.topic.topic == b.topic.topic == c.topic.topic
        assert a.style.top_style == b.style.top_style == c.style.top_style
        for label in a.topic.topic_scores:
            assert a.topic.topic_scores[label] == pytest.approx(b.topic.topic_scores[label], abs=1e-5)
            assert a.topic.topic_scores[label] == pytest.approx(c.topic.topic_scores[label], abs=1e-5)
        for label in a.style.styles:
            assert a.style.styles[label] == pytest.approx(b.style.styles[label], abs=1e-5)
        assert a.topic.shared_share == pytest.approx(b.topic.shared_share, abs=1e-4)


def test_bucket_by_length_groups_and_orders() -> None:
    lengths = [50, 3, 49, 10, 3, 200, 12]
    buckets = bucket_by_length(lengths, 8)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for bucket in buckets:
        spread = [lengths[i] for i in bucket]
        assert max(spread) - min(spread) < 8
    assert buckets == [[1, 4, 3], [6], [2, 0], [5]]  # 12 - 3 >= 8 starts a new bucket
    assert bucket_by_length([], 8) == []
    with pytest.raises(ValueError):
        bucket_by_length([1], 0)


@pytest.mark.parametrize(
    ("publication", "expected"),
    [
        ("foxnews.com", "foxnews.com"),
        ("WWW.FoxNews.com", "foxnews.com"),
        ("https://www.cnn.com/2020/politics/story.html", "cnn.com"),
        ("NYTimes.com", "nytimes.com"),
        ("www1.politico.com:443", "politico.com"),
        ("breitbart.com", None),
        ("foxnews.co", None),
        ("", None),
        (None, None),
    ],
)
def test_publication_mapping(
    predictor: Predictor, raw_articles: list[dict[str, Any]], publication: str | None, expected: str | None
) -> None:
    want_index = -1 if expected is None else predictor.publication_labels.index(expected)
    assert predictor.publication_index(publication) == want_index
    row = raw_articles[750]
    article = Article(id="a1", title=row["title"], text=row["text"], publication=publication)
    (result,) = predictor.predict([article], classified_at=STAMP)
    assert result.topic.topic_head == ("shared" if expected is None else "publication")
    # A different spelling of a known outlet gives exactly that outlet's head.
    if expected is not None:
        canonical = Article(id="a1", title=row["title"], text=row["text"], publication=expected)
        (reference,) = predictor.predict([canonical], classified_at=STAMP)
        assert result.topic.topic_scores == reference.topic.topic_scores
        assert result.topic.publication == expected


def test_unknown_outlet_uses_the_shared_head(
    predictor: Predictor, raw_articles: list[dict[str, Any]]
) -> None:
    row = raw_articles[760]
    unknown = Article(id="a", title=row["title"], text=row["text"], publication="unknown-outlet.example")
    absent = Article(id="a", title=row["title"], text=row["text"])
    (r1,) = predictor.predict([unknown], classified_at=STAMP)
    (r2,) = predictor.predict([absent], classified_at=STAMP)
    assert r1.topic.topic_scores == r2.topic.topic_scores
    assert r1.topic.publication == "unknown-outlet.example" and r2.topic.publication is None
    assert r1.topic.topic_head == r2.topic.topic_head == "shared"


def test_io_binding_path_matches_plain_run(random_bundle: Path, raw_articles: list[dict[str, Any]]) -> None:
    # The CUDA code path binds inputs/outputs; ONNX Runtime's CPU device takes the same calls.
    predictor = Predictor.load(random_bundle, settings=ModelSettings(providers="cpu"))
    articles = _articles(raw_articles, 20)
    plain = predictor.predict(articles, classified_at=STAMP)
    predictor._io_device = "cpu"
    bound = predictor.predict(articles, classified_at=STAMP)
    assert [r.model_dump() for r in bound] == [r.model_dump() for r in plain]


def test_predict_is_thread_safe(predictor: Predictor, raw_articles: list[dict[str, Any]]) -> None:
    articles = _articles(raw_articles, 24)
    reference = [r.model_dump() for r in predictor.predict(articles, classified_at=STAMP)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda _: predictor.predict(articles, classified_at=STAMP), range(8)))
    for run in runs:
        assert [r.model_dump() for r in run] == reference


def test_predict_edge_cases(predictor: Predictor, raw_articles: list[dict[str, Any]]) -> None:
    assert predictor.predict([]) == []
    articles = _articles(raw_articles, 2)
    with pytest.raises(ValueError, match="2 articles"):
        predictor.predict(articles, [None])
    source = FileSource(path="replay.jsonl", line=3)
    before = datetime.now(UTC)
    results = predictor.predict(articles, [source, None])
    assert results[0].topic.source == source and results[1].style.source is None
    assert before <= results[0].topic.classified_at <= datetime.now(UTC)
    assert results[0].topic.classified_at == results[1].topic.classified_at
    tiny = Article(id="t", title="", text="x")
    (result,) = predictor.predict([tiny], classified_at=STAMP)
    assert result.topic.topic in predictor.topic_labels


@pytest.mark.parametrize("requested", ["cuda", "tensorrt"])
def test_explicit_gpu_provider_is_unavailable_here(random_bundle: Path, requested: str) -> None:
    import onnxruntime as ort

    assert CUDA not in ort.get_available_providers()  # this suite runs on a CPU-only machine
    with pytest.raises(ProviderUnavailableError, match=requested):
        Predictor.load(random_bundle, settings=ModelSettings(providers=requested))  # type: ignore[arg-type]


def test_auto_provider_prefers_gpus_among_the_available() -> None:
    assert resolve_providers("auto", [CPU]) == [(CPU, {})]
    assert [p for p, _ in resolve_providers("auto", [CUDA, CPU, TENSORRT])] == [TENSORRT, CUDA, CPU]
    assert [p for p, _ in resolve_providers("auto", ["AzureExecutionProvider", CUDA, CPU])] == [CUDA, CPU]
    assert resolve_providers("cuda", [CUDA, CPU], cuda_device_id=2) == [(CUDA, {"device_id": "2"}), (CPU, {})]
    assert [p for p, _ in resolve_providers("tensorrt", [TENSORRT, CUDA, CPU])] == [TENSORRT, CUDA, CPU]
    assert resolve_providers("cpu", [TENSORRT, CUDA, CPU]) == [(CPU, {})]
    with pytest.raises(ProviderUnavailableError, match="TensorrtExecutionProvider"):
        resolve_providers("tensorrt", [CUDA, CPU])


def test_a_dropped_gpu_provider_is_an_error() -> None:
    # ONNX Runtime can create the session yet silently leave out a provider that failed to load.
    with pytest.raises(ProviderUnavailableError, match="did not load CUDAExecutionProvider"):
        check_active_providers("cuda", [CUDA, CPU], [CPU])
    with pytest.raises(ProviderUnavailableError, match="TensorrtExecutionProvider"):
        check_active_providers("tensorrt", [TENSORRT, CUDA, CPU], [CUDA, CPU])
    check_active_providers("cuda", [CUDA, CPU], [CUDA, CPU])
    check_active_providers("auto", [CUDA, CPU], [CPU])


def test_session_settings_are_applied(random_bundle: Path) -> None:
    settings = ModelSettings(
        providers="auto", intra_op_threads=1, inter_op_threads=1, graph_optimization="basic"
    )
    predictor = Predictor.load(random_bundle, settings=settings)
    assert predictor.providers == [CPU]
    options = predictor._session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert str(options.graph_optimization_level).endswith("ORT_ENABLE_BASIC")


def test_bundle_path_from_settings_and_missing_default(
    random_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = Predictor.load(None, settings=ModelSettings(bundle_path=random_bundle, providers="cpu"))
    assert predictor.bundle_dir == random_bundle
    # An install without the packaged default (e.g. a slimmed wheel) must say what to do.
    monkeypatch.setattr(predictor_module, "DEFAULT_BUNDLE_RESOURCE", ("_resources", "no_such_bundle"))
    with pytest.raises(BundleError, match="no default bundle packaged.*pass --bundle"):
        Predictor.load(None, settings=ModelSettings(providers="cpu"))


def test_packaged_default_bundle_loads_and_classifies() -> None:
    predictor = Predictor.load(None, settings=ModelSettings(providers="cpu"))
    assert predictor.bundle_dir.parts[-2:] == predictor_module.DEFAULT_BUNDLE_RESOURCE
    assert predictor.model_name == "newsmtl-default"
    assert len(predictor.publication_labels) >= 20  # every outlet with >= 300 training articles
    article = Article(
        id="default-1", title="Senate passes budget", text="The Senate voted on the budget bill."
    )
    (result,) = predictor.predict([article])
    assert result.topic.topic in predictor.topic_labels
    assert abs(sum(result.style.styles.values()) - 1.0) < 1e-4


def test_two_onnxruntime_wheels_are_detected(tmp_path: Path) -> None:
    assert check_onnxruntime_install() == "onnxruntime"
    with pytest.raises(ModelError, match="several ONNX Runtime distributions.*onnxruntime, onnxruntime-gpu"):
        check_onnxruntime_install(["numpy", "onnxruntime", "onnxruntime_gpu"])
    with pytest.raises(ModelError, match="not installed"):
        check_onnxruntime_install(["numpy"])
    # End to end: a second distribution's metadata on sys.path makes loading fail clearly.
    dist_info = tmp_path / "onnxruntime_gpu-1.20.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.0\n")
    script = textwrap.dedent(
        """
        import sys
        from newsmtl.consumer._providers import check_onnxruntime_install
        from newsmtl import ModelError
        try:
            check_onnxruntime_install()
        except ModelError as exc:
            print("ERROR", exc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=REPO_ROOT,
        check=True,
    )
    assert (
        "ERROR several ONNX Runtime distributions are installed at once (onnxruntime, onnxruntime-gpu)"
        in proc.stdout
    )


def test_predicting_never_imports_torch(random_bundle: Path, raw_articles: list[dict[str, Any]]) -> None:
    row = raw_articles[710]
    script = textwrap.dedent(
        """
        import json, sys
        from newsmtl import ModelSettings
        from newsmtl.consumer import Predictor
        from newsmtl.export import read_bundle
        from newsmtl.schemas import Article
        read_bundle(sys.argv[1])
        predictor = Predictor.load(sys.argv[1], settings=ModelSettings(providers="auto"))
        article = Article.model_validate_json(sys.argv[2])
        (result,) = predictor.predict([article])
        print(json.dumps({"torch": "torch" in sys.modules, "topic": result.topic.topic,
                          "modules": sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "onnx"})}))
        """
    )
    article = Article(id=row["id"], title=row["title"], text=row["text"], publication=row["publication"])
    proc = subprocess.run(
        [sys.executable, "-c", script, str(random_bundle), article.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["torch"] is False, report["modules"]
    assert report["modules"] == []
    assert report["topic"] in json.loads((random_bundle / "manifest.json").read_text())["labels"]["topics"]


def test_fp32_bundle_matches_torch_through_the_predictor(
    random_bundle: Path, random_inputs: Any, raw_articles: list[dict[str, Any]]
) -> None:
    import torch

    from newsmtl.model._network import OnnxInferenceWrapper

    predictor = Predictor.load(random_bundle, settings=ModelSettings(providers="cpu"))
    articles = _articles(raw_articles, 16)
    token_ids, pubs = predictor.encode(articles)
    got = predictor.run_model(token_ids, pubs)
    wrapper = OnnxInferenceWrapper(random_inputs.net).eval()
    for row, (ids, pub) in enumerate(zip(token_ids, pubs, strict=True)):
        with torch.inference_mode():
            want = wrapper(
                torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.int64), torch.tensor([pub])
            )
        np.testing.assert_allclose(got["topic_probs"][row], want[0][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(got["style_scores"][row], want[1][0].numpy(), atol=1e-5)
