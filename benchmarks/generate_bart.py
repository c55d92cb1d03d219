"""Beam-search generation of BART: lmatlas against transformers, in one process.

Two shapes, both with random weights: ``BartConfig()`` as it is (BART-large's depth and width:
d_model 1024, 12 + 12 layers, 16 heads, FFN 4096, vocabulary 50,265) and BART-base's shape (the
same config with d_model 768, 6 + 6 layers, 12 heads, FFN 3072). For each: one 400-token source,
4 beams, exactly 64 new tokens (EOS forbidden until then), same weights on both sides; the two
alternate, best of ``--repeats`` each. Prints the times, the ratio, whether the tokens agree,
where lmatlas' time goes (encoder, per-step forward by part, beam bookkeeping), and the floor that
the machine's memory bandwidth sets now.

    python benchmarks/generate_bart.py [--shape both|default|base] [--repeats 3] [--source 400]
                                       [--new 64] [--beams 4] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict

import torch
from _timing import alternated_best, memory_bandwidth_gbs


class Profile:
    """Wall time of module calls by name, via forward hooks (pre and post)."""

    def __init__(self, model, names: dict[str, list]):
        self.times: dict[str, float] = defaultdict(float)
        self.handles = []
        for label, modules in names.items():
            for m in modules:
                self.handles.append(m.register_forward_pre_hook(self._start(label, m)))
                self.handles.append(m.register_forward_hook(self._stop(label, m)))

    def _start(self, label, m):
        def hook(*_):
            m._t0 = time.perf_counter()

        return hook

    def _stop(self, label, m):
        def hook(*_):
            self.times[label] += time.perf_counter() - m._t0

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--source", type=int, default=400)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--shape",
        choices=("both", "default", "base"),
        default="both",
        help="BartConfig() defaults (BART-large's shape), BART-base's shape, or both (default)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    # BartConfig()'s defaults are BART-large's depth and width; BART-base is narrower and shallower.
    base = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072)  # fmt: skip
    shapes = {
        "BartConfig() defaults": transformers.BartConfig(),
        "BART-base shape": transformers.BartConfig(**base),
    }
    if args.shape != "both":
        shapes = {k: v for k, v in shapes.items() if (args.shape == "base") == k.startswith("BART-base")}
    ratios = {name: run(name, config, args) for name, config in shapes.items()}
    if len(ratios) > 1:
        print("\n" + ", ".join(f"{name}: {ratio:.2f}x" for name, ratio in ratios.items()))


def run(name: str, config, args) -> float:
    """Time one shape, print where lmatlas' time goes; return transformers' time / lmatlas'."""
    import transformers

    import lmatlas

    torch.manual_seed(0)
    ref = transformers.BartForConditionalGeneration(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        ref.save_pretrained(folder)
        ours = lmatlas.load(folder)

    ids = torch.randint(4, config.vocab_size, (1, args.source), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    kw = dict(num_beams=args.beams, max_new_tokens=args.new, min_new_tokens=args.new)
    print(
        f"\ntorch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads; "
        f"{name}, source {args.source} tokens, {args.beams} beams, {args.new} new tokens"
    )

    def hf():
        with torch.inference_mode():
            return ref.generate(input_ids=ids, attention_mask=mask, **kw)

    def me():
        return ours.generate(ids, mask, **kw)

    times = alternated_best({"lmatlas": me, "transformers": hf}, args.repeats)
    (t_ours, out_ours), (t_hf, out_hf) = times["lmatlas"], times["transformers"]
    assert out_ours.shape[1] == args.new + 1, out_ours.shape
    print(f"transformers: {t_hf:6.2f} s")
    print(f"lmatlas:      {t_ours:6.2f} s")
    print(f"ratio transformers / lmatlas: {t_hf / t_ours:.2f}x")
    print(f"same tokens: {torch.equal(out_ours, out_hf)}")

    # Where lmatlas' time goes.
    dec = ours.backbone.decoder
    layers = list(dec.layers)
    prof = Profile(
        ours,
        {
            "encoder (once)": [ours.backbone.encoder],
            "decoder self-attention": [layer.attn for layer in layers],
            "decoder cross-attention": [layer.cross_attn for layer in layers],
            "decoder MLP": [layer.mlp for layer in layers],
            "LM head": [ours.head],
            "decoder (all)": [dec],
        },
    )
    t = time.perf_counter()
    me()
    total = time.perf_counter() - t
    prof.remove()
    times = prof.times
    print(f"\nlmatlas, profiled run: {total:.2f} s")
    for label in ("encoder (once)", "decoder self-attention", "decoder cross-attention", "decoder MLP", "LM head"):
        print(f"  {label:26s} {times[label]:6.2f} s  {100 * times[label] / total:5.1f}%")
    rest = times["decoder (all)"] - sum(
        times[k] for k in ("decoder self-attention", "decoder cross-attention", "decoder MLP")
    )
    print(f"  {'decoder norms, embeddings':26s} {rest:6.2f} s  {100 * rest / total:5.1f}%")
    engine = total - times["encoder (once)"] - times["decoder (all)"] - times["LM head"]
    print(f"  {'beam search, processors':26s} {engine:6.2f} s  {100 * engine / total:5.1f}%")
    # What each step must read: the decoder layers' weights (not the cross-attention key/value
    # projections, applied once to the source) and the LM head.
    per_step = sum(
        p.numel() * p.element_size()
        for pname, p in dec.layers.named_parameters()
        if ".cross_attn.kv." not in pname
    ) + ours.head.decoder.weight.numel() * ours.head.decoder.weight.element_size()
    gb = per_step * args.new / 1e9
    steps = times["decoder (all)"] + times["LM head"]
    print(
        f"  decoder + LM-head weights read once per step: {per_step / 1e6:.0f} MB, {gb:.1f} GB over {args.new} "
        f"steps; in the decoder and LM head that is {gb / steps:.1f} GB/s"
    )
    # The floor: the encoder as measured (it is bound by compute), then every step reading the
    # weights once at the bandwidth a plain read reaches now.
    bw = memory_bandwidth_gbs()
    floor = times["encoder (once)"] + gb / bw
    print(
        f"  memory read bandwidth now: {bw:.1f} GB/s -> floor {floor:.2f} s (encoder + weights read once per "
        f"step); the best lmatlas run took {t_ours / floor:.2f}x that, and transformers' best is "
        f"{t_hf / floor:.1f}x the floor"
    )
    return t_hf / t_ours


if __name__ == "__main__":
    main()
