"""The worked example of docs/preferences.md: teach SmolLM2-135M-Instruct to use a requested
keyword, with a reward a program computes.

1. Sample replies from the model to "use the word X" prompts; the program scores them (1 when
   the reply contains X); pairs of a rewarded and an unrewarded reply to the same prompt are the
   preference data.
2. Train a reward model on the pairs (``RewardRecipe``); report its held-out pair accuracy.
3. DPO on the pairs (``DPORecipe``) and GRPO with the program as reward (``GRPORecipe``), each
   from the original model: the program's score of one sampled reply per held-out prompt (over a
   few seeds) before and after, with the KL to the original model, and the wall time.

Run (CPU, about half an hour on 2 cores; sizes at the top)::

    nice python docs/examples/preferences_keyword.py runs/keyword

It writes pairs.jsonl, prompts.jsonl, one folder per run (log.jsonl, loss.png, model/) and
results.json under the folder given.
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

from lmatlas.defaults import generative_model
from lmatlas.tokenizer import load_tokenizer
from lmatlas.training import DPORecipe, GRPORecipe, RewardRecipe, TrainConfig, train
from lmatlas.training.alignment_recipes import load_language_model
from lmatlas.training.finetune import load_for_finetuning
from lmatlas.training.pairs import read_prompts
from lmatlas.training.tasks.online import OnlineTask, RewardModel, Sampling

TOPICS = ["the sea", "a city", "winter", "a dog", "music", "the moon", "a garden", "coffee", "trains", "a forest",
          "the rain", "a library", "bread", "the mountains", "a river", "friendship"]
KEYWORDS = ["blue", "quiet", "golden", "ancient", "bright", "gentle", "wild", "silver", "warm", "strange"]
HELD_OUT = ["purple", "soft", "heavy", "tiny"]  # keywords of the held-out prompts only

# Sized for a 2-core CPU: short replies, small batches.
MAX_NEW_TOKENS = 16
SAMPLES_PER_PROMPT = 4
EVAL_SEEDS = (1, 2, 3)
# SMOKE=1: a run of a few steps that checks the script end to end.
SMOKE = bool(os.environ.get("SMOKE"))
TOPICS_PER_KEYWORD = {"train": 8, "held_out": 8} if not SMOKE else {"train": 2, "held_out": 2}
STEPS = {"reward": 60, "dpo": 32, "grpo": 60} if not SMOKE else {"reward": 2, "dpo": 2, "grpo": 2}
SYSTEM = {"role": "system", "content": "Be brief."}  # shorter than the template's default system prompt


def keyword_reward(prompts, completions, keyword, **kwargs):
    """1.0 when the reply contains the requested keyword (any case), else 0.0."""
    return [float(k.lower() in c.lower()) for c, k in zip(completions, keyword)]


def prompt_rows(keywords, rng, per_keyword):
    rows = []
    for k in keywords:
        for topic in rng.sample(TOPICS, per_keyword):
            ask = f"Write one sentence about {topic}. Use the word \"{k}\"."
            rows.append({"prompt": [SYSTEM, {"role": "user", "content": ask}], "keyword": k})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def scorer(base, tokenizer, prompts_file, policy=None):
    """An OnlineTask used only to sample and score: ``policy`` (default: the original model)
    against the original model ``base``."""
    prompts = read_prompts(prompts_file, tokenizer, 512, MAX_NEW_TOKENS)
    task = OnlineTask("grpo", policy or copy.deepcopy(base), base, tokenizer, None, prompts, prompts,
                      lambda p, c, cols: keyword_reward(p, c, **cols), 0, Sampling(SAMPLES_PER_PROMPT, MAX_NEW_TOKENS))
    return task, prompts


def held_out_score(task, prompts):
    """Mean program score and KL over one sampled reply per prompt, for each seed."""
    runs = [task.measure(prompts, seed) for seed in EVAL_SEEDS]
    rewards = [r["reward"] for r in runs]
    return {"reward": sum(rewards) / len(rewards), "reward_per_seed": rewards,
            "kl": sum(r["kl"] for r in runs) / len(runs), "replies": len(prompts) * len(EVAL_SEEDS)}


def sample_pairs(base, tokenizer, prompts_file, seed0, samples=SAMPLES_PER_PROMPT):
    """Pairs of a rewarded and an unrewarded reply sampled from ``base`` to the same prompt (of
    ``samples`` replies each), and the mean score of all the samples."""
    task, prompts = scorer(base, tokenizer, prompts_file)
    pairs, total = [], 0.0
    rows = [json.loads(line) for line in prompts_file.read_text().splitlines()]
    for start in range(0, len(prompts), 4):
        chunk = prompts[start : start + 4]
        batch = task.sample(chunk, samples, seed=seed0 + start)
        scores = task.score(chunk, batch["texts"], samples).view(len(chunk), -1)
        total += float(scores.sum())
        for i in range(len(chunk)):
            texts = batch["texts"][i * samples : (i + 1) * samples]
            good = [t for t, s in zip(texts, scores[i]) if s > 0]
            bad = [t for t, s in zip(texts, scores[i]) if s == 0]
            for g, b in zip(good, bad):
                if g != b:
                    pairs.append({"prompt": rows[start + i]["prompt"], "chosen": g, "rejected": b})
    return pairs, total / (len(prompts) * samples)


def count_rows(path: Path) -> int:
    return len(path.read_text().splitlines())


def pair_accuracy(reward_model, pairs) -> float:
    """How often the reward model scores the chosen reply above the rejected one (None: no pairs)."""
    if not pairs:
        return None
    prompts = [p["prompt"] for p in pairs]
    chosen = reward_model(prompts, [p["chosen"] for p in pairs], {})
    rejected = reward_model(prompts, [p["rejected"] for p in pairs], {})
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def main(root: Path) -> None:
    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    model = str(generative_model())
    rng = random.Random(0)
    train_prompts = write_jsonl(root / "prompts.jsonl",
                                prompt_rows(KEYWORDS[: 2 if SMOKE else None], rng, TOPICS_PER_KEYWORD["train"]))
    held_out = write_jsonl(root / "held_out.jsonl", prompt_rows(HELD_OUT, rng, TOPICS_PER_KEYWORD["held_out"]))
    results: dict = {"model": model}
    t0 = time.time()
    base, tokenizer = load_language_model(model, "the model"), load_tokenizer(model)
    results["load_seconds"] = time.time() - t0

    # 1. Pairs sampled from the model, labelled by the program: on the training prompts (a fifth
    # of them kept aside to measure the reward model on the keywords it learnt), and on the
    # held-out prompts (to measure it on keywords it never saw).
    t0 = time.time()
    pairs, score = sample_pairs(base, tokenizer, train_prompts, 0)
    held_pairs, held_score = sample_pairs(base, tokenizer, held_out, 10_000)
    random.Random(1).shuffle(pairs)
    n_dev = max(len(pairs) // 5, 1)
    write_jsonl(root / "pairs.jsonl", pairs[n_dev:])
    write_jsonl(root / "pairs_dev.jsonl", pairs[:n_dev])
    write_jsonl(root / "pairs_held_out.jsonl", held_pairs)
    results["pairs"] = {"prompts": count_rows(train_prompts), "held_out_prompts": count_rows(held_out),
                        "pairs": len(pairs), "samples_per_prompt": SAMPLES_PER_PROMPT, "train": len(pairs) - n_dev,
                        "dev": n_dev, "held_out": len(held_pairs), "sample_score": score,
                        "held_out_sample_score": held_score, "seconds": time.time() - t0}
    print(json.dumps(results["pairs"]), flush=True)

    # Before: the original model on the held-out prompts.
    t0 = time.time()
    task, dev = scorer(base, tokenizer, held_out)
    results["before"] = {**held_out_score(task, dev), "seconds": time.time() - t0}
    print("before", json.dumps(results["before"]), flush=True)

    # 2. The reward model, on the training pairs; its dev split is the kept-aside fifth. Before
    # training, the same model with a new (random) one-output head.
    t0 = time.time()
    torch.manual_seed(0)
    untrained = load_for_finetuning(model, "sequence-classification", {0: "LABEL_0"})
    before = {"dev": pair_accuracy(RewardModel.of(untrained, tokenizer, "untrained"), pairs[:n_dev]),
              "held_out_keywords": pair_accuracy(RewardModel.of(untrained, tokenizer, "untrained"), held_pairs)}
    del untrained
    summary = train(RewardRecipe(model=model, data=root / "pairs.jsonl", val=root / "pairs_dev.jsonl", max_length=96),
                    TrainConfig(out=root / "reward", steps=STEPS["reward"], lr=2e-5, batch_size=4, warmup=4,
                                eval_every=max(STEPS["reward"] // 4, 1), progress=False, seed=0))
    dev_log = [json.loads(line) for line in (root / "reward" / "log.jsonl").read_text().splitlines()]
    reward_model = RewardModel(str(root / "reward" / "model"))
    results["reward_model"] = {
        "dev_accuracy_during_training": [r["accuracy"] for r in dev_log if r["split"] == "dev"],
        "accuracy": {"before": before, "dev": pair_accuracy(reward_model, pairs[:n_dev]),
                     "held_out_keywords": pair_accuracy(reward_model, held_pairs)},
        "seconds": time.time() - t0, "summary": summary}
    print("reward", json.dumps(results["reward_model"]), flush=True)

    # 3a. DPO.
    t0 = time.time()
    train(DPORecipe(model=model, data=root / "pairs.jsonl", val=root / "pairs_dev.jsonl", max_length=96, beta=0.1),
          TrainConfig(out=root / "dpo", steps=STEPS["dpo"], lr=3e-5, batch_size=2, warmup=2, progress=False, seed=0))
    seconds = time.time() - t0
    policy = load_language_model(root / "dpo" / "model", "the DPO model")
    task, dev = scorer(base, tokenizer, held_out, policy)
    results["dpo"] = {**held_out_score(task, dev), "train_seconds": seconds}
    print("dpo", json.dumps(results["dpo"]), flush=True)

    # 3b. GRPO with the program as reward.
    t0 = time.time()
    train(GRPORecipe(model=model, data=train_prompts, val=held_out, reward=f"{__file__}:keyword_reward", group=4,
                     max_new_tokens=MAX_NEW_TOKENS, beta=0.04),
          TrainConfig(out=root / "grpo", steps=STEPS["grpo"], lr=3e-5, batch_size=2, warmup=2, progress=False,
                      seed=0))
    seconds = time.time() - t0
    policy = load_language_model(root / "grpo" / "model", "the GRPO model")
    task, dev = scorer(base, tokenizer, held_out, policy)
    results["grpo"] = {**held_out_score(task, dev), "train_seconds": seconds}
    print("grpo", json.dumps(results["grpo"]), flush=True)
    (root / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/keyword"))
