"""`PhaseFieldSearch`: a smooth object phase on a cosine basis and a quadratic probe phase, fitted to the data."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import compilations

import janssen.invert as jinv
import janssen.io as jio
from janssen.invert._engines.curvature import _Blocks
from janssen.invert._engines.phase_field import probe_width
from janssen.invert._residual import AmplitudeResidual
from janssen.optics import Probe, SampleFunction
from janssen.scopes import FarFieldMicroscope

ORDER = 4


@pytest.fixture(scope="module")
def small():
    dataset = jio.simulate_preset("small", key=jax.random.PRNGKey(0))
    return dataset, dataset.microscope()


@pytest.fixture(scope="module")
def small_file(small, tmp_path_factory):
    """The small preset's frames in a CXI file, for the streamed search."""
    path = tmp_path_factory.mktemp("stream") / "small.cxi"
    jio.write_cxi(path, small[0].data)
    return path


def _parameters(order: int, seed: int, size: float) -> jnp.ndarray:
    """Random object coefficients falling off with the order (a smooth field) and a probe quadratic."""
    rng = np.random.default_rng(seed)
    m, n = np.meshgrid(np.arange(order), np.arange(order), indexing="ij")
    grid = rng.normal(size=(order, order)) * size / (1.0 + m + n)
    return jnp.asarray(np.concatenate([grid.ravel()[1:], rng.normal(size=3) * size]), jnp.float32)


