"""Human-readable corpus report (Markdown) from the manifest: counts per stage and source, what each
filter dropped, duplicate clusters found, contamination matches, token mix and packing."""
from __future__ import annotations

from typing import Any


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def corpus_report_markdown(m: dict[str, Any]) -> str:
    stages = m["documents_per_stage"]
    sources = sorted({s for counts in stages.values() for s in counts})
    lines = [f"# Corpus report (config {m['config_hash']})", "", "## Documents per stage", ""]
    lines += _table(["stage", *sources, "total"],
                    [[name, *[counts.get(s, 0) for s in sources], sum(counts.values())] for name, counts in stages.items()])
    lines += ["", f"Quarantined malformed records: {m['quarantine']['total']} "
              f"({m['quarantine']['by_source']}); files: {list(m['quarantine']['files'].values())}", ""]
    for c in m["quarantine"].get("corrupt_files", []):
        lines.append(f"- corrupt input file quarantined whole ({c['source']}): {c['error']}")
    skipped = m.get("inputs_skipped", [])
    lines += [f"Input files skipped: {len(skipped)}" + (" (names starting with '_' or '.'; set read_hidden: true "
                                                         "on the input to read them)" if skipped else ""), ""]
    lines += [f"- {s['source']}: `{s['file']}`" for s in skipped[:50]]
    if len(skipped) > 50:
        lines.append(f"- ... and {len(skipped) - 50} more (all in manifest.json, inputs_skipped)")
    lines += ["",
              "## Quality filters (documents dropped, first failing rule)", ""]
    lines += _table(["rule", *sources], [[rule, *[by.get(s, 0) for s in sources]] for rule, by in m["filter_drops"].items()])
    ex = m["exact_dedup"]
    lines += ["", f"## Exact duplicates: {ex['removed']} removed", ""]
    for group in ex["examples"][:5]:
        lines.append(f"- kept `{group['kept']['id']}`, removed {group['removed_count']}: "
                     + ", ".join(f"`{r['id']}`" for r in group["removed"][:5]))
    nd = m["near_dedup"]
    if nd.get("enabled"):
        lines += ["", f"## Near duplicates (MinHash-LSH + rapidfuzz): {nd.get('removed', 0)} removed "
                  f"in {nd.get('clusters', 0)} clusters ({nd.get('candidates', '?')} candidate pairs, "
                  f"{nd.get('verified_pairs', '?')} verified)", ""]
        for cluster in nd.get("examples", [])[:5]:
            lines.append(f"- cluster of {cluster['size']}, kept `{cluster['survivor']}`:")
            for member in cluster["members"][:4]:
                preview = str(member.get("head", ""))[:120].replace("\n", " ")
                lines.append(f"  - `{member['id']}` ({member.get('source', '')}, {member.get('length')} chars): {preview}")
    dc = m["decontamination"]
    lines += ["", f"## Decontamination ({dc['mode']}): {dc['flagged']} documents share a "
              f"{m['config']['decontamination']['ngram']}-gram with an evaluation text", ""]
    for match in dc["matches"][:10]:
        first = match["matches"][0] if match["matches"] else {}
        lines.append(f"- `{match['id']}` ~ {first.get('task')} `{first.get('eval_id')}`: \"{first.get('ngram')}\"")
    tok = m["tokens"]
    lines += ["", "## Token mix", ""]
    before = next(v for k, v in tok.items() if k.endswith("_before_mix") and not k.startswith("by_source"))
    after = next(v for k, v in tok.items() if k.endswith("_after_mix") and not k.startswith("by_source"))
    total_after = sum(after.values()) or 1
    lines += _table(["group", "tokens before", "tokens after", "share after", "target", "sampling rate"],
                    [[g, before.get(g, 0), after.get(g, 0), f"{after.get(g, 0) / total_after:.3f}",
                      tok["target_ratios"].get(g, 0), f"{tok['sampling_rates'].get(g, 0):.3f}"] for g in sorted(before)])
    pk = m["packing"]
    lines += ["", f"## Packing: {pk['sequences']} sequences of {pk['seq_len']} tokens, {pk['tokens']} tokens, "
              f"{pk['documents']} documents, {len(pk['shards'])} parquet shards", "",
              "Stage seconds: " + ", ".join(f"{k} {v}" for k, v in m["seconds"].items())]
    return "\n".join(lines) + "\n"
