"""Data: CSV tables checked against a model's spec, and the Lightning data module."""
