"""Optics: wavefronts, propagators, elements, probes, samples and scan geometry."""

from ._binning import PixelBinning as PixelBinning
from ._coherence import (
    CoherentModeSet as CoherentModeSet,
    MixedStateProbe as MixedStateProbe,
    extend_modes as extend_modes,
    gaussian_schell_modes as gaussian_schell_modes,
    gsm_parameters as gsm_parameters,
    orthogonalize_modes as orthogonalize_modes,
)
from ._elements.base import AbstractElement as AbstractElement, grid_coordinates as grid_coordinates
from ._elements.circular_aperture import CircularAperture as CircularAperture
from ._elements.optical_zoom import OpticalZoom as OpticalZoom
from ._elements.phase_screen import PhaseScreen as PhaseScreen
from ._elements.thin_lens import ThinLens as ThinLens
from ._elements.zernike import ZernikeAberration as ZernikeAberration
from ._fft import (
    centred_coordinates as centred_coordinates,
    centred_frequencies as centred_frequencies,
    fft2c as fft2c,
    fft2u as fft2u,
    fourier_shift as fourier_shift,
    frequency_grid as frequency_grid,
    ifft2c as ifft2c,
    ifft2u as ifft2u,
)
from ._fixed_power import FixedPowerProbe as FixedPowerProbe
from ._probe import AbstractProbe as AbstractProbe, Probe as Probe
from ._propagator.angular_spectrum import AngularSpectrum as AngularSpectrum
from ._propagator.base import AbstractPropagator as AbstractPropagator
from ._propagator.fourier import FourierTransform as FourierTransform
from ._propagator.fraunhofer import Fraunhofer as Fraunhofer
from ._propagator.fresnel import Fresnel as Fresnel
from ._propagator.scaled_fraunhofer import ScaledFraunhofer as ScaledFraunhofer
from ._sample import SampleFunction as SampleFunction
from ._scan import (
    add_to_patch as add_to_patch,
    extract_patch as extract_patch,
    object_shape_for as object_shape_for,
    patch_corner as patch_corner,
    positions_outside as positions_outside,
    put_window as put_window,
    shift_probe as shift_probe,
    split_corner as split_corner,
    take_window as take_window,
)
from ._train import OpticalTrain as OpticalTrain
from ._wavefront import OpticalWavefront as OpticalWavefront
