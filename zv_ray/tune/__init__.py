"""Model/data co-design sweeps: Ray Tune over run configs, compared in MLflow (zv-ray sweep / zv-ray compare)."""
