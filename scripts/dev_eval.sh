#!/usr/bin/env bash
# Development results on the identities kept out of training (splits/dev_split.json), for one model.
# Usage: scripts/dev_eval.sh MODEL LABEL [TASKS]
#   MODEL: checkpoint folder, frozen-dinov2, osnet-0267, omz-0277, osnet-trunk:CHECKPOINT, openvino:PATH.xml or
#          ensemble:A+B@W (weighted mean of the members' cosine similarities);  LABEL: folder name under outputs/dev/
#   TASKS: space-separated subset of: sketch text rgb ir text+sketch text+ir sketch-anchor ir-anchor text-anchor
#          rgb-cross-domain ir-cross-domain (CUHK01, a source held out of training: camera c1 -> c2)
#          text-full-gallery (the development captions among the photos of every held-out identity, >= 3000 photos)
#          text+sketch-full-gallery text+ir-full-gallery (the same captions with a synthetic view of their photo)
#          text-anchor-full-gallery sketch-anchor-full-gallery ir-anchor-full-gallery (their single-modality baselines)
#          ir-real-thermal (real thermal crops of the held-out thermal/visible pairs -> their visible crops)
# BACKEND=torch-bf16|torch-bf16-compiled|onnx|openvino (modeling_aio.export.BACKENDS) runs the checkpoint that way
# instead of PyTorch in float32 (onnx / openvino: single-modality tasks only); ir-real-thermal stays on PyTorch.
# RGB_MODEL=NAME embeds the RGB photos (gallery and RGB queries) with another model, e.g. a fast
# low-res-student:FOLDER indexing the gallery that MODEL's text and sketch queries search.
# Writes outputs/dev/LABEL/TASK.json (+ .model-index.yaml); scripts/make_model_card.py reads them.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$1; LABEL=$2
TASKS=${3:-"sketch text text-full-gallery rgb ir text+sketch text+ir text+sketch-full-gallery text+ir-full-gallery text-anchor-full-gallery sketch-anchor-full-gallery ir-anchor-full-gallery sketch-anchor ir-anchor text-anchor rgb-cross-domain ir-real-thermal"}
DATA=${AIO_DATA:-../shared/data}
PY=${PYTHON:-.venv/bin/python}
OUT=outputs/dev/$LABEL
mkdir -p "$OUT"
run() {  # task, dataset, root, modalities, extra...
  local task=$1 dataset=$2 root=$3 modalities=$4; shift 4
  echo "== $LABEL: $task"
  "$PY" scripts/evaluate_reid.py --model "$MODEL" --dataset "$dataset" --root "$root" --query-modalities "$modalities" \
    --backend "${BACKEND:-torch}" ${RGB_MODEL:+--rgb-model "$RGB_MODEL"} \
    --split-file "${SPLIT:-splits/dev_split.json}" --output "$OUT/$task.json" "$@" 2>&1 | grep -E "^  (rank|mAP|mINP|num_)|error"
}
for task in $TASKS; do
  case $task in
    sketch)        run sketch pku-sketch "$DATA/PKUSketchRE-ID_V1" sketch ;;
    text)          run text cuhk-pedes "$DATA/CUHK-PEDES" text ;;
    rgb)           run rgb pooled "$DATA/CUHK-PEDES" rgb ;;
    ir)            run ir pooled "$DATA/CUHK-PEDES" ir ;;
    text+sketch)   run text+sketch cuhk-pedes "$DATA/CUHK-PEDES" text,sketch ;;
    text+ir)       run text+ir cuhk-pedes "$DATA/CUHK-PEDES" text,ir ;;
    sketch-anchor) run sketch-anchor cuhk-pedes "$DATA/CUHK-PEDES" sketch ;;
    ir-anchor)     run ir-anchor cuhk-pedes "$DATA/CUHK-PEDES" ir ;;
    text-anchor)   run text-anchor cuhk-pedes "$DATA/CUHK-PEDES" text --exclude-anchor ;;
    rgb-cross-domain) SPLIT=splits/cross_domain_cuhk01.json run rgb-cross-domain pooled "$DATA/CUHK-PEDES" rgb ;;
    ir-cross-domain)  SPLIT=splits/cross_domain_cuhk01.json run ir-cross-domain pooled "$DATA/CUHK-PEDES" ir ;;
    text-full-gallery) SPLIT=splits/text_full_gallery.json run text-full-gallery pooled "$DATA/CUHK-PEDES" text ;;
    text+sketch-full-gallery) SPLIT=splits/text_full_gallery.json run text+sketch-full-gallery pooled "$DATA/CUHK-PEDES" text,sketch ;;
    text+ir-full-gallery) SPLIT=splits/text_full_gallery.json run text+ir-full-gallery pooled "$DATA/CUHK-PEDES" text,ir ;;
    text-anchor-full-gallery) SPLIT=splits/text_full_gallery.json run text-anchor-full-gallery pooled "$DATA/CUHK-PEDES" text --exclude-anchor ;;
    sketch-anchor-full-gallery) SPLIT=splits/text_full_gallery.json run sketch-anchor-full-gallery pooled "$DATA/CUHK-PEDES" sketch ;;
    ir-anchor-full-gallery) SPLIT=splits/text_full_gallery.json run ir-anchor-full-gallery pooled "$DATA/CUHK-PEDES" ir ;;
    ir-real-thermal)
      echo "== $LABEL: $task"
      "$PY" scripts/evaluate_real_thermal.py --model "$MODEL" --root "$DATA/thermal-pairs" \
        --output "$OUT/ir-real-thermal.json" 2>&1 | grep -E "^  [^ ]|^real|error" ;;
    *) echo "unknown task $task" >&2; exit 2 ;;
  esac
done
