"""Learning from preferences on tiny random models the tests build: the reward model, DPO, GRPO,
RLOO and PPO through `lmatlas train`; the losses against TRL's (its trainers' own code, fed fixed
tensors); the statistics (frozen reference log-probs, zero KL for the reference itself, GAE by
hand); and bad input."""

from __future__ import annotations

import json
import random
import types
from collections import defaultdict
from pathlib import Path

import pytest
import torch

import lmatlas
from lmatlas.cli import main
from lmatlas.save import save_model
from lmatlas.training import DPORecipe, GRPORecipe, TrainConfig, alignment as A
from lmatlas.training.distributed import Context
from lmatlas.training.models import build_model
from lmatlas.training.tokenizer_trainer import train_tokenizer
from lmatlas.training.trainer import Trainer

from .reference import require

REWARDS = Path(__file__).with_name("preference_rewards.py")

WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird"]
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
TAIL = ["--no-progress", "--seed", "1", "--batch-size", "4"]


def _tokenizer(root: Path, template: bool, words=WORDS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text = root / "text.txt"
    text.write_text("\n".join(" ".join(random.Random(i).sample(words, 5)) for i in range(40)), encoding="utf-8")
    folder = train_tokenizer([text], "byte-bpe", root / "tokenizer", vocab_size=300, min_frequency=1)
    if template:
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        cfg["chat_template"] = TEMPLATE
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


def _decoder(root: Path, template: bool = True, words=WORDS, arch: str = "llama-7b") -> Path:
    tok_dir = _tokenizer(root, template, words)
    tok = lmatlas.load_tokenizer(tok_dir)
    torch.manual_seed(0)
    model = build_model(arch, "causal-lm", tok, 128, dict(num_layers=2, num_heads=2, hidden_size=32, intermediate_size=64, dropout=0.0))
    save_model(model, root / "model", tok_dir)
    return root / "model"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A small Llama with a byte-level BPE tokenizer and a chat template."""
    return _decoder(tmp_path_factory.mktemp("tiny-llama"))


def _pairs(path: Path, n: int, seed: int = 0, chat: bool = False) -> Path:
    """Prompts naming a word; the chosen reply is made of the first five words, the rejected one
    of the others."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = f"say {rng.choice(WORDS)}"
        row = {"prompt": prompt, "chosen": " ".join(rng.sample(WORDS[:5], 2)),
               "rejected": " ".join(rng.sample(WORDS[5:], 2))}
        if chat:
            row = {"prompt": [{"role": "user", "content": prompt}],
                   "chosen": [{"role": "assistant", "content": row["chosen"]}],
                   "rejected": [{"role": "assistant", "content": row["rejected"]}], "margin": 0.5}
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _prompts(path: Path, n: int) -> Path:
    rows = [{"prompt": f"say {WORDS[i % len(WORDS)]}", "word": WORDS[i % len(WORDS)]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Reward model and DPO through the command
# ---------------------------------------------------------------------------------------------


def test_reward_model_learns_the_preference(tiny, tmp_path):
    data = _pairs(tmp_path / "pairs.jsonl", 120, chat=True)
    out = tmp_path / "rm"
    assert main(["train", "reward", "--model", str(tiny), "--data", str(data), "--out", str(out), "--steps", "30",
                 "--lr", "3e-3", "--centring", "0.01", "--eval-every", "15", *TAIL]) == 0
    log = _log(out)
    train = [r for r in log if r["split"] == "train"]
    assert {"loss", "accuracy", "margin"} <= set(train[0])
    dev = [r for r in log if r["split"] == "dev"]
    assert dev[-1]["accuracy"] >= 0.8
    model = lmatlas.load(out / "model")
    assert model.head_name == "sequence-classification" and model.config.num_labels == 1


def test_dpo_raises_the_chosen_replies(tiny, tmp_path):
    data = _pairs(tmp_path / "pairs.jsonl", 60)
    out = tmp_path / "dpo"
    assert main(["train", "dpo", "--model", str(tiny), "--data", str(data), "--out", str(out), "--steps", "30",
                 "--lr", "3e-3", "--beta", "0.5", *TAIL]) == 0
    log = _log(out)
    train = [r for r in log if r["split"] == "train"]
    assert {"chosen_reward", "rejected_reward", "accuracy", "margin"} <= set(train[0])
    assert abs(train[0]["margin"]) < 1e-4  # the policy starts as its reference
    dev = [r for r in log if r["split"] == "dev"][-1]
    assert dev["margin"] > 0.5 and dev["accuracy"] >= 0.8


@pytest.mark.parametrize("loss", ["ipo", "hinge"])
def test_dpo_losses_run(tiny, tmp_path, loss):
    data = _pairs(tmp_path / "pairs.jsonl", 20)
    out = tmp_path / loss
    assert main(["train", "dpo", "--model", str(tiny), "--ref", str(tiny), "--data", str(data), "--out", str(out),
                 "--steps", "2", "--loss", loss, "--bf16", *TAIL]) == 0
    assert [r["split"] for r in _log(out)] == ["train", "train", "dev"]


def test_dpo_reference_logps_are_frozen(tiny, tmp_path):
    """Computed once from the reference; training the policy does not move them, and they equal
    a fresh computation with the untouched model."""
    from lmatlas.training.tasks.preference import pair_batch, sequence_logps

    data = _pairs(tmp_path / "pairs.jsonl", 24)
    recipe = DPORecipe(model=str(tiny), data=data, beta=0.5)
    config = TrainConfig(out=tmp_path / "out", steps=5, lr=1e-2, batch_size=4, progress=False, plot=False)
    task, config = recipe.task(config, Context())
    before = {k: v.clone() for k, v in task.ref_logps.items()}
    start = {k: v.clone() for k, v in task.module.state_dict().items()}
    Trainer(task, config).fit()
    assert any(not torch.equal(start[k], v) for k, v in task.module.state_dict().items())  # the policy moved
    for k in before:
        assert torch.equal(before[k], task.ref_logps[k])
    fresh = lmatlas.load(tiny, head="causal-lm")
    with torch.no_grad():
        logps, _ = sequence_logps(fresh, pair_batch(task.train_pairs[:4], task.pad_id))
    assert torch.allclose(torch.stack(logps.chunk(2), 1), task.ref_logps["train"][:4], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Online training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["grpo", "rloo", "ppo"])
def test_online_methods_log_reward_and_kl(tiny, tmp_path, method):
    data = _prompts(tmp_path / "prompts.jsonl", 12)
    out = tmp_path / method
    assert main(["train", method, "--model", str(tiny), "--data", str(data), "--out", str(out), "--steps", "3",
                 "--reward", f"{REWARDS}:word_reward", "--group", "3", "--max-new-tokens", "6", "--updates", "2",
                 "--lr", "1e-3", *TAIL]) == 0
    log = _log(out)
    train = [r for r in log if r["split"] == "train"]
    assert len(train) == 3 and all("kl" in r and "reward" in r for r in train)
    assert train[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # the policy starts as its reference
    assert {"reward", "kl"} <= set([r for r in log if r["split"] == "dev"][-1])
    assert lmatlas.load(out / "model").head_name == "causal-lm"
    if method == "ppo":
        assert (out / "model" / "value_head.pt").is_file() and "value_loss" in train[0]


def test_online_learns_a_simple_reward(tiny, tmp_path):
    """GRPO on replies' length: the mean reward of the samples rises."""
    data = _prompts(tmp_path / "prompts.jsonl", 8)
    out = tmp_path / "len"
    assert main(["train", "grpo", "--model", str(tiny), "--data", str(data), "--out", str(out), "--steps", "12",
                 "--reward", f"{REWARDS}:length_reward", "--group", "4", "--max-new-tokens", "6", "--lr", "5e-2",
                 "--val-fraction", "0", "--beta", "0", *TAIL, "--batch-size", "2"]) == 0
    rewards = [r["reward"] for r in _log(out) if r["split"] == "train"]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 2


def test_kl_estimate_is_zero_for_the_reference_itself(tiny, tmp_path):
    data = _prompts(tmp_path / "prompts.jsonl", 10)
    recipe = GRPORecipe(model=str(tiny), data=data, reward=f"{REWARDS}:word_reward", group=2, max_new_tokens=8)
    task, _ = recipe.task(TrainConfig(out=tmp_path / "o", steps=1), Context())
    assert task.measure(task.prompts)["kl"] == 0.0
    batch = task.next_batch(4, Context())
    assert torch.equal(batch["old_logps"], batch["ref_logps"])
    assert float(task.loss_terms(task.module, batch)["kl"]) == 0.0
    # and positive for another model
    with torch.no_grad():
        for p in task.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert task.measure(task.prompts)["kl"] > 0


def test_gae_equals_the_hand_computation():
    rewards = torch.tensor([[0.0, 0.5, 1.0, 0.0], [1.0, -1.0, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.1, 0.4, 9.0], [0.3, 0.6, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    gamma, lam = 0.9, 0.8
    adv, ret = A.gae(rewards, values, mask, gamma, lam)
    # by hand, row 0: V after the last token is 0
    d2 = 1.0 + 0 - 0.4
    d1 = 0.5 + 0.9 * 0.4 - 0.1
    d0 = 0.0 + 0.9 * 0.1 - 0.2
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    e1 = -1.0 - 0.6
    e0 = 1.0 + 0.9 * 0.6 - 0.3
    b1 = e1
    b0 = e0 + gamma * lam * b1
    expected = torch.tensor([[a0, a1, a2, 0.0], [b0, b1, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values * mask)


def test_ppo_advantages_are_gae_of_kl_penalised_rewards():
    """The task's per-token rewards: -beta * (log p - log ref) at each token, plus the reward at
    the last one; its advantages are their GAE, whitened."""
    from lmatlas.training.tasks.online import OnlineTask

    fake = types.SimpleNamespace(beta=0.1, gamma=1.0, lam=0.95)
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.2, -9.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -0.7, -1.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.5, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    out = OnlineTask.ppo_targets(fake, torch.tensor([2.0, -1.0]), old, ref, values, mask)
    token_rewards = torch.tensor([[-0.05, 0.1, 2.0], [0.0, -0.05 - 1.0, 0.0]])
    adv, ret = A.gae(token_rewards, values, mask, 1.0, 0.95)
    torch.testing.assert_close(out["returns"], ret)
    torch.testing.assert_close(out["advantages"], A.whiten(adv, mask))
    flat = out["advantages"][mask.bool()]
    assert abs(float(flat.mean())) < 1e-6


def test_clipped_objective():
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss = A.clipped_policy_loss(logps, old, adv, 0.2)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, 0.8, -2.0]]))


def test_group_advantages():
    r = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 4.0])
    torch.testing.assert_close(A.group_advantages(r, 3, "rloo"), torch.tensor([-1.5, 0.0, 1.5, -2.0, -2.0, 4.0]))
    g = A.group_advantages(r, 3, "grpo")
    torch.testing.assert_close(g[:3], torch.tensor([-1.0, 0.0, 1.0]) / (1 + 1e-4))


# ---------------------------------------------------------------------------------------------
# Parity with TRL's trainers (their loss code run on fixed tensors)
# ---------------------------------------------------------------------------------------------


def _accelerator():
    return types.SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x, device=torch.device("cpu"))


def _metrics():
    return defaultdict(lambda: defaultdict(list))


@pytest.mark.parametrize("margin,centring", [(False, None), (True, 0.01)])
def test_reward_loss_and_metrics_match_trl(margin, centring):
    trl = require("trl.trainer.reward_trainer")
    torch.manual_seed(0)
    scores = torch.randn(16, 1) * 2
    inputs = {"input_ids": torch.zeros(16, 3, dtype=torch.long), "attention_mask": torch.ones(16, 3)}
    margins = torch.rand(8) if margin else None
    if margin:
        inputs["margin"] = margins
    fake = types.SimpleNamespace(model=types.SimpleNamespace(training=True), accelerator=_accelerator(),
                                 args=types.SimpleNamespace(center_rewards_coefficient=centring),
                                 _total_train_tokens=0, _tp_size=1, _metrics=_metrics())
    ref_loss = trl.RewardTrainer.compute_loss(fake, lambda **kw: types.SimpleNamespace(logits=scores), inputs)
    chosen, rejected = scores.squeeze(-1).chunk(2)
    ours = A.reward_pair_loss(chosen, rejected, margins, centring)
    assert abs(float(ours.mean()) - float(ref_loss)) < 1e-5
    m = fake._metrics["train"]
    assert abs(float((chosen > rejected).float().mean()) - m["accuracy"][0]) < 1e-5
    assert abs(float((chosen - rejected).mean()) - m["margin"][0]) < 1e-5


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge"])
def test_dpo_losses_and_rewards_match_trl(loss):
    trl = require("trl.trainer.dpo_trainer")
    torch.manual_seed(1)
    pairs, length, beta = 6, 7, 0.3
    completion = (torch.rand(2 * pairs, length) > 0.3).long()
    completion[:, 0] = 0  # the first token is the prompt's
    token_logps = -torch.rand(2 * pairs, length - 1) * 3 * completion[:, 1:]
    ref = -torch.rand(2 * pairs) * 10
    outputs = types.SimpleNamespace(log_probs=token_logps, entropy=torch.zeros(2 * pairs, length - 1),
                                    mean_logits=torch.zeros(2 * pairs, length - 1),
                                    is_top1=torch.zeros(2 * pairs, length - 1, dtype=torch.bool))
    model = types.SimpleNamespace(training=True)
    fake = types.SimpleNamespace(
        model=model, accelerator=_accelerator(), aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=[loss], loss_weights=[1.0], beta=beta, use_weighting=False,
        _total_train_tokens=0, _tp_size=1, _metrics=_metrics())
    inputs = {"input_ids": torch.zeros(2 * pairs, length, dtype=torch.long), "attention_mask": torch.ones(2 * pairs, length),
              "completion_mask": completion, "ref_chosen_logps": ref[:pairs], "ref_rejected_logps": ref[pairs:]}
    ref_loss = trl.DPOTrainer._compute_loss(fake, lambda **kw: outputs, inputs, False)
    logps = token_logps.sum(1)
    tokens = completion.sum(1).float()
    ours, chosen_r, rejected_r = A.dpo_loss(logps[:pairs], logps[pairs:], ref[:pairs], ref[pairs:], beta, loss,
                                            tokens[:pairs], tokens[pairs:])
    assert abs(float(ours.mean()) - float(ref_loss)) < 1e-5
    m = fake._metrics["train"]
    assert abs(float(chosen_r.mean()) - m["rewards/chosen"][0]) < 1e-5
    assert abs(float(rejected_r.mean()) - m["rewards/rejected"][0]) < 1e-5
    assert abs(float((chosen_r > rejected_r).float().mean()) - m["rewards/accuracies"][0]) < 1e-5
    assert abs(float((chosen_r - rejected_r).mean()) - m["rewards/margins"][0]) < 1e-5


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_chosen_equal_to_rejected_is_named(tiny, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "say red", "chosen": "red", "rejected": "blue"}) + "\n"
                    + json.dumps({"prompt": "say dog", "chosen": "dog", "rejected": "dog"}) + "\n")
    err = _error(capsys, ["train", "reward", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"),
                          *TAIL])
    assert "row 2" in err and "'chosen' and 'rejected' are the same reply" in err


