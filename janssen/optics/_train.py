"""`OpticalTrain`: optical members (elements and propagators) applied in order, with the reverse-order adjoint."""

from collections.abc import Sequence
from typing import Any

import equinox as eqx
from jaxtyping import Array, Float

from ._wavefront import OpticalWavefront

#: What a member of a train must have (every `AbstractElement` and `AbstractPropagator` has them).
MEMBER_METHODS = ("__call__", "adjoint_onto", "output_grid")


class OpticalTrain(eqx.Module):
    """Optical members between two planes, applied in order: `A = A_n ... A_2 A_1`.

    A member is any Module with

    - `member(wavefront) -> wavefront`, linear in the field;
    - `member.output_grid(wavelength, dx, shape) -> (dx, shape)`, the grid it maps an
      input grid onto (without touching a field);
    - `member.adjoint_onto(wavefront, dx, shape) -> wavefront`, its Hermitian adjoint in
      the physical inner product of each plane (`sum(conj(u) * v) * dx_x * dx_y`, see
      `AbstractPropagator`), returning onto the input grid `(dx, shape)`;
    - optionally `aliases`, short `trainable=` names for its parameters.

    Every `AbstractElement` (thin elements: lenses, apertures, phase screens, your own
    transmission) and every `AbstractPropagator` is one. The train's adjoint is the
    reverse fold of its members' adjoints, each told the grid its member started from
    (`planes`). A train is itself linear, so a microscope built on one
    (`janssen.scopes.TrainMicroscope`) can be updated by the PIE engines and refined by
    the gradient and least-squares engines, any member's array leaves included.

    **Arguments:**

    - `members`: the members, first to last (at least one).
    """

    members: tuple[Any, ...]

    def __init__(self, *members: Any):
        if len(members) == 1 and isinstance(members[0], Sequence):
            members = tuple(members[0])
        if not members:
            raise ValueError("`members` must hold at least one optical element or propagator, got none")
        for index, member in enumerate(members):
            missing = [name for name in MEMBER_METHODS if not callable(getattr(member, name, None))]
            if missing:
                raise ValueError(
                    f"`members[{index}]` ({type(member).__name__}) is not an optical member: it lacks "
                    f"{', '.join(missing)} (subclass janssen.optics.AbstractElement or AbstractPropagator)"
                )
        self.members = tuple(members)

    def planes(
        self, wavelength: Float[Array, ""], dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> list[tuple[Float[Array, "2"], tuple[int, int]]]:
        """The grid `(dx, shape)` before every member, then after the last: `len(members) + 1` entries."""
        grids = [(dx, tuple(shape))]
        for member in self.members:
            dx, shape = member.output_grid(wavelength, dx, shape)
            grids.append((dx, tuple(shape)))
        return grids

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        """The wavefront after the last member."""
        for member in self.members:
            wavefront = member(wavefront)
        return wavefront

    def adjoint(self, wavefront: OpticalWavefront, dx: Float[Array, "2"], shape: tuple[int, int]) -> OpticalWavefront:
        """The Hermitian adjoint (physical inner product), onto the input grid `(dx, shape)`.

        **Arguments:**

        - `wavefront`: a wavefront on the train's output grid.
        - `dx`, `shape`: the train's input grid (the output does not always determine it).

        **Returns:**

        The wavefront on the input grid.
        """
        grids = self.planes(wavefront.wavelength, dx, shape)
        for member, (before, before_shape) in zip(reversed(self.members), reversed(grids[:-1]), strict=True):
            wavefront = member.adjoint_onto(wavefront, before, before_shape)
        return wavefront

    @property
    def far_field(self) -> bool:
        """Whether any member is a far-field (Fraunhofer) transform."""
        return any(bool(getattr(member, "far_field", False)) for member in self.members)

    def scale_leaves(self) -> tuple[str, ...]:
        """Paths `members.<index>.<field>` of the members' `scale_fields`."""
        return tuple(
            f"members.{index}.{name}"
            for index, member in enumerate(self.members)
            for name in getattr(member, "scale_fields", ())
        )

    def aliases(self) -> dict[str, tuple[str, ...]]:
        """The members' short `trainable=` names, each mapped to its paths `members.<index>.<field>`.

        A name declared by several members (e.g. `distance` of two propagators) refines them all.
        """
        out: dict[str, tuple[str, ...]] = {}
        for index, member in enumerate(self.members):
            for name, paths in getattr(member, "aliases", {}).items():
                paths = (paths,) if isinstance(paths, str) else tuple(paths)
                out[name] = out.get(name, ()) + tuple(f"members.{index}.{path}" for path in paths)
        return out
