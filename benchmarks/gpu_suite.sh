#!/usr/bin/env bash
# Every CUDA check and measurement of the project in one command, because a GPU machine is
# lent for minutes at a time: the CUDA tests, the speed bars of benchmarks/RESULTS.md, the CUDA
# repro run-to-run spread, and full TikTok trainings on the GPU.
#
#   CLEARREC_SHARED=/path/to/shared benchmarks/gpu_suite.sh OUT_DIR [STEP ...]
#
# STEPs (default: all but the extraction ones, which need the `extract` extra):
#   env tests baby-lightgcn clear epoch repro tiktok extract-image extract-text
# Each step writes OUT_DIR/<step>*.log (and JSON where the tool writes one); the step's exit
# code and seconds go to OUT_DIR/steps.tsv. A failing step does not stop the others.
# PYTHON picks the interpreter (default python3). Needs no Ray or MLflow: only clear_core and
# the pipeline commands that run without them.
set -u
out=${1:?usage: gpu_suite.sh OUT_DIR [STEP ...]}
shift
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(env tests baby-lightgcn clear epoch repro tiktok)
py=${PYTHON:-python3}
# Absolute paths first: the steps run from the repository root.
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
repo=$(cd "$(dirname "$0")/.." && pwd) || exit 2
shared=$(cd "${CLEARREC_SHARED:-$repo/../shared}" 2>/dev/null && pwd) || shared=${CLEARREC_SHARED:-$repo/../shared}
cd "$repo" || exit 2
export PYTHONUNBUFFERED=1

run() {  # run NAME CMD...: log, exit code and seconds of one command
  local name=$1 start rc
  shift
  echo "== $name: $*"
  start=$EPOCHREALTIME
  "$@" >"$out/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%.1f\n' "$name" "$rc" "$(awk "BEGIN {print $EPOCHREALTIME - $start}")" | tee -a "$out/steps.tsv"
  tail -n 15 "$out/$name.log"
}

# The TikTok points selected on validation in benchmarks/clear_tiktok_grid.py (RESULTS.md).
clear_point=(--set encoded_centering=true --set feature_centering=true --set knn_k=20 --set n_layers=5
             --set projection_strength=0.9 --set redundancy_rank=4 --set reg_weight=0.01)
lightgcn_point=(--set n_layers=2 --set reg_weight=1.0)

for step in "${steps[@]}"; do
  case $step in
    env)
      run env bash -c "nvidia-smi; $py -c 'import torch, numpy, pyarrow; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), numpy.__version__, pyarrow.__version__)'" ;;
    tests)
      run tests env CLEARREC_SHARED="$shared" "$py" -m pytest tests/clear_core -m "not slow" -q -p no:cacheprovider -rs ;;
    baby-lightgcn)
      # LightGCN to convergence on real Baby (device auto = CUDA here) against the published level.
      run baby_lightgcn env CLEARREC_SHARED="$shared" "$py" -m pytest -m slow -q -p no:cacheprovider -rs \
        tests/clear_core/test_trainer.py::test_lightgcn_reaches_published_level_on_baby ;;
    clear)
      run bench_clear "$py" benchmarks/bench_clear.py --device cuda --epochs 20 --data "$shared/data/baby" \
        --out "$out/bench_clear.json" --profile "$out/bench_clear_profile.txt"
      run bench_clear_frozen "$py" benchmarks/bench_clear.py --device cuda --epochs 20 --data "$shared/data/baby" \
        --clear-set trainable_features=false --out "$out/bench_clear_frozen.json" ;;
    epoch)
      run bench_epoch "$py" benchmarks/bench_epoch.py --device cuda --data "$shared/data/baby" --eval-batch-size 4096 --json
      run bench_epoch_eval512 "$py" benchmarks/bench_epoch.py --device cuda --data "$shared/data/baby" --json ;;
    repro)
      # Two runs of the pinned repro parts on CUDA: the first records a CUDA reference (into a
      # copy of repro/reference.json), the second is compared with it.
      cp repro/reference.json "$out/reference.json"
      run repro_record env CLEARREC_SHARED="$shared" "$py" -m pipeline repro --device cuda --part train --part real \
        --no-tracking --reference "$out/reference.json" --out "$out/repro1" --update --reason "CUDA reference from benchmarks/gpu_suite.sh"
      run repro_compare env CLEARREC_SHARED="$shared" "$py" -m pipeline repro --device cuda --part train --part real \
        --no-tracking --reference "$out/reference.json" --out "$out/repro2" ;;
    tiktok)
      for seed in 999 2024; do
        run "tiktok_clear_$seed" "$py" -m pipeline train "$shared/data/tiktok" --model clear "${clear_point[@]}" \
          --seed "$seed" --device cuda --out "$out/tiktok_clear_$seed"
        run "tiktok_lightgcn_$seed" "$py" -m pipeline train "$shared/data/tiktok" --model lightgcn "${lightgcn_point[@]}" \
          --seed "$seed" --device cuda --out "$out/tiktok_lightgcn_$seed"
      done ;;
    extract-image|extract-text)
      run "$step" "$py" benchmarks/bench_extract.py --items 5000 --device cuda --batch-size 256 --modality "${step#extract-}" ;;
    *)
      echo "unknown step $step" >&2 ;;
  esac
done
