"""Data: `MicroscopeData`, simulation with ground truth, CXI files and checkpoints."""

from ._cxi import (
    CXIError as CXIError,
)
from ._cxi import (
    read_cxi as read_cxi,
)
from ._cxi import (
    read_ground_truth as read_ground_truth,
)
from ._cxi import (
    write_cxi as write_cxi,
)
from ._data import MicroscopeData as MicroscopeData
from ._results import read_result as read_result
from ._results import write_result as write_result
from ._siemens import MeasuredDataset as MeasuredDataset
from ._siemens import load_siemens_star as load_siemens_star
from ._simulate import (
    SimulatedDataset as SimulatedDataset,
)
from ._simulate import (
    fermat_spiral_scan as fermat_spiral_scan,
)
from ._simulate import (
    make_focused_probe as make_focused_probe,
)
from ._simulate import (
    make_test_object as make_test_object,
)
from ._simulate import (
    raster_scan as raster_scan,
)
from ._simulate import (
    simulate as simulate,
)
from ._simulate import (
    simulate_measurement as simulate_measurement,
)
from ._simulate import (
    simulate_preset as simulate_preset,
)
