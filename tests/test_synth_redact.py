"""Credentials placed in engine settings (base_url, engine_kwargs, env_vars) never reach what the
synthetic stage writes or logs: every output file is scanned for the secret strings."""
from __future__ import annotations

import json
import logging

import pytest
from conftest import _free_port

from finadapt.synth import synthesize
from finadapt.synth import pipeline as synth_pipeline
from finadapt.synth.config import OpenAIEngine, SynthConfig, VllmEngine
from finadapt.synth.engines import EngineError, check_server
from finadapt.synth.redact import REDACTED, is_secret_key, redact, redact_text, redact_url

SECRETS = ("secret", "sk-XYZ", "hf_abc", "sk-OPENAI-789", "hf-kwarg-456")
SECRET_URL = "http://user:secret@host.example/v1?api_key=sk-XYZ&mode=fast"

# Sentences unlike any real FPB text, so the run accepts them and writes their provenance.
TEXTS = ["The orchard cooperative booked record quarterly cider revenue across its northern stores .",
         "Harbour crane lessor Voltaris tripled its order backlog after the port expansion contract .",
         "Quarterly margins at the glacier water bottler widened as freight rates kept falling ."]


def _fake_outputs(cfg, requests):
    """What an engine returns: one well-formed answer per request (no model needed)."""
    outputs = []
    for i, r in enumerate(requests):
        body = TEXTS[i % len(TEXTS)] + '"}'
        text = r.prefix + body if r.prefix else json.dumps({"label": r.target, "text": body[:-2]})
        outputs.append(dict(request_id=r.request_id, output=text, truncated=False, generated_tokens=20))
    return outputs


ENGINES = {
    "vllm": VllmEngine(engine_kwargs={"api_key": "sk-XYZ", "hf_token": "hf-kwarg-456", "max_num_batched_tokens": 4096,
                                      "nested": {"client": {"password": "secret"}}},
                       env_vars={"HF_TOKEN": "hf_abc", "OPENAI_API_KEY": "sk-OPENAI-789", "VLLM_CPU_KVCACHE_SPACE": "1"}),
    "openai": OpenAIEngine(base_url=SECRET_URL, model="teacher", api="chat", api_key_env="OPENAI_API_KEY"),
}


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_engine_credentials_reach_no_output_file_or_log(kind, tmp_path, monkeypatch, caplog, capfd):
    monkeypatch.setattr(synth_pipeline, "generate_outputs", _fake_outputs)
    caplog.set_level(logging.DEBUG)
    cfg = SynthConfig(engine=ENGINES[kind], tasks=["fpb"], requests_per_task=3, output_dir=str(tmp_path / "out"))
    logging.getLogger("finadapt").info("config: %s", cfg)  # what a verbose run or a traceback could print
    summary = synthesize(cfg)
    assert summary["totals"]["accepted"] >= 1, summary["totals"]  # provenance rows were written
    files = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"synthetic.jsonl", "quarantine.jsonl", "config.yaml", "report.json", "report.md"}
    captured = capfd.readouterr()
    texts = {p.name: p.read_bytes().decode("utf-8", "replace") for p in files}
    texts.update(logs=caplog.text, stdout=captured.out, stderr=captured.err)
    leaks = {(name, s) for name, text in texts.items() for s in SECRETS if s in text}
    assert not leaks, leaks
    # what is not a credential stays, so the provenance still says how the data was made
    prov = json.loads(texts["synthetic.jsonl"].splitlines()[0])["provenance"]["engine_config"]
    if kind == "vllm":
        assert prov["engine_kwargs"]["max_num_batched_tokens"] == 4096 and prov["engine_kwargs"]["api_key"] == REDACTED
        assert prov["env_vars"] == {"HF_TOKEN": REDACTED, "OPENAI_API_KEY": REDACTED, "VLLM_CPU_KVCACHE_SPACE": "1"}
    else:
        assert prov["base_url"] == f"http://{REDACTED}@host.example/v1?api_key={REDACTED}&mode=fast"
        assert prov["api_key_env"] == "OPENAI_API_KEY"


def test_redaction_rules():
    assert [is_secret_key(k) for k in ("hf_token", "HF_TOKEN", "OPENAI_API_KEY", "apiKey", "x-auth", "db.password",
                                       "aws_secret_access_key", "Authorization")] == [True] * 8
    assert [is_secret_key(k) for k in ("max_num_batched_tokens", "tokenizer", "tokenizer_mode", "kv_cache_dtype",
                                       "monkey", "author", "VLLM_CPU_KVCACHE_SPACE")] == [False] * 7
    assert redact_url("https://u:p@h:8443/v1?token=t1&x=1#f") == f"https://{REDACTED}@h:8443/v1?token={REDACTED}&x=1#f"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_text("GET http://a:b@h/v1 failed; header Bearer sk-123") == f"GET http://{REDACTED}@h/v1 failed; header Bearer {REDACTED}"
    # a variable *name* is kept, a value under an *_env key is not
    assert redact({"api_key_env": "OPENAI_API_KEY", "token_env": "hf_live_value"}) == {
        "api_key_env": "OPENAI_API_KEY", "token_env": REDACTED}
    assert redact({"args": ["--url", "http://x:y@h/"], "n": 3, "auth": None}) == {
        "args": ["--url", f"http://{REDACTED}@h/"], "n": 3, "auth": None}
    # a bare argument list: the value after a credential-named flag, or after its `=`
    assert redact(["--api-key", "sk-live", "--port", "8000", "--hf-token=hf_live", "--tokenizer", "gpt2"]) == [
        "--api-key", REDACTED, "--port", "8000", f"--hf-token={REDACTED}", "--tokenizer", "gpt2"]
    assert redact(["--api-key", "--port", "8000"]) == ["--api-key", "--port", "8000"]  # a flag, not a value


def test_engine_errors_do_not_print_the_url_credentials():
    dead = f"http://user:secret@127.0.0.1:{_free_port()}/v1?api_key=sk-XYZ"
    with pytest.raises(EngineError, match="is not reachable") as err:
        check_server(OpenAIEngine(base_url=dead, model="teacher", api_key_env=None, connect_timeout_s=2))
    assert "secret" not in str(err.value) and "sk-XYZ" not in str(err.value)
    assert f"{REDACTED}@127.0.0.1" in str(err.value)
