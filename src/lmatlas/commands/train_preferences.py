"""The flags of `lmatlas train reward|dpo|grpo|rloo|ppo`: learning from preferences (see
``lmatlas.training.alignment_recipes``)."""

from __future__ import annotations

from ..errors import LmatlasError


def arguments(p) -> None:
    """The preference objectives' flags, on the parser of `lmatlas train`."""
    g = p.add_argument_group("preferences (reward, dpo, grpo, rloo, ppo)")
    g.add_argument("--max-length", type=int, default=512, help="tokens of prompt and reply (default 512)")
    g.add_argument("--centring", type=float, default=None, help="reward: weight of the term keeping rewards near 0")
    g.add_argument("--ref", default=None, help="dpo, grpo, rloo, ppo: the frozen reference (default: --model)")
    g.add_argument("--beta", type=float, default=None, help="dpo: strength (default 0.1); online: KL weight (0.04)")
    g.add_argument("--loss", default="sigmoid", help="dpo: sigmoid, ipo or hinge")
    g.add_argument("--reward", default=None, help="grpo, rloo, ppo: a reward model, or module:function (or file.py:function)")
    g.add_argument("--group", type=int, default=4, help="grpo, rloo, ppo: replies sampled per prompt (default 4)")
    g.add_argument("--max-new-tokens", type=int, default=32, help="grpo, rloo, ppo: reply length (default 32)")
    g.add_argument("--sample-temperature", type=float, default=1.0, help="grpo, rloo, ppo: sampling temperature")
    g.add_argument("--clip-range", dest="clip_range", type=float, default=0.2, help="ppo, grpo: ratio clipping (0.2)")
    g.add_argument("--updates", type=int, default=1, help="grpo, rloo, ppo: optimizer steps per rollout")
    g.add_argument("--gamma", type=float, default=1.0, help="ppo: discount (default 1)")
    g.add_argument("--lam", type=float, default=0.95, help="ppo: GAE lambda (default 0.95)")
    g.add_argument("--value-coef", type=float, default=0.1, help="ppo: weight of the value loss (default 0.1)")


def fields(args) -> dict:
    """The recipe fields the flags set."""
    if len(args.data) != 1:
        raise LmatlasError(f"--data takes one JSON Lines file for {args.objective}, not {len(args.data)}")
    if args.val and len(args.val) != 1:
        raise LmatlasError(f"--val takes one JSON Lines file for {args.objective}, not {len(args.val)}")
    out = dict(model=args.model, data=args.data[0], val=args.val[0] if args.val else None,
               val_fraction=args.val_fraction, max_length=args.max_length, centring=args.centring, ref=args.ref,
               loss=args.loss, reward=args.reward or "", group=args.group, max_new_tokens=args.max_new_tokens,
               sample_temperature=args.sample_temperature, clip=args.clip_range, updates=args.updates, gamma=args.gamma,
               lam=args.lam, value_coef=args.value_coef)
    if args.beta is not None:
        out["beta"] = args.beta
    return out
