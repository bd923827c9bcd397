"""Optics: wavefronts, propagators, elements, probes, samples and scan geometry."""

from ._elements.base import AbstractElement as AbstractElement
from ._elements.circular_aperture import CircularAperture as CircularAperture
from ._elements.optical_zoom import OpticalZoom as OpticalZoom
from ._elements.phase_screen import PhaseScreen as PhaseScreen
from ._elements.thin_lens import ThinLens as ThinLens
from ._elements.zernike import ZernikeAberration as ZernikeAberration
from ._coherence import CoherentModeSet as CoherentModeSet
from ._coherence import MixedStateProbe as MixedStateProbe
from ._coherence import gaussian_schell_modes as gaussian_schell_modes
from ._coherence import gsm_parameters as gsm_parameters
from ._coherence import orthogonalize_modes as orthogonalize_modes
from ._fft import (
    centred_coordinates as centred_coordinates,
)
from ._fft import (
    centred_frequencies as centred_frequencies,
)
from ._fft import (
    fft2c as fft2c,
)
from ._fft import (
    fft2u as fft2u,
)
from ._fft import (
    fourier_shift as fourier_shift,
)
from ._fft import (
    frequency_grid as frequency_grid,
)
from ._fft import (
    ifft2c as ifft2c,
)
from ._fft import (
    ifft2u as ifft2u,
)
from ._probe import AbstractProbe as AbstractProbe
from ._probe import Probe as Probe
from ._propagator.angular_spectrum import AngularSpectrum as AngularSpectrum
from ._propagator.base import AbstractPropagator as AbstractPropagator
from ._propagator.fraunhofer import Fraunhofer as Fraunhofer
from ._propagator.fresnel import Fresnel as Fresnel
from ._propagator.scaled_fraunhofer import ScaledFraunhofer as ScaledFraunhofer
from ._sample import SampleFunction as SampleFunction
from ._scan import (
    add_to_patch as add_to_patch,
)
from ._scan import (
    extract_patch as extract_patch,
)
from ._scan import (
    object_shape_for as object_shape_for,
)
from ._scan import (
    patch_corner as patch_corner,
)
from ._scan import (
    positions_outside as positions_outside,
)
from ._scan import (
    shift_probe as shift_probe,
)
from ._scan import (
    split_corner as split_corner,
)
from ._wavefront import OpticalWavefront as OpticalWavefront
