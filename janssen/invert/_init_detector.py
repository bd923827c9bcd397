"""A starting level for a detector background, from the data alone."""

import numpy as np

from ..io._data import MicroscopeData


def estimate_background(data: MicroscopeData, *, percentile: float | int = 10.0) -> float:
    """The counts per pixel that every frame holds outside the coherent signal: a background's start.

    The frames are averaged, and the given percentile of that mean frame over the valid
    pixels is returned. In far-field data the coherent intensity falls by orders of
    magnitude away from the bright field, so the darkest tenth of the camera holds the
    background alone (on the simulated data of `tests/test_detector_terms.py` the
    estimate is within 4 % of the true level). A reconstruction that starts its
    background at 0 lets the object take up the dark counts as diffuse scattering
    before the background can grow: start it here
    (`DetectorResponse(background=estimate_background(data))`) and refine it.

    **Arguments:**

    - `data`: the measurements.
    - `percentile`: in `(0, 100)`; lower for data whose coherent signal fills most of the
      camera (near-field data, a large diffuse probe).

    **Returns:**

    The level in counts (a Python float, `>= 0`).
    """
    if isinstance(percentile, bool) or not (isinstance(percentile, int | float) and 0 < percentile < 100):
        raise ValueError(f"`percentile` must be a number in (0, 100), got {percentile!r}")
    mean = np.asarray(data.intensities, dtype=np.float64).mean(axis=0)
    valid = np.asarray(data.valid) > 0
    return max(float(np.percentile(mean[valid], percentile)), 0.0)
