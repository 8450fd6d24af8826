#!/usr/bin/env bash
# Idempotent setup on a fresh Debian/Ubuntu machine: system GL libraries, a venv, torch, then zv-ray.
#   bash scripts/setup.sh                       # CPU machine (this repo's default): pinned CPU torch
#   ZV_TORCH=skip bash scripts/setup.sh         # torch already in the image (GPU nodes): the venv sees and keeps it
#   ZV_GPU=1 ...                                # also gsplat (the `gpu` extra), compiled once for this node, and
#                                               # the CUDA toolkit of torch's CUDA major when the image has another
#   ZV_VGG_WEIGHTS=s3://B/vgg16-397923af.pth .. # put LPIPS's VGG16 weights into this node's torch hub cache
# ZV_GPU defaults to 1 where nvidia-smi finds a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
ZV_TORCH=${ZV_TORCH:-cpu}
if [ -z "${ZV_GPU:-}" ]; then ZV_GPU=0; nvidia-smi -L >/dev/null 2>&1 && ZV_GPU=1; fi

need_apt=()
for lib in libOSMesa.so.8 libEGL.so.1 libGL.so.1; do
  ldconfig -p | grep -q "$lib" || need_apt+=("$lib")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing GL libraries (${need_apt[*]})"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libosmesa6 libegl1 libgl1 libgles2 >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  if [ "$ZV_TORCH" = skip ]; then
    python3 -m venv --system-site-packages "$VENV"  # the image's CUDA torch stays visible
  else
    python3 -m venv "$VENV"
  fi
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
constraints=constraints.txt
if [ "$ZV_TORCH" = skip ]; then
  # Pin whatever torch the image has, so no later pip call swaps it for another build.
  have=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null) || {
    echo "ZV_TORCH=skip but no torch is importable from $VENV (created with --system-site-packages)"; exit 1; }
  constraints=$(mktemp); trap 'rm -f "$constraints"' EXIT
  grep -v '^torch' constraints.txt >"$constraints" || true
  echo "torch==$have" >>"$constraints"
fi
extras=dev; [ "$ZV_GPU" = 1 ] && extras=dev,gpu
stamp="$VENV/.zv-ray-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  if [ "$ZV_TORCH" != skip ]; then
    # The pinned CPU build; every later pip call is constrained so nothing swaps it for a CUDA build.
    $PIP install -c "$constraints" torch==2.13.0
  fi
  $PIP install -c "$constraints" -e ".[$extras]"
  # pyrender pins PyOpenGL 3.1.0, whose OSMesa binding lacks OSMesaCreateContextAttribs; 3.1.7+ has it.
  $PIP install --no-deps "pyopengl==3.1.10"
  touch "$stamp"
fi
if [ "$ZV_GPU" = 1 ]; then
  # gsplat's kernels build with an nvcc of torch's CUDA major. Where the image has another (or none), the toolkit
  # from PyPI, named by CUDA_HOME, which the venv's activate exports to every later shell and the Ray processes
  # started from one (cluster.yaml sources it from ~/.bashrc).
  toolkit=$("$VENV/bin/python" -m zv_ray.splat.backend --toolkit)
  if [ -n "$toolkit" ]; then
    echo "installing $toolkit: the image's nvcc is not torch's CUDA major"
    $PIP install -c "$constraints" "$toolkit"
    CUDA_HOME=$("$VENV/bin/python" -m zv_ray.splat.backend --toolkit-home)
    export CUDA_HOME
    sed -i '/# zv-ray: gsplat.s CUDA toolkit$/d' "$VENV/bin/activate"
    echo "export CUDA_HOME=$CUDA_HOME  # zv-ray: gsplat's CUDA toolkit" >>"$VENV/bin/activate"
  fi
  # gsplat compiles its kernels at first import: once here, so no training rank races to build it.
  "$VENV/bin/python" -m zv_ray.splat.backend
fi
if [ -n "${ZV_VGG_WEIGHTS:-}" ]; then
  "$VENV/bin/python" - "$ZV_VGG_WEIGHTS" <<'PY'
import sys
from zv_ray.io import storage
from zv_ray.losses.perceptual import default_vgg_path
dest = default_vgg_path()
if not dest.is_file():
    dest.parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(dest, storage.read_bytes(sys.argv[1]))
print(f"VGG16 weights: {dest}")
PY
fi
echo "zv-ray environment ready in $VENV"
