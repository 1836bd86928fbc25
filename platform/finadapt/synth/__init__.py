"""Synthetic instruction data: a teacher model writes new labelled FLARE examples.

    from finadapt.synth import SynthConfig, synthesize
    summary = synthesize(SynthConfig())          # embedded teacher, hf engine, runs/synth/

Outputs in `output_dir`: synthetic.jsonl (FLARE samples + provenance), quarantine.jsonl
(rejected generations with the reason), config.yaml, report.{json,md,png}.
Mix them into stage-2 training with `SftData.synthetic_jsonl` + `synthetic_ratio`, or write a
mixed file with `finadapt mix`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finadapt.synth.config import MixConfig, SynthConfig
    from finadapt.synth.mix import write_mix


def synthesize(cfg: "SynthConfig") -> dict:
    """Run the stage and write its outputs; returns the report summary."""
    import yaml

    from finadapt import storage
    from finadapt.synth.pipeline import run_synthesis, write_jsonl
    from finadapt.synth.redact import redact, redact_text
    from finadapt.synth.report import summarize, write_report

    run = run_synthesis(cfg)
    out = cfg.output_dir
    write_jsonl(storage.join(out, "synthetic.jsonl"), run.accepted)
    write_jsonl(storage.join(out, "quarantine.jsonl"), run.quarantined)
    # credentials in engine settings are redacted: pass keys through environment variables to re-run
    storage.write_text(storage.join(out, "config.yaml"), yaml.safe_dump(redact(cfg.model_dump(mode="json")),
                                                                        sort_keys=False))
    summary = summarize(run, cfg.seed)
    header = dict(teacher=redact_text(cfg.teacher.spec), engine=cfg.engine.kind, seed=cfg.seed, few_shot=cfg.few_shot,
                  use_prefix=cfg.use_prefix, verify=cfg.verify.enabled)
    write_report(out, summary, header)
    return {**header, **summary}


def __getattr__(name: str):
    if name in ("SynthConfig", "MixConfig"):
        from finadapt.synth import config

        return getattr(config, name)
    if name == "write_mix":  # `finadapt mix`; loaded on use, like the configs
        from finadapt.synth.mix import write_mix

        return write_mix
    raise AttributeError(name)


__all__ = ["MixConfig", "SynthConfig", "synthesize", "write_mix"]
