"""Scan geometry beyond the reach of local refinement: the scan's scale and its positions.

In the FFT far field the data depend on the scan positions only through
`positions / sample.dx` (object and probe are arrays of pixels), and `sample.dx =
wavelength * distance / (N * camera_pixel)`. A distance wrong by 5 % therefore misplaces
every probe window by 5 % of its distance from the scan centre: 8 pixels at the edge of
the 400-position medium preset. Local refinement (Gauss-Newton on positions and distance,
gradient steps) cannot follow that: the object rebuilt under the wrong scale is a
compromise that fits the data almost as well, and the move that leaves it — dilating the
object together with the scan — shifts its features by many pixels, far outside any
linearisation.

`refine_geometry` makes that move explicitly. It alternates three things:

- object and probe refined by a PIE engine with the positions held;
- every position refined against them by `PositionLM` (a 2 x 2 Levenberg-Marquardt step
  per position), after which any common dilation of the scan is moved into the object
  pixel (exactly: the predictions do not change), so the positions keep the stage's scale
  and the distance carries the diffraction geometry;
- at intervals, a one-dimensional search over the scan's scale: for each trial factor `s`
  the object is resampled, dilated by `s` about its centre (`dilate_scan`, band-limited
  interpolation), the object pixel divided by `s`, a few PIE iterations relax the
  object, and the data residual is compared; the best factor (a parabola through the
  lowest three) is applied. Each search is narrower than the one before.

The first search comes after a few rounds have removed most of the positions' jitter:
with positions off by about 2 pixels the residual against the scale is too flat to read
(measured on the medium preset: positions refined first, a search then lands within 0.1 %
of the true scale).
"""

import functools
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._data import MicroscopeData
from ..scopes._base import AbstractMicroscope
from ..scopes._far_field import FarFieldMicroscope
from ._engines.base import AbstractEngine
from ._engines.pie import MomentumPIE
from ._engines.positions import PositionLM
from ._init import _default_padding, positions_in_object_frame
from ._progress import AbstractProgressMeter, NoProgressMeter
from ._reconstruct import _windows_inside
from ._results import RESULTS
from ._schedule import Stage, run_schedule

_GOOD = (RESULTS.successful, RESULTS.max_iterations_reached, RESULTS.converged)
# Searches added at the end when the last one's minimum lies at an end of its grid.
_EXTRA_SEARCHES = 2
#: The largest relative error of the distance `refine_geometry`'s first scale search covers, by default.
SCALE_RANGE = 0.07
# Pixels of `geometry_padding` for the positions' own moves beyond the scale search's.
_POSITION_MARGIN = 4


def geometry_padding(data: MicroscopeData) -> int:
    """An object margin, in pixels, with room for `refine_geometry` to grow the scan.

    `init_far_field_microscope`'s default margin, plus the growth of the scan's outermost
    position under the first scale search (`SCALE_RANGE` of its distance from the
    centre) and a few pixels for the positions' own moves. Pass it as
    `init_far_field_microscope(data, padding=geometry_padding(data))` before refining
    the geometry.

    **Arguments:**

    - `data`: the measurements (their positions and object pixel).

    **Returns:**

    The margin around the scanned area, in object pixels.
    """
    pixels = np.asarray(positions_in_object_frame(data)) / np.asarray(data.object_pixel_size)
    radius = float(np.max(np.linalg.norm(pixels, axis=1)))
    return _default_padding(tuple(data.frame_shape)) + int(np.ceil(SCALE_RANGE * radius)) + _POSITION_MARGIN


def _check_fft_far_field(name: str, microscope: Any) -> None:
    if not microscope.fourier_detector:
        raise ValueError(
            f"`{name}` must be a microscope whose detector is the FFT of the exit wave (a FarFieldMicroscope "
            f"with propagator=None, `fourier_detector`), whose object pixel carries the distance; got "
            f"{type(microscope).__name__} without it"
        )


def _dilation_matrix(n: int, scale: float) -> np.ndarray:
    """`M` with `(M f)_i = f(c + (i - c) / scale)`, `c = n // 2`, for `f` band-limited and `n`-periodic.

    The trigonometric (periodic sinc) interpolation of the samples `f_j`; for even `n` the
    Nyquist term is taken as a cosine, so that the kernel is real and `scale = 1` gives the
    identity exactly.
    """
    c = n // 2
    u = c + (np.arange(n) - c) / scale
    half = np.pi * (u[:, None] - np.arange(n)[None, :]) / n  # half the phase step of each offset
    # Dirichlet kernels in closed form: sum over |k| < n / 2 of exp(2i k half), plus cos(n half).
    if n % 2:
        top = np.sin(n * half)
    else:
        top = np.sin((n - 1) * half) + np.cos(n * half) * np.sin(half)
    bottom = np.sin(half)
    small = np.abs(bottom) < 1e-12
    return np.where(small, float(n), top / np.where(small, 1.0, bottom)) / n


