"""Outcome codes of a reconstruction."""

import equinox.internal as eqxi


class RESULTS(eqxi.Enumeration):
    """Why a reconstruction stopped. `RESULTS[code]` is the human-readable message."""

    successful = ""
    max_iterations_reached = ""
    converged = ""
    nonfinite = (
        "A non-finite (NaN or inf) loss or parameter appeared; the run stopped and returned the "
        "finite state with the lowest loss. Lower the step sizes or check the data for bad pixels."
    )
    interrupted = "The run was interrupted (e.g. Ctrl-C); the last completed iteration was kept."
    positions_off_object = (
        "A refined scan position put the probe partly off the object; the run stopped and returned "
        "the last state with every probe window inside it. Pad the object or lower the position step."
    )
    diverged = (
        "The loss rose above `divergence` times its lowest value; the run stopped and returned the "
        "state with the lowest loss. Lower the step sizes (learning rate, probe or object step)."
    )
    running = "The run had not ended when this was saved (a checkpoint written during the run)."
