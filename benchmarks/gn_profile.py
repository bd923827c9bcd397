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

Start: `benchmarks/pie.py`'s fair start (unit object, blurred and shifted true probe);
object and probe refined. Prints one JSON line.
"""

import argparse
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
    from janssen.invert._trainable import trainable_spec
    from janssen.io import simulate_preset

    dataset = simulate_preset(size, key=jax.random.PRNGKey(0))
    start, data = pie.starting_point(dataset), dataset.data
    fft_floor = floor.fft_floor(data.num_positions, data.frame_shape, 7, one_thread=False)["fft_floor_s"]
    spec = trainable_spec(start, ["object", "probe"])
    params, static = eqx.partition(start, spec)
    x = to_real(params)
    residual_fn = residual_function(static, params, data, 1e-6)

    @eqx.filter_jit
    def forward(x):
        return residual_fn(x)[0]

    @eqx.filter_jit
    def linearize(x):
        return jax.linearize(residual_fn, x, has_aux=True)[0]

    @eqx.filter_jit
    def products(x, v, count):
        _, jvp, _ = jax.linearize(residual_fn, x, has_aux=True)
        transpose = jax.linear_transpose(jvp, x)
        return jax.lax.fori_loop(0, count, lambda _, u: transpose(jvp(u))[0], v)

    engine = GaussNewton()
    state = engine.init(start, data, spec)
    step = eqx.filter_jit(engine.step)
    key = jax.random.PRNGKey(0)
    one = _median_time(products, x, x, 1, repeats=repeats)
    eleven = _median_time(products, x, x, 11, repeats=repeats)
    times = {
        "forward": _median_time(forward, x, repeats=repeats),
        "linearize": _median_time(linearize, x, repeats=repeats),
        "JtJ": (eleven - one) / 10,
        "step": _median_time(lambda: step(start, state, data, spec, key), repeats=max(1, repeats // 2)),
    }
    return {
        "size": size,
        "parameters": int(sum(leaf.size for leaf in jtu.tree_leaves(x))),
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
