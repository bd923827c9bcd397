"""Reconstruction engines, the `reconstruct` driver and the seed API."""

from ._engines.base import AbstractEngine as AbstractEngine
from ._engines.pie import AbstractPIE as AbstractPIE, EPIE as EPIE, MomentumPIE as MomentumPIE, PIEState as PIEState, RPIE as RPIE
from ._progress import (
    AbstractProgressMeter as AbstractProgressMeter,
    NoProgressMeter as NoProgressMeter,
    TextProgressMeter as TextProgressMeter,
)
from ._reconstruct import data_residual as data_residual, reconstruct as reconstruct
from ._results import RESULTS as RESULTS
from ._solution import Solution as Solution
from ._trainable import trainable_spec as trainable_spec
