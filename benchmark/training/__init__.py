"""Dense models and training: the shared training loop, the cached dense fine-tune and its
recipes (FreeLB, weight averaging)."""
