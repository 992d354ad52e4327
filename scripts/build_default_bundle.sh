#!/usr/bin/env bash
# Build the default model bundle that ships inside the package, end to end:
#
#   1. train the `base` preset on ../shared/data/allsides-article-bias   (newsmtl train)
#   2. export it: int8 (static QDQ) if it stays within the macro-F1 bound, else fp32  (newsmtl export)
#   3. check the bundle is at most 10 MB, add the rebuild recipe to its model card (re-hashed
#      in the manifest), load it with the torch-free Predictor and classify the demo samples
#   4. replace src/newsmtl/_resources/default_bundle/ with it
#
# Usage: scripts/build_default_bundle.sh [--run DIR] [--variant int8|fp32] [--seed N] [--retrain] [--dry-run]
#   --run DIR      run directory to train into / reuse (default: runs/base; reused if it holds checkpoint.pt)
#   --variant V    int8 (default; falls back to fp32 if int8 misses the accuracy bound) or fp32
#   --seed N       training seed (default 13)
#   The training overrides of the default model live in scripts/default_model.json.
#   --retrain      train again even if the run directory already holds a checkpoint
#   --dry-run      build and verify the bundle under .work/default-bundle, do not install it
#
# Environment: NEWSMTL_DATA_DIR (default ../shared/data), PYTHON / NEWSMTL (default: from PATH).
# Needs the training extras (torch, onnx) and the serving extra (onnxruntime): pip install -e '.[train,serve]'.
# Training the base preset takes a while on a CPU (see the run's metrics.json for the time it took).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${NEWSMTL_DATA_DIR:-$REPO/../shared/data}"
DATA="$DATA_DIR/allsides-article-bias/articles.jsonl.gz"
RUN_DIR="$REPO/runs/base"
VARIANT="int8"
SEED="13"
CONFIG="$REPO/scripts/default_model.json"
RETRAIN=0
DRY_RUN=0
WORK="$REPO/.work/default-bundle"
TARGET="$REPO/src/newsmtl/_resources/default_bundle"
MAX_BYTES=$((10 * 1024 * 1024))
NEWSMTL="${NEWSMTL:-newsmtl}"
PYTHON="${PYTHON:-python}"

die() { echo "build_default_bundle: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --run) RUN_DIR="$2"; shift 2 ;;
    --variant) VARIANT="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --retrain) RETRAIN=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$VARIANT" == "int8" || "$VARIANT" == "fp32" ]] || die "--variant must be int8 or fp32, got $VARIANT"
[[ -f "$DATA" ]] || die "training data not found at $DATA (set NEWSMTL_DATA_DIR)"
command -v "$NEWSMTL" >/dev/null || die "the newsmtl CLI is not on PATH (pip install -e '.[train,serve]')"
"$PYTHON" -c "import torch, onnx, onnxruntime" 2>/dev/null || die "needs torch, onnx and onnxruntime: pip install -e '.[train,serve]'"

# 1. Train (or reuse) the base run.
if [[ $RETRAIN -eq 1 || ! -f "$RUN_DIR/checkpoint.pt" ]]; then
  echo "== training the base preset into $RUN_DIR (seed $SEED)"
  resume=()
  if [[ $RETRAIN -eq 0 && -f "$RUN_DIR/last.pt" ]]; then resume=(--resume); fi
  if [[ $RETRAIN -eq 1 ]]; then rm -rf "$RUN_DIR"; fi
  mkdir -p "$(dirname "$RUN_DIR")"
  "$NEWSMTL" train --data "$DATA" --out "$RUN_DIR" --preset base --config "$CONFIG" --seed "$SEED" --no-progress "${resume[@]}"
else
  echo "== reusing the trained run $RUN_DIR"
fi

# 2. Export. The version names the run's checkpoint so two builds of the same run agree.
ckpt_hash="$(sha256sum "$RUN_DIR/checkpoint.pt" | cut -c1-8)"
version="base-$(date -u -r "$RUN_DIR/checkpoint.pt" +%Y%m%d)-$ckpt_hash"
mkdir -p "$WORK"
BUNDLE="$WORK/bundle"
export_bundle() {
  local variant="$1" flags=()
  if [[ "$variant" == "int8" ]]; then flags=(--quantize int8 --int8-method static); fi
  "$NEWSMTL" export "$RUN_DIR" --out "$BUNDLE" --overwrite --data "$DATA" \
    --model-name newsmtl-default --model-version "$version" "${flags[@]}"
}
echo "== exporting ($VARIANT) to $BUNDLE"
if ! export_bundle "$VARIANT"; then
  [[ "$VARIANT" == "int8" ]] || die "export failed"
  echo "== the int8 variant was refused (see above); exporting fp32 instead"
  VARIANT="fp32"
  export_bundle fp32 || die "export failed"
fi

# 3. Size bound, model card, verification.
size=$(du -sb "$BUNDLE" | cut -f1)
echo "== bundle size: $size bytes"
[[ $size -le $MAX_BYTES ]] || die "the bundle is $size bytes, over the 10 MB bound of a packaged default"

"$PYTHON" - "$BUNDLE" "$RUN_DIR" "$VARIANT" "$SEED" "$CONFIG" <<'PY'
import json, sys
from pathlib import Path

from newsmtl.export._bundle import read_bundle, sha256_file, write_manifest

bundle, run_dir, variant, seed = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
card = bundle / "MODEL_CARD.md"
card.write_text(card.read_text(encoding="utf-8").rstrip() + """

## This is newsmtl's packaged default model

It ships inside the package at `newsmtl/_resources/default_bundle/` and is what
`Predictor.load(None)`, `newsmtl demo` and `newsmtl replay` without `--bundle` use.

Rebuild it from a checkout (training extras and serving extra installed,
`pip install -e '.[train,serve]'`, and the shared data at `../shared/data`):

    scripts/build_default_bundle.sh            # trains runs/base if needed, exports, verifies, installs

which runs, in order:

    newsmtl train --data ../shared/data/allsides-article-bias/articles.jsonl.gz --out runs/base --preset base \\
        --config scripts/default_model.json --seed %s   # %s
    newsmtl export runs/base --out .work/default-bundle/bundle --overwrite --data ../shared/data/allsides-article-bias/articles.jsonl.gz \\
        --model-name newsmtl-default --model-version base-<date>-<checkpoint sha256[:8]> %s

then checks the bundle is at most 10 MB, appends this section (re-hashing the card in the
manifest), classifies the demo samples with the torch-free Predictor and copies the bundle
here. Variant shipped: %s (built from %s).
""" % (seed, json.dumps(json.load(open(sys.argv[5]))), "--quantize int8 --int8-method static" if variant == "int8" else "", variant, run_dir), encoding="utf-8")
raw = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
raw["files"]["MODEL_CARD.md"] = sha256_file(card)
write_manifest(bundle, raw)
read_bundle(bundle)  # every checksum verified again

from newsmtl.consumer import Predictor
from newsmtl.demo import load_samples

predictor = Predictor.load(bundle)
results = predictor.predict(load_samples())
print("== verified: %s %s classifies %d demo samples" % (predictor.model_name, predictor.model_version, len(results)))
PY

if [[ $DRY_RUN -eq 1 ]]; then
  echo "== dry run: the bundle is at $BUNDLE (not installed)"
  exit 0
fi

# 4. Install into the package.
rm -rf "$TARGET"
mkdir -p "$(dirname "$TARGET")"
cp -r "$BUNDLE" "$TARGET"
echo "== installed $TARGET"
"$NEWSMTL" demo --limit 5