def dilate_scan(microscope: FarFieldMicroscope, scale: float) -> FarFieldMicroscope:
    """The microscope with its scan, measured in object pixels, dilated by `scale`.

    The object pixel `sample.dx` (and the probe's, which shares it) is divided by `scale`,
    so that `positions / sample.dx` — all that the FFT far field's data see of the
    positions — grows by `scale`, with the positions in metres unchanged; the far-field
    distance `sample.dx * N * camera_pixel / wavelength` is divided by `scale` with it.
    The object follows: it is resampled so that the feature that was `v` pixels from the
    object's centre pixel is `scale * v` pixels from it, by band-limited (periodic sinc)
    interpolation along each axis. The probe, an array of pixels fixed by the data, is
    unchanged.

    **Arguments:**

    - `microscope`: a `FarFieldMicroscope` with the FFT far field (`propagator=None`).
    - `scale`: the dilation factor, a positive Python float (the interpolation matrices
      are built on the host).

    **Returns:**

    The dilated `FarFieldMicroscope`.
    """
    _check_fft_far_field("microscope", microscope)
    scale = float(scale)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"`scale` must be finite and > 0, got {scale}")
    obj = microscope.sample.sample
    rows, cols = obj.shape
    my = jnp.asarray(_dilation_matrix(rows, scale), dtype=obj.real.dtype)
    mx = jnp.asarray(_dilation_matrix(cols, scale), dtype=obj.real.dtype)
    dilated = (my @ obj @ mx.T).astype(obj.dtype)
    return eqx.tree_at(lambda m: m.sample.sample, microscope, dilated).with_pixel_size(microscope.sample.dx / scale)


def hold_scan_scale(microscope: FarFieldMicroscope, nominal: Float[Array, "npos 2"]) -> FarFieldMicroscope:
    """The same predictions, with the scan's dilation relative to `nominal` moved into the object pixel.

    The positions become `positions / a` and the object pixel `sample.dx / a`, so that
    `positions / sample.dx` is unchanged exactly, with `a` chosen so that the `nominal`
    (stage) readings regressed on the new positions have slope 1 about their centres:
    `a = sum |p|^2 / sum n . p` over the centred positions `p` and readings `n`. The scan
    then keeps the stage's scale and the distance carries the diffraction geometry. (The
    readings are the noisy variable: regressing the positions on them instead would bias
    the scale by the readings' error variance over the scan's, 0.1 % on the small preset
    with ±1.5 pixel errors.)
    """
    _check_fft_far_field("microscope", microscope)
    positions, nominal = microscope.positions, jnp.asarray(nominal, microscope.positions.dtype)
    centred = positions - positions.mean(0, keepdims=True)
    reference = nominal - nominal.mean(0, keepdims=True)
    cross = jnp.sum(centred * reference)
    a = jnp.where(cross > 0, jnp.sum(centred**2) / jnp.where(cross > 0, cross, 1), 1)
    dx = microscope.sample.dx / a.astype(microscope.sample.dx.dtype)
    return eqx.tree_at(lambda m: m.positions, microscope, positions / a).with_pixel_size(dx)


class ScaleSearch(eqx.Module):
    """One search over the scan's scale in `refine_geometry`.

    **Attributes:**

    - `scales`: the trial dilation factors.
    - `losses`: the data residual (RMS amplitude, √counts) after the relaxation at each.
    - `chosen`: the factor applied (the vertex of a parabola through the lowest three).
    - `at_edge`: whether the lowest residual was at an end of the grid (the next search is
      then centred there, at the same width).
    - `object_pixel`: the object pixel `sample.dx` (x, metres) the search started from; a
      trial `s` tried `object_pixel / s`, i.e. the distance divided by `s`.
    - `resolved`: whether the residual varied over the grid by more than `flat_tolerance`
      of its minimum. An unresolved search changes nothing (`chosen` is 1) and ends the
      searching: the data do not fix the scale at that resolution.
    """

    scales: np.ndarray
    losses: np.ndarray
    chosen: float
    at_edge: bool
    object_pixel: float
    resolved: bool = True


