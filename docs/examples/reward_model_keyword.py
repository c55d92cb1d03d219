"""The reward model of docs/preferences.md's worked example, given more pairs: SmolLM2-135M-Instruct
with a one-output head learns which of two replies uses the requested keyword.

The pairs are sampled and labelled as in ``preferences_keyword.py`` (same prompts, same program),
with 8 replies per prompt and every topic, so there are a few hundred of them. They are split
into train, dev (which the trainer evaluates, and keeps the best checkpoint by) and test (seen by
nothing until the end); pairs for keywords no training prompt asks for measure how far the rule
carries. Accuracy is reported before training (the same model with a new, random head) and after.

Run (CPU, about half an hour on 2 cores)::

    nice python docs/examples/reward_model_keyword.py runs/reward

It writes the pairs, reward/ (log.jsonl, loss.png, model/) and results.json under the folder given.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import preferences_keyword as example  # noqa: E402  (the worked example's prompts and program)

from lmatlas.defaults import generative_model  # noqa: E402
from lmatlas.tokenizer import load_tokenizer  # noqa: E402
from lmatlas.training import RewardRecipe, TrainConfig, train  # noqa: E402
from lmatlas.training.alignment_recipes import load_language_model  # noqa: E402
from lmatlas.training.finetune import load_for_finetuning  # noqa: E402
from lmatlas.training.tasks.online import RewardModel  # noqa: E402

SAMPLES = 8
STEPS = 150 if not example.SMOKE else 2


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    model = str(generative_model())
    rng = random.Random(0)
    topics = len(example.TOPICS) if not example.SMOKE else 1
    train_prompts = example.write_jsonl(root / "prompts.jsonl", example.prompt_rows(example.KEYWORDS, rng, topics))
    held_out = example.write_jsonl(root / "held_out.jsonl", example.prompt_rows(example.HELD_OUT, rng, topics))
    base, tokenizer = load_language_model(model, "the model"), load_tokenizer(model)
    results: dict = {"model": Path(model).name}

    t0 = time.time()
    pairs, score = example.sample_pairs(base, tokenizer, train_prompts, 0, SAMPLES)
    held_pairs, held_score = example.sample_pairs(base, tokenizer, held_out, 10_000, SAMPLES)
    del base
    random.Random(1).shuffle(pairs)
    n = max(len(pairs) * 15 // 100, 1)
    test, dev, training = pairs[:n], pairs[n : 2 * n], pairs[2 * n :]
    for name, rows in (("pairs", training), ("pairs_dev", dev), ("pairs_test", test), ("pairs_held_out", held_pairs)):
        example.write_jsonl(root / f"{name}.jsonl", rows)
    results["pairs"] = {"prompts": example.count_rows(train_prompts), "held_out_prompts": example.count_rows(held_out),
                        "samples_per_prompt": SAMPLES, "train": len(training), "dev": len(dev), "test": len(test),
                        "held_out": len(held_pairs), "sample_score": score, "held_out_sample_score": held_score,
                        "seconds": time.time() - t0}
    print(json.dumps(results["pairs"]), flush=True)

    def accuracy(scorer) -> dict:
        return {"test": example.pair_accuracy(scorer, test), "held_out_keywords": example.pair_accuracy(scorer, held_pairs)}

    torch.manual_seed(0)
    untrained = load_for_finetuning(model, "sequence-classification", {0: "LABEL_0"})
    results["before"] = accuracy(RewardModel.of(untrained, tokenizer, "untrained"))
    del untrained
    print("before", json.dumps(results["before"]), flush=True)

    t0 = time.time()
    summary = train(RewardRecipe(model=model, data=root / "pairs.jsonl", val=root / "pairs_dev.jsonl", max_length=96),
                    TrainConfig(out=root / "reward", steps=STEPS, lr=2e-5, batch_size=4, warmup=8,
                                eval_every=max(STEPS // 3, 1), progress=False, seed=0))
    log = [json.loads(line) for line in (root / "reward" / "log.jsonl").read_text().splitlines()]
    results["after"] = accuracy(RewardModel(str(root / "reward" / "model")))
    results["dev_accuracy_during_training"] = [r["accuracy"] for r in log if r["split"] == "dev"]
    results["train_seconds"] = time.time() - t0
    results["summary"] = {k: v for k, v in summary.items() if k != "out"}
    print("after", json.dumps(results["after"]), flush=True)
    (root / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/reward"))
