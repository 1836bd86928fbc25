"""finadapt.storage against the local filesystem and a real S3 server (moto, see conftest)."""
from __future__ import annotations

import filecmp
import gzip
import os
import socket
import threading
import time

import pyarrow.fs as pafs
import pytest

from finadapt import storage
from finadapt.storage import StorageError

BLOB = bytes(range(256)) * 41  # binary, not valid UTF-8, not a multiple of any buffer size
TEXT = "Revenue rose 12% — €3.4bn\nnet income ¥900m\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # released on exit: nothing listens there


def test_is_s3_and_join():
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/s3://x") and not storage.is_s3("data/x")
    assert storage.join("s3://b", "a/", "/c.jsonl") == "s3://b/a/c.jsonl"
    assert storage.join("s3://b/p/", "x") == "s3://b/p/x"
    assert storage.join("/tmp/d", "a", "b.txt") == os.path.join("/tmp/d", "a", "b.txt")


def test_filesystem_for(s3_server):
    fs, path = storage.filesystem_for("s3://bucket/dir/key.txt")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/dir/key.txt"
    fs, path = storage.filesystem_for("rel/file.txt")
    assert isinstance(fs, pafs.LocalFileSystem) and path == os.path.abspath("rel/file.txt")
    with pytest.raises(StorageError, match="no bucket"):
        storage.filesystem_for("s3://")


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """The same tests run against a local dir and a fresh S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_bucket") + "/root"


def test_bytes_and_text_round_trip(root):
    storage.write_bytes(storage.join(root, "deep/nested/blob.bin"), BLOB)
    assert storage.read_bytes(storage.join(root, "deep/nested/blob.bin")) == BLOB
    storage.write_text(storage.join(root, "t.txt"), TEXT)
    assert storage.read_text(storage.join(root, "t.txt")) == TEXT
    storage.write_text(storage.join(root, "t.txt"), "overwritten")
    assert storage.read_text(storage.join(root, "t.txt")) == "overwritten"
    with pytest.raises(StorageError, match="is a directory, not a file"):
        storage.read_bytes(storage.join(root, "deep"))


def test_open_input_gunzips_only_gz(root):
    lines = [f'{{"i": {i}}}\n' for i in range(1000)]
    storage.write_bytes(storage.join(root, "data.jsonl.gz"), gzip.compress("".join(lines).encode()))
    storage.write_text(storage.join(root, "plain.jsonl"), "".join(lines))
    with storage.open_input(storage.join(root, "data.jsonl.gz")) as f:
        assert f.read() == "".join(lines).encode()
    with storage.open_text(storage.join(root, "data.jsonl.gz")) as f:
        assert list(f) == lines
    with storage.open_text(storage.join(root, "plain.jsonl")) as f:
        assert list(f) == lines
    # read_bytes stays raw: the gzip magic is still there
    assert storage.read_bytes(storage.join(root, "data.jsonl.gz"))[:2] == b"\x1f\x8b"


def test_exists(root):
    target = storage.join(root, "sub/x.txt")
    assert not storage.exists(target)
    storage.write_text(target, "x")
    assert storage.exists(target)
    assert storage.exists(storage.join(root, "sub"))
    assert not storage.exists(storage.join(root, "sub/y.txt"))


def test_list_files(root):
    for rel in ["b.jsonl", "a/1.jsonl", "a/2.txt", "a/deeper/3.jsonl"]:
        storage.write_text(storage.join(root, rel), rel)
    expected = [storage.join(root, r) for r in ["a/1.jsonl", "a/deeper/3.jsonl", "b.jsonl"]]
    assert storage.list_files(root, ".jsonl") == expected
    assert len(storage.list_files(root)) == 4
    assert storage.list_files(storage.join(root, "a")) == [
        storage.join(root, r) for r in ["a/1.jsonl", "a/2.txt", "a/deeper/3.jsonl"]
    ]
    assert storage.list_files(storage.join(root, "b.jsonl")) == [storage.join(root, "b.jsonl")]
    if storage.is_s3(root):
        assert all(u.startswith("s3://") for u in storage.list_files(root))


def test_copy_tree_local_s3_local(tmp_path, s3_bucket):
    src = tmp_path / "ckpt"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024 + 7))  # > multipart chunk
    (src / "config.json").write_text('{"a": 1}')
    (src / "sub" / "deeper" / "state.pt").write_bytes(BLOB)
    remote = storage.join(s3_bucket, "runs/r1/ckpt")
    storage.copy_tree(str(src), remote)
    assert storage.list_files(remote) == [
        storage.join(remote, r) for r in ["config.json", "model.safetensors", "sub/deeper/state.pt"]
    ]
    back = tmp_path / "restored"
    storage.copy_tree(remote, str(back))
    cmp = filecmp.dircmp(src, back)
    assert sorted(os.listdir(back)) == sorted(os.listdir(src))
    for rel in ["model.safetensors", "config.json", "sub/deeper/state.pt"]:
        assert (back / rel).read_bytes() == (src / rel).read_bytes()
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only


def test_missing_local_file_names_path(tmp_path):
    missing = str(tmp_path / "nope" / "x.jsonl")
    for call in (storage.read_bytes, storage.read_text, storage.open_input, storage.list_files):
        with pytest.raises(StorageError, match="no such file") as info:
            call(missing)
        assert missing in str(info.value)
    with pytest.raises(StorageError, match="x.jsonl"):
        storage.copy_tree(missing, str(tmp_path / "dst"))


def test_missing_s3_key_and_bucket(s3_bucket):
    with pytest.raises(StorageError, match="no such file") as info:
        storage.read_bytes(storage.join(s3_bucket, "absent.jsonl"))
    assert f"{s3_bucket}/absent.jsonl" in str(info.value)
    with pytest.raises(StorageError, match="no such bucket 'finadapt-absent-bucket'"):
        storage.read_text("s3://finadapt-absent-bucket/k.txt")
    with pytest.raises(StorageError, match="finadapt-absent-bucket"):
        storage.write_text("s3://finadapt-absent-bucket/k.txt", "x")
    assert not storage.exists("s3://finadapt-absent-bucket/k.txt")


def _call_with_deadline(fn, arg, deadline_s: float) -> BaseException | None:
    """Run fn(arg) in a daemon thread so a hanging regression fails the test instead of stalling it."""
    box: list = []

    def target():
        try:
            fn(arg)
            box.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(deadline_s)
    assert box, f"{fn} still running after {deadline_s}s against a dead endpoint"
    return box[0]


def test_unreachable_endpoint_fails_fast(s3_server, monkeypatch):
    dead = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("FINADAPT_S3_ENDPOINT", dead)  # the override wins over AWS_ENDPOINT_URL
    uri = "s3://some-bucket/data/x.jsonl"
    for call in (storage.read_bytes, storage.exists, storage.list_files, lambda u: storage.write_text(u, "x")):
        start = time.monotonic()
        exc = _call_with_deadline(call, uri, 15)
        assert time.monotonic() - start < 15
        assert isinstance(exc, StorageError), repr(exc)
        assert uri in str(exc) and f"S3 endpoint {dead}" in str(exc)
        assert "testing" not in str(exc)  # never leak credentials
