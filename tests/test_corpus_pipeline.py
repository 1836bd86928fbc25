"""The corpus stage end to end on a small hand-made corpus: every stage counts what it removed,
the manifest adds up, packing keeps every token, and the same run works with inputs and shards on S3."""
from __future__ import annotations

import json

import pytest

from finadapt import storage
from finadapt.config import load_config
from finadapt.data.pipeline import CorpusConfig, read_shards, run_corpus
from finadapt.tasks import load_samples

WORDS = ("market shares rose after the company reported quarterly earnings above analyst expectations while "
         "bond yields fell and the central bank kept interest rates unchanged citing steady inflation").split()


def _doc(i: int, n: int = 80) -> str:
    words = [WORDS[(i * 7 + k * 3 + k // 5) % len(WORDS)] + str((i * 31 + k) % 97) for k in range(n)]
    return " ".join(words) + "."


@pytest.fixture(scope="module")
def ray_local(s3_server):
    """Ray workers inherit the environment at start: start after the S3 server's env is set."""
    import ray

    ray.init(num_cpus=2, address="local", include_dashboard=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _corpus_lines() -> tuple[list[str], list[str], str]:
    fpb_test = load_samples("fpb", "test")[0].text
    fin = [json.dumps({"id": f"f{i}", "text": _doc(i)}) for i in range(30)]
    fin.append(json.dumps({"id": "f-exact", "text": _doc(3)}))                       # exact duplicate of f3
    near = _doc(5).split()
    near[10] = "CHANGED"
    fin.append(json.dumps({"id": "f-near", "text": " ".join(near)}))                 # near duplicate of f5
    fin.append(json.dumps({"id": "f-contam", "text": _doc(40) + " " + fpb_test}))    # contains an FPB test text
    fin.append(json.dumps({"id": "f-short", "text": "too short"}))                   # filtered: min_chars
    fin.append('{"id": "f-broken", "text": ')                                        # malformed JSON
    gen = [json.dumps({"id": f"g{i}", "text": _doc(100 + i)}) for i in range(20)]
    return fin, gen, fpb_test


def _config(fin_path: str, gen_path: str, out: str) -> CorpusConfig:
    return load_config(CorpusConfig, None, [
        f"inputs=[{{path: '{fin_path}', source: fin, domain: financial}}, {{path: '{gen_path}', source: gen, domain: general}}]",
        f"output_dir={out}", "pack.tokenizer=tiny-random", "pack.seq_len=128",
        "mix.ratios={financial: 0.6, general: 0.4}", "near_dedup.threshold=0.7", "ray.num_cpus=2"])


def _check(manifest: dict) -> None:
    stages = manifest["documents_per_stage"]
    assert stages["ingested"] == {"fin": 34, "gen": 20}
    assert manifest["quarantine"]["total"] == 1
    assert manifest["quarantine"]["by_source"]["fin"] == {"bad_json": 1}
    assert manifest["filter_drops"]["min_chars"] == {"fin": 1}
    assert manifest["exact_dedup"]["removed"] == 1
    assert manifest["exact_dedup"]["examples"][0]["kept"]["id"] == min("fin-f3", "fin-f-exact")  # smallest id wins
    assert manifest["near_dedup"]["removed"] >= 1
    near_members = {m["id"] for c in manifest["near_dedup"]["examples"] for m in c["members"]}
    assert {"fin-f5", "fin-f-near"} <= near_members
    assert manifest["decontamination"]["flagged"] == 1
    assert manifest["decontamination"]["matches"][0]["id"] == "fin-f-contam"
    assert stages["decontaminated"]["fin"] == 34 - 1 - 1 - manifest["near_dedup"]["removed"] - 1
    tokens = manifest["tokens"]
    after = tokens["by_domain_after_mix"]
    share = after["financial"] / sum(after.values())
    assert abs(share - 0.6) < 0.05, share
    packing = manifest["packing"]
    assert packing["tokens"] == sum(after.values())  # no token lost or invented by packing
    assert packing["documents"] == sum(manifest["documents_per_stage"]["mixed"].values())


def test_corpus_pipeline_end_to_end_local(tmp_path, ray_local):
    fin, gen, _ = _corpus_lines()
    (tmp_path / "fin.jsonl").write_text("\n".join(fin) + "\n")
    (tmp_path / "gen" / ".cache").mkdir(parents=True)  # gen: a folder with files that are not read
    (tmp_path / "gen" / "part-0.jsonl").write_text("\n".join(gen) + "\n")
    (tmp_path / "gen" / "_SUCCESS").write_text("")
    (tmp_path / "gen" / ".cache" / "old.jsonl").write_text(gen[0] + "\n")
    out = tmp_path / "out"
    manifest = run_corpus(_config(str(tmp_path / "fin.jsonl"), str(tmp_path / "gen"), str(out)))
    _check(manifest)
    skipped = manifest["inputs_skipped"]
    assert [(s["source"], s["file"]) for s in skipped] == [("gen", ".cache/old.jsonl"), ("gen", "_SUCCESS")]
    assert all("read_hidden" in s["reason"] for s in skipped)
    assert manifest["quarantine"]["corrupt_files"] == []
    report = (out / "report.md").read_text()
    assert "Input files skipped: 2" in report and ".cache/old.jsonl" in report and "_SUCCESS" in report
    table = read_shards(str(out))
    assert table.num_rows == manifest["packing"]["sequences"]
    assert sum(table.column("n_tokens").to_pylist()) == manifest["packing"]["tokens"]
    assert (out / "report.md").read_text().startswith("# Corpus report")
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["config_hash"] == manifest["config_hash"] and saved["inputs"][0]["files"] == 1
    quarantined = (out / "quarantine" / "fin.jsonl").read_text()
    assert "bad_json" in quarantined and "f-broken" in quarantined


def test_corpus_pipeline_reads_and_writes_s3(s3_bucket, ray_local):
    fin, gen, _ = _corpus_lines()
    storage.write_text(f"{s3_bucket}/raw/fin.jsonl", "\n".join(fin) + "\n")
    storage.write_text(f"{s3_bucket}/raw/gen.jsonl", "\n".join(gen) + "\n")
    out = f"{s3_bucket}/corpus"
    manifest = run_corpus(_config(f"{s3_bucket}/raw/fin.jsonl", f"{s3_bucket}/raw/gen.jsonl", out))
    _check(manifest)
    assert storage.exists(f"{out}/manifest.json") and storage.exists(f"{out}/report.md")
    shards = storage.list_files(f"{out}/shards", suffix=".parquet")
    assert shards and all(s.startswith("s3://") for s in shards)
    assert sum(read_shards(out).column("n_tokens").to_pylist()) == manifest["packing"]["tokens"]


def test_missing_input_is_a_clear_error(tmp_path, ray_local):
    cfg = _config(str(tmp_path / "nope.jsonl"), str(tmp_path / "nope2.jsonl"), str(tmp_path / "out"))
    with pytest.raises(Exception, match="nope.jsonl"):
        run_corpus(cfg)