class GeometryResult(eqx.Module):
    """What `refine_geometry` returns.

    **Attributes:**

    - `microscope`: the refined microscope (for a run that stopped early, the last good one).
    - `losses`: the data residual after each round (after its object-and-probe part).
    - `searches`: the `ScaleSearch` of each scale search, in order.
    - `result`: a `RESULTS` code: `max_iterations_reached` when the schedule ran to the
      end, otherwise the code of the stage that stopped it (`interrupted`, `nonfinite`,
      `positions_off_object`).
    """

    microscope: AbstractMicroscope
    losses: np.ndarray
    searches: tuple[ScaleSearch, ...]
    result: RESULTS


def _parabola_vertex(scales: np.ndarray, losses: np.ndarray) -> tuple[float, bool]:
    # The caller has checked that some trial was evaluated (finite).
    finite = np.where(np.isfinite(losses), losses, np.inf)
    best = int(np.argmin(finite))
    at_edge = best in (0, len(scales) - 1)
    if at_edge or not np.all(np.isfinite(finite[best - 1 : best + 2])):
        return float(scales[best]), at_edge
    x, y = scales[best - 1 : best + 2], finite[best - 1 : best + 2]
    a, b, _ = np.polyfit(x - x[1], y, 2)
    vertex = x[1] - b / (2 * a) if a > 0 else x[1]
    return float(np.clip(vertex, x[0], x[2])), False


def _scan_radius_px(microscope: Any) -> float:
    """The largest distance of a position from the scan's centre, in object pixels."""
    pixels = np.asarray(microscope.positions, np.float64) / np.asarray(microscope.sample.dx, np.float64)
    return float(np.max(np.linalg.norm(pixels - pixels.mean(0), axis=1)))


def _search_grids(scale_range: float, radius_px: float, count: int) -> list[tuple[float, float]]:
    """`(half-width, step)` of each scale search.

    The first covers `1 ± scale_range` in 15 steps. Once the positions are refined, the
    residual's valley around the true scale is about as wide as the scale change that
    moves the outermost window by a pixel (measured on the medium preset: 0.5 %, for a
    scan radius of 165 pixels), so the second search steps by at most half of that over
    1.5 first steps each way, and each later one halves the step over two of the last.
    """
    step = scale_range / 7
    grids = [(scale_range, step)]
    if count > 1:
        edge = 0.5 / max(radius_px, 1.0)
        step2 = min(step / 2, edge)
        grids.append((step2 * max(1, int(np.ceil(1.5 * step / step2))), step2))
    while len(grids) < count:
        _, last = grids[-1]
        grids.append((2 * last, last / 2))
    return grids[:count]


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


