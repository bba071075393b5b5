"""Datasets: Hugging Face Hub or a local ``<data_dir>/<dataset>/<split>.csv`` mirror."""
