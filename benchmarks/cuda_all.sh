#!/usr/bin/env bash
# Every GPU figure in one run, in order of importance, each result saved as soon as it exists:
#   bash benchmarks/cuda_all.sh DATA_DIR OUT_DIR [SECONDS]
# DATA_DIR holds snare_mcc/ and cite_bmmc_neurips_starter/ (as ../shared/data does). The last, longest step
# (paper defaults on SNARE-seq) gets what is left of SECONDS (default 530). Results: OUT_DIR/results.tgz.
# anndata 0.12 cannot write pandas 3 strings: with pandas 3 present, export ANNDATA_ALLOW_WRITE_NULLABLE_STRINGS=1.
set -u
data=$1 out=$2 budget=${3:-530}
res=$(mktemp -d)
export PYTHONUNBUFFERED=1
save() { tar czf "$out/results.tgz.tmp" -C "$res" . && mv "$out/results.tgz.tmp" "$out/results.tgz"; }
failed=()
step() {
    echo "== [$SECONDS s] $*"; "$@"; local rc=$?
    echo "== [$SECONDS s] exit $rc"; save
    # a step under `timeout` that used up its time (124) stopped as planned; anything else non-zero failed
    [ "$rc" -eq 0 ] || { [ "$rc" -eq 124 ] && [ "$1" = timeout ]; } || failed+=("exit $rc: $*")
}

nvidia-smi -L
python3 -c "import torch, anndata, scanpy; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'anndata', anndata.__version__)"
fast="--settings budget-kl-warmup --set epochs=150 --set recalibrate_batch_norm=true"  # = FAST_SETTING
step python3 benchmarks/cuda_check.py --device cuda --out "$res"
step python3 benchmarks/translate_quality.py --data "$data/snare_mcc" $fast --translate-samples 10 \
    --device cuda --name translate_quality_snare_mcc_cuda_fast --out "$res"
step python3 benchmarks/translate_quality.py --data "$data/snare_mcc" $fast --set cuda_graphs=false \
    --device cuda --name translate_quality_snare_mcc_cuda_fast_eager --out "$res"
step python3 benchmarks/translate_quality.py --data "$data/snare_mcc" $fast --set weight_average_halflife=10 \
    --device cuda --name translate_quality_snare_mcc_cuda_fast_ema --out "$res"
[ -d "$data/cite_bmmc_neurips_starter" ] && step python3 benchmarks/translate_quality.py \
    --data "$data/cite_bmmc_neurips_starter" --modalities rna adt $fast --device cuda \
    --name translate_quality_cite_cuda_fast --out "$res"
step python3 benchmarks/epoch_speed.py --data "$data/snare_mcc" --device cuda --batch-sizes 64 256 \
    --precisions float32 --blocked-forms batched --cuda-graphs off on --epochs 3 --out "$res"
step python3 benchmarks/blocked_linear.py --device cuda --out "$res"
left=$((budget - SECONDS))
if [ "$left" -gt 60 ]; then
    step timeout "$left" python3 benchmarks/translate_quality.py --data "$data/snare_mcc" --settings paper \
        --device cuda --name translate_quality_snare_mcc_cuda_paper --out "$res"
fi
if [ "${#failed[@]}" -gt 0 ]; then  # said last, where the output's tail shows it
    printf '== FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "== all steps passed"
