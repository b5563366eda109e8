"""The Celery training worker: ``celery_app`` (app and config) and ``tasks`` (thin tasks)."""
