"""matplotlib, set up once for every plot lmatlas draws (loss curves, topic maps, the catalogue).

matplotlib is optional (the ``plot`` extra); nothing imports it until a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

from .errors import LmatlasError

FORMATS = (".png", ".pdf", ".svg")


def check_path(path) -> Path:
    """``path`` as a plot can be written to it: a name in one of ``FORMATS``, in a folder that
    exists (checked before the work that the plot draws)."""
    out = Path(path)
    if out.suffix.lower() not in FORMATS:
        raise LmatlasError(f"{path}: the file must end in {', '.join(FORMATS)}")
    if not out.parent.exists():
        raise LmatlasError(f"{path}: no such folder {out.parent}")
    return out


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


def save_figure(fig, path) -> None:
    """Write ``fig`` to ``path`` (its format from the name) and close it; one sentence naming the
    file when it cannot be written."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path)
    except OSError as e:
        raise LmatlasError(f"{path}: cannot write the file ({e.strerror or e})") from None
    finally:
        plt.close(fig)


__all__ = ["FORMATS", "check_path", "pyplot", "save_figure"]
