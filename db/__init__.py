"""SQL is the source of truth for jobs, scans, results and model versions; Celery only
carries work. SQLAlchemy 2 models, session handling and Alembic migrations."""
