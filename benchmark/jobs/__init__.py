"""Jobs: turn a Hydra config into a typed job (registry, build), run it (pipeline), with seeding and cost measurement."""
