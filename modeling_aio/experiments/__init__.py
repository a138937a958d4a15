"""Measurement studies behind `docs/experiments.md`, each run by a script of the same name in `scripts/`."""
