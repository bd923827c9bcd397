"""One PIE iteration alone: janssen's jitted step against a hand-written twin and the FFT floor, in one process.

    python benchmarks/pie_step.py [--size medium] [--engines rpie,epie,mpie] [--repeats 21]

For each engine it times `_step` (the jitted step `reconstruct` runs, without the driver's
host-side checks), interleaved with a hand-written *twin* of sequential rPIE: the bare loop
over a permutation of the positions (read the patch, multiply by the probe, FFT, modulus
constraint, inverse FFT, the rPIE object update and an ePIE-style probe update, write the
patch back), with nothing else (no residual, no gauge, no momentum, no validity mask).
The twin is the smallest program doing one iteration's arithmetic in JAX, so `step / twin`
measures what janssen's step adds around it, and `twin / floor` what XLA's CPU code costs
beyond the FFTs. The floor is `benchmarks/floor.py`'s. After the timings each engine runs
20 iterations from the suite's fair start (`benchmarks/pie.py`'s `starting_point`) and
prints the loss and the object error, so that a faster step can be checked for the same
results. All times are medians of `--repeats` calls, `block_until_ready`, compilation apart.
"""

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def twin_program(microscope, data):
    """The twin: sequential rPIE (object `alpha` 0.1, probe step 1 / max|O|^2) on the fast far-field path."""
    probe = microscope.probe.fields()[0]
    h, w = probe.shape
    corners = jax.vmap(microscope.locate)(microscope.positions)[0]
    frames = data.intensities
    sign = (1 - 2 * ((jnp.arange(h)[:, None] + jnp.arange(w)[None]) % 2)).astype(probe.real.dtype)

    @jax.jit
    def sweep(obj, probe, order):
        probe = probe * sign

        def body(carry, i):
            obj, probe = carry
            patch = jax.lax.dynamic_slice(obj, (corners[i, 0], corners[i, 1]), (h, w))
            field = jnp.fft.fft2(probe * patch)
            ratio = jnp.sqrt((frames[i] + 1e-6) / ((field.real**2 + field.imag**2) / (h * w) + 1e-6))
            change = jnp.fft.ifft2(field * (ratio - 1.0))
            patch_w = patch.real**2 + patch.imag**2
            probe_w = probe.real**2 + probe.imag**2
            new_probe = probe + jnp.conj(patch) * change * (1.0 / jnp.max(patch_w))
            step = jnp.conj(probe) * change * (1.0 / (0.9 * probe_w + 0.1 * jnp.max(probe_w)))
            # Ordered after the probe update, as janssen's sweep orders it (else XLA copies the object).
            step = step * (1.0 + 0.0 * new_probe[0, 0].real)
            obj = jax.lax.dynamic_update_slice(obj, patch + step, (corners[i, 0], corners[i, 1]))
            return (obj, new_probe), None

        (obj, probe), _ = jax.lax.scan(body, (obj, probe), order)
        return obj, probe * sign

    return lambda order: sweep(microscope.sample.sample, probe, order)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--engines", default="rpie,epie,mpie")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import floor
    import pie

    import janssen.invert as jinv
    from janssen.invert import _reconstruct
    from janssen.io import simulate_preset

    dataset = simulate_preset(args.size, key=jr.PRNGKey(0))
    data, start = dataset.data, pie.starting_point(dataset)
    truth = np.asarray(dataset.object)
    illumination = np.asarray(jinv.illumination_map(dataset.microscope()))
    engines = {"rpie": jinv.RPIE, "epie": jinv.EPIE, "mpie": jinv.MomentumPIE}
    fft_floor = floor.fft_floor(data.num_positions, data.frame_shape, 9)["fft_floor_s"]
    print(f"{args.size}: FFT floor {fft_floor:.4f} s", flush=True)
    for name in args.engines.split(","):
        engine = engines[name]()
        solution = jinv.reconstruct(start, data, engine, num_iterations=2)
        key = jr.PRNGKey(3)
        order = jr.permutation(key, data.num_positions)
        twin = twin_program(solution.microscope, data)
        calls = {
            "step": lambda: _reconstruct._step(
                engine, solution.microscope, solution.state, data, solution.trainable, key, None
            ),
            "twin": lambda: twin(order),
        }
        times = {label: [] for label in calls}
        for call in calls.values():
            jax.block_until_ready(call())
        for _ in range(args.repeats):
            for label, call in calls.items():
                clock = time.perf_counter()
                jax.block_until_ready(call())
                times[label].append(time.perf_counter() - clock)
        step, bare = (statistics.median(times[label]) for label in ("step", "twin"))
        run = jinv.reconstruct(start, data, engine, num_iterations=20, key=jr.PRNGKey(1))
        error = jinv.object_error(truth, np.asarray(run.microscope.sample.sample), illumination)
        print(
            f"{name}: step {step * 1e3:.2f} ms ({step / fft_floor:.2f}x floor), twin {bare * 1e3:.2f} ms "
            f"({bare / fft_floor:.2f}x), step / twin {step / bare:.3f}; after 20 iterations loss "
            f"{float(run.losses[-1]):.5f}, error {error:.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
