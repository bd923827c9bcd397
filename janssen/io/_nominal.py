"""The nominal X-ray geometry janssen uses when a dataset does not state its own.

A hard X-ray far-field setup: wavelength 0.1 nm (12.4 keV), a 75 um detector pixel
(a common hybrid photon-counting camera) at 0.96 m. The far-field object pixel
`wavelength * distance / (N * camera_pixel)` is then 10 nm for a 128-pixel frame,
20 nm for 64 pixels and 5 nm for 256 pixels.
"""

#: Wavelength in metres (0.1 nm, about 12.4 keV photons).
NOMINAL_WAVELENGTH = 1.0e-10
#: Sample-to-detector distance in metres.
NOMINAL_DISTANCE = 0.96
#: Detector pixel pitch in metres.
NOMINAL_CAMERA_PIXEL_SIZE = 75.0e-6
