"""Where run folders live: a local path, ``file://`` or ``s3://``, all through ``pyarrow.fs``.

Every file a stage writes or reads inside a run folder (tables, markers, metrics, the resolved
config, reports, figures, checkpoints, images of the ``data`` stage) goes through these
functions, so the same code runs on one laptop disk and on a cluster whose nodes share only an
object store. A *location* is a plain ``str``: an absolute or relative local path, or a URI.

S3 settings come from the standard AWS variables, read when a location is first resolved:
``AWS_ENDPOINT_URL`` (e.g. ``http://127.0.0.1:9000`` for MinIO or moto; its scheme picks http
or https), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` and
``AWS_DEFAULT_REGION`` (or ``AWS_REGION``). Object stores have no folders: a "folder" exists
when an object lies under its prefix, and ``makedirs`` is a no-op there.

Writes are atomic for readers: local files are written to a temporary name and renamed; an S3
object appears whole when its upload completes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

SCHEMES = ("file", "s3")


def is_uri(loc: str) -> bool:
    """True for ``scheme://...`` locations (``file://`` included)."""
    return "://" in loc


def is_remote(loc: str) -> bool:
    """True when ``loc`` is not on this machine's file system (any URI but ``file://``)."""
    return is_uri(loc) and not loc.startswith("file://")


def is_local_relative(loc: str) -> bool:
    """True for a relative local path (what another node would resolve elsewhere)."""
    return not is_uri(loc) and not os.path.isabs(loc)


def scheme(loc: str) -> str:
    """``"s3"``, ``"file"`` or ``""`` (a plain local path)."""
    return loc.split("://", 1)[0].lower() if is_uri(loc) else ""


def check_location(loc: str, what: str = "run_root") -> None:
    """Raise ``ValueError`` for a URI whose scheme is not one of :data:`SCHEMES`."""
    s = scheme(loc)
    if s and s not in SCHEMES:
        raise ValueError(
            f"{what}: {loc!r} uses the scheme {s!r}; use a local path, file:// or s3://"
        )
    if s == "s3" and not urlparse(loc).netloc:
        raise ValueError(f"{what}: {loc!r} names no bucket (s3://<bucket>/<prefix>)")


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str, region: str, key: str, secret: str, token: str) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if region:
        kwargs["region"] = region
    if key and secret:
        kwargs["access_key"], kwargs["secret_key"] = key, secret
        if token:
            kwargs["session_token"] = token
    return pafs.S3FileSystem(**kwargs)


def s3_filesystem() -> pafs.FileSystem:
    """A ``pyarrow.fs.S3FileSystem`` configured from the AWS environment variables (cached per
    distinct setting)."""
    env = os.environ
    return _s3(
        env.get("AWS_ENDPOINT_URL", "") or env.get("AWS_ENDPOINT_URL_S3", ""),
        env.get("AWS_DEFAULT_REGION", "") or env.get("AWS_REGION", ""),
        env.get("AWS_ACCESS_KEY_ID", ""),
        env.get("AWS_SECRET_ACCESS_KEY", ""),
        env.get("AWS_SESSION_TOKEN", ""),
    )


