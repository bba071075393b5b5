"""robust-prune-bench: reproducible robust pruning of BERT-style language models."""

import os

# PyTorch models only. With TensorFlow installed (the optional ``tf`` extra: TextAttack's
# Universal Sentence Encoder loads through tensorflow_hub), ``transformers`` and ``datasets``
# would otherwise import it wherever they check a tensor's type (tokenizer outputs): tens of
# seconds and hundreds of MB per process. tensorflow_hub imports TensorFlow itself; this only
# stops the two libraries from using it. Set before they are imported; a user's USE_TF wins.
os.environ.setdefault("USE_TF", "0")

__version__ = "0.1.0"
