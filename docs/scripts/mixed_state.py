"""The figure of docs/mixed-state.md: one- and three-mode reconstructions of partially coherent data.

    python docs/scripts/mixed_state.py [--out docs/img/mixed_state.png] [--iterations 60]

Simulates the small preset with a three-mode Gaussian–Schell probe (coherence width
120 nm), reconstructs it with rPIE from a unit object and a probe guess, once with one
mode and once with three, and draws the object phases and the recovered modes. It prints
the object errors and the mode weights it puts in the figure's titles.
"""

import argparse
import pathlib

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import matplotlib
import numpy as np

from janssen.invert import (
    RPIE,
    illumination_map,
    init_far_field_microscope,
    object_error,
    reconstruct,
    remove_linear_phase,
)
from janssen.io import simulate_preset
from janssen.optics import CoherentModeSet, MixedStateProbe, extend_modes, orthogonalize_modes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def with_extra_modes(microscope, modes):
    """The microscope with `modes` probe modes: its probe plus `janssen.optics.extend_modes`' new ones."""
    fields, weights = extend_modes(microscope.probe.fields(), modes)
    mode_set = CoherentModeSet(fields, weights, microscope.probe.wavelength, microscope.sample.dx)
    return eqx.tree_at(lambda m: m.probe, microscope, MixedStateProbe(mode_set))


def weights_of(fields):
    _, powers = orthogonalize_modes(jnp.asarray(fields))
    return np.asarray(powers / jnp.sum(powers))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/img/mixed_state.png"))
    parser.add_argument("--iterations", type=int, default=60)
    args = parser.parse_args(argv)

    dataset = simulate_preset("small", key=jr.PRNGKey(0), modes=3, coherence_width=120e-9)
    data, truth = dataset.data, np.asarray(dataset.object)
    illumination = np.asarray(illumination_map(dataset.microscope()))
    one = init_far_field_microscope(data)
    three = with_extra_modes(one, 3)
    results = {}
    for name, start in (("1 mode", one), ("3 modes", three)):
        solution = reconstruct(start, data, RPIE(), num_iterations=args.iterations)
        obj = np.asarray(solution.microscope.sample.sample)
        results[name] = (obj, object_error(truth, obj, illumination), solution.microscope.probe.fields())
        print(f"{name}: object error {results[name][1]:.3f}, weights {np.round(weights_of(results[name][2]), 3)}")
    true_weights = weights_of(dataset.probe)
    print(f"true weights {np.round(true_weights, 3)}")

    figure, axes = plt.subplots(2, 3, figsize=(10.5, 7), constrained_layout=True)
    crop = illumination > 0.05 * illumination.max()
    rows, cols = np.nonzero(crop)
    window = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    panels = [("truth", truth, None)] + [(name, obj, error) for name, (obj, error, _) in results.items()]
    true_phase = np.angle(remove_linear_phase(truth[window]))
    limits = np.percentile(true_phase, [0.5, 99.5])
    for ax, (name, obj, error) in zip(axes[0], panels):
        phase = np.angle(remove_linear_phase(obj[window]))
        ax.imshow(phase, cmap="viridis", vmin=limits[0], vmax=limits[1])
        ax.set_title(name if error is None else f"{name}\nobject error {error:.3f}")
        ax.set_axis_off()
    fields = np.asarray(results["3 modes"][2])
    recovered, powers = orthogonalize_modes(jnp.asarray(fields))
    weights = np.asarray(powers / jnp.sum(powers))
    for k, ax in enumerate(axes[1]):
        ax.imshow(np.abs(np.asarray(recovered[k])), cmap="magma")
        ax.set_title(f"recovered mode {k}\nweight {weights[k]:.3f} (true {true_weights[k]:.3f})")
        ax.set_axis_off()
    figure.suptitle("Object phase (linear ramp removed); the three recovered probe modes (amplitude)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
