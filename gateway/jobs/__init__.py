"""Video and batch jobs: the backend contract (``backend.JobBackend``), the in-process runner
(``runner``), the Redis queue and its workers (``queue``), and what runs one job (``execute``)."""
