"""Every shell command shown in README.md and docs/*.md runs, in the order shown, so that the
documentation cannot drift from what the commands do.

The commands are read from the fenced ``bash`` blocks. Each must have an entry in ``COMMANDS``
below: what it needs swapped to run offline and fast here — a hub id for a tiny checkpoint the
tests build, a few steps for a long training — or why it is not run. A command added to the
docs without an entry fails the test, as does one whose entry no longer matches any command.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmatlas.cli import main

from .helpers_tokenizer import spm_files  # noqa: F401  (a fixture the seq2seq folders need)
from .paths import data_file
from .test_generate_cli_seq2seq import folders  # noqa: F401  (tiny T5 and Marian with their tokenizers)
from .test_generate_text import gpt2_folder  # noqa: F401  (a tiny GPT-2 with GPT-2's tokenizer)
from .test_run_cli import chat_model, models  # noqa: F401  (tiny BERT masked LM; GPT-2 with a chat template)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


@dataclass
class Entry:
    swap: dict[str, str] = field(default_factory=dict)  # an argument -> the name of a local checkpoint
    extra: list[str] = field(default_factory=list)  # flags appended (argparse keeps the last value); {name}: a checkpoint
    stdin: str | None = None
    skip: str | None = None  # why it is not run here


FAST_TRAIN = ["--steps", "3", "--eval-every", "3", "--eval-windows", "2", "--no-progress"]
FAST_FINETUNE = ["--steps", "2", "--eval-every", "2", "--no-progress"]
FAST_PREFERENCES = ["--steps", "2", "--batch-size", "2", "--max-length", "48", "--no-progress"]
FAST_ONLINE = [*FAST_PREFERENCES, "--group", "2", "--max-new-tokens", "4"]

COMMANDS: dict[str, Entry] = {
    # README.md
    "make demo": Entry(skip="sets up a virtual environment; its steps are the search commands below"),
    "lmatlas run image-classification -m google/vit-base-patch16-224 --top-k 3 photo.jpg photos/":
        Entry(swap={"google/vit-base-patch16-224": "vit"}),
    "lmatlas run zero-shot-image-classification -m openai/clip-vit-base-patch32 --candidate-labels cat,dog photos/":
        Entry(swap={"openai/clip-vit-base-patch32": "clip"}),
    "lmatlas train decision-transformer --data trajectories.jsonl --out runs/dt/ --env gridworld --targets 1,2,3":
        Entry(extra=["--steps", "3", "--batch-size", "8", "--dim", "16", "--layers", "1", "--heads", "2",
                     "--context", "4", "--no-progress"]),
    "lmatlas serve --index my-index": Entry(skip="a server runs until stopped; tests/test_serve.py starts one"),
    "lmatlas convert my-llama/ --to gguf --dtype q8_0 -o my-llama.gguf": Entry(swap={"my-llama/": "gpt2"}),
    # docs/serving.md
    "lmatlas serve": Entry(skip="a server runs until stopped; tests/test_serve_default.py starts this one"),
    'lmatlas serve --model path/to/model.gguf --index my-index --api-key "$KEY" --task-model '
    "fill-mask=google-bert/bert-base-uncased --allowed-origins https://example.org":
        Entry(skip="a server runs until stopped; tests/test_serve.py starts one with these flags"),
    "make test": Entry(skip="runs this suite"),
    "lmatlas embed --input sentences.txt --output vectors.npy": Entry(),
    'lmatlas similarity "A cat sits on the mat." "A feline rests on a rug."': Entry(),
    "lmatlas search build my-index --from notes/ README.md": Entry(),
    'lmatlas search query my-index "how do I fine-tune?" -k 5': Entry(),
    'lmatlas generate --model gpt2 "The Transformer is" --max-new-tokens 40 --stream': Entry(swap={"gpt2": "gpt2"}),
    'lmatlas generate --model gpt2 "The Transformer is" --quantize q8_0': Entry(swap={"gpt2": "gpt2"},
                                                                               extra=["--max-new-tokens", "4"]),
    'lmatlas generate --model Helsinki-NLP/opus-mt-en-de "How are you?" --num-beams 4':
        Entry(swap={"Helsinki-NLP/opus-mt-en-de": "marian"}, extra=["--max-new-tokens", "8"]),
    # The default model (SmolLM2) takes half a minute to load here; tests/test_default_generative.py
    # runs it. A tiny GPT-2 with a chat template stands in.
    'lmatlas chat --system "Answer briefly."': Entry(stdin="What is the capital of France?\n",
                                                     extra=["--model", "{chat}", "--max-new-tokens", "8"]),
    'lmatlas run fill-mask --model bert-base-uncased "Paris is the [MASK] of France."':
        Entry(swap={"bert-base-uncased": "bert-mlm"}),
    'lmatlas run zero-shot-classification --candidate-labels sport,politics,cinema "A great film."': Entry(),
    "lmatlas run summarization --model facebook/bart-large-cnn --input articles.txt --output summaries.jsonl":
        Entry(swap={"facebook/bart-large-cnn": "t5"}, extra=["--max-new-tokens", "8"]),
    "lmatlas topics --input reviews.txt --plot topics.png --output topics.json": Entry(),
    "lmatlas catalog --arch decoder --min-params 10B": Entry(),
    "lmatlas estimate llama-7b --dtype bfloat16 --seq 2048": Entry(),
    "lmatlas train causal-lm --model gpt2 --tokenizer char --layers 4 --heads 4 --dim 128 --data input.txt --out runs/gpt/":
        Entry(extra=["--block", "32", *FAST_TRAIN]),
    "lmatlas finetune classify --model PATH --train train.tsv --dev dev.tsv --out runs/classify/":
        Entry(swap={"PATH": "bert-mlm"}, extra=FAST_FINETUNE),
    # docs/preferences.md: a tiny GPT-2 with a chat template stands in for the tuned model
    "lmatlas train reward --model runs/sft/model --data pairs.jsonl --out runs/rm --steps 500 --lr 1e-5":
        Entry(swap={"runs/sft/model": "chat"}, extra=FAST_PREFERENCES),
    "lmatlas train dpo --model runs/sft/model --data pairs.jsonl --beta 0.1 --loss sigmoid --out runs/dpo":
        Entry(swap={"runs/sft/model": "chat"}, extra=FAST_PREFERENCES),
    "lmatlas train grpo --model runs/sft/model --data prompts.jsonl --reward rewards.py:keyword --out runs/grpo":
        Entry(swap={"runs/sft/model": "chat"}, extra=FAST_ONLINE),
    "lmatlas train rloo --model runs/sft/model --data prompts.jsonl --reward runs/rm/model --out runs/rloo":
        Entry(swap={"runs/sft/model": "chat"}, extra=FAST_ONLINE),
    "lmatlas train ppo --model runs/sft/model --data prompts.jsonl --reward runs/rm/model --out runs/ppo":
        Entry(swap={"runs/sft/model": "chat"}, extra=FAST_ONLINE),
    # docs/search.md
    "lmatlas search build my-index --from docs/ notes.md papers/ pages/ records.jsonl --text-field body": Entry(),
    'lmatlas search query my-index "how are checkpoints loaded?" -k 5': Entry(),
    'lmatlas search query my-index "Q4_1" --mode lexical --path "docs/*.md"': Entry(),
    'lmatlas search query my-index "how are checkpoints loaded?" --rerank cross-encoder/ms-marco-MiniLM-L6-v2':
        Entry(swap={"cross-encoder/ms-marco-MiniLM-L6-v2": "cross-encoder"}),
    "lmatlas search build my-index --from docs/ notes.md --ray":
        Entry(skip="starts a Ray instance; tests/test_search_ray.py runs search build --ray on one"),
    "lmatlas embed --input sentences.txt --output vectors.npy --ray 10.0.0.5:6379":
        Entry(skip="a Ray cluster's address; tests/test_search_ray.py runs embed --ray on a local instance"),
    "lmatlas run text-classification -m MODEL -i reviews.jsonl -o labels.jsonl --ray --ray-actors 4 "
    "--ray-cpus-per-actor 1": Entry(skip="four actors of a CPU each; tests/test_search_ray.py runs run --ray on two CPUs"),
    # docs/training.md
    "lmatlas train gpt --model gpt2 --tokenizer char --data input.txt --out runs/shakespeare --layers 4 --heads 4 "
    "--dim 128 --block 64 --batch-size 12 --steps 2000 --lr 1e-3 --min-lr 1e-4 --warmup 100 --weight-decay 0.1 "
    "--beta2 0.99 --dropout 0 --eval-every 250": Entry(extra=FAST_TRAIN),
    'lmatlas generate --model runs/shakespeare/model "ROMEO:" --sample --max-new-tokens 200': Entry(),
    "lmatlas finetune classify --train sst2/train.tsv --dev sst2/dev.tsv --out runs/sst2 --steps 800 --lr 1e-4 "
    "--warmup 80 --schedule linear --eval-every 200": Entry(extra=FAST_FINETUNE),
    "torchrun --nproc_per_node 4 -m lmatlas train gpt ...": Entry(skip="four processes; tests/test_train_distributed.py"),
    "torchrun --nproc_per_node 4 -m lmatlas train gpt ... --fsdp": Entry(skip="as above, sharded"),
    "lmatlas tokenizer train --data corpus.txt --kind wordpiece --vocab-size 8000 --out tok/": Entry(),
}


def shell_commands(markdown: str) -> list[str]:
    """The commands of the fenced bash blocks, as written: continuation lines joined, comments
    (after a space) dropped, runs of spaces made one."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(re.sub(r"(^|\s)#\s.*$", "", line).split())
            if line:
                commands.append(line)
    return commands


