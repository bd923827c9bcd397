"""The reconstruction engines; `janssen.invert` exports them."""

from .base import AbstractEngine as AbstractEngine, AbstractFixedLengthEngine as AbstractFixedLengthEngine
from .curvature import CurvatureSearch as CurvatureSearch, CurvatureState as CurvatureState
from .gauss_newton import GaussNewton as GaussNewton
from .gradient import Gradient as Gradient
from .optimistix import OptimistixLeastSquares as OptimistixLeastSquares
from .phase_field import PhaseFieldSearch as PhaseFieldSearch, PhaseFieldState as PhaseFieldState
from .pie import (
    EPIE as EPIE,
    RPIE as RPIE,
    AbstractPIE as AbstractPIE,
    MomentumPIE as MomentumPIE,
    PIEState as PIEState,
)
from .positions import PositionLM as PositionLM
