"""The benchmark: the project's trainer against plain model.fit, per model (make bench)."""
