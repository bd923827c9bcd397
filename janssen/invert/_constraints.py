"""Constraints every engine's step obeys: the scan's frame, and bounds on parameters.

Two symmetries of ptychography make some position updates meaningless, and an engine
that follows them drifts:

- moving every position by the same vector moves the object with them (the data do not
  change), so when the object is refined the mean of the scan is fixed;
- dilating the scan about its centre by `s`, with the object, the probe and the
  propagation distance scaled by `s`, predicts the same far-field data, so when the
  distance is refined too the scan's scale is fixed: it is the encoders' (or the nominal
  geometry's), and the distance carries the diffraction geometry.

A third symmetry involves object and probe: in the far field `O exp(ik.r)` with
`P exp(-ik.r)` predicts the same data (`janssen.invert._ramp`). The PIE engines pin it
themselves (`holds_phase_ramp`); for every other engine the driver moves any drift of the
probe's far-field centroid back onto the object after each step (`fix_phase_ramp`). Without it the least-
squares engines wander along the ramp: on the medium preset, Gauss-Newton fitted the data
to the noise floor in 5 iterations while the object error stayed at 0.24 (0.025 once the
ramp was removed).

`project_scan_step` removes these components from a step of the positions
(`scan_gauges` says which apply to a trainable selection). A fourth symmetry is a common
factor of every frame's scale against the probe's power: the microscope holds it, with its
refined detector terms' bounds (`AbstractMicroscope.project_detector`). Bounds on any
leaf (`zoom`, `aperture.diameter`, `propagator.distance`, …) are enforced by projection
(clipping) after each step.
"""

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._ramp import move_ramp_to_object, spectrum_centroid
from ._trainable import _expand, _get, refines, selected_paths


def project_scan_step(
    step: Float[Array, "npos 2"],
    positions: Float[Array, "npos 2"],
    *,
    translation: bool = True,
    dilation: bool = True,
) -> Float[Array, "npos 2"]:
    """A position step with its translation and its uniform dilation removed.

    **Arguments:**

    - `step`: `(npos, 2)` change of the positions.
    - `positions`: `(npos, 2)` positions the step is taken from.
    - `translation`, `dilation`: which components to remove (static).

    **Returns:**

    `step - mean(step) - a * (positions - mean(positions))`, with `a` the step's
    component along the dilation: orthogonal (in the Euclidean sense over all `2 npos`
    numbers) to a common translation and to a uniform scaling of the scan about its centre.
    A scan of one position, or one whose positions coincide, keeps only the translation
    constraint.
    """
    if translation:
        step = step - jnp.mean(step, axis=0, keepdims=True)
    if not dilation:
        return step
    centred = positions - jnp.mean(positions, axis=0, keepdims=True)
    norm2 = jnp.sum(centred**2)
    safe = jnp.where(norm2 > 0, norm2, 1)
    along = jnp.where(norm2 > 0, jnp.sum(step * centred) / safe, 0)
    return step - along * centred


def scan_gauges(spec: Any, microscope: Any = None) -> tuple[bool, bool]:
    """Which scan motions are gauge freedoms of a trainable selection: `(translation, dilation)`.

    The microscope answers (`AbstractMicroscope.scan_gauges`): a common shift of the
    positions is one only when the object is refined too (it moves with them); with a
    known object it is measured, and kept. A dilation is one when the object and a leaf
    that the microscope declares to set the diffraction scale (`scale_leaves`: a
    distance, a zoom, a near-field `focus_to_sample`, or the FFT far field's object pixel
    `sample.dx`) are refined; and with `sample.dx` even for a known object, because the
    data depend on the positions only through `positions / sample.dx` (object and probe
    are arrays of pixels). Neither applies when the positions are not refined.

    **Arguments:**

    - `spec`: the boolean filter spec (`trainable_spec`).
    - `microscope`: the microscope `spec` selects from. Default: `spec` itself, which
      has the microscope's class and structure (its declarations read no array).
    """
    microscope = spec if microscope is None else microscope
    if not refines(spec, microscope, "positions"):
        return False, False
    return microscope.scan_gauges(selected_paths(spec, spec))


# Centroid drifts below this (pixels) are rounding, not drift.
_RAMP_TOLERANCE = 1e-5


def fix_phase_ramp(new: Any, old: Any, spec: Any) -> Any:
    """`new` with the far-field phase-ramp drift since `old` moved from the probe to the object.

    Applies to a microscope that declares the gauge (`phase_ramp_gauge`: the far field)
    whose object (`sample.sample`) and probe fields (`probe.modes`) are both refined:
    the probe's far-field intensity centroid is put back where it was in `old` by a
    linear phase ramp, and the object takes the opposite ramp
    (`janssen.invert._ramp.move_ramp_to_object`), so the predicted data do not change
    (exactly for whole-pixel positions; with sub-pixel positions to the accuracy of the
    probe's Fourier shift, which treats the tilted probe as periodic: a relative change
    of order the drift times 0.1 of the largest intensity, 3e-3 for the 0.02 px a
    step typically drifts). Any other microscope or selection is returned as it is.
    """
    if not getattr(new, "phase_ramp_gauge", False):
        return new
    if not refines(spec, new, "object", "probe"):
        return new
    target = spectrum_centroid(old.probe.fields())
    obj, fields = new.sample.sample, new.probe.fields()
    # A ramp of a fraction of a cycle moves the centroid by ~90 % of its frequency (the
    # spectrum's tails wrap around), so a second pass takes the rest: 1e-4 px left.
    for _ in range(2):
        drift = spectrum_centroid(fields) - target
        # The two centroids are rounded differently (~3e-7 px in float32) even for the same
        # probe: below _RAMP_TOLERANCE nothing moves, so an unchanged probe (a rejected
        # step) comes back bit for bit.
        drift = jnp.where(jnp.abs(drift) > _RAMP_TOLERANCE, drift, 0.0)
        obj, fields = move_ramp_to_object(drift, obj, fields)
    return eqx.tree_at(lambda m: (m.sample.sample, m.probe), new, (obj, new.probe.with_fields(fields)))


