"""Gauss–Newton's object error after each step under variants of its linear solve, on one preset.

    python benchmarks/gn_variants.py [--size medium] VARIANT [VARIANT ...]

Each `VARIANT` is `name:cg[,cg...][:option=value...]`: the CG iteration limit of each step
in turn (as many steps as the list is long), and any of

- `warm=1`: start CG from the previous accepted step, scaled to minimise the quadratic
  model along it (two products more a step: `A y0` for the scale and lineax's residual);
- `damping=D`: `GaussNewton(initial_damping=D)`;
- `floor=F`: the floor of the diagonal weights (`_FLOOR`, 0.01 in the engine);
- `scale=S`: weights `S` times the structural diagonal (illumination, object intensity)
  instead of the scaling's two products along the gradient;
- `sub=F`: CG's products by `J^T J` on a random `F` of the positions (a new draw each
  step), times `1 / F`: a subsampled curvature (the gradient, the scaling and the
  acceptance test on every position), each parameter's product scaled by the square root
  of its diagonal weight over the subset's (`sub=-F`: by `1 / F` throughout instead).

The steps are `GaussNewton.step` written out with those hooks, followed by the driver's
`constrain_step` (the phase-ramp pin); the script first checks that, without hooks, that
step is the driver's step of `GaussNewton` to float32 rounding (every entry within 5e-4
of the largest), and stops if it is not. On `run.py`'s problem and start (unit object,
blurred and shifted true probe), object and probe refined. Prints one JSON line per
variant: the error after each step (`object_error`, no shift search), the step at which it
first reaches 0.066, and the products by `J^T J` spent to get there.
"""

import argparse
import json
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent


def _variant(text: str) -> dict:
    name, counts, *options = text.split(":")
    out = {"name": name, "schedule": [int(c) for c in counts.split(",")], "warm": False,
           "damping": 1e-3, "floor": 0.01, "scale": 0.0, "sub": 0.0}  # fmt: skip
    for option in options:
        key, value = option.split("=")
        if key not in out or key in ("name", "schedule"):
            raise SystemExit(f"unknown option {key!r} in {text!r}: use warm, damping, floor, scale or sub")
        out[key] = bool(int(value)) if key == "warm" else float(value)
    return out


