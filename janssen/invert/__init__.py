"""Reconstruction engines, the `reconstruct` driver and the seed API."""
