"""One I/O API for local paths and ``s3://bucket/key`` URIs, so every stage can take either.

S3 settings come only from the environment: endpoint from ``FINADAPT_S3_ENDPOINT`` (override) or
``AWS_ENDPOINT_URL``, region from ``AWS_REGION``/``AWS_DEFAULT_REGION`` (default us-east-1), and
credentials from the standard AWS chain (env vars, ~/.aws, instance metadata). Nothing secret is
ever passed in code or put in a message.
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import tempfile
import time
from typing import IO
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from finadapt.errors import FinadaptError

S3_PREFIX = "s3://"
# Fail fast on a dead endpoint (seconds, attempts) instead of the SDK's long default retries.
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 2


class StorageError(FinadaptError, RuntimeError):
    """An I/O failure; the message always names the URI and the cause."""

    label = "storage error"


class ResultsKeptLocallyError(StorageError):
    """The work finished but its output location failed; the results were saved to a local fallback dir."""

    exit_code = 1

    def __init__(self, message: str, fallback_dir: str):
        super().__init__(message)
        self.fallback_dir = fallback_dir


def is_s3(uri: str) -> bool:
    """True for ``s3://`` URIs; everything else is a local path."""
    return os.fspath(uri).startswith(S3_PREFIX)


def s3_endpoint() -> str | None:
    """The configured S3 endpoint URL, or None for AWS's own."""
    return os.environ.get("FINADAPT_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@functools.lru_cache(maxsize=8)
def _s3fs(endpoint: str | None, region: str, _cred_hint: tuple) -> pafs.S3FileSystem:
    """Cached per settings: building a client may walk the credential chain (slow on non-EC2)."""
    kwargs: dict = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs = {"scheme": parts.scheme, "endpoint_override": parts.netloc}
    return pafs.S3FileSystem(
        region=region,
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=MAX_ATTEMPTS),
        **kwargs,
    )


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path for that filesystem): ``bucket/key`` for S3, an absolute path locally."""
    uri = os.fspath(uri)
    if is_s3(uri):
        path = uri[len(S3_PREFIX):].strip("/")
        if not path:
            raise StorageError(f"{uri}: no bucket in S3 URI")
        # Env-derived cache key so changed credentials/profile get a fresh client (never logged).
        hint = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SESSION_TOKEN"))
        try:
            return _s3fs(s3_endpoint(), _region(), hint), path
        except (OSError, ValueError) as exc:
            raise _error(uri, exc) from exc
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def _error(uri: str, exc: BaseException) -> StorageError:
    """Map a pyarrow/OS error to a StorageError naming the URI (and endpoint for S3)."""
    if isinstance(exc, StorageError):
        return exc
    cause = "no such file" if isinstance(exc, FileNotFoundError) else (str(exc).strip() or type(exc).__name__)
    if is_s3(uri):
        cause += f" (S3 endpoint {s3_endpoint() or 'AWS default'}, region {_region()})"
    return StorageError(f"{uri}: {cause}")


def _missing(uri: str, fs: pafs.FileSystem, path: str) -> StorageError:
    """Say whether the bucket or just the key is missing, so the fix is obvious."""
    if is_s3(uri):
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            return _error(uri, OSError(f"no such bucket '{bucket}'"))
    return _error(uri, FileNotFoundError())


def _check_file(uri: str, fs: pafs.FileSystem, path: str) -> None:
    """pyarrow's missing-file errors are generic or verbose; check first for a clear message."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise _missing(uri, fs, path)
    if info.type == pafs.FileType.Directory:
        raise _error(uri, IsADirectoryError("is a directory, not a file"))


