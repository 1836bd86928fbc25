"""Credentials out of provenance: what the synthetic stage writes (synthetic.jsonl, config.yaml,
report.json) and logs may be shared with everyone who reads the data, so engine settings that can
hold a key (`engine.base_url`, `engine.engine_kwargs`, `engine.env_vars`) are redacted first.

Redacted are
- the value of every mapping key one of whose words (split at `_`, `-`, `.`, camelCase) is a
  credential word: key, apikey, token, secret, password, passwd, pwd, credential(s), auth,
  authorization, cookie, bearer, signature (`hf_token`, `OPENAI_API_KEY`, `apiKey`; not
  `max_num_batched_tokens` or `tokenizer`). A key ending in `_env` whose value is an
  environment-variable name (`api_key_env: OPENAI_API_KEY`) names where a key lives and is kept;
- in every string that holds a URL: the userinfo (`user:password@`) and the values of query
  parameters named like the keys above (`?api_key=...`);
- `Bearer <token>` in any string;
- in a list of command-line arguments, the value of a flag named like the keys above
  (`["--api-key", "sk-..."]`, `["--hf-token=hf_..."]`).
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "***"
SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "pwd", "credential",
                          "credentials", "auth", "authorization", "cookie", "bearer", "signature"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",}]+")


def is_secret_key(name: str) -> bool:
    """Does this mapping key name a credential (by its words, see the module docstring)?"""
    return any(w.lower() in SECRET_WORDS for w in _WORD.findall(str(name)))


def redact_url(url: str) -> str:
    """`url` without userinfo and with credential-named query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable as a URL: hide it all rather than risk a key
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if is_secret_key(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """A message or value with every URL in it redacted and `Bearer <token>` hidden."""
    return _BEARER.sub(r"\1" + REDACTED, _URL.sub(lambda m: redact_url(m.group(0)), text))


def redact(value):
    """A copy of `value` (a config dump: dicts, lists, scalars) safe to write into provenance."""
    if isinstance(value, dict):
        return {k: _redact_item(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return _redact_args(list(value))
    if isinstance(value, str):
        return redact_text(value)
    return value


def _secret_flag(item) -> bool:
    return isinstance(item, str) and item.startswith("-") and is_secret_key(item.lstrip("-").split("=", 1)[0])


def _redact_args(items: list) -> list:
    """A list, with the value of each credential-named flag hidden (`--api-key X`, `--api-key=X`)."""
    out = []
    for i, item in enumerate(items):
        if _secret_flag(item) and "=" in item:
            out.append(item.split("=", 1)[0] + "=" + REDACTED)
        elif i > 0 and _secret_flag(items[i - 1]) and "=" not in items[i - 1] and isinstance(item, str) \
                and not item.startswith("-"):
            out.append(REDACTED)
        else:
            out.append(redact(item))
    return out


def _redact_item(key: str, value):
    if is_secret_key(key) and value not in (None, "", {}, []):
        names_a_variable = key.lower().endswith("_env") and isinstance(value, str) and _ENV_NAME.fullmatch(value)
        if not names_a_variable:
            return REDACTED
    return redact(value)
