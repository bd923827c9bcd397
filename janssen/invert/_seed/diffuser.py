"""The seed API's optical (diffuser) ptychography: `epie_optical` and its building blocks.

Geometry: an object wavefront travels `propagation_distance_1` to an unknown thin
diffuser (the "surface"), then `propagation_distance_2` to a sensor. Each scan position
moves the object relative to the diffuser. The sensor integrates `magnification x
magnification` blocks of the fine grid, each fine pixel weighted by `pixel_mask`.

Both propagations use `janssen.optics.AngularSpectrum` on the fine grid. The object is
carried as the uncentred spectrum (`fft2u` order) of its field at the diffuser plane, so a
scan position is a Fourier phase ramp on it (exact for sub-pixel positions, periodic in
the grid). The updates follow rPIE (Maiden, Johnson & Li 2017) on the two factors of the
diffuser-plane exit wave, as in ePIE (Maiden & Rodenburg 2009): `alpha` is the
regularisation and `gamma` the step.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float, Int

from ..._custom_types import PairLike, ScalarLike
from ..._data import MicroscopeData
from ...optics._fft import fft2u, ifft2u, uncentred_frequency_grid
from ...optics._propagator.angular_spectrum import AngularSpectrum
from ...optics._sample import SampleFunction
from ...optics._wavefront import OpticalWavefront

IntLike = int | Int[Array, ""]


def _block_sum(image: Float[Array, "y x"], m: int) -> Float[Array, "ys xs"]:
    h, w = image.shape
    return image.reshape(h // m, m, w // m, m).sum(axis=(1, 3))


def _upsample(image: Float[Array, "ys xs"], m: int) -> Float[Array, "y x"]:
    return jnp.repeat(jnp.repeat(image, m, axis=0), m, axis=1)


def _shift_ramp(fx, fy, position: Float[Array, "2"]) -> Complex[Array, "y x"]:
    """`exp(-2 pi i f . r)`: moves a field by `position = (x, y)` metres."""
    return jnp.exp(-2j * jnp.pi * (fx * position[0] + fy * position[1]))


def _rpie_step(target, other, change, alpha, gamma):
    """rPIE's update of `target` for the exit-wave `change`, `other` being the co-factor."""
    weight = jnp.abs(other) ** 2
    denom = (1 - alpha) * weight + alpha * jnp.max(weight)
    return target + gamma * jnp.conj(other) * change / jnp.maximum(denom, jnp.finfo(weight.dtype).tiny)


