"""The reconstruction engines; `janssen.invert` exports them.

`gauss_newton`, `gradient` and `optimistix` (lineax, optax, optimistix) are not imported here:
`janssen.invert` imports them on first use.
"""

from .base import AbstractEngine as AbstractEngine, AbstractFixedLengthEngine as AbstractFixedLengthEngine
from .curvature import CurvatureSearch as CurvatureSearch, CurvatureState as CurvatureState
from .phase_field import PhaseFieldSearch as PhaseFieldSearch, PhaseFieldState as PhaseFieldState
from .pie import (
    EPIE as EPIE,
    RPIE as RPIE,
    AbstractPIE as AbstractPIE,
    MomentumPIE as MomentumPIE,
    PIEState as PIEState,
)
from .positions import PositionLM as PositionLM
