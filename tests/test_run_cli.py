"""`lmatlas run`: inputs from arguments, standard input and .txt/.jsonl/.csv/.tsv files, JSON Lines
out, batches, task options as flags, and bad inputs reported by line while the others run."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

import lmatlas
from lmatlas.cli import main

from .helpers_pipelines import CONTEXT, SENTENCES, build_model, train_tokenizers  # noqa: F401
from .paths import data_file
from .reference import randomize, transformers

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("run-cli")
    toks = train_tokenizers(root / "tok")
    return {
        "mlm": build_model(root, toks, "bert", "masked-lm"),
        "sentiment": build_model(root, toks, "distilbert", "sequence-classification",
                                 id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1}),
        "qa": build_model(root, toks, "roberta", "question-answering"),
        "ner": build_model(root, toks, "bert", "token-classification", seed=2,
                           id2label={0: "B-PER", 1: "I-PER", 2: "O", 3: "B-LOC"},
                           label2id={"B-PER": 0, "I-PER": 1, "O": 2, "B-LOC": 3}),
    }


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_default_model_tasks_out_of_the_box(capsys):
    """feature-extraction, sentence-similarity and zero-shot classification need no --model."""
    assert main(["run", "feature-extraction", "--pool", "A sentence to embed.", "Another one."]) == 0
    rows = lines(capsys.readouterr().out)
    assert [r["input"] for r in rows] == ["A sentence to embed.", "Another one."]
    assert len(rows[0]["output"]) == 384
    assert abs(sum(x * x for x in rows[0]["output"]) - 1) < 1e-4  # normalised, as the model says

    assert main(["run", "feature-extraction", "hello world"]) == 0
    [row] = lines(capsys.readouterr().out)
    assert len(row["output"]) == 1 and len(row["output"][0]) == 4 and len(row["output"][0][0]) == 384

    assert main(["run", "sentence-similarity", "A man plays guitar.", "Someone plays music.", "A cat sleeps."]) == 0
    [row] = lines(capsys.readouterr().out)
    assert row["output"][0] > 0.5 > row["output"][1]

    assert main(["run", "zero-shot-classification", "--candidate-labels", "cinema,food,politics",
                 "I loved the film, the acting was superb.", "The soup was cold and salty."]) == 0
    rows = lines(capsys.readouterr().out)
    assert [r["output"]["labels"][0] for r in rows] == ["cinema", "food"]


def test_fill_mask_from_arguments_matches_the_api(models, capsys):
    args = ["run", "fill-mask", "-m", str(models["mlm"]), "--top-k", "3", "A [MASK] film.", "The [MASK] was [MASK]."]
    assert main(args) == 0
    rows = lines(capsys.readouterr().out)
    expected = lmatlas.pipeline("fill-mask", models["mlm"], top_k=3)(["A [MASK] film.", "The [MASK] was [MASK]."])
    assert [r["output"] for r in rows] == json.loads(json.dumps(expected))


def test_jsonl_with_a_malformed_line(models, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"text": "A [MASK] film."}\n'
        '{"text": "broken\n'
        "\n"
        '"The [MASK] actor."\n'
        '{"text": "no mask here"}\n'
        "[1, 2]\n"
        '{"text": "The end [MASK]."}\n',
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    code = main(["run", "fill-mask", "-m", str(models["mlm"]), "-i", str(src), "-o", str(out), "--batch-size", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{src} line 2: not valid JSON" in err
    assert f"{src} line 5: no mask token [MASK]" in err
    assert f"{src} line 6: a JSON line must be an object or a string" in err
    rows = lines(out.read_text())
    assert [r["line"] for r in rows] == [1, 2, 4, 5, 6, 7]
    assert [("output" in r) for r in rows] == [True, False, True, False, False, True]
    assert rows[0]["input"] == {"text": "A [MASK] film."} and len(rows[0]["output"]) == 5
    assert "4 result(s) written" not in err and "3 result(s) written" in err and "3 input(s) failed" in err


def test_tsv_column_progress_and_batches(models, tmp_path, capsys):
    """SST-2's own file: the sentence column, a progress bar, the same results in any batch size."""
    rows = data_file("sst2", "dev.tsv").read_text(encoding="utf-8").splitlines()[:41]
    src = tmp_path / "dev.tsv"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    base = ["run", "sentiment-analysis", "-m", str(models["sentiment"]), "-i", str(src), "--column", "sentence"]
    assert main([*base, "--batch-size", "16", "--progress", "-o", str(tmp_path / "a.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "40/40" in err and "40 result(s) written" in err
    assert main([*base, "--batch-size", "1", "-o", str(tmp_path / "b.jsonl")]) == 0
    a, b = lines((tmp_path / "a.jsonl").read_text()), lines((tmp_path / "b.jsonl").read_text())
    assert [r["line"] for r in a] == list(range(2, 42))
    assert a[0]["input"] == {"sentence": rows[1].split("\t")[0], "label": rows[1].split("\t")[1]}
    assert [r["output"]["label"] for r in a] == [r["output"]["label"] for r in b]
    assert max(abs(x["output"]["score"] - y["output"]["score"]) for x, y in zip(a, b)) < 1e-5
    # a column the file lacks is one error
    assert main(["run", "sentiment-analysis", "-m", str(models["sentiment"]), "-i", str(src)]) == 1
    assert "no 'text' column (the columns are: sentence, label); choose one with --column COLUMN" in capsys.readouterr().err


def test_question_answering_inputs(models, tmp_path, capsys):
    src = tmp_path / "qa.csv"
    src.write_text(
        'q,passage\n"Who directed it?","' + CONTEXT.replace('"', "'") + '"\nWhere?,"It was shot in Lisbon, in winter."\n'
        "No context here?,\n",
        encoding="utf-8",
    )
    code = main(["run", "question-answering", "-m", str(models["qa"]), "-i", str(src),
                 "--column", "question=q", "--column", "context=passage", "--top-k", "2"])
    assert code == 1
    captured = capsys.readouterr()
    rows = lines(captured.out)
    assert len(rows[0]["output"]) == 2 and {"score", "start", "end", "answer"} == set(rows[0]["output"][0])
    assert rows[2] == {"line": 4, "error": "the context is empty"}
    assert f"{src} line 4: the context is empty" in captured.err
    # questions as arguments with --context; without it, each says what is missing
    assert main(["run", "question-answering", "-m", str(models["qa"]), "--context", CONTEXT, "Who directed it?"]) == 0
    [row] = lines(capsys.readouterr().out)
    assert row["output"]["answer"] == CONTEXT[row["output"]["start"] : row["output"]["end"]]
    assert main(["run", "question-answering", "-m", str(models["qa"]), "Who?"]) == 1
    assert "the question has no context: give --context" in capsys.readouterr().err


def test_token_classification_options_and_stdin(models, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(SENTENCES[:2]) + "\n").encode())))
    assert main(["run", "ner", "-m", str(models["ner"]), "--aggregation-strategy", "first", "--ignore-labels", "O,LOC"]) == 0
    rows = lines(capsys.readouterr().out)
    assert [r["line"] for r in rows] == [1, 2]
    expected = lmatlas.pipeline("ner", models["ner"], aggregation_strategy="first", ignore_labels=["O", "LOC"])(SENTENCES[:2])
    assert [r["output"] for r in rows] == json.loads(json.dumps(expected))
    groups = {e["entity_group"] for r in rows for e in r["output"]}
    assert groups == {"PER"}  # grouped B-PER/I-PER; O and LOC (B-LOC's group) left out


