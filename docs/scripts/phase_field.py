"""The figure of docs/benchmarks-large.md: the phase error PIE leaves on a wide field, before and after the search.

    python docs/scripts/phase_field.py [--out docs/img/phase_field.png]

Simulates 4000 positions over a 620² object with 64² frames at 6e4 photons a frame
(`simulate(64, 4000, photons=6e4, key=PRNGKey(0))`: the xlarge preset's field at a
quarter of its frame side), starts from the data alone (`init_far_field_microscope`) and
runs two schedules: the default schedule of 2026-12-06 (rPIE, ePIE at 0.25,
`CurvatureSearch`, batched mPIE: `benchmarks/large_default.py`'s `schedule_before`) and
today's `default_schedule` (with the two phase-field searches). It draws the phase of each
result against the truth, `angle(R conj(T))` with the mean linear ramp and the mean phase
removed, over the well-lit pixels, on one colour scale, and prints the object errors it
puts in the titles.
"""

import argparse
import pathlib
import sys

import jax.random as jr
import matplotlib
import numpy as np

import janssen.invert as jinv
from janssen.io import simulate

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
from large_default import schedule_before  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/img/phase_field.png"))
    args = parser.parse_args(argv)

    dataset = simulate(64, 4000, key=jr.PRNGKey(0), photons=6e4)
    data, truth = dataset.data, np.asarray(dataset.object)
    illumination = np.asarray(jinv.illumination_map(dataset.microscope()))
    lit = illumination > 0.5 * illumination.max()
    start = jinv.init_far_field_microscope(data)
    panels = []
    for name, stages in (("before: curvature search", schedule_before(jinv)), ("now: phase-field searches", None)):
        stages = jinv.default_schedule(start) if stages is None else stages
        run = jinv.run_schedule(start, data, stages)
        obj = np.asarray(run.microscope.sample.sample)
        error = float(jinv.object_error(truth, obj, illumination, max_shift=0))
        ratio = jinv.remove_linear_phase(np.where(lit, obj * np.conj(truth), 0))
        phase = np.where(lit, np.angle(ratio), np.nan)
        panels.append((name, error, phase))
        print(f"{name}: object error {error:.4f}, stages {run.stages}")

    limit = max(float(np.nanpercentile(np.abs(p), 99.5)) for _, _, p in panels)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True)
    for ax, (name, error, phase) in zip(axes, panels, strict=True):
        image = ax.imshow(phase, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"{name}\nobject error {error:.3f}")
        ax.set_axis_off()
    figure.colorbar(image, ax=axes, label="phase of R conj(T), ramp removed (rad)", shrink=0.85)
    figure.suptitle("620² object, 4000 positions: the default path's phase error against the truth")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
