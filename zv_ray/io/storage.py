"""The one storage layer: every path a user gives (runs, checkpoints, datasets, weights) goes through here.

Built on pyarrow.fs, so a path is a local folder or a URI of any filesystem pyarrow knows (s3://, gs://, hdfs://).
S3-compatible endpoints (MinIO, moto, Ceph) come from the standard AWS environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...), which pyarrow honours; nothing here names a vendor.

    storage.join("s3://bucket/runs", "tiny")       -> "s3://bucket/runs/tiny"
    storage.read_bytes("s3://bucket/runs/tiny/checkpoint_x/checkpoint.pt")
    with storage.local_copy("s3://bucket/weights/vgg16.pth") as path: ...
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs

from zv_ray.io.atomic import atomic_path


class StorageError(OSError):
    """A path that cannot be reached, read or written; the message names the path and the fix."""


def is_remote(path: str | Path) -> bool:
    """A URI with a scheme (s3://, gs://, file://); plain paths are local."""
    return "://" in str(path)


def absolute(path: str | Path) -> str:
    """URIs unchanged; local paths made absolute (a relative path would resolve per process and per node)."""
    return str(path) if is_remote(path) else str(Path(path).expanduser().resolve())


def join(base: str | Path, *parts: str) -> str:
    base = str(base)
    if not is_remote(base):
        return str(Path(base, *parts))
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def name(path: str | Path) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def filesystem(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or URI."""
    if not is_remote(path):
        return pafs.LocalFileSystem(), absolute(path)
    try:
        return pafs.FileSystem.from_uri(str(path))
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(f"{path}: cannot open this storage ({err}); check the URI (local path, s3://, gs://), credentials and AWS_ENDPOINT_URL") from None


def _info(path: str | Path) -> pafs.FileInfo:
    fs, inner = filesystem(path)
    try:
        return fs.get_file_info(inner)
    except OSError as err:
        raise StorageError(f"{path}: cannot reach storage ({err}); check the credentials and AWS_ENDPOINT_URL") from None


def is_file(path: str | Path) -> bool:
    return _info(path).type == pafs.FileType.File


def is_dir(path: str | Path) -> bool:
    return _info(path).type == pafs.FileType.Directory


def exists(path: str | Path) -> bool:
    return _info(path).type != pafs.FileType.NotFound


def size(path: str | Path) -> int:
    return int(_info(path).size or 0)


def _list(path: str | Path, kind: pafs.FileType, suffixes: tuple[str, ...], recursive: bool) -> list[str]:
    """Entries of one kind under a folder whose names end with one of `suffixes` (case-insensitive), hidden
    names excluded, as full paths, sorted."""
    fs, inner = filesystem(path)
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=recursive, allow_not_found=True))
    except OSError as err:
        raise StorageError(f"{path}: cannot list ({err})") from None
    prefix, suffixes = str(path).rstrip("/"), tuple(s.lower() for s in suffixes)
    found = []
    for info in infos:
        if info.type != kind or not info.base_name.lower().endswith(suffixes) or info.base_name.startswith("."):
            continue
        rel = info.path[len(inner.rstrip("/")) + 1 :]
        found.append(join(prefix, rel))
    return sorted(found)


def list_files(path: str | Path, suffix: str | tuple[str, ...] = "", recursive: bool = False) -> list[str]:
    """Files under a folder whose names end with `suffix` (or one of several; case-insensitive), hidden temp files
    excluded, as full paths, sorted."""
    return _list(path, pafs.FileType.File, (suffix,) if isinstance(suffix, str) else suffix, recursive)


def list_folders(path: str | Path) -> list[str]:
    """The folders directly inside a folder (hidden ones excluded), as full paths, sorted."""
    return _list(path, pafs.FileType.Directory, ("",), recursive=False)


def read_bytes(path: str | Path) -> bytes:
    fs, inner = filesystem(path)
    try:
        with fs.open_input_stream(inner) as stream:
            return stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except OSError as err:
        raise StorageError(f"{path}: cannot read ({err})") from None


def write_bytes(path: str | Path, data: bytes) -> str:
    """Readers never see a partial file: a local write renames a temp file, an object store commits on close."""
    if not is_remote(path):
        with atomic_path(absolute(path)) as tmp:
            tmp.write_bytes(data)
        return absolute(path)
    fs, inner = filesystem(path)
    try:
        with fs.open_output_stream(inner) as stream:
            stream.write(data)
    except OSError as err:
        raise StorageError(f"{path}: cannot write ({err}); check that the bucket exists and is writable") from None
    return str(path)


def delete_file(path: str | Path) -> None:
    fs, inner = filesystem(path)
    fs.delete_file(inner)


def check_writable(path: str | Path) -> None:
    """Write and delete a probe object under `path`; StorageError names the path when that fails."""
    probe = join(path, f".zv-ray-probe-{uuid.uuid4().hex}")
    if not is_remote(path):
        Path(absolute(path)).mkdir(parents=True, exist_ok=True)
    write_bytes(probe, b"zv-ray storage probe\n")
    delete_file(probe)


def upload_file(local: str | Path, dest: str | Path) -> str:
    if not is_remote(dest):
        Path(absolute(dest)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, absolute(dest))
        return absolute(dest)
    return write_bytes(dest, Path(local).read_bytes())


@contextmanager
def local_copy(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A local file with the contents of `path`: the file itself when local, else a temp download."""
    if not is_remote(path):
        if not Path(absolute(path)).is_file():
            raise FileNotFoundError(f"{path} does not exist")
        yield Path(absolute(path))
        return
    fd, tmp = tempfile.mkstemp(suffix=suffix or f"-{name(path)}")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(read_bytes(path))
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
