"""Data tests (a package, so ``from conftest import shared_path`` finds tests/conftest.py)."""
