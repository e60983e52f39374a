#!/usr/bin/env bash
# The wheels that the GPU machine's image lacks, and the offline install of them there (issue 13).
#
#   bench/gpu_wheels.sh download [DIR]         # here, with a package index: fill DIR (default bench/gpu_wheels)
#   bench/gpu_wheels.sh install DIR TARGET     # there, offline: install into TARGET those of DIR's wheels whose
#                                              # distributions the image lacks; then PYTHONPATH=TARGET, PATH=TARGET/bin
#
# The image (docs/benchmarks.md, "GPU check") has Python 3.12, torch, transformers, accelerate, huggingface_hub,
# tokenizers, safetensors, pyarrow, pandas, xxhash, fsspec, numpy, pyyaml, requests, tqdm, psutil, py-cpuinfo,
# ninja, scikit-learn, scipy, matplotlib and tensorboard, and reaches no package index. It lacks datasets, evaluate,
# deepspeed and what they need beyond the list above: dill, multiprocess, pydantic (with pydantic-core,
# annotated-types, typing-inspection), einops, hjson and msgpack. The versions are those this repository is
# tested with, inside pyproject.toml's ranges. aiohttp (fsspec's "http" extra, which evaluate names) is left out:
# it serves downloads only, and nothing is downloaded there.
#
# The install goes to a folder of its own with --no-deps: it neither needs write access to the image's
# site-packages nor lets pip replace a package the image has.
set -euo pipefail

PYTHON_VERSION=3.12
WHEELS=(
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  einops==0.8.2 hjson==3.1.0 msgpack==1.2.4
)
SDISTS=(deepspeed==0.19.8)  # published as a source archive only: built here into a pure-Python wheel

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

download() {
  local dir=$1 python=${PYTHON:-python3}
  mkdir -p "$dir"
  "$python" -m pip download --dest "$dir" --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 "${WHEELS[@]}"
  # DeepSpeed compiles its ops on first use; the wheel holds no compiled op, so the machine that builds it does
  # not matter.
  DS_BUILD_OPS=0 "$python" -m pip wheel --no-deps --wheel-dir "$dir" "${SDISTS[@]}"
  echo "$(ls "$dir"/*.whl | wc -l) wheels in $dir: $(du -sh "$dir" | cut -f1)"
}

install() {
  local dir=$1 target=$2 python=${PYTHON:-python3}
  local -a missing
  compgen -G "$dir/*.whl" > /dev/null || { echo "no wheels in $dir: run bench/gpu_wheels.sh download first" >&2; exit 1; }
  mapfile -t missing < <("$python" - "$dir"/*.whl <<'PY'
import importlib.metadata, os, sys

for wheel in sys.argv[1:]:
    name = os.path.basename(wheel).split("-")[0]
    try:
        print(f"the image has {name} {importlib.metadata.version(name)}: kept", file=sys.stderr)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PY
  )
  mkdir -p "$target"
  if ((${#missing[@]})); then
    echo "installing into $target: $(printf '%s ' "${missing[@]##*/}")"
    "$python" -m pip install --no-index --no-deps --disable-pip-version-check --quiet --target "$target" \
      "${missing[@]}"
  fi
}

case "${1:-}" in
  download) download "${2:-bench/gpu_wheels}" ;;
  install) (($# == 3)) || usage; install "$2" "$3" ;;
  *) usage ;;
esac
