"""The bundle reader: manifest parsing, checksums, format version. Torch-free code under test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from newsmtl import BundleError
from newsmtl.export import (
    BUNDLE_FORMAT_VERSION,
    CARD_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    build_inputs,
    read_bundle,
    sha256_file,
)


@pytest.fixture
def bundle_copy(random_bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(random_bundle, target)
    return target


def _edit_manifest(root: Path, **changes: object) -> None:
    path = root / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_reads_a_fresh_bundle(random_bundle: Path) -> None:
    bundle = read_bundle(random_bundle)
    manifest = bundle.manifest
    assert manifest.format_version == BUNDLE_FORMAT_VERSION
    assert manifest.model_name == "random-test" and manifest.model_version == "0.0.1"
    assert set(manifest.files) == {MODEL_FILE, TOKENIZER_FILE, CARD_FILE}
    for name, digest in manifest.files.items():
        assert sha256_file(random_bundle / name) == digest
    assert bundle.model_path == random_bundle / MODEL_FILE


def test_checksum_mismatch_is_refused(bundle_copy: Path) -> None:
    model = bundle_copy / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for model\.onnx"):
        read_bundle(bundle_copy)


def test_tokenizer_checksum_mismatch_is_refused(bundle_copy: Path) -> None:
    with (bundle_copy / TOKENIZER_FILE).open("a") as fh:
        fh.write(" ")
    with pytest.raises(BundleError, match=r"checksum mismatch for tokenizer\.json"):
        read_bundle(bundle_copy)


@pytest.mark.parametrize("version", [BUNDLE_FORMAT_VERSION + 1, 0, "1", None])
def test_unknown_format_version_is_refused(bundle_copy: Path, version: object) -> None:
    _edit_manifest(bundle_copy, format_version=version)
    with pytest.raises(
        BundleError, match=r"format_version .* reads only format_version %d" % BUNDLE_FORMAT_VERSION
    ):
        read_bundle(bundle_copy)


@pytest.mark.parametrize("name", [MODEL_FILE, TOKENIZER_FILE, CARD_FILE])
def test_missing_file_is_refused(bundle_copy: Path, name: str) -> None:
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=r"missing %s" % name.replace(".", r"\.")):
        read_bundle(bundle_copy)


def test_missing_manifest_and_directory(bundle_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        read_bundle(tmp_path / "nope")
    (bundle_copy / MANIFEST_FILE).unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        read_bundle(bundle_copy)


def test_malformed_manifest_names_the_field(bundle_copy: Path) -> None:
    _edit_manifest(bundle_copy, labels={"topics": ["only-one"], "publications": ["a.com"]})
    with pytest.raises(BundleError, match=r"malformed: labels\.topics"):
        read_bundle(bundle_copy)
    (bundle_copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(bundle_copy)


def test_manifest_must_list_the_model(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    del manifest["files"][MODEL_FILE]
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no checksum for the required file model.onnx"):
        read_bundle(bundle_copy)


def test_file_names_cannot_leave_the_bundle(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    manifest["files"]["../outside.txt"] = "0" * 64
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="invalid file name"):
        read_bundle(bundle_copy)


def test_build_inputs_pads_right_and_masks() -> None:
    feed = build_inputs([[5, 6, 7], [8], []], [2, -1, 0], pad_id=1)
    np.testing.assert_array_equal(feed["input_ids"], [[5, 6, 7], [8, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(feed["attention_mask"], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(feed["publication_index"], [2, -1, 0])
    assert all(a.dtype == np.int64 for a in feed.values())
    with pytest.raises(ValueError, match="differ in length"):
        build_inputs([[1]], [0, 1], pad_id=0)


def test_export_package_is_torch_free_until_the_exporter_is_used() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import newsmtl.export as e\n"
        "e.read_bundle, e.BundleManifest, e.sha256_file\n"
        "assert 'torch' not in sys.modules, 'eager import of torch'\n"
        "assert 'onnx' not in sys.modules\n"
        "e.export_run\n"
        "assert 'torch' in sys.modules, 'lazy attribute did not load the exporter'\n"
        "try:\n"
        "    e.no_such_name\n"
        "except AttributeError:\n"
        "    print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_label_lists_must_match_the_graph(bundle_copy: Path) -> None:
    from newsmtl import ModelSettings
    from newsmtl.consumer import Predictor
    from newsmtl.export import sha256_file

    manifest = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    manifest["labels"]["topics"] = manifest["labels"]["topics"][:-1]
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert manifest["files"][MODEL_FILE] == sha256_file(bundle_copy / MODEL_FILE)
    with pytest.raises(BundleError, match=r"topic_probs has \d+ columns but the manifest lists \d+ labels"):
        Predictor.load(bundle_copy, settings=ModelSettings(providers="cpu"))
