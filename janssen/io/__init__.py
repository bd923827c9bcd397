"""Data: `MicroscopeData`, simulation with ground truth, CXI files and checkpoints."""

from ._data import MicroscopeData as MicroscopeData