def read_bytes(uri: str) -> bytes:
    """The raw bytes at ``uri`` (no decompression; see open_input for that)."""
    try:
        fs, path = filesystem_for(uri)
        _check_file(uri, fs, path)
        with fs.open_input_stream(path, compression=None) as f:
            return f.read()
    except OSError as exc:
        raise _error(uri, exc) from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``; local writes create parent dirs and are atomic (temp + rename)."""
    try:
        fs, path = filesystem_for(uri)
        if is_s3(uri):
            with fs.open_output_stream(path, compression=None) as f:
                f.write(data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise _error(uri, exc) from exc


def read_text(uri: str, encoding: str = "utf-8") -> str:
    """Decoded text at ``uri`` (no decompression)."""
    return read_bytes(uri).decode(encoding)


def write_text(uri: str, text: str, encoding: str = "utf-8") -> None:
    """Encode and write ``text`` to ``uri``."""
    write_bytes(uri, text.encode(encoding))


def exists(uri: str) -> bool:
    """True if ``uri`` is an existing file or directory (S3: key or non-empty prefix)."""
    try:
        fs, path = filesystem_for(uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise _error(uri, exc) from exc


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` for S3 URIs and os.path rules for local paths."""
    base = os.fspath(base)
    if not is_s3(base):
        return os.path.join(base, *map(os.fspath, parts))
    out = base.rstrip("/")
    for part in parts:
        part = os.fspath(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def list_files(uri: str, suffix: str = "") -> list[str]:
    """All files under ``uri`` (recursive) ending in ``suffix``, as sorted URIs in the caller's style.

    A file URI lists as itself, so stages can accept "a file or a directory of files".
    """
    try:
        fs, path = filesystem_for(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise _missing(uri, fs, path)
        if info.type == pafs.FileType.File:
            return [os.fspath(uri)] if os.fspath(uri).endswith(suffix) else []
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except OSError as exc:
        raise _error(uri, exc) from exc
    rels = (i.path[len(path):].lstrip("/") for i in infos if i.type == pafs.FileType.File)
    return sorted(join(uri, rel) for rel in rels if rel.endswith(suffix))


class _GzipInput(gzip.GzipFile):
    """GzipFile that also closes the underlying stream (GzipFile leaves it open)."""

    def close(self) -> None:
        raw = self.fileobj
        try:
            super().close()
        finally:
            if raw is not None:
                raw.close()


def open_input(uri: str) -> IO[bytes]:
    """A binary read stream (context manager); gunzipped on the fly when ``uri`` ends with .gz."""
    try:
        fs, path = filesystem_for(uri)
        _check_file(uri, fs, path)
        stream = fs.open_input_stream(path, compression=None)
    except OSError as exc:
        raise _error(uri, exc) from exc
    if os.fspath(uri).endswith(".gz"):
        return _GzipInput(fileobj=stream, mode="rb")
    return io.BufferedReader(stream)


def open_text(uri: str, encoding: str = "utf-8") -> IO[str]:
    """A text read stream (iterate for lines, e.g. JSONL), gunzipped when ``uri`` ends with .gz."""
    return io.TextIOWrapper(open_input(uri), encoding=encoding)


def copy_tree(src: str, dst: str) -> None:
    """Copy a directory (or one file) between any mix of local and S3; ``dst`` mirrors ``src``."""
    src_fs, src_path = filesystem_for(src)
    dst_fs, dst_path = filesystem_for(dst)
    try:
        info = src_fs.get_file_info(src_path)
        if info.type == pafs.FileType.NotFound:
            raise _missing(src, src_fs, src_path)
    except OSError as exc:
        raise _error(src, exc) from exc
    try:
        if not is_s3(dst):
            is_dir = info.type == pafs.FileType.Directory
            os.makedirs(dst_path if is_dir else os.path.dirname(dst_path), exist_ok=True)
        pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)
    except OSError as exc:
        where = dst if is_s3(dst) else src
        raise StorageError(f"copy {src} -> {dst} failed: {_error(where, exc)}") from exc


def probe_writable(uri: str) -> None:
    """Fail now, naming ``uri``, if a file cannot be written under the directory ``uri`` (local or S3):
    write and delete a small marker. Run before any expensive work whose results would land there."""
    marker = join(uri, f".finadapt-write-probe-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        write_bytes(marker, b"probe")
        fs, path = filesystem_for(marker)
        fs.delete_file(path)
    except (StorageError, OSError) as exc:
        raise StorageError(f"{uri}: not writable ({_error(uri, exc) if not isinstance(exc, StorageError) else exc})") from exc


def fallback_root() -> str:
    """Where results go when their output location fails: ``$FINADAPT_FALLBACK_DIR``, else ./finadapt-fallback."""
    return os.path.abspath(os.path.expanduser(os.environ.get("FINADAPT_FALLBACK_DIR") or "finadapt-fallback"))


def _keep_locally(files: dict[str, bytes], run: str) -> str:
    """Write ``files`` under a new ``<root>/<run>-<timestamp>/`` (the temp dir if the root fails); its path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    last: OSError | None = None
    for root in (fallback_root(), os.path.join(tempfile.gettempdir(), "finadapt-fallback")):
        try:
            os.makedirs(root, exist_ok=True)
            folder = tempfile.mkdtemp(prefix=f"{run}-{stamp}-", dir=root)
            for name, data in files.items():
                target = os.path.join(folder, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as fh:
                    fh.write(data)
            return folder
        except OSError as exc:
            last = exc
    raise StorageError(f"could not keep the results locally either ({last})")


def write_with_fallback(output_dir: str, files: dict[str, bytes], run: str) -> str:
    """Write ``files`` (relative name -> bytes) under ``output_dir``; returns where they went.

    If any write fails (an S3 endpoint that died mid-run, a full disk), all the files are written to
    a local fallback directory instead and ResultsKeptLocallyError names both places: finished work
    is never lost to an output error."""
    try:
        for name, data in files.items():
            write_bytes(join(output_dir, name), data)
        return output_dir
    except StorageError as exc:
        kept = _keep_locally(files, run)
        raise ResultsKeptLocallyError(
            f"writing results to {output_dir} failed ({exc}); all {len(files)} result files kept in {kept}",
            kept) from exc
