"""Helpers the tests share (photos, servers, gateway calls, hostile files); fixtures live in
``tests/conftest.py``. No test module imports another test module: what two need lives here."""
