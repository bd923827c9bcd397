"""Propagators between planes (private package; import from `janssen.optics`)."""