def test_generic_option_and_text_pairs(models, tmp_path, capsys):
    src = tmp_path / "pairs.jsonl"
    src.write_text(json.dumps({"text": SENTENCES[3], "text_pair": "It was boring."}) + "\n", encoding="utf-8")
    assert main(["run", "text-classification", "-m", str(models["sentiment"]), "-i", str(src),
                 "--option", "top_k=null", "--function-to-apply", "none"]) == 0
    [row] = lines(capsys.readouterr().out)
    expected = lmatlas.pipeline("text-classification", models["sentiment"])(
        {"text": SENTENCES[3], "text_pair": "It was boring."}, top_k=None, function_to_apply="none")
    assert row["output"] == json.loads(json.dumps(expected)) and len(row["output"]) == 2


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny GPT-2 with the real GPT-2 tokenizer and a chat template."""
    import shutil

    import torch

    tf = transformers()
    folder = tmp_path_factory.mktemp("run-chat")
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=4))
    randomize(model.eval(), seed=3, std=0.3)
    model.tie_weights()
    model.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(data_file("gpt2-tokenizer", name), folder / name)
    template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return folder


def test_text_generation_reads_chats_from_jsonl(chat_model, tmp_path, capsys):
    """A line's "messages" is a chat; a text line beside them stays a prompt; a bad chat fails alone."""
    chats = [[{"role": "user", "content": "Hello there"}],
             [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"},
              {"role": "assistant", "content": "Because"}]]
    src = tmp_path / "chats.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in [
        {"messages": chats[0]}, {"text": "Once upon a time"}, {"messages": [{"role": "user"}]}, {"messages": chats[1]},
    ]), encoding="utf-8")
    code = main(["run", "text-generation", "-m", str(chat_model), "-i", str(src), "--no-do-sample",
                 "--max-new-tokens", "4"])
    assert code == 1
    captured = capsys.readouterr()
    assert f"{src} line 3: message 0 of the chat has no 'content'" in captured.err
    rows = lines(captured.out)
    assert [r["line"] for r in rows] == [1, 2, 3, 4] and "error" in rows[2]
    pipe = lmatlas.pipeline("text-generation", chat_model, do_sample=False, max_new_tokens=4)
    expected = pipe([chats[0], "Once upon a time", chats[1]])
    assert [rows[i]["output"] for i in (0, 1, 3)] == json.loads(json.dumps(expected))
    assert rows[0]["output"][0]["generated_text"][:-1] == chats[0]
    assert rows[0]["output"][0]["generated_text"][-1]["role"] == "assistant"
    assert rows[3]["output"][0]["generated_text"][-1]["content"].startswith("Because")  # continued


