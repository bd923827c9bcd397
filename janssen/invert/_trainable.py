"""Which leaves of a microscope an engine refines: `trainable=` to a boolean filter spec."""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu


def _get(tree: Any, path: str) -> Any:
    node, walked = tree, []
    for part in path.split("."):
        if part.isdigit() and isinstance(node, tuple | list) and int(part) < len(node):
            # A member of a sequence (e.g. an optical train's `members.2`).
            node = node[int(part)]
            walked.append(part)
            continue
        if not hasattr(node, part):
            raise ValueError(
                f"`trainable`: {type(tree).__name__} has no parameter '{path}' "
                f"('{part}' is not a field of {type(node).__name__})"
            )
        node = getattr(node, part)
        walked.append(part)
        if node is None:
            # An optional term left out (e.g. `detector=None`): say so, rather than "not an array".
            unset = ".".join(walked)
            raise ValueError(
                f"`trainable`: {type(tree).__name__} has no parameter '{path}': its '{unset}' is None "
                f"(build the microscope with a `{unset}` to refine it)"
            )
    return node


def _expand(names: Sequence[str], model: Any) -> list[str]:
    """Dotted leaf paths of `trainable=` names: the names `model` declares (`trainable_aliases`), else paths."""
    declared = model.trainable_aliases()
    paths: list[str] = []
    for name in names:
        alias = declared.get(name, name)
        paths.extend([alias] if isinstance(alias, str) else alias)
    return paths


def refines(spec: Any, model: Any, *names: str) -> bool:
    """Whether `spec` selects every leaf that the `trainable=` names stand for in `model`.

    The names are the microscope's (`trainable_aliases`: `"object"`, `"probe"`…), so the
    engines and constraints ask for parts by name and never spell a leaf path.
    """
    return set(_expand(names, model)) <= set(selected_paths(spec, spec))


def is_refinable(leaf: Any) -> bool:
    """Inexact arrays are the leaves an engine may refine."""
    return eqx.is_inexact_array(leaf)


def trainable_spec(model: Any, trainable: Any) -> Any:
    """Turn `trainable` into a filter spec: a PyTree like `model` with a bool per leaf.

    `trainable` may be

    - a sequence of names: fields paths such as `"sample.sample"` or `"aperture.diameter"`,
      or the short names `object`, `probe`, `positions`, `distance`, `zoom`, `aperture`,
      and those the microscope declares (`background`, `frame_scale` of its `detector`)
      (`distance` of a `FarFieldMicroscope` without a propagator is its object pixel
      `sample.dx = wavelength * distance / (N * camera_pixel)`: the FFT far field's
      geometry);
    - a function `model -> leaf or tuple of leaves` (as for `equinox.tree_at`);
    - a PyTree of bools with the structure of `model` (an `equinox` filter spec).

    Raises `ValueError` when it names something the model lacks, or selects nothing.
    """
    false_spec = jtu.tree_map(lambda _: False, model)
    if isinstance(trainable, str):
        trainable = [trainable]
    if isinstance(trainable, Sequence):
        paths = _expand(trainable, model)
        for path in paths:
            leaf = _get(model, path)
            if not is_refinable(leaf):
                raise ValueError(f"`trainable`: '{path}' is not a floating-point array and cannot be refined")
        where = lambda m: tuple(_get(m, p) for p in paths)  # noqa: E731
        spec = eqx.tree_at(where, false_spec, replace=(True,) * len(paths))
    elif isinstance(trainable, Callable) and not isinstance(trainable, eqx.Module):

        def where(m):
            picked = trainable(m)
            return picked if isinstance(picked, tuple) else (picked,)

        picked = where(model)
        spec = eqx.tree_at(where, false_spec, replace=(True,) * len(picked))
    else:
        spec = trainable
        if jtu.tree_structure(spec) != jtu.tree_structure(false_spec):
            raise ValueError("`trainable`: a filter spec must have the same PyTree structure as the microscope")
    spec = jtu.tree_map(lambda s, leaf: bool(s) and is_refinable(leaf), spec, model)
    if not any(jtu.tree_leaves(spec)):
        raise ValueError("`trainable` selects no floating-point array of the microscope: nothing would be refined")
    return spec


def fixed_on_grid(model: Any, spec: Any, tolerance: float = 1e-3) -> bool:
    """Whether `model`'s positions lie on its sample's pixel grid and `spec` keeps them there.

    True when no selected leaf moves a position against the grid (neither `positions` nor
    a `sample` leaf other than the object itself, such as the pixel `sample.dx`) and every
    position is within `tolerance` pixels of the grid (`AbstractMicroscope.on_grid`). Then
    an engine may predict with `on_grid=True` for its whole run: one FFT per position
    fewer. Decided on the host, once, like the PIE engines' sub-pixel switch. (The
    microscopes' `locate` reads only `positions` and `sample.dx`; a subclass whose
    `locate` reads another leaf must keep that leaf out of `trainable` for this to hold.)
    """
    paths = selected_paths(spec, spec)
    moving = [p for p in paths if p == "positions" or (p.startswith("sample.") and p != "sample.sample")]
    return not moving and model.on_grid(tolerance)


def selected_paths(model: Any, spec: Any) -> list[str]:
    """Dotted paths of the selected leaves (for messages and result files)."""
    leaves = jtu.tree_leaves_with_path(spec)
    return [jtu.keystr(path).lstrip(".") for path, flag in leaves if flag]


def trainable_paths(model: Any, trainable: Any) -> list[str]:
    """The dotted leaf paths that `trainable=` selects in `model`, in the model's leaf order.

    **Arguments:**

    - `model`: the microscope.
    - `trainable`: as for `trainable_spec` (names, paths, a function or a filter spec).

    **Returns:**

    The paths, e.g. `["probe.modes", "sample.sample", "positions"]` for a far-field
    microscope and `["object", "probe", "positions"]`.

    **Raises:** `ValueError` as `trainable_spec` does.
    """
    return selected_paths(model, trainable_spec(model, trainable))


def all_finite(tree: Any) -> Any:
    """A 0-d bool array: every inexact leaf of `tree` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
