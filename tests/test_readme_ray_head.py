"""Issue 11, item 6: the README's `ray start --head` line, run as written on a fresh machine (empty
HOME: no token file), gives a head with token authentication on: the job API answers 401 without
the token and 200 with it, and the shell that ran the line can use the job CLI."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cluster_fixtures import http_status
from conftest import _free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_head_line() -> str:
    """The first line of a README shell block that starts a Ray head."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = [line for block in blocks for line in block.splitlines() if "ray start --head" in line]
    assert lines, "README.md has no `ray start --head` line in a bash block"
    return lines[0]


@pytest.mark.slow
def test_readme_ray_head_has_token_auth_from_a_fresh_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # AF_UNIX socket paths must stay under 108 bytes
    dash = _free_port()
    # Test-only additions: free ports (other Ray instances may hold the defaults), a private temp
    # dir, and --block so the head stays in this process group and is stopped by signalling it.
    extra = (f"--block --port={_free_port()} --dashboard-port={dash} --dashboard-host=127.0.0.1 --num-cpus=1 "
             f"--include-dashboard=true --ray-client-server-port={_free_port()} --temp-dir={temp_dir} "
             f"--dashboard-agent-listen-port={_free_port()} --dashboard-agent-grpc-port={_free_port()} "
             f"--metrics-export-port={_free_port()} --runtime-env-agent-port={_free_port()}")
    line = readme_head_line().replace(".venv/bin/", f"{BIN}/")
    script = line.replace("ray start --head", f"ray start --head {extra}", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PATH=f"{BIN}:{os.environ['PATH']}")
    log = open(tmp_path / "head.log", "w")
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{dash}/api/jobs/"
    try:
        deadline = time.time() + 180
        while True:
            try:
                code = http_status(url, None)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"head did not come up:\n{(tmp_path / 'head.log').read_text()[-3000:]}")
                time.sleep(1)
        assert code == 401, f"the job API answered {code} without a token: auth is off"
        token_file = home / ".ray" / "auth_token"
        assert token_file.is_file(), "the README line must create the token on a fresh machine"
        token = token_file.read_text().strip()
        assert http_status(url, token) == 200
        assert http_status(url, "wrong-token") in (401, 403)
        # The same shell (the line exports RAY_AUTH_MODE) can use the job CLI against that head.
        exports = "".join(f"export {m}; " for m in re.findall(r"export\s+(\w+=\S+)", line))
        jobs = subprocess.run(["bash", "-c", f"{exports}{BIN}/ray job list --address http://127.0.0.1:{dash}"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert jobs.returncode == 0, jobs.stdout[-2000:] + jobs.stderr[-2000:]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