def _check_grid(shape: tuple[int, int], measurement_shape: tuple[int, int], magnification: int) -> None:
    expected = (shape[0] // magnification, shape[1] // magnification)
    if shape[0] % magnification or shape[1] % magnification or tuple(measurement_shape) != expected:
        raise ValueError(
            f"`magnification` {magnification} must divide the field grid {tuple(shape)} into the measurement's "
            f"{tuple(measurement_shape)} pixels (expected measurements of shape {expected})"
        )


def _sensor_field(exit_wave, wavelength, dx, distance):
    return AngularSpectrum(distance)(OpticalWavefront(exit_wave, wavelength, dx)).field


def single_pie_iteration(
    object_prop_ft: Complex[Array, "y x"],
    surface_pattern: Complex[Array, "y x"],
    measurement: Float[Array, "ys xs"],
    position: Float[Array, "2"],
    frequency_x_grid: Float[Array, "y x"],
    frequency_y_grid: Float[Array, "y x"],
    pixel_mask: Float[Array, "y x"],
    propagation_distance_2: ScalarLike,
    magnification: IntLike,
    alpha_object: ScalarLike,
    gamma_object: ScalarLike,
    alpha_surface: ScalarLike,
    gamma_surface: ScalarLike,
    wavelength: ScalarLike,
    dx: PairLike,
) -> tuple[Complex[Array, "y x"], Complex[Array, "y x"]]:
    """One PIE update of object and diffuser from the measurement at one scan position.

    The object's diffuser-plane spectrum is moved by `position`, multiplied by the
    surface, propagated to the sensor, and its intensity (times `pixel_mask`) summed over
    `magnification`-sized blocks. Each block's field is scaled by
    `sqrt(measured / predicted)`, which makes the block's predicted sum equal the
    measurement, and the change is propagated back to the diffuser to update both
    factors (rPIE rule).

    **Arguments:**

    - `object_prop_ft`: the object's field at the diffuser plane, uncentred spectrum (`fft2u`).
    - `surface_pattern`: the diffuser's complex transmission `(y, x)`.
    - `measurement`: the sensor image, `(y // magnification, x // magnification)`.
    - `position`: `(x, y)` shift of the object relative to the diffuser, metres.
    - `frequency_x_grid`, `frequency_y_grid`: spatial frequencies (1/m) of the fine grid
      in uncentred (`fft2u`) order, e.g. from `jnp.fft.fftfreq(n, dx)`.
    - `pixel_mask`: per-fine-pixel sensor response `(y, x)`.
    - `propagation_distance_2`: diffuser-to-sensor distance, metres.
    - `magnification`: sensor block size in fine pixels (static).
    - `alpha_object`, `gamma_object`, `alpha_surface`, `gamma_surface`: rPIE
      regularisation (in [0, 1]) and step of each factor.
    - `wavelength`, `dx`: metres (`dx` is the fine grid's pitch, scalar or `(x, y)`).

    **Returns:**

    `(updated_object_ft, updated_surface)`.
    """
    m = int(magnification)
    _check_grid(object_prop_ft.shape, measurement.shape, m)
    ramp = _shift_ramp(frequency_x_grid, frequency_y_grid, position).astype(object_prop_ft.dtype)
    incident = ifft2u(object_prop_ft * ramp)
    exit_wave = incident * surface_pattern
    sensor = _sensor_field(exit_wave, wavelength, dx, propagation_distance_2)
    predicted = _block_sum(pixel_mask * jnp.abs(sensor) ** 2, m)
    tiny = jnp.finfo(predicted.dtype).tiny
    scale = jnp.sqrt(jnp.maximum(measurement, 0.0) / jnp.maximum(predicted, tiny))
    corrected = sensor * _upsample(scale, m).astype(sensor.dtype)
    new_exit = AngularSpectrum(propagation_distance_2).adjoint(OpticalWavefront(corrected, wavelength, dx)).field
    change = new_exit - exit_wave
    new_surface = _rpie_step(surface_pattern, incident, change, alpha_surface, gamma_surface)
    new_incident = _rpie_step(incident, surface_pattern, change, alpha_object, gamma_object)
    return fft2u(new_incident) * jnp.conj(ramp), new_surface


def _per_position(object_prop_ft, surface_pattern, measurement, position, settings):
    return single_pie_iteration(object_prop_ft, surface_pattern, measurement, position, *settings)


def single_pie_sequential(
    object_prop_ft: Complex[Array, "y x"],
    surface_pattern: Complex[Array, "y x"],
    image_data: Float[Array, "npos ys xs"],
    positions: Float[Array, "npos 2"],
    frequency_x_grid: Float[Array, "y x"],
    frequency_y_grid: Float[Array, "y x"],
    pixel_mask: Float[Array, "y x"],
    propagation_distance_2: ScalarLike,
    magnification: IntLike,
    alpha_object: ScalarLike,
    gamma_object: ScalarLike,
    alpha_surface: ScalarLike,
    gamma_surface: ScalarLike,
    wavelength: ScalarLike,
    dx: PairLike,
) -> tuple[Complex[Array, "y x"], Complex[Array, "y x"]]:
    """One sweep of `single_pie_iteration` over all positions in order (`lax.scan`).

    Each position starts from the previous position's result, as in ePIE. Arguments as
    for `single_pie_iteration`, with `image_data` `(npos, ys, xs)` and `positions`
    `(npos, 2)`. **Returns** `(object_ft, surface)` after the sweep.
    """
    settings = (frequency_x_grid, frequency_y_grid, pixel_mask, propagation_distance_2, magnification,
                alpha_object, gamma_object, alpha_surface, gamma_surface, wavelength, dx)  # fmt: skip

    def body(carry, item):
        measurement, position = item
        return _per_position(*carry, measurement, position, settings), None

    (obj_ft, surface), _ = jax.lax.scan(body, (object_prop_ft, surface_pattern), (image_data, positions))
    return obj_ft, surface


def single_pie_vmap(
    object_prop_ft: Complex[Array, "y x"],
    surface_pattern: Complex[Array, "y x"],
    image_data: Float[Array, "npos ys xs"],
    positions: Float[Array, "npos 2"],
    frequency_x_grid: Float[Array, "y x"],
    frequency_y_grid: Float[Array, "y x"],
    pixel_mask: Float[Array, "y x"],
    propagation_distance_2: ScalarLike,
    magnification: IntLike,
    alpha_object: ScalarLike,
    gamma_object: ScalarLike,
    alpha_surface: ScalarLike,
    gamma_surface: ScalarLike,
    wavelength: ScalarLike,
    dx: PairLike,
) -> tuple[Complex[Array, "y x"], Complex[Array, "y x"]]:
    """`single_pie_iteration` at every position from the same state (`vmap`), averaged.

    Faster per sweep than `single_pie_sequential` but takes smaller effective steps.
    Arguments as for `single_pie_sequential`. **Returns** the mean `(object_ft, surface)`.
    """
    settings = (frequency_x_grid, frequency_y_grid, pixel_mask, propagation_distance_2, magnification,
                alpha_object, gamma_object, alpha_surface, gamma_surface, wavelength, dx)  # fmt: skip
    one = lambda measurement, position: _per_position(  # noqa: E731
        object_prop_ft, surface_pattern, measurement, position, settings
    )
    obj_fts, surfaces = jax.vmap(one)(image_data, positions)
    return jnp.mean(obj_fts, axis=0), jnp.mean(surfaces, axis=0)


def _or(value, default: float) -> Array:
    return jnp.asarray(default if value is None else value, dtype=jnp.result_type(float))


@eqx.filter_jit
def _loops(obj_ft, surface, data, settings, num_vmap: int, num_sequential: int):
    def run(sweep, count, state):
        return jax.lax.fori_loop(0, count, lambda _, s: sweep(*s, *data, *settings), state)

    state = run(single_pie_vmap, num_vmap, (obj_ft, surface))
    return run(single_pie_sequential, num_sequential, state)


def epie_optical(
    microscope_data: MicroscopeData,
    initial_object: OpticalWavefront,
    initial_surface: SampleFunction,
    pixel_mask: Float[Array, "y x"],
    propagation_distance_1: ScalarLike,
    propagation_distance_2: ScalarLike,
    magnification: IntLike,
    vmap_iterations: IntLike | None = 0,
    alpha_object: ScalarLike | None = 0.1,
    gamma_object: ScalarLike | None = 0.5,
    alpha_surface: ScalarLike | None = 0.1,
    gamma_surface: ScalarLike | None = 0.5,
    num_loops: IntLike | None = 10,
) -> tuple[OpticalWavefront, SampleFunction]:
    """Recover an object wavefront and an unknown diffuser from diffuser ptychography.

    The object field is propagated to the diffuser plane once (`AngularSpectrum` over
    `propagation_distance_1`), refined there together with the surface by
    `num_loops` sweeps over the positions, and propagated back. The first
    `vmap_iterations` sweeps are averaged batch updates (`single_pie_vmap`), the rest
    sequential (`single_pie_sequential`). Positions are `microscope_data.positions`
    (metres, `(x, y)`): the object's shift relative to the diffuser, applied
    periodically, so keep the object's field away from the grid's edges.

    **Arguments:**

    - `microscope_data`: sensor images `(npos, ys, xs)` and positions.
    - `initial_object`: starting object wavefront `(y, x)`; its `wavelength` and `dx` set
      the fine grid (`y = ys * magnification`).
    - `initial_surface`: starting diffuser transmission on the same grid.
    - `pixel_mask`: per-fine-pixel sensor response `(y, x)`.
    - `propagation_distance_1`, `propagation_distance_2`: object-to-diffuser and
      diffuser-to-sensor distances, metres.
    - `magnification`: fine pixels per sensor pixel along each axis.
    - `vmap_iterations`: sweeps run in the averaged (vmap) mode first (default 0).
    - `alpha_object`, `gamma_object`, `alpha_surface`, `gamma_surface`: rPIE
      regularisation and step for each factor (defaults 0.1 and 0.5).
    - `num_loops`: total sweeps (default 10).

    **Returns:**

    `(recovered_object, recovered_surface)` as an `OpticalWavefront` in the object plane
    and a `SampleFunction`.
    """
    m, total = int(magnification), int(10 if num_loops is None else num_loops)
    vmapped = min(int(vmap_iterations or 0), total)
    field = initial_object.field
    _check_grid(field.shape, microscope_data.frame_shape, m)
    if tuple(initial_surface.shape) != tuple(field.shape) or tuple(pixel_mask.shape) != tuple(field.shape):
        raise ValueError(
            f"`initial_surface` {tuple(initial_surface.shape)} and `pixel_mask` {tuple(pixel_mask.shape)} must have "
            f"the object's grid {tuple(field.shape)}"
        )
    to_diffuser = AngularSpectrum(propagation_distance_1)
    fx, fy = uncentred_frequency_grid(field.shape, initial_object.dx)
    # `None` (allowed by the original's signature) means the documented default.
    steps = [_or(alpha_object, 0.1), _or(gamma_object, 0.5), _or(alpha_surface, 0.1), _or(gamma_surface, 0.5)]
    settings = (fx, fy, pixel_mask, jnp.asarray(propagation_distance_2), m, *steps,
                initial_object.wavelength, initial_object.dx)  # fmt: skip
    data = (microscope_data.intensities, microscope_data.positions)
    obj_ft = fft2u(to_diffuser(initial_object).field)
    obj_ft, surface = _loops(obj_ft, initial_surface.sample, data, settings, vmapped, total - vmapped)
    at_diffuser = initial_object.replace_field(ifft2u(obj_ft))
    recovered = eqx.tree_at(lambda w: w.z_position, to_diffuser.adjoint(at_diffuser), initial_object.z_position)
    return recovered, SampleFunction(surface, initial_surface.dx)


def optical_sensor_images(
    object_wavefront: OpticalWavefront,
    surface: SampleFunction,
    positions: Float[Array, "npos 2"],
    pixel_mask: Float[Array, "y x"],
    propagation_distance_1: ScalarLike,
    propagation_distance_2: ScalarLike,
    magnification: int,
) -> Float[Array, "npos ys xs"]:
    """The forward model `epie_optical` inverts: sensor images at every position.

    **Arguments:** as for `epie_optical` (`positions` in metres, `(x, y)`).

    **Returns:** `(npos, y // magnification, x // magnification)` block-summed intensities.
    """
    m = int(magnification)
    at_diffuser = AngularSpectrum(propagation_distance_1)(object_wavefront)
    fx, fy = uncentred_frequency_grid(object_wavefront.shape, object_wavefront.dx)
    spectrum = fft2u(at_diffuser.field)

    def one(position):
        incident = ifft2u(spectrum * _shift_ramp(fx, fy, position).astype(spectrum.dtype))
        sensor = _sensor_field(incident * surface.sample, object_wavefront.wavelength, object_wavefront.dx,
                               propagation_distance_2)  # fmt: skip
        return _block_sum(pixel_mask * jnp.abs(sensor) ** 2, m)

    return jax.vmap(one)(positions)