def _workdir(tmp: Path) -> None:
    """The files the documented commands name, made from the tests' data."""
    shakespeare = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")
    (tmp / "input.txt").write_text(shakespeare[:30000], encoding="utf-8")
    (tmp / "corpus.txt").write_text(shakespeare[:30000], encoding="utf-8")
    (tmp / "sentences.txt").write_text("A cat sits on the mat.\nA feline rests on a rug.\nStocks fell today.\n",
                                       encoding="utf-8")
    (tmp / "articles.txt").write_text("The council met on Monday and voted to repair the bridge.\n"
                                      "Rain is expected across the north this weekend.\n", encoding="utf-8")
    films = ["The film was wonderful and the actors were great", "A boring film with bad acting"]
    food = ["The soup was salty and the bread stale", "Great pasta and a friendly waiter"]
    (tmp / "reviews.txt").write_text("".join(f"{films[i % 2]} ({i})\n{food[i % 2]} ({i})\n" for i in range(25)),
                                     encoding="utf-8")
    notes = tmp / "notes"
    notes.mkdir()
    shutil.copy(data_file("notes", "llm-notes.md"), notes / "llm-notes.md")
    (tmp / "notes.md").write_text("# Fine-tuning\n\nUse lmatlas finetune with a task and a training file.\n",
                                  encoding="utf-8")
    shutil.copy(ROOT / "README.md", tmp / "README.md")
    shutil.copytree(ROOT / "docs", tmp / "docs")
    from lmatlas.control import GridWorld, collect, write_trajectories

    from .helpers_vision import drawing, save_drawings

    (tmp / "papers").mkdir()
    (tmp / "papers" / "loading.md").write_text("# Loading\n\nCheckpoints are loaded from a folder or the hub.\n",
                                               encoding="utf-8")
    (tmp / "pages").mkdir()
    (tmp / "pages" / "quant.html").write_text("<html><body><nav>Home</nav><p>Q4_1 keeps 4 bits a weight.</p>"
                                             "</body></html>", encoding="utf-8")
    (tmp / "records.jsonl").write_text(json.dumps({"body": "A record about GGUF files."}) + "\n", encoding="utf-8")
    drawing().save(tmp / "photo.jpg")
    save_drawings(tmp / "photos")
    write_trajectories(collect(GridWorld(), 30, seed=2), tmp / "trajectories.jsonl")
    colours = ["red", "blue", "green", "yellow"]
    (tmp / "pairs.jsonl").write_text("".join(
        json.dumps({"prompt": f"Name the colour {c}.", "chosen": f"{c.title()}.", "rejected": "I like trains."}) + "\n"
        for c in colours), encoding="utf-8")
    (tmp / "prompts.jsonl").write_text("".join(
        json.dumps({"prompt": f"Say the word {c}.", "keyword": c}) + "\n" for c in colours), encoding="utf-8")
    (tmp / "rewards.py").write_text(
        "def keyword(prompts, completions, keyword, **columns):\n"
        "    return [float(k in c.lower()) for c, k in zip(completions, keyword)]\n", encoding="utf-8")
    sst2 = tmp / "sst2"
    sst2.mkdir()
    for name, rows in (("train.tsv", 65), ("dev.tsv", 17)):
        head = data_file("sst2", name).read_text(encoding="utf-8").splitlines()[:rows]
        (sst2 / name).write_text("\n".join(head) + "\n", encoding="utf-8")
        (tmp / name).write_text("\n".join(head) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def checkpoints(gpt2_folder, folders, models, chat_model, tmp_path_factory):  # noqa: F811
    from .helpers_vision import save_clip, save_vit

    from .helpers_pipelines import build_model, train_tokenizers

    vision = tmp_path_factory.mktemp("vision")
    root = tmp_path_factory.mktemp("cross-encoder")
    cross = build_model(root, train_tokenizers(root / "tokenizers"), "bert", "sequence-classification",
                        name="cross-encoder", id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0})
    return {"cross-encoder": cross, "gpt2": gpt2_folder, "marian": folders["marian"], "t5": folders["t5"], "bert-mlm": models["mlm"],
            "chat": chat_model, "vit": save_vit(vision / "vit"), "clip": save_clip(vision / "clip")}


