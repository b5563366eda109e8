"""The HTTP API (FastAPI): thin routers around the ttalkkac domain core."""