def refine_geometry(
    microscope: AbstractMicroscope,
    data: MicroscopeData,
    *,
    engine: AbstractEngine | None = None,
    trainable: Any = ("object", "probe"),
    distance: bool = True,
    scale_range: float = SCALE_RANGE,
    num_searches: int = 4,
    rounds: Sequence[int] | int = (4, 6, 6, 6, 6),
    initial_iterations: int = 30,
    engine_iterations: int = 5,
    position_iterations: int = 3,
    relax_iterations: int = 10,
    flat_tolerance: float = 0.01,
    key: PRNGKeyArray | None = None,
    progress_meter: AbstractProgressMeter = NoProgressMeter(),
) -> GeometryResult:
    """Refine the scan positions and the far-field distance, with the object and probe.

    For a start whose distance may be off by several per cent and whose positions by a
    few pixels, where local refinement of positions and distance stalls (see this
    module's documentation for why and how). The schedule:

    1. `initial_iterations` of `engine` on `trainable` (object and probe);
    2. `rounds[0]` rounds, each `position_iterations` of `PositionLM` then
       `engine_iterations` of `engine`; the scan's dilation is kept in the distance
       (`hold_scan_scale`, against the starting positions);
    3. then, for each of `num_searches` searches (only with `distance=True`): a search over
       the scan's scale, applied (`dilate_scan`) and relaxed with `relax_iterations` of
       `engine`, followed by the next entry of `rounds`. The first search covers
       `1 ± scale_range` in 15 points. The second steps by the scale change that moves
       the outermost window by half a pixel (at most half the first step) over 1.5 first
       steps each way; each later one halves the step over two of the last steps. Each is
       centred on the last choice, and one whose minimum lies at an end of its grid is
       repeated there at the same width (after the last search, at most twice more,
       each followed by `rounds[-1]` rounds). Trial scales for which the object grid cannot
       hold every window are skipped.

    On the medium preset (distance −5 %, positions jittered by ±2 pixels) the defaults
    recover the distance to 0.016 % and the positions to 0.033 pixel RMS in about 3
    minutes on 2 CPU cores (175 s, `benchmarks/geometry.py`). Continue with any engine
    afterwards, e.g. `reconstruct(result.microscope, data, GaussNewton(),
    trainable=["object", "probe", "positions", "distance"])` to polish all jointly.

    **Arguments:**

    - `microscope`: the start. With `distance=True` a `FarFieldMicroscope` with the FFT
      far field (its object pixel carries the distance); with `distance=False` any
      microscope (positions only).
    - `data`: the measurements.
    - `engine`: refines `trainable` with the positions held; default `MomentumPIE()`
      (sequential: from a probe guessed from the data, batched mPIE stalled on the small
      preset with a wrong distance, residual 0.80 against a noise floor of 0.53).
    - `trainable`: what `engine` refines (default object and probe; not the positions).
    - `distance`: refine the far-field distance (the scan's scale) too.
    - `scale_range`: the largest relative error of the distance searched, in `(0, 0.5)`.
    - `num_searches`: number of scale searches (>= 0).
    - `rounds`: rounds of positions-then-object before the first search and after each
      (one entry more than `num_searches`), or one integer for all. Without searches
      (`distance=False` or `num_searches=0`) all of them run, one after another (the
      defaults: 28 rounds).
    - `initial_iterations`, `engine_iterations`, `position_iterations`,
      `relax_iterations`: iterations of each stage (see above).
    - `flat_tolerance`: a search whose residuals vary by no more than this fraction of
      their minimum is unresolved: it keeps the scale and no further search runs (default
      0.01; on simulated data a resolved search varies by 5-10 %, on the real Siemens
      star the narrow searches varied by 0.4 %).
    - `key`: PRNG key for the engines (default `PRNGKey(0)`).
    - `progress_meter`: reports each round and each trial scale.

    The schedule is a plan run by `run_schedule` (the one driver): the trial scales are
    trial stages, the rest kept stages.

    **Returns:**

    A `GeometryResult`. Ctrl-C, a non-finite step or a window pushed off the object stops
    the schedule and returns the last good microscope with that code.
    """
    engine = MomentumPIE() if engine is None else engine
    if not isinstance(engine, AbstractEngine):
        raise ValueError(f"`engine` must be an AbstractEngine, got {type(engine).__name__}")
    if distance:
        _check_fft_far_field("microscope", microscope)
    if not (np.isfinite(flat_tolerance) and flat_tolerance >= 0):
        raise ValueError(f"`flat_tolerance` must be finite and >= 0, got {flat_tolerance}")
    if not (np.isfinite(scale_range) and 0 < scale_range < 0.5):
        raise ValueError(f"`scale_range` must be in (0, 0.5), got {scale_range}")
    num_searches = _positive_int("num_searches", num_searches, 0) if distance else 0
    if isinstance(rounds, (int, np.integer)) and not isinstance(rounds, bool):
        rounds = (int(rounds),) * (num_searches + 1)
    rounds = tuple(rounds)
    if len(rounds) < num_searches + 1:
        raise ValueError(
            f"`rounds` needs one entry more than `num_searches` ({num_searches + 1}), got {len(rounds)}: {rounds}"
        )
    for value in rounds:
        _positive_int("rounds", value, 0)
    _positive_int("initial_iterations", initial_iterations, 0)
    for name, value in (
        ("engine_iterations", engine_iterations),
        ("position_iterations", position_iterations),
        ("relax_iterations", relax_iterations),
    ):
        _positive_int(name, value, 1)
    grids = _search_grids(scale_range, _scan_radius_px(microscope), num_searches)
    points = [2 * int(round(w / h)) + 1 for w, h in grids]
    # A search repeated at the previous grid (minimum at its end) may take more points.
    total = sum(rounds if num_searches == 0 else rounds[: num_searches + 1])
    total += sum(max(points[: k + 1]) for k in range(len(points)))
    plan = _GeometryPlan(
        microscope,
        engine=engine,
        trainable=trainable,
        distance=distance,
        grids=grids,
        rounds=rounds,
        iterations=(initial_iterations, engine_iterations, position_iterations, relax_iterations),
        flat_tolerance=flat_tolerance,
        progress_meter=progress_meter,
        total=total,
    )
    progress_meter.start(total)
    try:
        run = run_schedule(microscope, data, plan.stages(), key=key, level_ramp=False)
    except KeyboardInterrupt:  # before the first stage had run
        return GeometryResult(microscope, np.asarray([]), (), RESULTS.interrupted)
    finally:
        progress_meter.close()
    result = RESULTS.max_iterations_reached if plan.finished else run.solution.result
    return GeometryResult(run.microscope, np.asarray(plan.losses), tuple(plan.searches), result)


