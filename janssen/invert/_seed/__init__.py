"""The seed API: the original janssen's documented functions over the engines.

`refine` (Gauss-Newton and optax) is not imported here: `janssen.invert` imports it on first use.
"""

from .diffuser import (
    epie_optical as epie_optical,
    single_pie_iteration as single_pie_iteration,
    single_pie_sequential as single_pie_sequential,
    single_pie_vmap as single_pie_vmap,
)
from .mixed_state import (
    MixedStatePtychoData as MixedStatePtychoData,
    coherence_parameterized_loss as coherence_parameterized_loss,
    make_mixed_state_ptycho_data as make_mixed_state_ptycho_data,
    mixed_state_forward as mixed_state_forward,
    mixed_state_forward_single_position as mixed_state_forward_single_position,
    mixed_state_gradient_step as mixed_state_gradient_step,
    mixed_state_loss as mixed_state_loss,
    mixed_state_reconstruct as mixed_state_reconstruct,
)
from .simple_microscope import (
    compute_fov_and_positions as compute_fov_and_positions,
    init_simple_epie as init_simple_epie,
    init_simple_microscope as init_simple_microscope,
    simple_microscope_epie as simple_microscope_epie,
)
from .types import (
    EpieData as EpieData,
    GaussNewtonState as GaussNewtonState,
    PtychographyParams as PtychographyParams,
    PtychographyReconstruction as PtychographyReconstruction,
)
