"""The PIE gauges: the object-probe scale (probe power held) and the far-field phase ramp."""

import jax.numpy as jnp

from ..._ramp import move_ramp_to_object, spectrum_centroid
from .modes import field_power


def hold_gauge(cfg, microscope, state, obj, probe, obj_v, probe_v):
    """Undo the drift along the exact ambiguities of joint object-probe refinement.

    Scale: `c O` with `P / c` predicts the same data, so the probe's power is held at its
    starting value (a probe scaled to the measured counts keeps the object's transmission
    near 1). Far field only, the phase ramp: see `janssen.invert._ramp`. Nothing is
    corrected while the probe is held (`probe_delay`): it has not moved.
    """
    active = state.iteration >= cfg.probe_delay
    scale = jnp.where(active, jnp.sqrt(field_power(probe) / state.probe_power), 1.0)
    if microscope.phase_ramp_gauge:
        # The centroid does not depend on the scale: both corrections in one pass.
        drift = jnp.where(active, spectrum_centroid(probe) - state.probe_centroid, 0.0)
        return move_ramp_to_object(drift, obj, probe, obj_v, probe_v, scale=scale)
    inverse = 1.0 / scale  # times the reciprocal: no complex division
    return obj * scale, probe * inverse, obj_v * scale, probe_v * inverse
