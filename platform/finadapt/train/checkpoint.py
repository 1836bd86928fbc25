"""Checkpoint directories: a Hugging Face model dir (plain `from_pretrained` loads it) + resume state.

    config.json, model.safetensors, tokenizer files   <- the model (LoRA adapters merged in)
    train_state.pt                                    <- optimizer, scheduler, step, epoch, RNG (tensors and
                                                         plain values only: loaded with weights_only=True)
    finadapt_checkpoint.json                          <- step, metrics, config (readable provenance)
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "train_state.pt"
META_FILE = "finadapt_checkpoint.json"
HF_FILES_SKIP = {STATE_FILE}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message names the file."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside DDP / the loss wrapper / torch.compile."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif model.__class__.__name__ == "SelectedTokenLoss":
            model = model.model
        else:
            return model


def save_hf_model(model: torch.nn.Module, tokenizer, directory: str | os.PathLike) -> None:
    model = unwrap(model)
    if hasattr(model, "merge_and_unload"):  # peft: save a plain model with the adapters merged
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def save_checkpoint(directory: str | os.PathLike, model, tokenizer, optimizer=None, scheduler=None,
                    state: dict | None = None, meta: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_hf_model(model, tokenizer, directory)
    peft_model = unwrap(model)
    if hasattr(peft_model, "peft_config"):  # adapters too, so a LoRA run resumes as LoRA
        peft_model.save_pretrained(directory / "adapter")
    if optimizer is not None:
        torch.save({
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "state": state or {},
            "rng": rng_state(),
        }, directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps({**(meta or {}), "state": state or {}}, indent=2, default=str))
    return directory


def load_train_state(directory: str | os.PathLike, optimizer=None, scheduler=None) -> dict:
    """Restore optimizer/scheduler/RNG from a checkpoint; returns the loop state (step, epoch, ...)."""
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {STATE_FILE}: it cannot resume a run "
                                "(checkpoint.save_optimizer was off?)")
    try:  # tensors and plain containers only: never run pickled code from (shared) checkpoint storage
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to load: it holds more than tensors and plain values "
                              f"(torch.load weights_only=True): {str(err).splitlines()[0]}") from None
    if optimizer is not None:
        optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob.get("scheduler") is not None:
        scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob.get("rng") or {})
    return blob.get("state", {})


def rng_state() -> dict:
    """torch, python and numpy RNG states as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def set_rng_state(rng: dict) -> None:
    if "torch" not in rng:
        return
    torch.set_rng_state(rng["torch"])
    py = rng["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    nps = rng["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached_gaussian"]))


def copy_model_files(src: str | os.PathLike, dest: str) -> list[str]:
    """Export the HF part of a checkpoint (no optimizer state) to a local dir or s3:// URI."""
    from finadapt import storage

    written = []
    for file in sorted(Path(src).rglob("*")):
        if file.is_file() and file.name not in HF_FILES_SKIP:
            target = storage.join(dest, str(file.relative_to(src)))
            storage.write_bytes(target, file.read_bytes())
            written.append(target)
    return written
