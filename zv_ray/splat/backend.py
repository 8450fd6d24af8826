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

# Batched (leading-dimension) inputs arrived in gsplat 1.5.3; 1.5.2's PyPI build does not compile. 1.6 (CUDA 13
# support) keeps the calls zv-ray makes: rasterization's arguments, meta["flatten_ids"], gsplat.cuda._backend._C.
GSPLAT_MIN, GSPLAT_BELOW = Version("1.5.3"), Version("1.7")
INSTALL_FIX = f"pip install -c constraints.txt -e '.[gpu]' (gsplat>={GSPLAT_MIN},<{GSPLAT_BELOW}) on every GPU node"
# The CUDA toolkit as PyPI wheels, for an image whose nvcc is not torch's CUDA major. From CUDA 13 on its parts
# share one prefix, site-packages/nvidia/cu<major>, which CUDA_HOME can name (12's are split over several). The
# nvcc extra brings the compiler, its crt and nvvm, and the runtime's headers; cccl the CUB/Thrust headers.
PIP_TOOLKIT_EXTRAS = "nvcc,cccl"
PIP_TOOLKIT_FROM_MAJOR = 13


class RasterizerUnavailable(RuntimeError):
    """gsplat is missing, the wrong version, or cannot be compiled here; the message names the fix."""


def gsplat_version() -> Version | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return Version(version("gsplat"))
    except PackageNotFoundError:
        return None


def find_nvcc(cuda_home: str | None, path: str | None = None) -> str | None:
    """The nvcc torch's extension builder runs: cuda_home/bin/nvcc, else the first on `path` (default $PATH)."""
    if cuda_home and (nvcc := Path(cuda_home, "bin", "nvcc")).is_file():
        return str(nvcc)
    return shutil.which("nvcc", path=path)


def nvcc_release(nvcc: str) -> str | None:
    """The CUDA release an nvcc reports, e.g. '13.0'; None when it prints none."""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"release (\d+\.\d+)", out)
    return found.group(1) if found else None


def pip_toolkit(torch_cuda: str) -> tuple[str | None, str | None]:
    """(the pip requirement for the toolkit of torch's CUDA release, where it is installed): the requirement is None
    before CUDA 13, the folder None until it is installed."""
    major = int(torch_cuda.split(".")[0])
    if major < PIP_TOOLKIT_FROM_MAJOR:
        return None, None
    from importlib.util import find_spec

    spec = find_spec("nvidia")
    homes = [Path(p, f"cu{major}") for p in (spec.submodule_search_locations or [])] if spec else []
    home = next((str(h) for h in homes if (h / "bin" / "nvcc").is_file()), None)
    return f"cuda-toolkit[{PIP_TOOLKIT_EXTRAS}]=={torch_cuda}.*", home


def toolkit_fix(torch_cuda: str) -> str:
    """How a node gets an nvcc of torch's CUDA major."""
    major = torch_cuda.split(".")[0]
    requirement, home = pip_toolkit(torch_cuda)
    if home:
        return f"export CUDA_HOME={home} (the CUDA {major} toolkit installed from PyPI), or rerun scripts/setup.sh"
    if requirement:
        return (f"pip install '{requirement}' and export CUDA_HOME=<site-packages>/nvidia/cu{major}; on GPU nodes "
                "scripts/setup.sh does both")
    return f"use an image whose CUDA toolkit is {major}.x (its nvcc on PATH or under CUDA_HOME)"


def cuda_compiler_problem(torch_cuda: str | None, nvcc: str | None) -> str | None:
    """Why `nvcc` cannot build kernels for a torch built with CUDA `torch_cuda`, or None when it can."""
    if torch_cuda is None:
        return None  # a CPU torch builds no kernels: the torch check names it where a GPU is wanted
    if nvcc is None:
        return f"no nvcc under CUDA_HOME or on PATH; torch is CUDA {torch_cuda}"
    found = nvcc_release(nvcc)
    if found is None or found.split(".")[0] != torch_cuda.split(".")[0]:
        return f"{nvcc} is CUDA {found or '(no release printed)'} but torch was built with CUDA {torch_cuda}: gsplat's " \
               "kernels need the same CUDA major"
    return None


def gsplat_problem() -> str | None:
    """Why the installed gsplat is not one zv-ray runs, or None."""
    got = gsplat_version()
    if got is None:
        return f"gsplat is not installed: {INSTALL_FIX}"
    if not GSPLAT_MIN <= got < GSPLAT_BELOW:
        return f"gsplat {got} is outside the supported range >={GSPLAT_MIN},<{GSPLAT_BELOW}: {INSTALL_FIX}"
    return None


def toolchain_problem() -> str | None:
    """Why gsplat cannot be built or loaded on this node, or None when it can."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if (problem := gsplat_problem()) is not None:
        return problem
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU build: install a CUDA build of torch on GPU nodes"
    if (problem := cuda_compiler_problem(torch.version.cuda, find_nvcc(CUDA_HOME))) is not None:
        return f"{problem}: {toolkit_fix(torch.version.cuda)}"
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
        try:  # 1.5.3 and 1.6 both raise out of a failed build (1.6 at `import gsplat` already)
            from gsplat.cuda._backend import _C
        except Exception as err:  # noqa: BLE001 - compiler errors come as RuntimeError, OSError or ImportError
            last = str(err).strip().splitlines()[-1:] or [type(err).__name__]
            raise RasterizerUnavailable(f"gsplat {gsplat_version()}'s CUDA extension did not build ({last[0][:300]}; "
                                        f"the compiler's output is above): {INSTALL_FIX}") from None
    if _C is None:
        raise RasterizerUnavailable(f"gsplat's CUDA extension did not build (see gsplat's log above): {INSTALL_FIX}")
    from gsplat import rasterization

    return rasterization


def toolkit_requirement() -> str | None:
    """The pip requirement that gives this node an nvcc of torch's CUDA major; None when the nvcc found is one (or
    torch is a CPU build). Raises RasterizerUnavailable where PyPI has no single-prefix toolkit (before CUDA 13)."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    cuda = torch.version.cuda
    if (problem := cuda_compiler_problem(cuda, find_nvcc(CUDA_HOME))) is None:
        return None
    requirement, _ = pip_toolkit(cuda)
    if requirement is None:
        raise RasterizerUnavailable(f"{problem}: {toolkit_fix(cuda)}")
    return requirement


def main() -> None:
    """Setup step on GPU nodes: compile gsplat once, so no training rank builds it at step 1 (scripts/setup.sh first
    asks --toolkit for the CUDA toolkit to install, then --toolkit-home for the CUDA_HOME to export)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--toolkit", action="store_true", help="print the pip requirement for an nvcc of torch's "
                        "CUDA major, nothing when the nvcc found is one")
    parser.add_argument("--toolkit-home", action="store_true", help="print where that pip toolkit is installed")
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        if args.toolkit:
            print(toolkit_requirement() or "")
        elif args.toolkit_home:
            import torch

            home = pip_toolkit(torch.version.cuda or "0")[1]
            if home is None:
                raise RasterizerUnavailable(f"no CUDA toolkit from PyPI for torch's CUDA {torch.version.cuda} is installed")
            print(home)
        else:
            load_gsplat()
            print(f"gsplat {gsplat_version()} ready ({time.perf_counter() - started:.0f} s)")
    except RasterizerUnavailable as err:
        raise SystemExit(f"gsplat: {err}") from None


if __name__ == "__main__":
    main()
