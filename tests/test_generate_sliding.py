"""A sliding context past a model's learned positions (nanoGPT's generate): each new token is
read from the last n_positions tokens. The reference is transformers' GPT-2 run on contexts
cropped by hand, one token at a time, as nanoGPT does it."""

from __future__ import annotations

import pytest
import torch

import lmatlas
from lmatlas.cli import main

from .reference import randomize, transformers

POSITIONS = 8


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tf = transformers()
    folder = tmp_path_factory.mktemp("gpt2-8-positions")
    config = tf.GPT2Config(vocab_size=61, n_positions=POSITIONS, n_embd=16, n_layer=2, n_head=2, eos_token_id=60,
                           bos_token_id=60)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(config).eval()
    randomize(model, seed=3, std=0.3)
    model.save_pretrained(folder)
    return folder, model


def _cropped(ref, ids: torch.Tensor, new: int, sample_seed: int | None = None) -> torch.Tensor:
    """nanoGPT's loop: crop to the last POSITIONS tokens, take the last logits, pick, append."""
    gen = torch.Generator().manual_seed(sample_seed) if sample_seed is not None else None
    with torch.no_grad():
        for _ in range(new):
            logits = ref(ids[:, -POSITIONS:]).logits[:, -1, :].float()
            if gen is None:
                token = logits.argmax(-1, keepdim=True)
            else:
                token = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)
            ids = torch.cat([ids, token], dim=1)
    return ids


def test_greedy_slides_like_a_hand_cropped_context(small):
    folder, ref = small
    ids = torch.tensor([[5, 17, 42]])
    ours = lmatlas.load(folder).generate(ids, max_new_tokens=20, sliding_window=True, eos_token_id=None)
    assert ours.shape == (1, 23)
    assert ours.tolist() == _cropped(ref, ids, 20).tolist()


def test_sampling_slides_like_a_hand_cropped_context(small):
    folder, ref = small
    ids = torch.tensor([[5, 17, 42, 7]])
    # lmatlas' seed= draws from its own generator, one multinomial draw per step, as the loop above.
    ours = lmatlas.load(folder).generate(ids, max_new_tokens=15, do_sample=True, seed=11, top_k=0,
                                         sliding_window=True, eos_token_id=None)
    assert ours.tolist() == _cropped(ref, ids, 15, sample_seed=11).tolist()


def test_within_the_positions_nothing_changes_and_without_it_the_length_is_refused(small):
    folder, _ = small
    model = lmatlas.load(folder)
    ids = torch.tensor([[5, 17, 42]])
    assert model.generate(ids, max_new_tokens=5, sliding_window=True).tolist() == \
        model.generate(ids, max_new_tokens=5).tolist()
    with pytest.raises(lmatlas.LmatlasError, match="sliding_window=True"):
        model.generate(ids, max_new_tokens=20)
    with pytest.raises(lmatlas.LmatlasError, match="not with beam search"):
        model.generate(ids, max_new_tokens=20, num_beams=2, sliding_window=True)



@pytest.fixture(scope="module")
def with_tokenizer(small, tmp_path_factory):
    """The model with a character tokenizer (fewer tokens than its 61), for the command."""
    from lmatlas.training.tokenizer_trainer import train_tokenizer

    folder, _ = small
    text = tmp_path_factory.mktemp("chars") / "chars.txt"
    text.write_text("ROMEO: but soft, what light through yonder window breaks\n", encoding="utf-8")
    train_tokenizer([text], "char", folder)
    return folder


def test_the_command_slides_by_default_with_a_notice(with_tokenizer, capsys):
    from lmatlas.tokenizer import load_tokenizer

    args = ["generate", "--model", str(with_tokenizer), "ROMEO:", "--max-new-tokens", "12"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err.strip() == ("lmatlas: warning: the model reads 8 positions: past them each token is read from the "
                           "last 8 (a sliding window, as nanoGPT); --no-sliding-window refuses instead")
    tok = load_tokenizer(with_tokenizer)
    ids = torch.tensor([tok.encode("ROMEO:")])
    expected = lmatlas.load(with_tokenizer).generate(ids, max_new_tokens=12, sliding_window=True)
    assert out == tok.decode(expected[0, ids.shape[1]:].tolist(), skip_special_tokens=True) + "\n"
    assert main([*args, "--sliding-window"]) == 0 and capsys.readouterr().err == ""

    assert main([*args, "--no-sliding-window"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lmatlas: error: --max-new-tokens 12 goes beyond the model's 8 positions")
    assert err.strip().endswith("(--sliding-window)") and len(err.strip().splitlines()) == 1
