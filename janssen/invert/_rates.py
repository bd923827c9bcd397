"""Per-part learning-rate factors for `Gradient`: each refined part moves on its own scale."""

from collections.abc import Mapping, Sequence

import numpy as np

from ..scopes._base import AbstractMicroscope
from ._trainable import _expand, _get


def default_rate_factors(
    microscope: AbstractMicroscope,
    trainable: Sequence[str],
    *,
    optimizer: str = "adam",
    sizes: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """A factor per refined part so that each moves by about the learning rate times its typical size.

    Adam-like optimizers move every parameter by about the learning rate per step, so a
    rate meant for the object (amplitude about 1) must be scaled to every other part's
    size: the scan positions move on the scale of an object pixel, any other part on the
    scale of its RMS magnitude (1 where that is zero or not finite). Plain gradient
    descent (`optimizer="sgd"`) steps by rate x gradient, and a gradient scales as
    1 / size: its factor is the size squared, which gives the same relative step.

    **Arguments:**

    - `microscope`: the starting microscope (the sizes are measured on it).
    - `trainable`: the refined parts, as `trainable=` names (`"probe"`, `"positions"`)
      or dotted leaf paths (`"probe.modes"`); those that stand for the object get no
      factor (it keeps 1).
    - `optimizer`: the optimizer's name; `"sgd"` squares the sizes.
    - `sizes`: sizes to use instead of measuring them, by entry of `trainable` (e.g.
      a probe's peak amplitude rather than its RMS).

    **Returns:**

    `{entry of trainable: factor}`, ready for `Gradient(learning_rates=...)`.
    """
    sizes = dict(sizes or {})
    objects = set(_expand(["object"], microscope))
    positions = set(_expand(["positions"], microscope))
    factors = {}
    for name in trainable:
        paths = set(_expand([name], microscope))
        if paths <= objects:
            continue
        size = sizes[name] if name in sizes else _measured_size(microscope, paths, positions)
        factors[name] = size**2 if optimizer == "sgd" else size
    return factors


def _measured_size(microscope: AbstractMicroscope, paths: set[str], positions: set[str]) -> float:
    if paths <= positions:
        size = float(np.mean(np.asarray(microscope.sample.dx)))
    else:
        values = np.concatenate([np.ravel(np.asarray(_get(microscope, path))) for path in sorted(paths)])
        size = float(np.sqrt(np.mean(np.abs(values) ** 2)))
    return size if np.isfinite(size) and size > 0 else 1.0
