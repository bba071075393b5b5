"""Jobs: a Hydra config -> a typed, validated job (registry, validate, build), run it
(pipeline), with seeding and cost measurement."""
