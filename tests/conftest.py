"""Puts tests/ on sys.path (pytest's rootdir conftest), so shared test helpers import by name."""
