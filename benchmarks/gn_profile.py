"""Where a Gauss–Newton iteration's time goes, in units of the FFT floor, on one preset.

    python benchmarks/gn_profile.py [--size medium] [--repeats 5]

Times, in this process and after compilation (medians of `--repeats`, `block_until_ready`):

- `floor`: `benchmarks/floor.py`'s floor with all threads (the fastest way to run one
  forward and one inverse FFT per position);
- `forward`: the general forward model `microscope()` (every frame's intensity) and the
  amplitude residual the least-squares engines linearise;
- `linearize`: `jax.linearize` of that residual (the forward plus what the tangent map keeps);
- `JtJ`: one product by `J^T J` (a tangent and a transposed product), from the difference
  between 11 and 1 products in a `fori_loop`;
- `step`: one `GaussNewton()` step (linearisation, scaling, conjugate gradients, the trial).

`forward`, `linearize` and `JtJ` are timed twice: as the engine predicts on this preset
(`on_grid`, when `fixed_on_grid` says the positions are on the pixel grid: no sub-pixel
move of the probe) and with the move (`*_shifted`, as on a scan off the grid). `step` is
the engine as it runs here, and `step_shifted` with its state's `on_grid` turned off.
`forward_minimal` and `JtJ_minimal` time a hand-written twin of the on-grid residual
(patch times probe, one FFT, amplitude minus measured amplitude, the same frame blocks):
the cost of the transforms themselves, without janssen's model code.

Start: `benchmarks/pie.py`'s fair start (unit object, blurred and shifted true probe);
object and probe refined. Prints one JSON line.
"""

import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def _median_time(fn, *args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _minimal(start, data, x, repeats: int) -> dict:
    """The on-grid amplitude residual written out by hand: its forward and `J^T J` times."""
    import jax
    import jax.numpy as jnp

    corners = jax.vmap(start.locate)(start.positions)[0]
    amplitude = jnp.sqrt(data.intensities)
    shape = tuple(start.probe_shape)

    def residual(y):
        obj = jax.lax.complex(y.sample.sample[..., 0], y.sample.sample[..., 1])
        probe = jax.lax.complex(y.probe.modes[0, ..., 0], y.probe.modes[0, ..., 1])

        def one(corner):
            far = jnp.fft.fft2(probe * jax.lax.dynamic_slice(obj, (corner[1], corner[0]), shape))
            return jnp.sqrt(far.real**2 + far.imag**2 + 1e-6)

        return jax.lax.map(one, corners, batch_size=16) - amplitude

    @jax.jit
    def forward(y):
        return residual(y)

    @jax.jit
    def products(y, v, count):
        _, jvp = jax.linearize(residual, y)
        transpose = jax.linear_transpose(jvp, y)
        return jax.lax.fori_loop(0, count, lambda _, u: transpose(jvp(u))[0], v)

    one = _median_time(products, x, x, 1, repeats=repeats)
    eleven = _median_time(products, x, x, 11, repeats=repeats)
    return {"forward_minimal": _median_time(forward, x, repeats=repeats), "JtJ_minimal": (eleven - one) / 10}


def profile(size: str, repeats: int) -> dict:
    sys.path.insert(0, str(HERE))
    import equinox as eqx
    import floor
    import jax
    import jax.tree_util as jtu
    import pie

    from janssen.invert import GaussNewton
    from janssen.invert._realify import to_real
    from janssen.invert._residual import residual_function
    from janssen.invert._trainable import fixed_on_grid, trainable_spec
    from janssen.io import simulate_preset

    dataset = simulate_preset(size, key=jax.random.PRNGKey(0))
    start, data = pie.starting_point(dataset), dataset.data
    fft_floor = floor.fft_floor(data.num_positions, data.frame_shape, 7, one_thread=False)["fft_floor_s"]
    spec = trainable_spec(start, ["object", "probe"])
    params, static = eqx.partition(start, spec)
    x = to_real(params)
    on_grid = fixed_on_grid(start, spec)
    engine = GaussNewton()
    state = engine.init(start, data, spec)
    step = eqx.filter_jit(engine.step)
    key = jax.random.PRNGKey(0)
    times = {}
    for suffix, flag in (("", on_grid), ("_shifted", False)):
        residual_fn = residual_function(static, params, data, 1e-6, on_grid=flag)

        @eqx.filter_jit
        def forward(x, fn=residual_fn):
            return fn(x)[0]

        @eqx.filter_jit
        def linearize(x, fn=residual_fn):
            return jax.linearize(fn, x, has_aux=True)[0]

        @eqx.filter_jit
        def products(x, v, count, fn=residual_fn):
            _, jvp, _ = jax.linearize(fn, x, has_aux=True)
            transpose = jax.linear_transpose(jvp, x)
            return jax.lax.fori_loop(0, count, lambda _, u: transpose(jvp(u))[0], v)

        one = _median_time(products, x, x, 1, repeats=repeats)
        eleven = _median_time(products, x, x, 11, repeats=repeats)
        times[f"forward{suffix}"] = _median_time(forward, x, repeats=repeats)
        times[f"linearize{suffix}"] = _median_time(linearize, x, repeats=repeats)
        times[f"JtJ{suffix}"] = (eleven - one) / 10
        run_state = state if suffix == "" else dataclasses.replace(state, on_grid=False)
        times[f"step{suffix}"] = _median_time(
            lambda s=run_state: step(start, s, data, spec, key), repeats=max(1, repeats // 2)
        )
    times.update(_minimal(start, data, x, repeats))
    return {
        "size": size,
        "parameters": int(sum(leaf.size for leaf in jtu.tree_leaves(x))),
        "on_grid": on_grid,
        "floor_s": fft_floor,
        **{f"{name}_s": round(value, 5) for name, value in times.items()},
        **{f"{name}_x_floor": round(value / fft_floor, 2) for name, value in times.items()},
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(profile(args.size, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