def test_every_documented_command_has_an_entry():
    shown = [c for doc in DOCS for c in shell_commands((ROOT / doc).read_text(encoding="utf-8"))]
    assert shown, "no commands found in the docs"
    missing = [c for c in shown if c not in COMMANDS]
    assert not missing, f"documented commands without an entry in COMMANDS: {missing}"
    stale = [c for c in COMMANDS if c not in shown]
    assert not stale, f"entries in COMMANDS that no document shows any more: {stale}"


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_run(doc, checkpoints, tmp_path, monkeypatch, capsys):
    commands = shell_commands((ROOT / doc).read_text(encoding="utf-8"))
    _workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    # The decoding kernels have their own tests; built here they would cost more than the commands.
    monkeypatch.setenv("LMATLAS_KERNELS", "0")
    for command in commands:
        entry = COMMANDS[command]
        if entry.skip:
            continue
        words = shlex.split(command)
        assert words[0] == "lmatlas", command
        args = [str(checkpoints[entry.swap[w]]) if w in entry.swap else w for w in words[1:]]
        args += [str(checkpoints[w[1:-1]]) if w.startswith("{") else w for w in entry.extra]
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((entry.stdin or "").encode())))
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 0, f"{doc}: `{command}` exited with {code}:\n{err}"
        assert "Traceback" not in err and "error" not in err, f"{doc}: `{command}`:\n{err}"
        _check_output(command, out, tmp_path)


def _check_output(command: str, out: str, tmp: Path) -> None:
    """A word on what each kind of command should have made."""
    if "search query" in command:
        assert out.startswith("1. "), out
    elif "--output" in command and "jsonl" in command:
        assert (tmp / "summaries.jsonl").read_text(encoding="utf-8").count("\n") == 2
    elif command.startswith("lmatlas topics"):
        assert (tmp / "topics.png").stat().st_size > 0 and json.loads((tmp / "topics.json").read_text())
    elif command.startswith(("lmatlas train", "lmatlas finetune")):
        out_dir = command.split("--out ")[1].split()[0]
        assert (tmp / out_dir / "model" / "config.json").is_file()
    elif command.startswith("lmatlas generate") or command.startswith("lmatlas chat"):
        assert out.strip() or "--max-new-tokens" in command, out
