"""Text normalization before filtering and dedup, so that the same content gives the same text.

Exact dedup hashes the normalized text and the filters measure it, so normalization decides what
"the same document" means: Unicode NFC, no control or invisible format characters, one space per
run of horizontal whitespace, at most one blank line between paragraphs, and no layout boilerplate
(Reuters sign-offs, EDGAR page footers and "Table of Contents" links) that would otherwise make
copies of one text differ or pad a filing with repeated lines.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np

# Kept control characters: the rest of category Cc goes (NUL, BEL, ESC, Reuters' ETX "\x03", ...).
_KEEP_CONTROL = {"\n", "\t"}
# Invisible format characters seen in the corpora (EDGAR has 17k lines that are only U+200B) or
# common in scraped text; other Cf characters (ZWJ in emoji, bidi marks) are kept.
_DROP_FORMAT = {"\u200b", "\u2060", "\ufeff", "\u00ad"}
_DROP = "".join(
    ch for ch in map(chr, range(0xA0))  # all of category Cc lies below U+00A0
    if unicodedata.category(ch) == "Cc" and ch not in _KEEP_CONTROL
) + "".join(_DROP_FORMAT)
_DROP_TABLE = {ord(ch): None for ch in _DROP}
_DROP_TABLE.update({0x2028: "\n", 0x2029: "\n\n", 0x0B: "\n", 0x0C: "\n", 0x85: "\n"})

# A maximal run of horizontal whitespace (any whitespace but newline: tabs, NBSP, U+2003, ...) that is
# not already a single plain space: a run of 2+, or one other whitespace character. Single spaces,
# which would map to themselves, are never matched (one callback per irregular run, not per word).
_HSPACE_RUN = re.compile(r"[^\S\n]{2,}|[^\S\n ]")
_BLANK_LINES = re.compile(r"\n{3,}")

# A line that is only layout, never content (EDGAR: 2,178 "Table of Contents" lines, "Page 3").
_BOILERPLATE_LINE = re.compile(r"(?i)table of contents|page \d{1,4}( of \d{1,4})?|-\s*\d{1,4}\s*-")
# A page footer number ("30", "F-12", "A-3", "ii") right above a "Table of Contents" link. Bare
# numbers elsewhere stay: EDGAR tables are flattened one cell per line, so "30" may be a value.
_PAGE_FOOTER = re.compile(r"(?i)([a-z]-)?\d{1,4}|[ivxlc]{1,6}")
_TOC = re.compile(r"(?i)table of contents")
# Reuters sign-off at the very end: a "Reuter"/"REUTER(S)" line, or the word after a sentence end
# or a number ("... 15.8 REUTER", "... Noranda said. Reuter"), not "told Reuters".
_SIGNOFF_LINE = re.compile(r"(?i)\n[ \t]*reuters?\.?[ \t]*$")
_SIGNOFF_TAIL = re.compile(r"(?i)(?<=[.!?\"')\d])[ \t]+reuters?\.?[ \t]*$")


def _strip_boilerplate_lines(lines: list[str]) -> list[str]:
    """Drop layout-only lines and the page number just above each "Table of Contents" link."""
    out: list[str] = []
    for line in lines:
        if _TOC.fullmatch(line):
            while out and out[-1] == "":
                out.pop()
            if out and _PAGE_FOOTER.fullmatch(out[-1]):
                out.pop()
            continue
        if _BOILERPLATE_LINE.fullmatch(line):
            continue
        out.append(line)
    return out


def normalize_text(text: str) -> str:
    """The canonical form of ``text`` (see module docstring); idempotent."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.translate(_DROP_TABLE)
    # One character per horizontal-whitespace run: a tab if the run has one (field separator), else a space.
    text = _HSPACE_RUN.sub(lambda m: "\t" if "\t" in m.group() else " ", text)
    lines = [line.strip(" \t") for line in text.split("\n")]
    text = "\n".join(_strip_boilerplate_lines(lines)).strip()
    while True:  # a sign-off may sit above an already-stripped trailing line
        stripped = _SIGNOFF_TAIL.sub("", _SIGNOFF_LINE.sub("", text)).rstrip()
        if stripped == text:
            break
        text = stripped
    return _BLANK_LINES.sub("\n\n", text)


def normalize_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data batch UDF (numpy format): normalize ``text`` and refresh ``bytes`` if present."""
    texts = [normalize_text(t) for t in batch["text"]]
    out = dict(batch)
    out["text"] = np.array(texts, dtype=object)
    if "bytes" in batch:
        out["bytes"] = np.array([len(t.encode("utf-8")) for t in texts], dtype=np.int64)
    return out
