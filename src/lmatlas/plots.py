"""matplotlib, set up once for every plot lmatlas draws (loss curves, topic maps, the catalogue).

matplotlib is optional (the ``plot`` extra); nothing imports it until a plot is drawn.
"""

from __future__ import annotations

from .errors import LmatlasError


def pyplot(what: str):
    """``matplotlib.pyplot`` drawing to files only (the Agg backend: no display needed).
    ``what`` names the plot in the error raised when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LmatlasError(f"{what} needs matplotlib: pip install matplotlib (or the plot extra: "
                           "pip install 'lmatlas[plot]')") from None
    return plt


__all__ = ["pyplot"]
