"""gsplat as a backend: version range, CUDA toolchain checks and one compile per node.

gsplat JIT-compiles its CUDA kernels at first import. Left to itself, every DDP rank on a node starts that
build at its first step and the ranks race on one build folder (gsplat deletes it when no .so is there yet);
a missing nvcc only prints a warning and fails later. Here the build runs once per node under a file lock
(`python -m zv_ray.splat.backend`, a setup step on GPU nodes), and every failure names its fix.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import time
from functools import cache
from pathlib import Path

from packaging.version import Version

# Batched (leading-dimension) inputs arrived in gsplat 1.5.3; 1.5.2's PyPI build does not compile.
GSPLAT_MIN, GSPLAT_BELOW = Version("1.5.3"), Version("1.6")
INSTALL_FIX = "pip install -c constraints.txt -e '.[gpu]' (gsplat>=1.5.3,<1.6) on every GPU node"


class RasterizerUnavailable(RuntimeError):
    """gsplat is missing, the wrong version, or cannot be compiled here; the message names the fix."""


def gsplat_version() -> Version | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return Version(version("gsplat"))
    except PackageNotFoundError:
        return None


def nvcc_cuda_version() -> str | None:
    """The CUDA release of the nvcc that torch's extension builder will use, e.g. '12.8'; None without nvcc."""
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = Path(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    exe = str(nvcc) if nvcc and nvcc.is_file() else shutil.which("nvcc")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"release (\d+\.\d+)", out)
    return found.group(1) if found else None


def toolchain_problem() -> str | None:
    """Why gsplat cannot be built or loaded on this node, or None when it can."""
    import torch

    got = gsplat_version()
    if got is None:
        return f"gsplat is not installed: {INSTALL_FIX}"
    if not GSPLAT_MIN <= got < GSPLAT_BELOW:
        return f"gsplat {got} is outside the supported range >={GSPLAT_MIN},<{GSPLAT_BELOW}: {INSTALL_FIX}"
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU build: install a CUDA build of torch on GPU nodes"
    nvcc = nvcc_cuda_version()
    if nvcc is None:
        return "nvcc is not on PATH (or CUDA_HOME): install the CUDA toolkit matching torch's CUDA " + torch.version.cuda
    if nvcc.split(".")[0] != torch.version.cuda.split(".")[0]:
        return (f"nvcc is CUDA {nvcc} but torch was built for CUDA {torch.version.cuda}: gsplat's kernels need the same "
                "CUDA major; install the matching toolkit or point CUDA_HOME at it")
    return None


def build_lock_path() -> Path:
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions")) / "zv-ray-gsplat.lock"


@cache
def load_gsplat():
    """gsplat.rasterization with its kernels compiled (once per node: other processes wait on the lock)."""
    if (problem := toolchain_problem()) is not None:
        raise RasterizerUnavailable(problem)
    lock = build_lock_path()
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        from gsplat.cuda._backend import _C

    if _C is None:
        raise RasterizerUnavailable(f"gsplat's CUDA extension did not build (see gsplat's log above): {INSTALL_FIX}")
    from gsplat import rasterization

    return rasterization


def main() -> None:
    """Setup step on GPU nodes: compile gsplat once, so no training rank builds it at step 1."""
    started = time.perf_counter()
    try:
        load_gsplat()
    except RasterizerUnavailable as err:
        raise SystemExit(f"gsplat: {err}") from None
    print(f"gsplat {gsplat_version()} ready ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
