"""Celery app and tasks. Nothing here imports TensorFlow at module level: the prefork
parent must never touch it (children of a parent that ran TF ops hang), so models are
loaded lazily in each child on first use."""
