"""Microscopes: forward models composed from optics, written for one scan position."""

from ._base import AbstractMicroscope as AbstractMicroscope
from ._far_field import FarFieldMicroscope as FarFieldMicroscope
