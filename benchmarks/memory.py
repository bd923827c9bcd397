"""Memory of one reconstruction step, in XLA's own buffer accounting, against the dataset's size.

    python benchmarks/memory.py [--size medium] [--engines mpie-batched,adam,gauss-newton]

For each engine it compiles the step the `reconstruct` driver runs (`engine.step` plus the
finiteness check) on the preset's data and reports, in MB and as multiples of the frames'
bytes (`dataset_mb`):

- `live_mb`: the arrays alive between iterations (`jax.live_arrays()`: the frames, the
  microscope, the engine state and whatever else the process holds on the device);
- `step_peak_mb`: XLA's figure for the step, arguments + outputs - aliased + temporaries
  (`Compiled.memory_analysis()`), i.e. the most the step's buffers occupy at once;
- the same with the microscope and the engine state donated to the step (`*_donated`),
  which lets XLA write the new microscope and state into the old ones' buffers.

Resident memory (RSS) is not used here: on the CPU it is dominated by the compiler and the
runtime (about 200 MB above the baseline after importing JAX, whatever the dataset), see
`run_rss_mb` in `benchmarks/run.py`.
"""

import argparse
import json
import pathlib
import sys
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run import ENGINES, load_dataset, make_engine, write_dataset  # noqa: E402

from janssen.invert import trainable_spec  # noqa: E402
from janssen.invert._trainable import all_finite  # noqa: E402


def _step_memory(engine, microscope, state, data, spec, *, donate: bool) -> dict:
    """XLA's memory analysis of one driver step (optionally donating microscope and state)."""
    carried, carried_static = eqx.partition((microscope, state), eqx.is_array)
    fixed, fixed_static = eqx.partition((engine, data, spec), eqx.is_array)

    def step(carried, fixed, key):
        microscope, state = eqx.combine(carried, carried_static)
        engine, data, spec = eqx.combine(fixed, fixed_static)
        new, new_state, loss = engine.step(microscope, state, data, spec, key)
        finite = jnp.isfinite(loss) & all_finite(eqx.filter(new, spec))
        return eqx.filter((new, new_state), eqx.is_array), loss, finite

    jitted = jax.jit(step, donate_argnums=(0,) if donate else ())
    analysis = jitted.lower(carried, fixed, jr.PRNGKey(0)).compile().memory_analysis()
    mb = 2**-20
    return {
        "arguments_mb": analysis.argument_size_in_bytes * mb,
        "outputs_mb": analysis.output_size_in_bytes * mb,
        "aliased_mb": analysis.alias_size_in_bytes * mb,
        "temporaries_mb": analysis.temp_size_in_bytes * mb,
        "peak_mb": (
            analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
            - analysis.alias_size_in_bytes
            + analysis.temp_size_in_bytes
        )
        * mb,
    }


def measure(name: str, data_path: pathlib.Path) -> dict:
    data, start, _, _, meta = load_dataset(str(data_path))
    engine = make_engine(name, start)
    spec = trainable_spec(start, ("object", "probe"))
    state = engine.init(start, data, spec)
    dataset_mb = data.intensities.nbytes / 2**20
    live_mb = sum(x.nbytes for x in jax.live_arrays()) / 2**20
    plain = _step_memory(engine, start, state, data, spec, donate=False)
    donated = _step_memory(engine, start, state, data, spec, donate=True)
    row = {"engine": name, "size": str(meta["size"]), "dataset_mb": round(dataset_mb, 2), "live_mb": round(live_mb, 2)}
    row.update({key: round(value, 2) for key, value in plain.items()})
    row.update({f"{key}_donated": round(value, 2) for key, value in donated.items()})
    row["peak_over_dataset"] = round(plain["peak_mb"] / dataset_mb, 2)
    row["peak_over_dataset_donated"] = round(donated["peak_mb"] / dataset_mb, 2)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--engines", default="mpie-batched")
    args = parser.parse_args(argv)
    names = [name for name in args.engines.split(",") if name]
    unknown = [name for name in names if name not in ENGINES]
    if unknown:
        raise SystemExit(f"unknown engine {unknown}; valid engines: {', '.join(ENGINES)}")
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / f"{args.size}.npz"
        write_dataset(args.size, path)
        for name in names:
            print(json.dumps(measure(name, path)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
