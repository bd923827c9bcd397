"""`AbstractMicroscope`: a differentiable forward model written for one scan position."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Int

from .._validate import is_concrete
from ..optics._probe import AbstractProbe
from ..optics._sample import SampleFunction
from ..optics._scan import extract_patch, patch_corner, positions_outside, shift_probe, split_corner


class AbstractMicroscope(eqx.Module):
    """A ptychographic microscope: probe, sample, scan positions and the optics after the sample.

    Subclasses declare the linear map from the exit plane to the detector
    (`propagate`) and its adjoint (`backpropagate`); everything else — where the
    probe sits, the exit wave, the predicted intensity — is defined here once for a
    **single** scan position. Batches use `jax.vmap`; PIE engines `lax.scan` over the
    same functions.

    Every array field of a microscope (the object, the probe, positions, distances,
    element parameters) can be selected as trainable by the engines.
    """

    probe: eqx.AbstractVar[AbstractProbe]
    sample: eqx.AbstractVar[SampleFunction]
    positions: eqx.AbstractVar[Float[Array, "npos 2"]]

    @abc.abstractmethod
    def propagate(
        self, exit_waves: Complex[Array, "modes y x"], subpixel: Float[Array, "2"]
    ) -> Complex[Array, "modes dety detx"]:
        """Linear map from exit waves to detector fields.

        `exit_waves` are computed in the frame of the whole-pixel patch with the probe
        moved by `subpixel` (see `exit_waves`); a microscope whose detector intensity is
        not shift-invariant must move its result back by `-subpixel`.
        """

    @abc.abstractmethod
    def backpropagate(
        self, detector_fields: Complex[Array, "modes dety detx"], subpixel: Float[Array, "2"]
    ) -> Complex[Array, "modes y x"]:
        """The adjoint of `propagate` (for unitary optics, its inverse)."""

    @property
    @abc.abstractmethod
    def detector_shape(self) -> tuple[int, int]:
        """The camera's `(H, W)` in pixels."""

    # ---- concrete, shared by every microscope (never overridden) -------------------------

    @property
    def probe_shape(self) -> tuple[int, int]:
        """`(H, W)` of the probe grid in the sample plane."""
        return self.probe.fields().shape[-2:]

    @property
    def num_positions(self) -> int:
        """Number of scan positions."""
        return self.positions.shape[0]

    def locate(self, position: Float[Array, "2"]) -> tuple[Int[Array, "2"], Float[Array, "2"]]:
        """Whole-pixel patch corner `(x, y)` and the sub-pixel remainder for one position."""
        corner = patch_corner(position, self.sample.dx, self.sample.shape, self.probe_shape)
        return split_corner(corner)

    def exit_waves(self, position: Float[Array, "2"]) -> Complex[Array, "modes y x"]:
        """Probe modes, moved by the sub-pixel remainder, times the whole-pixel object patch."""
        corner, subpixel = self.locate(position)
        patch = extract_patch(self.sample.sample, corner, self.probe_shape)
        return shift_probe(self.probe.fields(), subpixel) * patch[None]

    def intensity(self, position: Float[Array, "2"]) -> Float[Array, "dety detx"]:
        """Predicted detector intensity at one scan position (incoherent sum over modes)."""
        _, subpixel = self.locate(position)
        fields = self.propagate(self.exit_waves(position), subpixel)
        return jnp.sum(fields.real**2 + fields.imag**2, axis=0)

    def __call__(self) -> Float[Array, "npos dety detx"]:
        """Predicted intensities at every scan position, `(npos, H, W)`."""
        return jax.vmap(self.intensity)(self.positions)

    def check_geometry(self) -> None:
        """Raise `ValueError` if probe and sample disagree or a patch runs off the object.

        Runs on concrete values only (constructors call it; inside `jit` it is a no-op).
        """
        if not (is_concrete(self.positions) and is_concrete(self.sample.dx) and is_concrete(self.probe.dx)):
            return
        if self.positions.ndim != 2 or self.positions.shape[1] != 2:
            raise ValueError(f"`positions` must have shape (npos, 2) with columns (x, y), got {self.positions.shape}")
        if not np.allclose(np.asarray(self.probe.dx), np.asarray(self.sample.dx), rtol=1e-5, atol=0):
            raise ValueError(
                f"`probe.dx` and `sample.dx` must be equal (the probe multiplies the sample pixel by pixel), "
                f"got {np.asarray(self.probe.dx).tolist()} and {np.asarray(self.sample.dx).tolist()}"
            )
        sy, sx = self.sample.shape
        py, px = self.probe_shape
        if sy < py or sx < px:
            raise ValueError(f"`sample` {(sy, sx)} must be at least as large as the probe {(py, px)}")
        if not np.all(np.isfinite(np.asarray(self.positions))):
            raise ValueError("`positions` must be finite, got NaN or infinite values")
        bad = positions_outside(self.positions, self.sample.dx, self.sample.shape, self.probe_shape)
        if bad.size:
            raise ValueError(
                f"`positions`: {bad.size} scan position(s) put the probe partly off the object "
                f"(first: index {int(bad[0])} at {np.asarray(self.positions[bad[0]]).tolist()} m); "
                f"the object is {self.sample.shape} pixels of {np.asarray(self.sample.dx).tolist()} m. "
                f"Pad the object (e.g. `janssen.invert.init_object`) instead of relying on clamping."
            )
