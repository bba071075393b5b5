"""Records: one JSON per job (run identity, atomic writes, provenance) and its Weights & Biases mirror."""
