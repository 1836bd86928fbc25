"""Shared fixtures: a real S3 server (moto in server mode on localhost), never in-process mocks."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import pytest

from finadapt.telemetry.prometheus import free_port


def in_ci() -> bool:
    """CI=true (or 1/yes), as CI services set it."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_extra(module: str, extra: str):
    """Import `module` of the declared extra `extra`, or skip the test — except in CI (CI=true), where a
    missing or broken extra is a broken install and fails the test instead of hiding it as a skip."""
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as err:  # a broken install raises more than ImportError (missing .so, version clash)
        message = f"{module} (extra finadapt[{extra}]) does not import: {type(err).__name__}: {err}"
        if in_ci():
            pytest.fail(f"{message}; CI=true, so a missing declared extra fails instead of skipping "
                        f"(pip install 'finadapt[{extra}]')", pytrace=False)
        pytest.skip(message)


_free_port = free_port  # the name the test modules import


@dataclass
class S3Server:
    endpoint: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (unique name by default) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
S3_ENV_CLEARED = ("FINADAPT_S3_ENDPOINT", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION")


@pytest.fixture(scope="session")
def s3_server():
    """Start `python -m moto.server` on a free localhost port and point the AWS env vars at it."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # any HTTP answer means it is up
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"moto server on {endpoint} did not start:\n{log.read().decode(errors='replace')}")
                time.sleep(0.2)
        saved = {k: os.environ.get(k) for k in (*S3_ENV, *S3_ENV_CLEARED, "AWS_ENDPOINT_URL")}
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
        for k in S3_ENV_CLEARED:
            os.environ.pop(k, None)
        try:
            yield S3Server(endpoint)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, uniquely named bucket as `s3://<name>`."""
    return f"s3://{s3_server.create_bucket()}"
