"""Figures (matplotlib, imported lazily)."""

from ._figures import (
    plot_loss as plot_loss,
    plot_object as plot_object,
    plot_probe as plot_probe,
    save_figures as save_figures,
)
