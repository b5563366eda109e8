"""The job store: SQLAlchemy models and keyword-only CRUD functions (SQLite or PostgreSQL)."""
