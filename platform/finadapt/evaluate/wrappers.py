"""Prompt wrappers: how the raw FLARE `query` is shown to a model.

A small instruct model may answer nothing to the raw query (SmolLM2-135M-Instruct gave empty
answers to raw FPB queries), so the wrapper is a recorded choice, never implicit.
"""
from __future__ import annotations

from typing import Literal

WrapperName = Literal["raw", "chat", "finma"]
WRAPPERS: tuple[str, ...] = ("raw", "chat", "finma")
FINMA_TEMPLATE = "Human: \n{query}\n\nAssistant: \n"


def render_prompt(query: str, wrapper: str, tokenizer=None) -> str:
    """Return the exact text the model sees (logged in results for audit)."""
    if wrapper == "raw":
        return query
    if wrapper == "finma":
        return FINMA_TEMPLATE.format(query=query)
    if wrapper == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("wrapper 'chat' needs a tokenizer with a chat template; use 'raw' or 'finma'")
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": query}], add_generation_prompt=True, tokenize=False
        )
    raise ValueError(f"unknown prompt wrapper {wrapper!r}; choose one of {WRAPPERS}")


def template_description(wrapper: str, tokenizer=None) -> str:
    """The wrapper as a template with `{query}` left in, for results.json."""
    return render_prompt("{query}", wrapper, tokenizer)


def answer_separator(rendered_prompt: str) -> str:
    """Space before the label when the prompt ends mid-line ("Answer:"), none after a newline."""
    return "" if rendered_prompt[-1:].isspace() else " "
