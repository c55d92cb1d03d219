"""``--ray [ADDRESS]`` and its settings, for the commands that run a model over many inputs
(`search build`, `embed`, `run`): the flags map onto ``lmatlas.ray_data.RayOptions``."""

from __future__ import annotations

from pathlib import Path

from ..errors import LmatlasError
from ..ray_data import RayOptions, import_ray

# RayOptions' fields (as the library's messages name them) -> their flags.
FLAGS = {"ray": "--ray", "actors": "--ray-actors", "cpus_per_actor": "--ray-cpus-per-actor",
         "rows_per_batch": "--ray-batch-size", "timeout": "--ray-timeout"}
_SETTINGS = {"actors": "ray_actors", "cpus_per_actor": "ray_cpus_per_actor", "rows_per_batch": "ray_batch_size",
             "timeout": "ray_timeout"}


def add_ray_options(parser) -> None:
    defaults = RayOptions()
    g = parser.add_argument_group("Ray (the model work on a Ray cluster, with pip install 'lmatlas[ray]')")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the model on Ray Data: on the cluster whose head is at ADDRESS (HOST:PORT), or without "
                   "an address on a Ray instance started on this machine for the command")
    g.add_argument("--ray-actors", type=int, default=None, metavar="N",
                   help="model copies, each loaded once (default: one per CPU of the cluster)")
    g.add_argument("--ray-cpus-per-actor", type=float, default=None, metavar="X",
                   help=f"CPUs each actor reserves (default {defaults.cpus_per_actor:g}: a fraction leaves CPUs "
                   "for Ray's own tasks)")
    g.add_argument("--ray-batch-size", type=int, default=None, metavar="N",
                   help=f"inputs an actor takes at a time (default {defaults.rows_per_batch})")
    g.add_argument("--ray-timeout", type=float, default=None, metavar="S",
                   help=f"give up when no results have come back for S seconds (default {defaults.timeout:g})")


def ray_options(args, scratch: Path | None = None) -> RayOptions | None:
    """The command's ``RayOptions``, or None without ``--ray``; ``scratch``: where the shards'
    temporary folder goes (beside the output)."""
    given = {name: getattr(args, flag) for name, flag in _SETTINGS.items() if getattr(args, flag) is not None}
    if args.ray is None:
        if given:
            raise LmatlasError(f"{FLAGS[next(iter(given))]} needs --ray")
        return None
    opts = RayOptions(address=args.ray or None, scratch=scratch, **given)
    import_ray()  # a missing Ray is said before any input is read
    return opts