def test_apply_is_the_cosine_sum_and_the_probe_quadratic(small, x64):
    _, true = small
    true = jax.tree_util.tree_map(lambda x: x.astype(jnp.complex128) if jnp.iscomplexobj(x) else x, true)
    engine = jinv.PhaseFieldSearch(order=ORDER)
    theta = np.asarray(_parameters(ORDER, 1, 0.5), float)
    bent = engine.apply(true, jnp.asarray(theta))
    height, width = true.sample.shape
    y, x = np.indices((height, width), dtype=float)
    grid = np.concatenate([[0.0], theta[: ORDER**2 - 1]]).reshape(ORDER, ORDER)
    expected = sum(
        grid[m, n] * np.cos(np.pi * m * (x + 0.5) / width) * np.cos(np.pi * n * (y + 0.5) / height)
        for m in range(ORDER)
        for n in range(ORDER)
    )
    ratio = np.asarray(bent.sample.sample / true.sample.sample)
    np.testing.assert_allclose(np.abs(ratio), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.angle(ratio * np.exp(-1j * expected)), 0.0, atol=1e-12)
    h, w = true.probe_shape
    py, px = np.indices((h, w), dtype=float)
    ux, uy = (px - w // 2) / max(h, w), (py - h // 2) / max(h, w)
    q = theta[ORDER**2 - 1 :]
    on_probe = q[0] * ux**2 + q[1] * ux * uy + q[2] * uy**2
    probe_ratio = np.asarray(bent.probe.fields() / true.probe.fields())
    lit = np.abs(np.asarray(true.probe.fields())) > 1e-8
    np.testing.assert_allclose(np.angle(probe_ratio * np.exp(-1j * on_probe))[lit], 0.0, atol=1e-10)


def test_local_map_is_the_taylor_expansion_at_each_window_centre(small, x64):
    # The local coefficients of frame f, `local_map @ theta`, against central differences of the
    # applied phase at the object pixel under the probe window's centre pixel (`locate`).
    _, true = small
    true = jax.tree_util.tree_map(lambda x: x.astype(jnp.complex128) if jnp.iscomplexobj(x) else x, true)
    engine = jinv.PhaseFieldSearch(order=ORDER)
    theta = jnp.asarray(np.asarray(_parameters(ORDER, 2, 0.5), float))
    phase = np.angle(np.asarray(engine.apply(true, theta).sample.sample / true.sample.sample))
    local = np.asarray(engine.local_map(true) @ theta)
    h, w = true.probe_shape
    scale = max(h, w)
    q = np.asarray(theta)[ORDER**2 - 1 :]
    for index in (0, 41, 99):
        corner, _ = true.locate(true.positions[index])
        cx, cy = int(corner[0]) + w // 2, int(corner[1]) + h // 2

        def at(dx, dy, cx=cx, cy=cy):
            return phase[cy + dy, cx + dx]

        fx = (at(1, 0) - at(-1, 0)) / 2
        fy = (at(0, 1) - at(0, -1)) / 2
        fxx = at(1, 0) - 2 * at(0, 0) + at(-1, 0)
        fyy = at(0, 1) - 2 * at(0, 0) + at(0, -1)
        fxy = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / 4
        expected = np.array(
            [scale * fx, scale * fy, scale**2 * fxx / 2 + q[0], scale**2 * fxy + q[1], scale**2 * fyy / 2 + q[2]]
        )
        # Central differences err by (k h)**2 / 6 relative, k <= 3 pi / 164 per pixel: 6e-5.
        np.testing.assert_allclose(local[index], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize(
    "order, matrices, step",
    [
        # Measured: gradient 0.028 and normal matrix 0.063 apart (relative, Frobenius), steps 0.017 apart.
        (2, 0.1, 0.05),
        # Measured: gradient 0.27 and normal matrix 0.82 apart, yet steps only 0.083 apart (cosine 0.997).
        (4, None, 0.15),
    ],
)
def test_local_normal_equations_give_the_exact_gauss_newton_step(small, order, matrices, step):
    # The local model keeps the phase's Taylor expansion to second order over the probe; the
    # exact Jacobian differentiates the whole applied phase. On the small preset (164² object,
    # probe 27 px wide) the cosines of order 4 have periods down to 109 px, four probe widths:
    # the third-order terms the local model leaves out change J^T J and J^T r much, but alike,
    # so the Gauss-Newton step stays close.
    dataset, true = small
    engine = jinv.PhaseFieldSearch(order=order)
    bent = engine.apply(true, _parameters(order, 3, 0.3))
    blocks = _Blocks.of(dataset.data, 1e-6, False)
    normal, gradient, squares = jax.jit(lambda m: engine.equations(m, blocks))(bent)
    terms = AmplitudeResidual.of(dataset.data, 1e-6)

    def residual(theta):
        return terms.smooth(engine.apply(bent, theta)()).ravel()

    zero = jnp.zeros(engine.num_parameters)
    jacobian = jax.jacfwd(residual)(zero)
    exact_gradient = jacobian.T @ residual(zero)
    exact_normal = jacobian.T @ jacobian
    if matrices is not None:
        assert float(jnp.linalg.norm(gradient - exact_gradient) / jnp.linalg.norm(exact_gradient)) < matrices
        assert float(jnp.linalg.norm(normal - exact_normal) / jnp.linalg.norm(exact_normal)) < matrices
    ridge = 1e-6 * jnp.max(jnp.diag(exact_normal)) * jnp.eye(engine.num_parameters)
    local_step = jnp.linalg.solve(normal + ridge, gradient)
    exact_step = jnp.linalg.solve(exact_normal + ridge, exact_gradient)
    assert float(jnp.linalg.norm(local_step - exact_step) / jnp.linalg.norm(exact_step)) < step
    np.testing.assert_allclose(squares, jnp.sum(terms.exact(bent()) ** 2), rtol=1e-5)


def test_blocks_of_larger_frames_hold_fewer_frames_and_sum_the_same(small, monkeypatch):
    """`_block_size` keeps 16 frames of up to 128 x 128 a block, fewer of larger frames (the
    linearisation held per block scales with its pixels); the normal equations are sums over
    frames, so blocks of 3 frames give what blocks of 16 give."""
    from janssen.invert._engines import curvature

    sizes = [curvature._block_size((n, n)) for n in (64, 128, 181, 256, 512, 1024)]
    assert sizes == [16, 16, 8, 4, 1, 1]
    dataset, true = small  # 64 x 64 frames: blocks of 16
    engine = jinv.PhaseFieldSearch(order=2)
    bent = engine.apply(true, _parameters(2, 3, 0.3))
    whole = jax.jit(lambda m: engine.equations(m, _Blocks.of(dataset.data, 1e-6, False)))(bent)
    monkeypatch.setattr(curvature, "_BLOCK_PIXELS", 3 * 64 * 64)
    blocks = _Blocks.of(dataset.data, 1e-6, False)
    assert blocks.index.shape == (34, 3)  # 100 frames: 33 blocks of 3 and one padded
    split = jax.jit(lambda m: engine.equations(m, blocks))(bent)
    for a, b in zip(split, whole):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(b))))


def test_recovers_a_smooth_phase_put_on_the_truth(small):
    dataset, true = small
    illumination = jinv.illumination_map(true)
    engine = jinv.PhaseFieldSearch(order=ORDER)
    bent = engine.apply(true, _parameters(ORDER, 4, 0.3))
    before = jinv.object_error(dataset.object, bent.sample.sample, illumination, max_shift=0)
    solution = jinv.reconstruct(bent, dataset.data, engine, num_iterations=10, trainable=["object", "probe"])
    after = jinv.object_error(dataset.object, solution.microscope.sample.sample, illumination, max_shift=0)
    probe = solution.microscope.probe.fields()
    probe_error = float(jnp.linalg.norm(probe - true.probe.fields()) / jnp.linalg.norm(true.probe.fields()))
    # Measured (small preset, Poisson noise): object 0.161 -> 0.00070 in 8 steps, probe within
    # 3.2e-4 of the truth; the noise puts the best fit a little off the truth.
    assert before > 0.15
    assert after < 0.01 * before
    assert probe_error < 2e-3
    losses = np.asarray(solution.losses)
    assert np.all(np.diff(losses) <= 0)  # a step is kept only if the residual falls


