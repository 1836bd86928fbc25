"""A small OpenAI-compatible server around a transformers model (`finadapt serve-teacher`).

For development and tests: the `openai` engine talks to it exactly as to a vLLM server or a hosted
API (/v1/models, /v1/completions, /v1/chat/completions; Bearer key checked when one is set).
One request at a time; use `vllm serve` for throughput.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class TeacherModel:
    """The model behind the server: prompt (or chat messages) in, sampled completion out."""

    def __init__(self, spec: str, name: str | None = None, dtype: str = "auto"):
        import torch

        from finadapt.models import load_model

        self.loaded = load_model(spec, dtype=dtype)
        self.name = name or spec
        self.torch = torch
        self.lock = threading.Lock()

    def render_chat(self, messages: list[dict]) -> str:
        return self.loaded.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def complete(self, prompt: str, max_tokens: int = 16, temperature: float = 1.0, top_p: float = 1.0,
                 stop: list[str] | None = None, seed: int | None = None,
                 repetition_penalty: float = 1.0) -> tuple[str, str, int, int]:
        """(text, finish_reason, prompt tokens, completion tokens)."""
        torch, tok, model = self.torch, self.loaded.tokenizer, self.loaded.model
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        with self.lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(int(seed))
            out = model.generate(**enc, do_sample=temperature > 0, temperature=temperature or None,
                                 top_p=top_p if temperature > 0 else None, max_new_tokens=max_tokens,
                                 repetition_penalty=repetition_penalty if repetition_penalty != 1.0 else None,
                                 stop_strings=stop or None, tokenizer=tok, pad_token_id=tok.pad_token_id)
        ids = out[0, enc["input_ids"].shape[1]:]
        text = tok.decode(ids, skip_special_tokens=True)
        finish = "length" if len(ids) >= max_tokens else "stop"
        for s in stop or []:
            if s in text:
                text, finish = text.split(s, 1)[0], "stop"
        return text, finish, int(enc["input_ids"].shape[1]), int(len(ids))


def make_handler(teacher: TeacherModel, api_key: str | None):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet; never logs headers (they hold the key)
            log.debug("%s %s", self.command, self.path)

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                self._send(401, {"error": {"message": "invalid API key", "type": "invalid_request_error"}})
                return False
            return True

        def do_GET(self):
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": teacher.name, "object": "model"}]})
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            if not self._authorized():
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except json.JSONDecodeError as err:
                return self._send(400, {"error": {"message": f"body is not JSON: {err}"}})
            chat = self.path.rstrip("/") == "/v1/chat/completions"
            if not chat and self.path.rstrip("/") != "/v1/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            if body.get("model") != teacher.name:
                return self._send(404, {"error": {"message": f"model {body.get('model')!r} not served"}})
            prompt = teacher.render_chat(body["messages"]) if chat else body.get("prompt", "")
            stop = body.get("stop") or []
            text, finish, n_prompt, n_out = teacher.complete(
                prompt, int(body.get("max_tokens", 16)), float(body.get("temperature", 1.0)),
                float(body.get("top_p", 1.0)), [stop] if isinstance(stop, str) else list(stop), body.get("seed"),
                float(body.get("repetition_penalty", 1.0)))
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                      if chat else {"index": 0, "text": text, "finish_reason": finish})
            self._send(200, {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion" if chat
                             else "text_completion", "created": int(time.time()), "model": teacher.name,
                             "choices": [choice], "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                                            "total_tokens": n_prompt + n_out}})

    return Handler


def start_server(teacher: TeacherModel, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None) -> ThreadingHTTPServer:
    """Serve in a background thread; `server.server_address` has the bound port; `shutdown()` stops it."""
    server = ThreadingHTTPServer((host, port), make_handler(teacher, api_key))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
