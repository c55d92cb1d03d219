"""`lmatlas catalog [list|show NAME]`: the landmark models, filtered, sorted, shown or plotted."""

from __future__ import annotations

import json
import math
import sys
import textwrap

from ..errors import LmatlasError

ARCH_COLOURS = {
    "encoder": "#1f77b4",
    "decoder": "#d62728",
    "encoder-decoder": "#2ca02c",
    "other": "#8c564b",
}


HELP = "the landmark models: list and filter them, show one, plot size against year"
DESCRIPTION = (
    "List the catalogue of landmark models (`lmatlas catalog`), show one entry "
    "(`lmatlas catalog show GPT-3`), or plot parameters against year (--plot FILE.png)."
)


def arguments(p) -> None:
    """The arguments of `lmatlas catalog`, on its parser (made by ``lmatlas.cli``)."""
    p.add_argument("action", nargs="?", default="list", metavar="list|show", help="list (default) or show")
    p.add_argument("name", nargs="*", help="with show: the model's name or alias")
    p.add_argument("--arch", help="encoder, decoder, encoder-decoder or other")
    p.add_argument("--year", help="a year or a range: 2019, 2019-2021, 2021-")
    p.add_argument("--min-params", help="at least this many parameters: 1B, 350M, 2e9")
    p.add_argument("--max-params", help="at most this many parameters")
    p.add_argument("--open", action="store_true", help="only models whose weights can be downloaded")
    p.add_argument("--sort", default="year", help="year (default), params, tokens, name or organisation")
    p.add_argument("--reverse", action="store_true", help="largest / latest first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--plot", metavar="FILE", help="draw parameters against year to FILE (.png, .svg or .pdf)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import catalog

    action, names = args.action, list(args.name)
    if action not in ("list", "show"):
        # `lmatlas catalog bert` reads as `lmatlas catalog show bert`.
        action, names = "show", [action, *names]
    if action == "show":
        if not names:
            raise LmatlasError("catalog show needs a model name, e.g. lmatlas catalog show GPT-3")
        model = catalog.find(" ".join(names))
        if args.json:
            print(json.dumps(model.to_dict(), indent=2, ensure_ascii=False))
        else:
            print(format_entry(model))
        return 0
    if names:
        raise LmatlasError(f"catalog list takes no names; to see one model use: lmatlas catalog show {' '.join(names)}")
    chosen = catalog.search(
        arch=args.arch, year=args.year, min_params=args.min_params, max_params=args.max_params,
        open_only=args.open, sort=args.sort, reverse=args.reverse,
    )
    if args.plot:
        shown, left_out = plot_models(chosen, args.plot)
        note = f" ({left_out} without a published size left out)" if left_out else ""
        message = f"wrote {args.plot}: {shown} models{note}"
    if args.json:
        print(json.dumps([m.to_dict() for m in chosen], indent=2, ensure_ascii=False))
    elif not args.plot:
        print(format_table(chosen))
    if args.plot:
        # With --json, standard output stays pure JSON.
        print(message, file=sys.stderr if args.json else sys.stdout)
    return 0


def format_table(chosen) -> str:
    from ..catalog import format_count

    if not chosen:
        return "no model matches these filters"
    header = ("year", "name", "architecture", "params", "tokens", "weights", "organisation", "lmatlas runs")
    rows = []
    for m in chosen:
        runs = "-"
        if m.lmatlas and m.lmatlas.preset:
            runs = m.lmatlas.preset + (" (stand-in)" if m.lmatlas.stand_in else "")
        elif m.lmatlas and m.lmatlas.architectures:
            runs = "shape only"
        org = m.organisation if len(m.organisation) <= 30 else m.organisation[:29] + "…"
        rows.append((str(m.year), m.name, m.architecture, format_count(m.params), format_count(m.training_tokens), m.weights, org, runs))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {3, 4}  # numbers align right
    lines = []
    for r in [header, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(chosen)} models")
    return "\n".join(lines)


def format_entry(m) -> str:
    from ..catalog import architecture_preset, format_count
    from ..estimate import count_params

    wrap = lambda text: textwrap.fill(text, width=88, initial_indent="  ", subsequent_indent="  ")  # noqa: E731
    arch = m.architecture + (f" ({m.architecture_note})" if m.architecture_note else "")
    lines = [m.name, "=" * len(m.name)]
    if m.aliases:
        lines.append(f"also called   {', '.join(m.aliases)}")
    lines += [
        f"year          {m.year}",
        f"organisation  {m.organisation}",
        f"paper         {m.paper.title}",
        f"              {m.paper.url}",
    ]
    if m.homepage:
        lines.append(f"homepage      {m.homepage}")
    lines += [
        f"architecture  {arch}",
        f"modality      {m.modality}",
        f"parameters    {format_count(m.params)}" + (f" ({m.params:,})" if m.params else " (not published)"),
        f"tokens        {format_count(m.training_tokens)}" + ("" if m.training_tokens else " (not published)"),
    ]
    if m.training_data:
        lines.append("training data")
        lines.append(wrap(m.training_data))
    lines.append(f"weights       {m.weights}")
    lines.append("summary")
    lines.append(wrap(m.summary))
    if m.lmatlas:
        lm = m.lmatlas
        lines.append("lmatlas")
        if lm.preset:
            lines.append(f"  runs with the {lm.preset} preset" + (f", through a stand-in: {lm.stand_in}" if lm.stand_in else ""))
        for ckpt in lm.checkpoints:
            lines.append(f"    {ckpt}")
        for name in lm.architectures:
            shape = architecture_preset(name)
            lines.append(
                f"  shape {name}: {format_count(count_params(shape).total, 4)} parameters"
                f" (lmatlas estimate {name}; lmatlas.catalog.architecture({name!r}))"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The picture: parameters against year
# --------------------------------------------------------------------------------------------


def plot_models(chosen, path: str) -> tuple[int, int]:
    """Draw parameters (log scale) against year, coloured by architecture, every point named.

    Filled markers have open weights, hollow ones closed; squares are not text-only models.
    Returns (models drawn, models left out for want of a size).
    """
    from ..plots import check_path, pyplot, save_figure

    try:
        out = check_path(path)
    except LmatlasError as e:
        raise LmatlasError(f"--plot {e}") from None
    sized = [m for m in chosen if m.params]
    if not sized:
        raise LmatlasError("--plot: none of the chosen models has a published size to plot")
    plt = pyplot("--plot")
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    from ..catalog import format_count

    # Spread the models of one year sideways, smallest left, so that points and names part.
    by_year: dict[int, list] = {}
    for m in sized:
        by_year.setdefault(m.year, []).append(m)
    xs = {}
    for year, group in by_year.items():
        group.sort(key=lambda m: m.params)
        n = len(group)
        for i, m in enumerate(group):
            xs[m.name] = year + (0.0 if n == 1 else -0.34 + 0.68 * i / (n - 1))

    fig, ax = plt.subplots(figsize=(15, 9), dpi=150)
    ax.set_yscale("log")
    for m in sized:
        colour = ARCH_COLOURS[m.architecture]
        ax.scatter(
            xs[m.name],
            m.params,
            s=70,
            marker="o" if m.modality == "text" else "s",
            facecolors=colour if m.is_open else "white",
            edgecolors=colour,
            linewidths=1.8,
            zorder=3,
        )
    years = sorted(by_year)
    ax.set_xlim(years[0] - 0.5, years[-1] + 0.5)
    for year in range(years[0], years[-1] + 1, 2):  # alternate bands show which year a point is in
        ax.axvspan(year - 0.5, year + 0.5, color="0.94", zorder=0)
    lo = min(m.params for m in sized)
    hi = max(m.params for m in sized)
    ax.set_ylim(10 ** math.floor(math.log10(lo) - 0.3), 10 ** math.ceil(math.log10(hi) + 0.3))
    ax.set_xticks(range(years[0], years[-1] + 1))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_count(v)))
    ax.grid(axis="y", which="major", alpha=0.35)
    ax.set_xlabel("year of the paper")
    ax.set_ylabel("parameters (log scale)")
    ax.set_title("Landmark models: parameters against year", fontsize=15, pad=12)

    _label_points(fig, ax, [(xs[m.name], m.params, m.name, ARCH_COLOURS[m.architecture]) for m in sized])

    # The legend names only what the picture shows.
    present = {m.architecture for m in sized}
    handles = [
        Line2D([], [], marker="o", ls="", color=c, markersize=8, label=a) for a, c in ARCH_COLOURS.items() if a in present
    ]
    grey = dict(ls="", markeredgecolor="grey", markersize=8)
    if any(m.is_open for m in sized):
        handles.append(Line2D([], [], marker="o", markerfacecolor="grey", label="open weights", **grey))
    if any(not m.is_open for m in sized):
        handles.append(Line2D([], [], marker="o", markerfacecolor="white", label="closed weights", **grey))
    if any(m.modality != "text" for m in sized):
        handles.append(Line2D([], [], marker="s", markerfacecolor="white", label="not text-only", **grey))
    ax.legend(handles=handles, loc="upper left", fontsize=9, framealpha=0.9)
    missing = [m.name for m in chosen if not m.params]
    if missing:
        text = f"No published size, not drawn: {', '.join(missing)}."
        fig.text(0.01, 0.005, textwrap.fill(text, 200), fontsize=7.5, color="dimgrey", va="bottom")
    fig.tight_layout(rect=(0, 0.03 if missing else 0, 1, 1))
    save_figure(fig, out)
    return len(sized), len(missing)


