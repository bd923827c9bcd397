"""Reconstruction engines, the `reconstruct` driver and the seed API.

The engines built on lineax, optimistix and optax (`GaussNewton`, `OptimistixLeastSquares`,
`Gradient`, and the seed functions over them) are imported on first use: the three
libraries take about 0.4 s to import, and neither the PIE engines nor the default
schedule needs them.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ._engines.gauss_newton import GaussNewton as GaussNewton, GaussNewtonEngineState as GaussNewtonEngineState
    from ._engines.gradient import Gradient as Gradient, GradientState as GradientState
    from ._engines.optimistix import (
        OptimistixLeastSquares as OptimistixLeastSquares,
        OptimistixState as OptimistixState,
        normal_cg as normal_cg,
        optimistix_engine as optimistix_engine,
    )
    from ._seed.refine import (
        profile_gn_memory as profile_gn_memory,
        simple_microscope_gn as simple_microscope_gn,
        simple_microscope_optim as simple_microscope_optim,
    )

from ._checkpoint import (
    load_solution as load_solution,
    result_name as result_name,
    save_solution as save_solution,
)
from ._constraints import (
    fix_phase_ramp as fix_phase_ramp,
    project_scan_step as project_scan_step,
    scan_gauges as scan_gauges,
)
from ._convergence import Convergence as Convergence
from ._engines.base import AbstractEngine as AbstractEngine, AbstractFixedLengthEngine as AbstractFixedLengthEngine
from ._engines.curvature import (
    AbstractMarquardtSearch as AbstractMarquardtSearch,
    CurvatureSearch as CurvatureSearch,
    CurvatureState as CurvatureState,
)
from ._engines.phase_field import (
    PhaseFieldSearch as PhaseFieldSearch,
    PhaseFieldState as PhaseFieldState,
    phase_field_order as phase_field_order,
)
from ._engines.pie import (
    EPIE as EPIE,
    RPIE as RPIE,
    AbstractPIE as AbstractPIE,
    MomentumPIE as MomentumPIE,
    PIEState as PIEState,
)
from ._engines.positions import PositionLM as PositionLM, PositionLMState as PositionLMState
from ._geometry import (
    SCALE_RANGE as SCALE_RANGE,
    GeometryResult as GeometryResult,
    ScaleSearch as ScaleSearch,
    dilate_scan as dilate_scan,
    geometry_padding as geometry_padding,
    hold_scan_scale as hold_scan_scale,
    refine_geometry as refine_geometry,
)
from ._init import (
    SEARCH_FACTORS as SEARCH_FACTORS,
    SEARCH_MIN_POSITIONS as SEARCH_MIN_POSITIONS,
    SEARCH_PIXELS as SEARCH_PIXELS,
    SEARCH_POSITIONS as SEARCH_POSITIONS,
    ProbeSearch as ProbeSearch,
    central_indices as central_indices,
    fill_bad_pixels as fill_bad_pixels,
    init_far_field_microscope as init_far_field_microscope,
    init_object as init_object,
    init_probe as init_probe,
    positions_in_object_frame as positions_in_object_frame,
    scale_probe_to_counts as scale_probe_to_counts,
    search_probe as search_probe,
)
from ._init_detector import (
    BACKGROUND_THRESHOLD as BACKGROUND_THRESHOLD,
    background_start as background_start,
    estimate_background as estimate_background,
)
from ._init_near import (
    init_near_field_microscope as init_near_field_microscope,
    near_field_pixel_size as near_field_pixel_size,
)
from ._losses import (
    AbstractLoss as AbstractLoss,
    AmplitudeLoss as AmplitudeLoss,
    IntensityLoss as IntensityLoss,
    MAELoss as MAELoss,
    MSELoss as MSELoss,
    PoissonLoss as PoissonLoss,
    RMSELoss as RMSELoss,
    create_loss_function as create_loss_function,
    loss_from_name as loss_from_name,
)
from ._metrics import illumination_map as illumination_map, object_error as object_error
from ._progress import (
    AbstractProgressMeter as AbstractProgressMeter,
    NoProgressMeter as NoProgressMeter,
    TextProgressMeter as TextProgressMeter,
)
from ._ramp import (
    align_probe_to_data as align_probe_to_data,
    level_phase_ramp as level_phase_ramp,
    remove_linear_phase as remove_linear_phase,
)
from ._rates import default_rate_factors as default_rate_factors
from ._reconstruct import DIVERGENCE_FACTOR as DIVERGENCE_FACTOR, reconstruct as reconstruct
from ._registry import (
    DEFAULT_LEARNING_RATES as DEFAULT_LEARNING_RATES,
    ENGINE_NAMES as ENGINE_NAMES,
    engine_class as engine_class,
    engine_from_name as engine_from_name,
    engine_name as engine_name,
    engine_parameter_names as engine_parameter_names,
    engine_record as engine_record,
)
from ._residual import data_residual as data_residual
from ._results import RESULTS as RESULTS
from ._schedule import (
    DEFAULT_STAGE_ITERATIONS as DEFAULT_STAGE_ITERATIONS,
    ScheduleRun as ScheduleRun,
    Stage as Stage,
    default_schedule as default_schedule,
    run_schedule as run_schedule,
)
from ._seed import (
    EpieData as EpieData,
    GaussNewtonState as GaussNewtonState,
    MixedStatePtychoData as MixedStatePtychoData,
    PtychographyParams as PtychographyParams,
    PtychographyReconstruction as PtychographyReconstruction,
    coherence_parameterized_loss as coherence_parameterized_loss,
    compute_fov_and_positions as compute_fov_and_positions,
    epie_optical as epie_optical,
    init_simple_epie as init_simple_epie,
    init_simple_microscope as init_simple_microscope,
    make_mixed_state_ptycho_data as make_mixed_state_ptycho_data,
    mixed_state_forward as mixed_state_forward,
    mixed_state_forward_single_position as mixed_state_forward_single_position,
    mixed_state_gradient_step as mixed_state_gradient_step,
    mixed_state_loss as mixed_state_loss,
    mixed_state_reconstruct as mixed_state_reconstruct,
    simple_microscope_epie as simple_microscope_epie,
    single_pie_iteration as single_pie_iteration,
    single_pie_sequential as single_pie_sequential,
    single_pie_vmap as single_pie_vmap,
)
from ._sharding import (
    POSITIONS_AXIS as POSITIONS_AXIS,
    positions_mesh as positions_mesh,
    shard_positions as shard_positions,
)
from ._solution import Solution as Solution
from ._stream import (
    SEARCH_BATCH_PIXELS as SEARCH_BATCH_PIXELS,
    init_far_field_from_file as init_far_field_from_file,
    reconstruct_from_file as reconstruct_from_file,
    search_from_file as search_from_file,
)
from ._trainable import trainable_paths as trainable_paths, trainable_spec as trainable_spec
from ._uncertainty import object_std as object_std
from ._verdict import (
    Verdict as Verdict,
    compute_verdict as compute_verdict,
    poisson_floor as poisson_floor,
    r_factor as r_factor,
)

# Name -> module, for the names imported on first use (see the module's docstring).
_LAZY = {
    **dict.fromkeys(("GaussNewton", "GaussNewtonEngineState"), "._engines.gauss_newton"),
    **dict.fromkeys(("Gradient", "GradientState"), "._engines.gradient"),
    **dict.fromkeys(
        ("OptimistixLeastSquares", "OptimistixState", "normal_cg", "optimistix_engine"), "._engines.optimistix"
    ),
    **dict.fromkeys(("profile_gn_memory", "simple_microscope_gn", "simple_microscope_optim"), "._seed.refine"),
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
