"""robust-prune-bench: reproducible robust pruning of BERT-style language models."""

__version__ = "0.1.0"