def test_user_errors(models, tmp_path, capsys):
    assert main(["run", "fill-masks", "x"]) == 1
    assert "unknown task 'fill-masks' (did you mean 'fill-mask'?)" in capsys.readouterr().err
    assert main(["run", "fill-mask", "x [MASK]"]) == 1
    assert "fill-mask has no default model" in capsys.readouterr().err
    assert main(["run", "fill-mask", "-m", str(models["sentiment"]), "x [MASK]"]) == 1
    assert "has a sequence-classification head" in capsys.readouterr().err
    assert main(["run", "zero-shot-classification", "--candidate-labels", " , ", "A text."]) == 1
    assert "--candidate-labels is empty" in capsys.readouterr().err
    assert main(["run", "fill-mask", "-m", str(models["mlm"]), "--aggregation-strategy", "first", "a [MASK]"]) == 1
    assert "fill-mask takes no option '--aggregation-strategy'" in capsys.readouterr().err
    (tmp_path / "x.doc").write_text("hello\n")
    assert main(["run", "feature-extraction", "-i", str(tmp_path / "x.doc")]) == 1
    assert "cannot tell the format" in capsys.readouterr().err


def test_real_command_line(models):
    """The installed entry point, with options after the texts."""
    p = subprocess.run(
        [sys.executable, "-m", "lmatlas", "run", "fill-mask", "A [MASK] film.", "-m", str(models["mlm"]), "--top-k", "1"],
        capture_output=True, text=True,
    )
    assert p.returncode == 0, p.stderr
    [row] = lines(p.stdout)
    assert len(row["output"]) == 1 and set(row["output"][0]) == {"score", "token", "token_str", "sequence"}