def _label_points(fig, ax, points) -> None:
    """Name every point, trying a few places around it until the name overlaps nothing."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # Keep names off the markers too: a box around each point, in display pixels.
    taken = []
    for x, y, _, _ in points:
        px, py = ax.transData.transform((x, y))
        taken.append((px - 6, py - 6, px + 6, py + 6))
    candidates = [
        (7, 0, "left"), (-7, 0, "right"), (7, 8, "left"), (7, -8, "left"), (-7, 8, "right"),
        (-7, -8, "right"), (7, 16, "left"), (7, -16, "left"), (-7, 16, "right"), (-7, -16, "right"),
        (7, 24, "left"), (7, -24, "left"),
    ]
    axes_box = ax.get_window_extent(renderer)
    for x, y, name, colour in sorted(points, key=lambda p: -p[1]):
        placed = None
        for dx, dy, ha in candidates:
            text = ax.annotate(
                name, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va="center",
                fontsize=8, color=colour, zorder=4,
            )
            bb = text.get_window_extent(renderer)
            box = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
            inside = axes_box.x0 <= box[0] and box[2] <= axes_box.x1 and axes_box.y0 <= box[1] and box[3] <= axes_box.y1
            if inside and not any(_overlap(box, t) for t in taken):
                placed = box
                break
            text.remove()
        if placed is None:  # nowhere free: the first place, with a thin leader line
            text = ax.annotate(
                name, (x, y), xytext=(10, 30), textcoords="offset points", ha="left", va="center",
                fontsize=8, color=colour, zorder=4, arrowprops=dict(arrowstyle="-", color=colour, lw=0.5),
            )
            bb = text.get_window_extent(renderer)
            placed = (bb.x0, bb.y0, bb.x1, bb.y1)
        taken.append(placed)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