def test_prompt_longer_than_the_context_is_named(tiny, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": " ".join(WORDS * 20), "chosen": "red", "rejected": "blue"}) + "\n")
    err = _error(capsys, ["train", "dpo", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"),
                          "--max-length", "64", *TAIL])
    assert "row 1: the prompt has" in err and "--max-length" in err
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": " ".join(WORDS * 60)}) + "\n")
    err = _error(capsys, ["train", "grpo", "--model", str(tiny), "--data", str(prompts), "--out",
                          str(tmp_path / "o2"), "--reward", f"{REWARDS}:length_reward", "--steps", "1", *TAIL])
    assert "row 1: the prompt has" in err and "512 tokens the model reads" in err


@pytest.mark.parametrize("name,why", [("broken_reward", "raised RuntimeError: no score today"),
                                      ("text_reward", "returned 'high', not a finite number")])
def test_a_failing_reward_skips_the_step(tiny, tmp_path, capsys, name, why):
    data = _prompts(tmp_path / "prompts.jsonl", 6)
    out = tmp_path / "o"
    assert main(["train", "rloo", "--model", str(tiny), "--data", str(data), "--out", str(out), "--steps", "2",
                 "--reward", f"{REWARDS}:{name}", "--group", "2", "--max-new-tokens", "4", "--val-fraction", "0",
                 *TAIL]) == 0
    log = _log(out)
    assert [r["step"] for r in log] == [1, 2]
    assert all(f"the reward function {REWARDS}:{name} {why}" in r["skipped"] for r in log)
    assert "step 1 skipped: the reward function" in capsys.readouterr().err


def test_reward_that_cannot_be_found_is_named(tiny, tmp_path, capsys):
    data = _prompts(tmp_path / "prompts.jsonl", 4)
    err = _error(capsys, ["train", "grpo", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"),
                          "--reward", f"{REWARDS}:no_such_function", *TAIL])
    assert "--reward" in err and "no function 'no_such_function'" in err


def test_reference_with_another_tokenizer_is_named(tiny, tmp_path, capsys):
    other = _decoder(tmp_path / "other", words=["alpha", "beta", "gamma", "delta", "omega", "sigma"])
    data = _pairs(tmp_path / "pairs.jsonl", 4)
    err = _error(capsys, ["train", "dpo", "--model", str(tiny), "--ref", str(other), "--data", str(data),
                          "--out", str(tmp_path / "o"), *TAIL])
    assert f"the reference model {other} has another tokenizer than {tiny}" in err


def test_a_tokenizer_without_files_is_saved_and_read_back(tiny, tmp_path):
    """What a model trained from a GGUF file is saved with: the tokenizer written out."""
    from lmatlas.chat import apply_chat_template
    from lmatlas.tokenizer import save_tokenizer

    tok = lmatlas.load_tokenizer(tiny)
    again = lmatlas.load_tokenizer(save_tokenizer(tok, tmp_path / "tok"))
    text = "say red, then blue dog"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.eos_token_id == tok.eos_token_id and again.chat_template == TEMPLATE
    chat = [{"role": "user", "content": "say red"}]
    assert apply_chat_template(again, chat, add_generation_prompt=True) == apply_chat_template(tok, chat, add_generation_prompt=True)


@pytest.mark.parametrize("method", ["dpo", "ppo"])
def test_resume_continues_exactly(tiny, tmp_path, method):
    """A run resumed from its step-2 checkpoint (for PPO in the middle of a rollout that serves 3
    steps) logs the same losses and ends with the same weights as the run that went on."""
    import shutil

    if method == "dpo":
        data = _pairs(tmp_path / "pairs.jsonl", 20)
        extra = ["--beta", "0.5"]
    else:
        data = _prompts(tmp_path / "prompts.jsonl", 8)
        extra = ["--reward", f"{REWARDS}:length_reward", "--group", "2", "--max-new-tokens", "4", "--updates", "3"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = ["train", method, "--model", str(tiny), "--data", str(data), "--steps", "4", "--save-every", "2",
            "--schedule", "constant", "--lr", "1e-2", "--val-fraction", "0", *extra, *TAIL]
    assert main([*args, "--out", str(whole)]) == 0
    shutil.copytree(whole, resumed)
    shutil.rmtree(resumed / "checkpoint-000004")
    shutil.rmtree(resumed / "model")
    assert main([*args, "--out", str(resumed), "--resume"]) == 0
    losses = [[r["loss"] for r in _log(out) if r["split"] == "train"] for out in (whole, resumed)]
    assert losses[0] == losses[1]
    a, b = (lmatlas.load(out / "model").state_dict() for out in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    if method == "ppo":
        assert torch.equal(torch.load(whole / "model" / "value_head.pt")["weight"],
                           torch.load(resumed / "model" / "value_head.pt")["weight"])


def test_reward_model_on_an_encoder(tmp_path):
    """A BERT reads prompt and reply as one text (no chat template) and scores its [CLS]."""
    text = tmp_path / "text.txt"
    text.write_text("\n".join(" ".join(random.Random(i).sample(WORDS + ["say"], 6)) for i in range(40)))
    tok_dir = train_tokenizer([text], "wordpiece", tmp_path / "tok", vocab_size=80, min_frequency=1)
    tok = lmatlas.load_tokenizer(tok_dir)
    torch.manual_seed(0)
    model = build_model("bert-base", "base", tok, 64, dict(num_layers=2, num_heads=2, hidden_size=32,
                                                           intermediate_size=64, dropout=0.0))
    save_model(model, tmp_path / "bert", tok_dir)
    data = _pairs(tmp_path / "pairs.jsonl", 40)
    out = tmp_path / "rm"
    assert main(["train", "reward", "--model", str(tmp_path / "bert"), "--data", str(data), "--out", str(out),
                 "--steps", "20", "--lr", "3e-3", *TAIL]) == 0
    assert [r for r in _log(out) if r["split"] == "dev"][-1]["accuracy"] >= 0.75
    assert lmatlas.load(out / "model").config.num_labels == 1


def test_online_with_a_reward_model_folder(tiny, tmp_path):
    """--reward names a one-output classifier (what `lmatlas train reward` saves), which scores
    prompt + reply with its own tokenizer and chat template; bf16 autocast on."""
    from lmatlas.training.finetune import load_for_finetuning, use_pad_token

    rm = load_for_finetuning(tiny, "sequence-classification", {0: "LABEL_0"})
    use_pad_token(rm, lmatlas.load_tokenizer(tiny))
    save_model(rm, tmp_path / "rm", tiny)
    data = _prompts(tmp_path / "prompts.jsonl", 6)
    out = tmp_path / "o"
    assert main(["train", "rloo", "--model", str(tiny), "--data", str(data), "--out", str(out), "--steps", "2",
                 "--reward", str(tmp_path / "rm"), "--group", "2", "--max-new-tokens", "4", "--val-fraction", "0",
                 "--bf16", *TAIL]) == 0
    train = [r for r in _log(out) if r["split"] == "train"]
    assert len(train) == 2 and all(r["reward"] != 0 for r in train)