def test_leaves_the_truth_where_it_is(small):
    dataset, true = small
    illumination = jinv.illumination_map(true)
    solution = jinv.reconstruct(
        true, dataset.data, jinv.PhaseFieldSearch(order=ORDER), num_iterations=5, trainable=["object", "probe"]
    )
    # Measured: 0.00065 (the noise's own smooth phase); a wrong sign in the local map would move it far.
    assert jinv.object_error(dataset.object, solution.microscope.sample.sample, illumination, max_shift=0) < 0.003


@pytest.mark.parametrize("batch_size", [37, 100])
def test_search_from_file_takes_the_steps_taken_in_memory(small, small_file, batch_size):
    # The same bent truth as above, its frames in a CXI file read in batches (37: three batches,
    # the last one short; 100: one). The equations and the residual are sums over frames, so the
    # steps are those in memory but for the floor under the linearised residual's root (eps times
    # the first batch's mean counts instead of every frame's), which moves the losses in their
    # 5th digit at most (measured: identical to float32 rounding).
    dataset, true = small
    path = small_file
    engine = jinv.PhaseFieldSearch(order=ORDER)
    bent = engine.apply(true, _parameters(ORDER, 4, 0.3))
    memory = jinv.reconstruct(bent, dataset.data, engine, num_iterations=6, trainable=["object", "probe"])
    with jio.CXIFrames(path) as frames:
        streamed = jinv.search_from_file(bent, frames, engine, max_steps=6, batch_size=batch_size)
    assert streamed.iteration == memory.iteration
    assert streamed.result == memory.result
    np.testing.assert_allclose(np.asarray(streamed.losses), np.asarray(memory.losses), rtol=1e-4)
    illumination = jinv.illumination_map(true)
    errors = [
        float(jinv.object_error(dataset.object, s.microscope.sample.sample, illumination, max_shift=0))
        for s in (memory, streamed)
    ]
    assert errors[0] < 0.01 and abs(errors[1] - errors[0]) < 1e-3 * 0.161  # 0.161: the bent start's error
    np.testing.assert_array_equal(np.asarray(streamed.microscope.positions), np.asarray(bent.positions))


def test_search_from_file_reads_a_pixel_budget_and_compiles_once(small, small_file, monkeypatch):
    # A budget of 10 frames' pixels reads the file 10 positions at a time whatever `batch_size`
    # asks (as 16 frames of 256 x 256 are read on the large preset): the same equations,
    # grouped differently, so the same steps as batches of 100 to float32 rounding (measured:
    # losses within 2.4e-7 relative, the object within 8.6e-7). A second search of the same
    # shapes compiles nothing: the batch's sums are one module-level program (one per search,
    # recompiled each time, grew the resident memory by 20-45 MB a search on the large preset).
    from janssen.invert import _stream

    assert jinv.SEARCH_BATCH_PIXELS == _stream.SEARCH_BATCH_PIXELS == 64 * 128 * 128
    dataset, true = small
    engine = jinv.PhaseFieldSearch(order=ORDER)
    bent = engine.apply(true, _parameters(ORDER, 4, 0.3))
    reads = []
    with jio.CXIFrames(small_file) as frames:
        whole = jinv.search_from_file(bent, frames, engine, max_steps=3, batch_size=100)
        monkeypatch.setattr(_stream, "SEARCH_BATCH_PIXELS", 10 * int(np.prod(frames.frame_shape)))
        batch = frames.batch
        monkeypatch.setattr(frames, "batch", lambda index: reads.append(len(index)) or batch(index))
        capped = jinv.search_from_file(bent, frames, engine, max_steps=3, batch_size=100)
    assert set(reads) == {10}
    assert capped.iteration == whole.iteration == 3
    np.testing.assert_allclose(np.asarray(capped.losses), np.asarray(whole.losses), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(capped.microscope.sample.sample), np.asarray(whole.microscope.sample.sample), atol=1e-4
    )
    with jio.CXIFrames(small_file) as frames, compilations() as again:
        jinv.search_from_file(bent, frames, engine, max_steps=3, batch_size=100)
    assert again == []


