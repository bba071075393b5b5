"""Records: one JSON per job (run identity, atomic writes, provenance, staleness) and its
Weights & Biases mirror."""
