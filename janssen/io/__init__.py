"""Data: `MicroscopeData`, simulation with ground truth, CXI files and checkpoints."""

from .._data import MicroscopeData as MicroscopeData
from ._cxi import (
    DETECTOR_ORIENTATIONS as DETECTOR_ORIENTATIONS,
    CXIError as CXIError,
    read_cxi as read_cxi,
    read_ground_truth as read_ground_truth,
    write_cxi as write_cxi,
)
from ._geometry_check import (
    GeometryError as GeometryError,
    ObjectGrid as ObjectGrid,
    check_geometry as check_geometry,
)
from ._lazy import CXIFrames as CXIFrames
from ._results import (
    read_result as read_result,
    temporary_path as temporary_path,
    write_result as write_result,
)
from ._siemens import MeasuredDataset as MeasuredDataset, load_siemens_star as load_siemens_star
from ._simulate import (
    SimulatedDataset as SimulatedDataset,
    fermat_spiral_scan as fermat_spiral_scan,
    make_focused_probe as make_focused_probe,
    make_test_object as make_test_object,
    raster_scan as raster_scan,
    simulate as simulate,
    simulate_measurement as simulate_measurement,
    simulate_preset as simulate_preset,
)
from ._simulate_file import (
    SimulatedFile as SimulatedFile,
    simulate_cxi as simulate_cxi,
    simulate_preset_cxi as simulate_preset_cxi,
)
from ._simulate_near import (
    SimulatedNearFieldDataset as SimulatedNearFieldDataset,
    make_near_field_probe as make_near_field_probe,
    simulate_near_field as simulate_near_field,
)
