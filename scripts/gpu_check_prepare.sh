#!/usr/bin/env bash
# Fill .whl/ and .gl/ (both git-ignored) with what scripts/gpu_check.py needs on the GPU machine, which has
# Python 3.12, torch, nvcc and numpy/scipy/pillow/networkx/imageio/pyyaml/rich/jaxtyping/ninja/packaging/pytest
# but no network (/work/.library/device/KINDS.md lists its packages). Run it here, where PyPI and Debian apt are
# reachable; docs/gpu_check.md gives the device command that installs them there.
#   bash scripts/gpu_check_prepare.sh      [GSPLAT_FALLBACK_WHEEL=gsplat-1.6*.whl: the fallback to carry]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

version() { "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"; }

# Missing on the device, each with --no-deps, so every needed dependency is named here; the versions are this
# venv's, so the device runs the code the CPU tests ran. Their other dependencies are in the device image.
#   pydantic, pydantic_core, annotated-types, typing-inspection: zv_ray.config
#   trimesh, manifold3d: Zeroverse objects (booleans) for the EGL step
#   pyrender, PyOpenGL, pyglet, freetype-py: pyrender imports all three at import time
#   typing-extensions: there, but pydantic 2.14 needs >= 4.16, newer than the image may hold
# trimesh's optional rtree is left out: Zeroverse objects and pyrender scenes build without it.
pins=("gsplat==1.5.3")  # JIT-compiled there; 1.6 below is the fallback
for dist in pydantic pydantic_core annotated-types typing-inspection typing-extensions trimesh manifold3d pyrender PyOpenGL \
  pyglet freetype-py; do
  pins+=("$dist==$(version "$dist")")
done
rm -rf .whl && mkdir -p .whl/fallback
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"

# The fallback if 1.5.3 does not build with CUDA 13: a gsplat 1.6 wheel that JIT-compiles at first use, from the
# package index when it has one (PyPI has none yet), or your own (GSPLAT_FALLBACK_WHEEL=path). It goes to
# .whl/fallback/, which the device command's `pip install .whl/*.whl` leaves alone: gpu_check.py installs it only if
# 1.5.3 fails to build, and records that none was carried otherwise.
if [ -n "${GSPLAT_FALLBACK_WHEEL:-}" ]; then
  cp "$GSPLAT_FALLBACK_WHEEL" .whl/fallback/
else
  "$PY" -m pip download -q --no-deps --python-version 3.12 --implementation cp -d .whl/fallback "gsplat>=1.6,<1.7" ||
    echo "no gsplat 1.6 on the package index: no fallback carried (GSPLAT_FALLBACK_WHEEL=path to carry one)"
fi

# GL loaders for pyrender's EGL platform (libEGL, libOpenGL and the glvnd dispatch); the NVIDIA driver brings
# the vendor library. glvnd's libGLX, behind the libGL that pyrender (pyglet) loads, links the X11 client
# libraries, which the device image lacks: libX11 and what it links (xcb, Xau, Xdmcp, bsd, md), Xext, Xrender.
# The device unpacks each with dpkg -x into / before the check, unless its package is installed there already.
lists=/tmp/zv-gpu-check-apt
opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
mkdir -p "$lists/partial"
apt-get "${opts[@]}" update -qq
rm -rf .gl && mkdir -p .gl
(cd .gl && apt-get "${opts[@]}" download -qq libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 \
  libx11-6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0 libxext6 libxrender1)

du -ch .whl .gl | tail -1 | sed 's/total$/in .whl and .gl (the device run carries at most 64 MiB with the tree)/'
ls .whl .whl/fallback .gl
