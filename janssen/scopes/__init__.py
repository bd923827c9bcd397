"""Microscopes: forward models composed from optics, written for one scan position."""

from ._base import AbstractMicroscope as AbstractMicroscope
from ._detector import DetectorResponse as DetectorResponse, with_detector as with_detector
from ._diffuser import diffuser_microscope as diffuser_microscope
from ._far_field import FarFieldMicroscope as FarFieldMicroscope
from ._near_field import NearFieldMicroscope as NearFieldMicroscope
from ._simple import SimpleMicroscope as SimpleMicroscope, simple_microscope as simple_microscope
from ._train import AbstractTrainMicroscope as AbstractTrainMicroscope, TrainMicroscope as TrainMicroscope