def test_search_from_file_keeps_the_last_step_on_ctrl_c(small, small_file):
    dataset, true = small
    path = small_file
    engine = jinv.PhaseFieldSearch(order=ORDER)
    bent = engine.apply(true, _parameters(ORDER, 4, 0.3))

    class Interrupting(jinv.NoProgressMeter):
        def update(self, iteration, loss):
            if iteration == 2:
                raise KeyboardInterrupt

    with jio.CXIFrames(path) as frames:
        two = jinv.search_from_file(bent, frames, engine, max_steps=2)
        stopped = jinv.search_from_file(bent, frames, engine, max_steps=6, progress_meter=Interrupting())
    assert stopped.result == jinv.RESULTS.interrupted
    assert stopped.iteration == 2
    np.testing.assert_array_equal(np.asarray(stopped.losses), np.asarray(two.losses))
    kept, expected = stopped.microscope.sample.sample, two.microscope.sample.sample
    np.testing.assert_array_equal(np.asarray(kept), np.asarray(expected))


def test_search_from_file_refuses_what_it_cannot_run(small, small_file):
    dataset, true = small
    path = small_file
    with jio.CXIFrames(path) as frames:
        with pytest.raises(TypeError, match="`engine` must be a Marquardt search .*got RPIE"):
            jinv.search_from_file(true, frames, jinv.RPIE(), max_steps=1)
        with pytest.raises(ValueError, match="`max_steps` must be an integer >= 1, got 0"):
            jinv.search_from_file(true, frames, jinv.PhaseFieldSearch(), max_steps=0)
        with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1, got 0"):
            jinv.search_from_file(true, frames, jinv.PhaseFieldSearch(), max_steps=1, batch_size=0)
        with pytest.raises(TypeError, match="run it with `search_from_file`"):
            jinv.reconstruct_from_file(true, frames, jinv.PhaseFieldSearch(), epochs=1)
        fewer = jax.tree_util.tree_map(lambda x: x, true)
        fewer = eqx.tree_at(lambda m: m.positions, fewer, true.positions[:10])
        with pytest.raises(ValueError, match=r"one position per frame of the file \(100\), got 10"):
            jinv.search_from_file(fewer, frames, jinv.PhaseFieldSearch(), max_steps=1)


def test_arguments_are_checked(small):
    dataset, true = small
    with pytest.raises(ValueError, match="`trainable` must select both"):
        jinv.reconstruct(true, dataset.data, jinv.PhaseFieldSearch(), num_iterations=1, trainable=["object"])
    with pytest.raises(ValueError, match="`order` must be an integer >= 2, got 1"):
        jinv.PhaseFieldSearch(order=1)
    with pytest.raises(ValueError, match="`patience` must be an integer >= 1"):
        jinv.PhaseFieldSearch(patience=0)
    with pytest.raises(ValueError, match=r"`rtol` must lie in \[0, 1\), got 1.0"):
        jinv.PhaseFieldSearch(rtol=1.0)
    with pytest.raises(ValueError, match="`initial_damping` must be finite and > 0"):
        jinv.PhaseFieldSearch(initial_damping=0.0)


def _disc_microscope(side: int, radius: float) -> FarFieldMicroscope:
    y, x = np.indices((64, 64))
    disc = ((x - 32) ** 2 + (y - 32) ** 2 <= radius**2).astype(np.complex64)
    dx = np.array([1e-8, 1e-8])
    sample = SampleFunction(np.ones((side, side), np.complex64), dx)
    return FarFieldMicroscope(Probe(disc[None], 1e-9, dx), sample, np.zeros((1, 2)))


def test_probe_width_of_a_disc_is_its_diameter():
    # A uniform disc of radius R: RMS radius R / sqrt(2), so 2 sqrt(2) x RMS radius = 2R (pixelated).
    for radius in (8.0, 15.0, 20.0):
        assert abs(probe_width(_disc_microscope(128, radius)) - 2 * radius) < 0.02 * 2 * radius


def test_order_is_one_plus_the_side_over_two_widths():
    # width 30: 1 + floor(S / 60), between 2 and 12.
    assert jinv.phase_field_order(_disc_microscope(64, 15.0)) == 2
    assert jinv.phase_field_order(_disc_microscope(200, 15.0)) == 4
    assert jinv.phase_field_order(_disc_microscope(2000, 15.0)) == 12


@pytest.mark.slow
def test_default_schedule_reaches_the_noise_on_a_wide_field():
    # 4000 positions over a 620² object, a 24 px probe, 6e4 photons a frame (the xlarge preset's
    # shape at a quarter of its frame side). Measured 2026-12-07: the schedule with CurvatureSearch
    # instead of these searches ended at 0.093; this one at 0.0589; batched mPIE from the truth
    # settles at 0.055.
    dataset = jio.simulate(64, 4000, key=jax.random.PRNGKey(0), photons=6e4)
    truth = dataset.microscope()
    start = jinv.init_far_field_microscope(dataset.data)
    run = jinv.run_schedule(start, dataset.data, jinv.default_schedule(start))
    error = jinv.object_error(
        truth.sample.sample, run.microscope.sample.sample, jinv.illumination_map(truth), max_shift=0
    )
    assert error < 0.066
