"""The PIE family: ePIE, rPIE and momentum-accelerated PIE.

- `kernel`: one position's exit-wave correction and the update directions;
- `schedules`: sequential and batched sweeps over the positions;
- `modes`: mode-power refits for mixed states;
- `gauge`: the object-probe scale and phase-ramp gauges;
- `engines`: the state, one iteration, and the engines `EPIE`, `RPIE`, `MomentumPIE`.
"""

from .engines import (
    EPIE as EPIE,
    RPIE as RPIE,
    AbstractPIE as AbstractPIE,
    MomentumPIE as MomentumPIE,
    PIEState as PIEState,
)
