"""Reconstruction engines, the `reconstruct` driver and the seed API."""

from ._checkpoint import load_solution as load_solution
from ._checkpoint import save_solution as save_solution
from ._engines.base import AbstractEngine as AbstractEngine
from ._engines.gradient import Gradient as Gradient
from ._engines.gradient import GradientState as GradientState
from ._engines.pie import EPIE as EPIE
from ._engines.pie import RPIE as RPIE
from ._engines.pie import AbstractPIE as AbstractPIE
from ._engines.pie import MomentumPIE as MomentumPIE
from ._engines.pie import PIEState as PIEState
from ._init import (
    init_far_field_microscope as init_far_field_microscope,
)
from ._init import (
    init_object as init_object,
)
from ._init import (
    init_probe as init_probe,
)
from ._init import (
    positions_in_object_frame as positions_in_object_frame,
)
from ._losses import AbstractLoss as AbstractLoss
from ._losses import AmplitudeLoss as AmplitudeLoss
from ._losses import IntensityLoss as IntensityLoss
from ._losses import MAELoss as MAELoss
from ._losses import MSELoss as MSELoss
from ._losses import PoissonLoss as PoissonLoss
from ._losses import RMSELoss as RMSELoss
from ._losses import create_loss_function as create_loss_function
from ._losses import loss_from_name as loss_from_name
from ._metrics import illumination_map as illumination_map
from ._metrics import object_error as object_error
from ._progress import (
    AbstractProgressMeter as AbstractProgressMeter,
)
from ._progress import (
    NoProgressMeter as NoProgressMeter,
)
from ._progress import (
    TextProgressMeter as TextProgressMeter,
)
from ._ramp import align_probe_to_data as align_probe_to_data
from ._reconstruct import data_residual as data_residual
from ._reconstruct import reconstruct as reconstruct
from ._results import RESULTS as RESULTS
from ._seed_optical import (
    epie_optical as epie_optical,
)
from ._seed_optical import (
    single_pie_iteration as single_pie_iteration,
)
from ._seed_optical import (
    single_pie_sequential as single_pie_sequential,
)
from ._seed_optical import (
    single_pie_vmap as single_pie_vmap,
)
from ._seed_simple import (
    compute_fov_and_positions as compute_fov_and_positions,
)
from ._seed_simple import (
    init_simple_epie as init_simple_epie,
)
from ._seed_simple import (
    init_simple_microscope as init_simple_microscope,
)
from ._seed_simple import (
    simple_microscope_epie as simple_microscope_epie,
)
from ._seed_types import (
    EpieData as EpieData,
)
from ._seed_types import (
    GaussNewtonState as GaussNewtonState,
)
from ._seed_types import (
    PtychographyParams as PtychographyParams,
)
from ._seed_types import (
    PtychographyReconstruction as PtychographyReconstruction,
)
from ._solution import Solution as Solution
from ._trainable import trainable_spec as trainable_spec
