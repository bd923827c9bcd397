"""Figures (matplotlib, imported lazily)."""

from ._figures import (
    PHASE_PERCENTILES as PHASE_PERCENTILES,
    phase_limits as phase_limits,
    plot_loss as plot_loss,
    plot_object as plot_object,
    plot_probe as plot_probe,
    plot_residuals as plot_residuals,
    save_figures as save_figures,
)
