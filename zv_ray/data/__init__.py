"""Rendered-object datasets: the Arrow schema, Parquet shards, and the Ray Data pipelines."""