class _GeometryPlan:
    """`refine_geometry`'s schedule, a plan for `run_schedule`: it yields stages and is sent their solutions.

    Scale searches are trial stages (`Stage(keep=False)`, each preparing a dilated scan);
    the chosen scale, the position rounds and the engine's relaxations are kept stages.
    The one driver runs them all (progress of each stage, Ctrl-C, the finite-value
    guard); the plan keeps the residuals and the searches and reports each round and
    trial to `progress_meter`.
    """

    def __init__(
        self,
        microscope,
        *,
        engine,
        trainable,
        distance,
        grids,
        rounds,
        iterations,
        flat_tolerance,
        progress_meter,
        total,
    ):
        self.current = microscope
        self.nominal = microscope.positions
        self.engine, self.trainable, self.distance = engine, trainable, distance
        self.grids, self.rounds, self.flat_tolerance = grids, rounds, flat_tolerance
        self.initial, self.engine_iterations, self.position_iterations, self.relax = iterations
        self.progress_meter, self.total = progress_meter, total
        self.losses: list[float] = []
        self.searches: list[ScaleSearch] = []
        self.done = 0
        self.finished = False

    def _tick(self, loss: float) -> None:
        self.done += 1
        self.progress_meter.update(self.done, loss)

    def _stage(self, engine, iterations, trainable, *, prepare=None, keep=True) -> Stage:
        # Each stage runs its iterations: the plan, not a convergence test, decides what follows.
        return Stage(engine, iterations, None, trainable, prepare=prepare, keep=keep)

    def _hold_scale(self, microscope):
        return hold_scan_scale(microscope, self.nominal) if self.distance else microscope

    def stages(self):
        engine, trainable = self.engine, self.trainable
        solution = yield self._stage(engine, self.initial, trainable)
        self.current = solution.microscope
        num_searches = len(self.grids)
        # (grid of the search that opens the stage, rounds after it); the first stage has no search.
        plan = [(None, self.rounds[0])] + [(self.grids[k], self.rounds[k + 1]) for k in range(num_searches)]
        if num_searches == 0:
            plan = [(None, sum(self.rounds))]  # no search to place them around: every round, in one go
        extra, last_grid = 0, None
        while plan:
            grid, num_rounds = plan.pop(0)
            if grid is not None:
                # A minimum at an end of the last grid: search again there at that grid's width.
                if self.searches and self.searches[-1].at_edge:
                    grid = last_grid
                last_grid = width, step = grid
                half = int(round(width / step))
                # Relative to the current microscope, which already carries the earlier choices.
                scales = 1 + step * np.arange(-half, half + 1)
                trial_losses = []
                for scale in scales:
                    if not _windows_inside(dilate_scan(self.current, float(scale))):
                        trial_losses.append(np.inf)  # the object grid cannot hold this scan
                    else:
                        dilate = functools.partial(dilate_scan, scale=float(scale))
                        trial = yield self._stage(engine, self.relax, trainable, prepare=dilate, keep=False)
                        good = trial.result in _GOOD and trial.losses.size
                        trial_losses.append(trial.final_loss if good else np.inf)
                    self._tick(trial_losses[-1])
                trial_losses = np.asarray(trial_losses)
                pixel = float(np.asarray(self.current.sample.dx)[0])
                finite = trial_losses[np.isfinite(trial_losses)]
                if finite.size == 0 or np.ptp(finite) <= self.flat_tolerance * np.min(finite):
                    # Flat at this resolution (noise, or model errors the scale cannot fix):
                    # keep the scale, and spend the remaining stages on rounds alone.
                    self.searches.append(ScaleSearch(scales, trial_losses, 1.0, False, pixel, resolved=False))
                    plan = [(None, num_rounds + sum(entry[1] for entry in plan))]
                    continue
                chosen, at_edge = _parabola_vertex(scales, trial_losses)
                self.searches.append(ScaleSearch(scales, trial_losses, chosen, at_edge, pixel))
                dilate = functools.partial(dilate_scan, scale=float(chosen))
                relaxed = yield self._stage(engine, self.relax, trainable, prepare=dilate)
                self.current = relaxed.microscope
                if at_edge and not plan and extra < _EXTRA_SEARCHES:
                    extra += 1
                    plan.append((grid, num_rounds))
            for _ in range(num_rounds):
                yield self._stage(PositionLM(), self.position_iterations, "positions")
                solution = yield self._stage(engine, self.engine_iterations, trainable, prepare=self._hold_scale)
                self.current = solution.microscope
                self.losses.append(solution.final_loss)
                self._tick(self.losses[-1])
        if self.losses:
            self.progress_meter.update(max(self.total, self.done), self.losses[-1])
        self.finished = True
