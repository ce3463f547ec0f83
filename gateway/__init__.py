"""FastAPI gateway (REST face of the service): filled by its own issue."""
