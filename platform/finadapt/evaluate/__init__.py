"""FLARE evaluation: parse generations (`parsing`) and score them with honest uncertainty (`metrics`).

Kept import-free so that light callers (workers, the CLI) do not pay for scikit-learn/seqeval.
"""
