"""Corpora, manifests, validation and data loading."""
