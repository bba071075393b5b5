"""Model loading, tiny test models and the per-family structure map."""
