"""Datasets, image decoding, the built-in datasets and data checks."""
