"""`DetectorResponse`: a non-negative detector background and a per-frame intensity scale."""

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, Float, Int

from .._validate import check_nonnegative, check_positive, real_array


class DetectorResponse(eqx.Module):
    """What the camera adds to the coherent intensity: `I_j = s_j * sum_m |Psi_jm|**2 + b`.

    Real beamline data carry both terms: a background `b` of dark, scattered or
    fluorescent counts that do not come from the coherent exit wave (the same in every
    frame), and a per-frame factor `s_j` that follows the beam current or the exposure
    time. A microscope holds one `DetectorResponse` (its `detector` field, `None` by
    default: no background, unit scales, and predictions exactly as without it) and
    applies it in one place, `AbstractMicroscope.intensity`.

    Both are array leaves, refinable by the gradient and least-squares engines with
    `trainable=["background"]` and `trainable=["frame_scale"]` (the microscope declares
    these names). After every step of a reconstruction (see
    `AbstractMicroscope.project_detector`) a refined background is clipped at 0, and
    refined frame scales are divided by their mean, the mean going to the probe's power
    (or the object's, when only the object is refined with them): a common factor of
    every frame cannot be told from the probe's power, so the scales keep a mean of 1.

    **Arguments:**

    - `background`: counts per detector pixel, `>= 0`: a `(H, W)` map, or a scalar
      (`()`: one level for the whole camera, a better-posed problem when the background
      is flat). `None` (default): no background.
    - `frame_scale`: `(npos,)` factors `> 0`, one per frame (1 for an ideal steady beam).
      `None` (default): every frame has scale 1.
    """

    background: Float[Array, "..."] | None
    frame_scale: Float[Array, " npos"] | None

    # The `trainable=` names of these leaves, relative to the detector (declared here, not in the engines).
    aliases: ClassVar[dict[str, str]] = {"background": "background", "frame_scale": "frame_scale"}

    def __init__(
        self,
        background: Float[ArrayLike, "..."] | float | None = None,
        frame_scale: Float[ArrayLike, " npos"] | None = None,
    ):
        self.background = None if background is None else real_array("background", background)
        self.frame_scale = None if frame_scale is None else real_array("frame_scale", frame_scale)

    def __check_init__(self):
        if self.background is not None:
            if self.background.ndim not in (0, 2):
                raise ValueError(
                    f"`background` must be a scalar or a (H, W) map of the detector, got shape {self.background.shape}"
                )
            check_nonnegative("background", self.background)
        if self.frame_scale is not None:
            if self.frame_scale.ndim != 1:
                raise ValueError(f"`frame_scale` must have shape (npos,), got shape {self.frame_scale.shape}")
            check_positive("frame_scale", self.frame_scale)

    def check_fits(self, detector_shape: tuple[int, int], num_positions: int) -> None:
        """Raise `ValueError` unless the background fits the camera and the scales the scan."""
        if self.background is not None and self.background.ndim == 2 and self.background.shape != tuple(detector_shape):
            raise ValueError(
                f"`detector.background` must be a scalar or have the detector's shape {tuple(detector_shape)}, "
                f"got shape {self.background.shape}"
            )
        if self.frame_scale is not None and self.frame_scale.shape != (num_positions,):
            raise ValueError(
                f"`detector.frame_scale` must have one factor per scan position, shape ({num_positions},), "
                f"got shape {self.frame_scale.shape}"
            )

    def __call__(self, intensity: Float[Array, "dety detx"], index: Int[Array, ""] | None = None) -> Array:
        """The measured intensity of frame `index` from its coherent intensity."""
        if self.frame_scale is not None:
            if index is None:
                raise ValueError(
                    "`index` (the frame's number) is required: this detector has per-frame scales `frame_scale`"
                )
            intensity = intensity * self.frame_scale[index]
        if self.background is not None:
            intensity = intensity + self.background
        return intensity

    def separable_axes(self) -> dict[str, tuple[int, ...]]:
        """Each present term's name and the axes of the `(npos, H, W)` frames its own axes index.

        Element `k` of a term changes only the frames' entries whose indices along those
        axes are `k`: a background map `(H, W)` pixel `(y, x)` of every frame (`(1, 2)`), a
        scalar background everything (`()`), a frame scale its own frame (`(0,)`).
        """
        axes = {}
        if self.background is not None:
            axes["background"] = (1, 2) if self.background.ndim == 2 else ()
        if self.frame_scale is not None:
            axes["frame_scale"] = (0,)
        return axes

    def projected(self, spec: Any, *, hold_mean: bool) -> tuple["DetectorResponse", Float[Array, ""] | None]:
        """The response with its refined leaves back in their domains, and the factor taken out of the scales.

        `spec` is a `DetectorResponse` of bools (which leaves are refined). A refined
        background is clipped at 0. With `hold_mean`, refined scales are divided by their
        mean `c`, which is returned for the caller to move onto the probe's power (`None`
        when nothing was taken out).
        """
        new, factor = self, None
        if spec.background is True and self.background is not None:
            new = eqx.tree_at(lambda d: d.background, new, jnp.maximum(self.background, 0))
        if hold_mean and spec.frame_scale is True and self.frame_scale is not None:
            factor = jnp.mean(self.frame_scale)
            new = eqx.tree_at(lambda d: d.frame_scale, new, self.frame_scale / factor)
        return new, factor


def with_detector(microscope: Any, detector: DetectorResponse | None) -> Any:
    """`microscope` with its `detector` replaced (a background and per-frame scales to refine).

    **Arguments:**

    - `microscope`: any `AbstractMicroscope`.
    - `detector`: a `DetectorResponse` whose background fits the camera and whose scales
      the scan, or `None` (the coherent intensity).

    **Returns:**

    A microscope of the same kind. `ValueError` when the shapes do not fit, naming the term.
    """
    if detector is not None and not isinstance(detector, DetectorResponse):
        raise ValueError(f"`detector` must be a DetectorResponse or None, got {type(detector).__name__}")
    new = eqx.tree_at(lambda m: m.detector, microscope, detector, is_leaf=lambda x: x is None)
    new.check_detector()
    return new


def refines_any(spec: Any) -> bool:
    """Whether a filter spec (a PyTree of bools, or one bool) selects any leaf."""
    return any(leaf is True for leaf in jtu.tree_leaves(spec))
