"""Thin optical elements (private package; import from `janssen.optics`)."""
