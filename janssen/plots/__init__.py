"""Figures (matplotlib, imported lazily) and the HTML report of a result file."""

from ._comparison import align_to_truth as align_to_truth, plot_truth_comparison as plot_truth_comparison
from ._figures import (
    DISPLAY_LIMIT as DISPLAY_LIMIT,
    LOSS_LABEL as LOSS_LABEL,
    PHASE_PERCENTILES as PHASE_PERCENTILES,
    beam_region as beam_region,
    decimate as decimate,
    decimation_note as decimation_note,
    display_factor as display_factor,
    illuminated_region as illuminated_region,
    loss_floor as loss_floor,
    phase_limits as phase_limits,
    plot_loss as plot_loss,
    plot_object as plot_object,
    plot_probe as plot_probe,
    plot_residuals as plot_residuals,
    scale_bar_length as scale_bar_length,
)
from ._patterns import frame_r as frame_r, plot_patterns as plot_patterns, select_frames as select_frames
from ._report import ReportError as ReportError, write_report as write_report
from ._save import pattern_frames as pattern_frames, save_figures as save_figures
