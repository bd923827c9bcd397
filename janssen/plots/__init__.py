"""Figures (matplotlib, imported lazily)."""

from ._figures import (
    plot_loss as plot_loss,
)
from ._figures import (
    plot_object as plot_object,
)
from ._figures import (
    plot_probe as plot_probe,
)
from ._figures import (
    save_figures as save_figures,
)