def constrain_step(new: Any, old: Any, spec: Any, *, ramp: bool = True) -> Any:
    """`new` after the constraints every step obeys.

    With `ramp` (static; `False` for engines that treat it themselves) the far-field phase
    ramp is held (`fix_phase_ramp`); the gauge motions of refined positions (see
    `scan_gauges`) are undone relative to `old`. Refined detector terms are put back in
    their domains (`AbstractMicroscope.project_detector`). A refined object pixel
    (`sample.dx`, the FFT far field's distance) needs nothing: the pitch is stored once.
    """
    if ramp:
        new = fix_phase_ramp(new, old, spec)
    # A refined background stays >= 0, refined frame scales keep a mean of 1 (the microscope's rule).
    new = new.project_detector(spec)
    translation, dilation = scan_gauges(spec, old)
    if not (translation or dilation):
        return new
    step = project_scan_step(new.positions - old.positions, old.positions, translation=translation, dilation=dilation)
    return eqx.tree_at(lambda m: m.positions, new, old.positions + step)


class Bounds(eqx.Module):
    """Box bounds on leaves of a microscope, enforced by clipping after each step.

    **Arguments:**

    - `bounds`: a mapping from a trainable name (`"zoom"`, `"distance"`,
      `"aperture_diameter"`, `"aperture_center"`) or a dotted leaf path
      (`"aperture.diameter"`) to `(min, max)`. Each of `min` and `max` is a scalar or an
      array broadcastable to the leaf (e.g. `(x, y)` pairs for a centre); `None` leaves
      that side open, and so does an infinite entry (`(-inf, 1e-4)` bounds y only of an
      `(x, y)` pair when given as `((-inf, -1e-4), (inf, 1e-4))`).
    - `like`: the microscope the paths are checked against.

    Raises `ValueError` when a bound has `min > max`, is NaN, or names a parameter the
    microscope does not have.
    """

    paths: tuple[str, ...] = eqx.field(static=True)
    lower: tuple[Array, ...]
    upper: tuple[Array, ...]

    def __init__(self, bounds: Mapping[str, Any], like: Any):
        paths, lower, upper = [], [], []
        for name, pair in bounds.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"`bounds[{name!r}]` must be a pair (min, max), got {pair!r}")
            expanded = _expand([name], like)
            for path in expanded:
                leaf = _get(like, path)
                if not (eqx.is_inexact_array(leaf) and not jnp.iscomplexobj(leaf)):
                    raise ValueError(
                        f"`bounds[{name!r}]`: '{path}' must be a real floating-point array to be bounded, "
                        f"got {getattr(leaf, 'dtype', type(leaf).__name__)}"
                    )
                lo = -np.inf if pair[0] is None else np.asarray(pair[0], dtype=float)
                hi = np.inf if pair[1] is None else np.asarray(pair[1], dtype=float)
                for side, value in (("min", pair[0]), ("max", pair[1])):
                    if value is not None and np.any(np.isnan(np.asarray(value, dtype=float))):
                        raise ValueError(
                            f"`bounds[{name!r}]` {side} must not be NaN (None or ±inf leaves a side open), "
                            f"got {value!r}"
                        )
                if np.any(np.asarray(lo) > np.asarray(hi)):
                    raise ValueError(f"`bounds[{name!r}]`: min must be <= max, got min={pair[0]!r} > max={pair[1]!r}")
                try:
                    np.broadcast_shapes(np.shape(lo), np.shape(hi), np.shape(leaf))
                except ValueError:
                    raise ValueError(
                        f"`bounds[{name!r}]` of shapes {np.shape(lo)} and {np.shape(hi)} do not broadcast "
                        f"to '{path}' of shape {np.shape(leaf)}"
                    ) from None
                paths.append(path)
                lower.append(jnp.asarray(lo))
                upper.append(jnp.asarray(hi))
        self.paths, self.lower, self.upper = tuple(paths), tuple(lower), tuple(upper)

    def __call__(self, microscope: Any) -> Any:
        """`microscope` with each bounded leaf clipped into its box."""
        for path, lo, hi in zip(self.paths, self.lower, self.upper, strict=True):
            leaf = _get(microscope, path)
            lo, hi = (jnp.broadcast_to(side.astype(leaf.dtype), leaf.shape) for side in (lo, hi))
            clipped = jnp.clip(leaf, lo, hi)
            microscope = eqx.tree_at(lambda m, p=path: _get(m, p), microscope, clipped)
        return microscope