def sweep(size: str, variants: list[dict]) -> list[dict]:
    sys.path.insert(0, str(HERE))
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.tree_util as jtu
    import lineax as lx
    import numpy as np
    import run

    from janssen.invert import GaussNewton, _reconstruct, object_error
    from janssen.invert._constraints import constrain_step
    from janssen.invert._engines import gauss_newton as gn
    from janssen.invert._losses import AmplitudeLoss
    from janssen.invert._realify import from_real, to_real
    from janssen.invert._residual import AmplitudeResidual, residual_function
    from janssen.invert._trainable import trainable_spec

    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / f"{size}.npz"
        run.write_dataset(size, path)
        data, start, truth, illumination, _ = run.load_dataset(str(path))
    spec = trainable_spec(start, ["object", "probe"])

    def solve(engine, jvp, vjp, residual, x, damping, microscope, project, previous, warm, scale, curvature=None):
        gradient = project(vjp(residual))
        dtype = residual.dtype
        shape = gn._diagonal_shape(microscope, x, jvp)
        if scale > 0:
            weights = jtu.tree_map(lambda w: scale * w, shape)
        else:
            weights = engine._scaling(jvp, gradient, shape)
        diagonal = jtu.tree_map(lambda w: (damping * w).astype(dtype), weights)
        boost = 1e4 * max(1.0, 100 * gn._num_real_parameters(x) * float(jnp.finfo(dtype).eps))
        inverse = jtu.tree_map(lambda w: (boost / ((1 + damping) * w)).astype(dtype), weights)
        struct = jax.eval_shape(lambda: x)
        tags = (lx.symmetric_tag, lx.positive_semidefinite_tag)
        preconditioner = lx.FunctionLinearOperator(
            lambda v: project(jtu.tree_map(jnp.multiply, inverse, v)), struct, tags=tags
        )
        inner = gn.normal_operator(*(curvature or (jvp, vjp)), x, diagonal)
        operator = lx.FunctionLinearOperator(lambda v: project(inner.mv(project(v))), struct, tags=tags)
        rhs = jtu.tree_map(jnp.negative, gradient)
        options = {"preconditioner": preconditioner}
        if warm:
            curvature = gn._tree_dot(previous, operator.mv(previous))
            alpha = jnp.where(curvature > 0, gn._tree_dot(rhs, previous) / jnp.where(curvature > 0, curvature, 1), 0.0)
            options["y0"] = jtu.tree_map(lambda u: alpha * u, previous)
        solution = lx.linear_solve(
            operator, rhs, engine._solver(gn._num_real_parameters(x), rhs), options=options, throw=False
        )
        return project(solution.value)

    def subsampled(static, params, x, on_grid, eps, key, fraction, correct):
        """`J_S` and `J_S^T / F` on a random `F` of the positions."""
        count = max(1, round(fraction * data.intensities.shape[0]))
        chosen = jax.random.permutation(key, data.intensities.shape[0])[:count]
        part = eqx.tree_at(lambda d: (d.intensities, d.positions), data,
                           (data.intensities[chosen], data.positions[chosen]))  # fmt: skip
        terms = AmplitudeResidual.of(part, eps)

        def fn(real):
            whole = eqx.combine(from_real(real, params), static)
            return terms.smooth(eqx.tree_at(lambda m: m.positions, whole, whole.positions[chosen])(on_grid=on_grid))

        _, jvp_s = jax.linearize(fn, x)
        transpose_s = jax.linear_transpose(jvp_s, x)
        whole = eqx.combine(from_real(x, params), static)
        if not correct:
            factor = jtu.tree_map(lambda u: jnp.full_like(u, (data.intensities.shape[0] / count) ** 0.5), x)
        else:
            # Per parameter, sqrt(full diagonal / the subset's): the subset's curvature brought to the
            # full one's diagonal.
            full = gn._diagonal_shape(whole, x, None)
            part_scope = eqx.tree_at(lambda m: m.positions, whole, whole.positions[chosen])
            own = gn._diagonal_shape(part_scope, x, None)
            factor = jtu.tree_map(lambda f, o: jnp.sqrt(f / o), full, own)
        scale = lambda v: jtu.tree_map(jnp.multiply, factor, v)  # noqa: E731
        return (lambda v: jvp_s(scale(v))), (lambda u: scale(transpose_s(u)[0]))

    @eqx.filter_jit
    def step(engine, microscope, state, trainable, previous, warm, scale, floor, sub=0.0, key=None):
        gn._FLOOR = floor  # read when the step is traced; `floor` is static, so each value traces anew
        params, static = eqx.partition(microscope, trainable)
        x = to_real(params)
        residual_fn = residual_function(static, params, data, engine.eps, on_grid=state.on_grid)
        residual, jvp, predicted = jax.linearize(residual_fn, x, has_aux=True)
        transpose = jax.linear_transpose(jvp, x)
        loss = AmplitudeLoss()(predicted, data.intensities, data.valid[None])
        project = gn._scan_projector(microscope, trainable)
        curvature = None
        if sub != 0:
            curvature = subsampled(static, params, x, state.on_grid, engine.eps, key, abs(sub), sub > 0)
        delta = solve(engine, jvp, lambda u: transpose(u)[0], residual, x, state.damping, microscope, project,
                      previous, warm, scale, curvature)  # fmt: skip
        trial = gn._axpy(1.0, delta, x)
        trial_loss = AmplitudeLoss()(engine._predict(trial, static, params, state.on_grid), data.intensities,
                                     data.valid[None])  # fmt: skip
        accept = trial_loss < loss
        kept = jtu.tree_map(lambda new, old: jnp.where(accept, new, old), trial, x)
        damping = jnp.clip(state.damping * jnp.where(accept, gn._LOWER, gn._RAISE), gn._MIN_DAMPING, gn._MAX_DAMPING)
        new = constrain_step(eqx.combine(from_real(kept, params), static), microscope, trainable, ramp=True)
        new_state = gn.GaussNewtonEngineState(damping.astype(state.damping.dtype), accept, state.on_grid)
        return new, new_state, jtu.tree_map(lambda d: jnp.where(accept, d, jnp.zeros_like(d)), delta)

    default_floor = gn._FLOOR
    # The step above is the engine's written out: check once that, without hooks, it is the
    # driver's step of `GaussNewton` itself, so that the variants measure the engine as it is.
    engine = GaussNewton()
    state = engine.init(start, data, spec)
    zeros = jtu.tree_map(jnp.zeros_like, to_real(eqx.filter(start, spec)))
    ours = step(engine, start, state, spec, zeros, False, 0.0, default_floor)[0]
    theirs = _reconstruct._step(engine, start, state, data, spec, jax.random.PRNGKey(0), None)[0]
    # Two programs, 12 CG iterations: float32 rounding differs (measured on small: 1.7e-5 and
    # 5.6e-5 of the largest entry of the object and the probe); a changed step differs by far more.
    for a, b in zip(jtu.tree_leaves(eqx.filter(ours, spec)), jtu.tree_leaves(eqx.filter(theirs, spec)), strict=True):
        scale = float(np.max(np.abs(np.asarray(b))))
        if float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) > 5e-4 * scale:
            raise SystemExit("gn_variants.py: its step no longer matches GaussNewton.step; update it")
    rows = []
    for variant in variants:
        microscope, previous = start, None
        state = GaussNewton(initial_damping=variant["damping"]).init(start, data, spec)
        errors, products = [], []
        for count in variant["schedule"]:
            engine = GaussNewton(cg_maxiter=count, initial_damping=variant["damping"])
            warm = variant["warm"] and previous is not None
            if previous is None:
                previous = jtu.tree_map(jnp.zeros_like, to_real(eqx.filter(start, spec)))
            microscope, state, previous = step(
                engine, microscope, state, spec, previous, warm, variant["scale"], variant["floor"],
                variant["sub"], jax.random.PRNGKey(len(errors)),
            )  # fmt: skip
            products.append(count + (2 if warm else 0))
            errors.append(
                round(object_error(truth, np.asarray(microscope.sample.sample), illumination, max_shift=0), 4)
            )
        reached = next((i + 1 for i, error in enumerate(errors) if error <= run.TARGET), None)
        rows.append({"size": size, **variant, "errors": errors, "steps_to_0.066": reached,
                     "products_to_0.066": None if reached is None else sum(products[:reached])})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    gn._FLOOR = default_floor
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("variants", nargs="+", type=_variant)
    args = parser.parse_args(argv)
    sweep(args.size, args.variants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
