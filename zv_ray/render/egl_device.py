"""Which EGL device a render process uses: the GPU Ray reserved for it, not device 0.

EGL enumerates every GPU of a node whatever CUDA_VISIBLE_DEVICES says, and pyrender renders on EGL device
$EGL_DEVICE_ID (default 0): so every render actor of an 8-GPU node would share GPU 0 with a trainer.
Ray sets CUDA_VISIBLE_DEVICES to the physical GPU ids it reserved ("" when it reserved none).
"""

from __future__ import annotations

import ctypes
import os

EGL_CUDA_DEVICE_NV = 0x323A  # EGL_NV_device_cuda: the CUDA ordinal behind an EGL device


def reserved_gpus() -> list[int] | None:
    """Physical GPU ids in CUDA_VISIBLE_DEVICES; None when unset (every GPU visible), [] when set empty."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    ids = [v.strip() for v in value.split(",") if v.strip()]
    return [int(v) for v in ids] if all(v.isdigit() for v in ids) else None


def pick_egl_device(reserved: list[int] | None, egl_cuda_ordinals: list[int | None]) -> int | None:
    """Index of the EGL device for the first reserved GPU, or None to keep pyrender's default.

    Devices are matched by their CUDA ordinal (NVIDIA's EGL_CUDA_DEVICE_NV); a driver without that attribute is
    taken to enumerate in CUDA order."""
    if not reserved:
        return None
    want = reserved[0]
    if want in egl_cuda_ordinals:
        return egl_cuda_ordinals.index(want)
    return want if want < len(egl_cuda_ordinals) else None


def egl_cuda_ordinals() -> list[int | None]:
    """The CUDA ordinal of each EGL device (None where the driver does not say). Needs PyOpenGL on EGL."""
    from OpenGL import EGL
    from pyrender.platforms import egl as pyrender_egl

    devices = pyrender_egl.query_devices()
    address = EGL.eglGetProcAddress(b"eglQueryDeviceAttribEXT")
    if not address:  # only NVIDIA's driver (EGL_NV_device_cuda) answers; Mesa has no such attribute
        return [None] * len(devices)
    query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_ssize_t))(address)
    ordinals: list[int | None] = []
    for device in devices:
        handle = device._display  # pyrender keeps the EGLDeviceEXT handle under this name
        value = ctypes.c_ssize_t(-1)
        ok = handle is not None and query(ctypes.cast(handle, ctypes.c_void_p), EGL_CUDA_DEVICE_NV, ctypes.byref(value))
        ordinals.append(int(value.value) if ok else None)
    return ordinals


def select_egl_device() -> int | None:
    """Point pyrender at the EGL device of this process's reserved GPU (unless $EGL_DEVICE_ID is set)."""
    if "EGL_DEVICE_ID" in os.environ:
        return int(os.environ["EGL_DEVICE_ID"])
    index = pick_egl_device(reserved_gpus(), egl_cuda_ordinals())
    if index is not None:
        os.environ["EGL_DEVICE_ID"] = str(index)
    return index
