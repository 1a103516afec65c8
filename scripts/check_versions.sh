#!/usr/bin/env bash
# Run the test suite against the oldest releases pyproject.toml allows, or against the newest ones, in a
# throwaway environment (needs the package registry; not part of CI, which tests the usual install).
#
#   bash scripts/check_versions.sh oldest [PYTHON] [TORCH]   direct dependencies at their lower bounds
#   bash scripts/check_versions.sh newest [PYTHON] [TORCH]   everything at its newest release
#
# PYTHON: an interpreter (default python3). TORCH: a requirement for torch (default: "torch==2.1.0" for
# oldest, the newest torch for newest); PyPI's torch wheels for Linux are CUDA builds of a few GB.
# Extra requirements go in EXTRA_REQS (e.g. "scikit-learn==1.4.0": uv lifts it to 1.6 for the newest
# umap-learn, which scanpy needs), extra pytest arguments in PYTEST_ARGS. The environment is made under ${CHECK_DIR:-/tmp}.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?usage: bash scripts/check_versions.sh oldest|newest [PYTHON] [TORCH]}
python=${2:-python3}
case "$which" in
  oldest) resolution=lowest-direct; torch_req=${3:-torch==2.1.0} ;;
  newest) resolution=highest; torch_req=${3:-torch} ;;
  *) echo "usage: bash scripts/check_versions.sh oldest|newest [PYTHON] [TORCH]" >&2; exit 2 ;;
esac
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
env_dir=${CHECK_DIR:-/tmp}/butterfly-$which-py$version
rm -rf "$env_dir"
"$python" -m venv "$env_dir"
"$env_dir/bin/python" -m pip install -q uv
# uv resolves "lowest-direct": butterfly's own requirements at their bounds, what they need at its newest.
# torch 2.1-2.3 was built against numpy 1.
numpy_req=()
if [ "$which" = oldest ]; then numpy_req=("numpy<2"); fi
# shellcheck disable=SC2086
"$env_dir/bin/uv" pip install -q --python "$env_dir/bin/python" --resolution "$resolution" \
  -e ".[test]" "$torch_req" "${numpy_req[@]}" ${EXTRA_REQS:-}
echo "== $which releases on Python $version:"
"$env_dir/bin/uv" pip list --python "$env_dir/bin/python" 2>/dev/null |
  grep -iE "^(numpy|scipy|pandas|anndata|scanpy|torch|scikit-learn|matplotlib|leidenalg|igraph|pot|tqdm) "
# shellcheck disable=SC2086
"$env_dir/bin/python" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-}