def resolve(loc: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` for a location. Local paths become absolute."""
    s = scheme(loc)
    if s == "s3":
        return s3_filesystem(), loc.split("://", 1)[1].rstrip("/")
    if s == "file":
        return pafs.LocalFileSystem(), os.path.abspath(urlparse(loc).path)
    if s:
        check_location(loc, "location")
    return pafs.LocalFileSystem(), os.path.abspath(loc)


def absolute(loc: str) -> str:
    """``loc`` with a local path made absolute (URIs unchanged)."""
    return loc if is_uri(loc) else os.path.abspath(loc)


def join(loc: str | os.PathLike[str], *parts: str) -> str:
    """``os.path.join`` for local paths; ``/``-joining for URIs."""
    loc = os.fspath(loc)
    if not is_uri(loc):
        return os.path.join(loc, *parts)
    out = loc.rstrip("/")
    for p in parts:
        out = out + "/" + p.strip("/") if p else out
    return out


def parent(loc: str) -> str:
    """The folder holding ``loc``."""
    if not is_uri(loc):
        return os.path.dirname(loc)
    head, rest = loc.split("://", 1)
    return f"{head}://{posixpath.dirname(rest.rstrip('/'))}"


def basename(loc: str) -> str:
    return posixpath.basename(loc.rstrip("/")) if is_uri(loc) else os.path.basename(loc)


def normalize(loc: str) -> str:
    """``..`` and ``.`` components resolved (the scheme's ``//`` kept)."""
    if not is_uri(loc):
        return os.path.normpath(loc)
    head, rest = loc.split("://", 1)
    return f"{head}://{posixpath.normpath(rest)}"


def _info(loc: str) -> pafs.FileInfo:
    fs, p = resolve(loc)
    info: pafs.FileInfo = fs.get_file_info(p)
    return info


def exists(loc: str) -> bool:
    return _info(loc).type != pafs.FileType.NotFound


def is_file(loc: str) -> bool:
    return _info(loc).type == pafs.FileType.File


def is_dir(loc: str) -> bool:
    return _info(loc).type == pafs.FileType.Directory


def size(loc: str) -> int:
    """Bytes of a file (``FileNotFoundError`` when missing)."""
    info = _info(loc)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"no file at {loc}")
    return int(info.size or 0)


def makedirs(loc: str) -> None:
    """Create a folder and its parents (no-op on object stores and for existing folders)."""
    fs, p = resolve(loc)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(p, exist_ok=True)


def list_files(loc: str, suffix: str = "", recursive: bool = False) -> list[str]:
    """Files under the folder ``loc`` (sorted locations in ``loc``'s own form) whose names end
    with ``suffix``; names starting with ``_`` or ``.`` (markers, temporaries) are left out.
    A missing folder lists nothing."""
    fs, p = resolve(loc)
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=recursive, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for info in infos:
        name = posixpath.basename(info.path)
        if info.type != pafs.FileType.File or name.startswith(("_", ".")):
            continue
        if not name.endswith(suffix):
            continue
        rel = posixpath.relpath(info.path, p) if is_uri(loc) else os.path.relpath(info.path, p)
        out.append(join(loc, rel))
    return sorted(out)


def remove(loc: str) -> None:
    """Delete a file; a missing one is fine."""
    fs, p = resolve(loc)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(p)


def remove_tree(loc: str) -> None:
    """Delete a folder and everything under it; a missing one is fine."""
    fs, p = resolve(loc)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return
    fs.delete_dir(p)


def read_bytes(loc: str) -> bytes:
    fs, p = resolve(loc)
    with fs.open_input_stream(p) as fh:
        data: bytes = fh.read()
    return data


def write_bytes(loc: str, data: bytes) -> None:
    """Write ``data`` atomically (readers see the old file or the whole new one)."""
    fs, p = resolve(loc)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = f"{p}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)
        return
    with fs.open_output_stream(p) as out:
        out.write(data)


def read_text(loc: str) -> str:
    return read_bytes(loc).decode("utf-8")


def write_text(loc: str, text: str) -> None:
    write_bytes(loc, text.encode("utf-8"))


def read_json(loc: str) -> Any:
    return json.loads(read_bytes(loc))


def write_json(loc: str, payload: Any, *, indent: int | None = 2, default: Any = None) -> None:
    """Write ``payload`` as JSON (sorted keys when indented), atomically."""
    text = json.dumps(payload, indent=indent, sort_keys=indent is not None, default=default)
    write_text(loc, text)


@contextlib.contextmanager
def open_input(loc: str) -> Iterator[IO[bytes]]:
    """A seekable binary file object for reading (``torch.load``, PIL, ``json.load``).
    Local files are opened directly; remote ones are read whole into memory."""
    if not is_remote(loc):
        with open(resolve(loc)[1], "rb") as fh:
            yield fh
        return
    yield io.BytesIO(read_bytes(loc))


@contextlib.contextmanager
def open_output(loc: str) -> Iterator[IO[bytes]]:
    """A binary file object whose bytes are written to ``loc`` atomically on a clean exit
    (nothing is written when the block raises)."""
    buf = io.BytesIO()
    yield buf
    write_bytes(loc, buf.getvalue())


@contextlib.contextmanager
def local_file(loc: str) -> Iterator[str]:
    """A local path with ``loc``'s bytes, for libraries that need one (pycocotools, the
    segment-anything checkpoint loader); a temporary copy for remote files."""
    if not is_remote(loc):
        yield resolve(loc)[1]
        return
    suffix = os.path.splitext(basename(loc))[1]
    with tempfile.TemporaryDirectory(prefix="weaksam-") as tmp:
        path = os.path.join(tmp, "file" + suffix)
        with open(path, "wb") as fh:
            fh.write(read_bytes(loc))
        yield path


def upload_file(local_path: str, loc: str) -> None:
    """Copy a local file to ``loc`` (atomically)."""
    fs, p = resolve(loc)
    if isinstance(fs, pafs.LocalFileSystem):
        with open(local_path, "rb") as fh:
            write_bytes(p, fh.read())
        return
    pafs.copy_files(
        local_path, p, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
