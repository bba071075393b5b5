"""Dense models and training: the shared training loop, the dense fine-tune (cached) and its recipes (FreeLB, weight averaging)."""
