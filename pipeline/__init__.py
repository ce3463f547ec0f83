"""Numerical core of the face-swap pipeline, importable without Triton.

The Triton Python models in ``model_repository/`` are thin wrappers around these
functions; tests call them directly and compare against insightface 0.7.3.
"""
