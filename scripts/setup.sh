#!/usr/bin/env bash
# Idempotent setup on a fresh Debian machine: system GL libraries, a venv, CPU torch first, then zv-ray.
#   bash scripts/setup.sh            # CPU machine (this repo's default)
#   ZV_TORCH=skip bash scripts/setup.sh   # torch already provided (GPU image): keep it
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

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

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
stamp="$VENV/.zv-ray-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  if [ "${ZV_TORCH:-cpu}" != skip ]; then
    # The pinned CPU build; every later pip call is constrained so nothing swaps it for a CUDA build.
    $PIP install -c constraints.txt torch==2.13.0
  fi
  $PIP install -c constraints.txt -e ".[dev]"
  # pyrender pins PyOpenGL 3.1.0, whose OSMesa binding lacks OSMesaCreateContextAttribs; 3.1.7+ has it.
  $PIP install --no-deps "pyopengl==3.1.10"
  touch "$stamp"
fi
echo "zv-ray environment ready in $VENV"
