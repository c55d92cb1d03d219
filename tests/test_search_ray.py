"""Model work on Ray Data (`search build --ray`, `embed --ray`, `run TASK --ray`): the same
vectors, hits and outputs as in one process, in the input's order; and the mistakes (Ray missing,
an address where no cluster answers, settings the cluster cannot meet, a job that stalls).

One local Ray instance (2 CPUs) serves the whole module, started and shut down by
``lmatlas.ray_data.session`` as a command without an address does; the calls inside it run there.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from lmatlas import LmatlasError
from lmatlas.cli import main
from lmatlas.ray_data import RayOptions, session
from lmatlas.search import Index

from .helpers_pipelines import build_model, train_tokenizers
from .paths import data_file

pytestmark = pytest.mark.usefixtures("one_thread")  # as each actor (half a CPU: one thread)

SMALL = ["--ray-batch-size", "8", "--ray-actors", "2", "--ray-cpus-per-actor", "0.5"]


@pytest.fixture(scope="module")
def ray_cluster():
    with session(RayOptions(local_cpus=2)) as ray:
        yield ray
    assert not ray.is_initialized()  # the session that started it shut it down


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 36 passages: notes on language models, Shakespeare, SST-2 sentences (JSON Lines)."""
    root = tmp_path_factory.mktemp("ray-corpus")
    shutil.copy(data_file("notes", "llm-notes.md"), root / "llm-notes.md")
    speeches = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:12000]
    (root / "shakespeare.txt").write_text(speeches, encoding="utf-8")
    rows = data_file("sst2", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:25]
    (root / "reviews.jsonl").write_text("".join(json.dumps({"text": r.split("\t")[0]}) + "\n" for r in rows),
                                        encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-models")
    return build_model(root, train_tokenizers(root / "tok"), "distilbert", "sequence-classification",
                       id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})


def _vectors(index: Index) -> np.ndarray:
    manifest = json.loads(index.manifest_file.read_text())
    raw = np.fromfile(index.folder / manifest["vectors"], dtype=np.float32)
    return raw.reshape(manifest["rows"], manifest["dim"])


def test_search_build_on_ray_gives_the_same_index(ray_cluster, corpus, tmp_path, capsys):
    here, there = Index(tmp_path / "here"), Index(tmp_path / "there")
    here.build([corpus])
    assert main(["search", "build", str(there.folder), "--from", str(corpus), "--ray", *SMALL, "--no-progress"]) == 0
    assert "indexed" in capsys.readouterr().out
    a, b = _vectors(here), _vectors(there)
    assert a.shape == b.shape and a.shape[0] > 30
    assert np.abs(a - b).max() <= 1e-5
    assert json.loads(here.manifest_file.read_text())["files"] == json.loads(there.manifest_file.read_text())["files"]
    for question in ("What does the attention mechanism compute?", "a moving and beautiful film", "Rome and Caesar"):
        for mode in ("semantic", "hybrid"):
            hits_a, hits_b = here.query(question, k=5, mode=mode), there.query(question, k=5, mode=mode)
            assert [(h.source, h.line) for h in hits_a] == [(h.source, h.line) for h in hits_b]
            assert np.allclose([h.score for h in hits_a], [h.score for h in hits_b], atol=1e-5)
    assert not [p.name for p in there.folder.iterdir() if p.name.startswith(".lmatlas-ray-")]  # shards removed


def test_a_clip_index_on_ray_embeds_images_and_texts_alike(ray_cluster, tmp_path):
    """With a CLIP model the actors run its image tower on image files, its text tower on texts."""
    from .helpers_vision import save_clip, save_drawings

    clip = save_clip(tmp_path / "clip")
    photos = tmp_path / "photos"
    save_drawings(photos, n=3)
    (photos / "caption.txt").write_text("a red circle on noise\n", encoding="utf-8")
    here, there = Index(tmp_path / "here"), Index(tmp_path / "there")
    here.build([photos], model=str(clip))
    there.build([photos], model=str(clip), ray=RayOptions(rows_per_batch=2))
    assert _vectors(here).shape == (4, _vectors(here).shape[1]) and np.abs(_vectors(here) - _vectors(there)).max() <= 1e-5


def test_embed_on_ray_gives_the_same_embeddings(ray_cluster, tmp_path, capsys):
    texts = data_file("sst2", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:41]
    (tmp_path / "texts.txt").write_text("\n".join(t.split("\t")[0] for t in texts) + "\n", encoding="utf-8")
    assert main(["embed", "-i", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "here.npy")]) == 0
    assert main(["embed", "-i", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "there.npy"), "--ray", *SMALL]) == 0
    assert "40 embeddings of dimension 384" in capsys.readouterr().out
    here, there = np.load(tmp_path / "here.npy"), np.load(tmp_path / "there.npy")
    assert here.shape == there.shape == (40, 384) and np.abs(here - there).max() <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here.npy", "texts.txt", "there.npy"]  # no shards left
    # The Python API, given the running cluster's own address; a single text stays a vector.
    from lmatlas import embed

    address = ray_cluster.get_runtime_context().gcs_address
    one = embed(texts[3].split("\t")[0], ray=RayOptions(address=address, rows_per_batch=4))
    assert one.shape == (384,) and np.abs(one - here[3]).max() <= 1e-5


def test_run_on_ray_gives_the_same_lines_in_order(ray_cluster, sentiment, tmp_path, capsys, monkeypatch):
    """text-classification over JSON Lines, a malformed line and a pair among them: the same JSON
    lines, the bad line's error in its place. The model is named by a relative path."""
    monkeypatch.chdir(sentiment.parent)
    rows = data_file("sst2", "dev.tsv").read_text(encoding="utf-8").splitlines()[1:30]
    lines = [json.dumps({"text": r.split("\t")[0]}) for r in rows]
    lines[7] = "{not json"
    lines[12] = json.dumps({"text": "A pair of sentences.", "text_pair": "The second one."})
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = ["run", "text-classification", "-m", sentiment.name, "-i", str(tmp_path / "in.jsonl"), "--batch-size", "4",
              "--top-k", "2"]
    assert main([*common, "-o", str(tmp_path / "here.jsonl")]) == 1
    assert main([*common, "-o", str(tmp_path / "there.jsonl"), "--ray", *SMALL[:1], "6", *SMALL[2:]]) == 1
    err = capsys.readouterr().err
    assert err.count("in.jsonl line 8: not valid JSON") == 2
    here, there = (tmp_path / "here.jsonl").read_text(), (tmp_path / "there.jsonl").read_text()
    assert here == there and len(here.splitlines()) == 29
    assert [json.loads(line).get("line") for line in there.splitlines()] == list(range(1, 30))


def test_feature_extraction_on_ray_from_text_lines(ray_cluster, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("".join(f"Sentence {i} of the file.\n" for i in range(9)), encoding="utf-8")
    common = ["run", "feature-extraction", "--pool", "-i", str(tmp_path / "in.txt")]
    assert main(common) == 0
    here = capsys.readouterr().out
    assert main([*common, "--ray", "--ray-batch-size", "3"]) == 0
    there = capsys.readouterr().out
    a = [json.loads(line) for line in here.splitlines()]
    b = [json.loads(line) for line in there.splitlines()]
    assert [r["input"] for r in a] == [r["input"] for r in b] == [f"Sentence {i} of the file." for i in range(9)]
    assert np.abs(np.array([r["output"] for r in a]) - np.array([r["output"] for r in b])).max() <= 1e-5


# -- mistakes -------------------------------------------------------------------------------------


def _error(args: list[str], capsys) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmatlas: error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.removeprefix("lmatlas: error: ")


def test_without_ray_installed_one_sentence_says_how(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    (tmp_path / "t.txt").write_text("one\ntwo\n", encoding="utf-8")
    for args in (["embed", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "v.npy"), "--ray"],
                 ["search", "build", str(tmp_path / "index"), "--from", str(tmp_path / "t.txt"), "--ray"],
                 ["run", "feature-extraction", "-i", str(tmp_path / "t.txt"), "--ray", "10.0.0.1:6379"]):
        assert _error(args, capsys) == "running on Ray needs the ray package with Ray Data: pip install 'lmatlas[ray]'"
    assert not (tmp_path / "index").exists() and not (tmp_path / "v.npy").exists()
    with pytest.raises(LmatlasError, match=r"pip install 'lmatlas\[ray\]'"):
        Index(tmp_path / "index").build([tmp_path / "t.txt"], ray=True)


def test_ray_is_imported_only_for_ray():
    code = ("import sys, lmatlas.cli, lmatlas.search, lmatlas.ray_data; lmatlas.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _Server:
    """A local TCP server that is not a Ray head: it answers as an HTTP/1 server does, or holds
    each connection and says nothing."""

    def __init__(self, silent: bool):
        self.socket, self.held = socket.socket(), []
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.address = "127.0.0.1:%d" % self.socket.getsockname()[1]
        threading.Thread(target=self._serve, args=(silent,), daemon=True).start()

    def _serve(self, silent: bool) -> None:
        while True:
            try:
                connection = self.socket.accept()[0]
            except OSError:
                return
            if silent:
                self.held.append(connection)
                continue
            connection.recv(65536)  # what the client sent, read before answering (a close then resets nothing)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            connection.close()

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


def test_an_address_where_no_cluster_answers(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("one\n", encoding="utf-8")
    embed = ["embed", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "v.npy")]
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    message = _error([*embed, "--ray", f"127.0.0.1:{port}"], capsys)
    assert message.startswith(f"--ray 127.0.0.1:{port}: no Ray cluster answers there (") and "ray start --head" in message
    http1, silent = _Server(silent=False), _Server(silent=True)
    try:
        assert _error([*embed, "--ray", http1.address], capsys).startswith(
            f"--ray {http1.address}: something answers there, but not a Ray cluster's head")
        # A connection that stays silent: the probe gives up within --ray-timeout (here half a second).
        assert _error([*embed, "--ray", silent.address, "--ray-timeout", "0.5"], capsys) == (
            f"--ray {silent.address}: no Ray cluster answers there (timed out); start one with `ray start --head`, "
            "or leave the address out to run on this machine")
    finally:
        http1.close()
        silent.close()
    assert _error([*embed, "--ray", "my-cluster"], capsys).startswith("--ray my-cluster: a Ray address is HOST:PORT")
    assert not (tmp_path / "v.npy").exists()


def test_a_cluster_that_asks_for_a_token(ray_cluster, monkeypatch):
    """Ray sends its token to a cluster named by address only with RAY_AUTH_MODE=token (set in
    this process by the local instance, which asks for one): without it, one sentence says so."""
    from lmatlas.ray_data import check_address

    address = ray_cluster.get_runtime_context().gcs_address
    check_address(address)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(LmatlasError, match=rf"^ray={address}: the Ray cluster there asks for its token; set RAY_AUTH_MODE=token"):
        check_address(address)


def test_ray_settings_are_checked(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("one\n", encoding="utf-8")
    embed = ["embed", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "v.npy")]
    assert _error([*embed, "--ray-actors", "2"], capsys) == "--ray-actors needs --ray"
    assert _error([*embed, "--ray", "--ray-actors", "0"], capsys) == "--ray-actors 0: a Ray job needs at least one actor"
    assert _error([*embed, "--ray", "--ray-batch-size", "0"], capsys).startswith("--ray-batch-size 0: ")
    assert _error([*embed, "--ray", "--ray-cpus-per-actor", "0"], capsys).startswith("--ray-cpus-per-actor 0: ")
    assert _error([*embed, "--ray", "--ray-timeout", "-1"], capsys).startswith("--ray-timeout -1: ")
    with pytest.raises(LmatlasError, match="give True, a cluster's HOST:PORT or a RayOptions"):
        Index(tmp_path / "index").build([tmp_path / "t.txt"], ray=3)
    from lmatlas.ray_data import run_task

    with pytest.raises(LmatlasError, match="inputs go to Ray as JSON, and one cannot be written so"):
        run_task("feature-extraction", ["a text", object()], ray=True)


def test_more_cpus_than_the_cluster_has(ray_cluster, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("one\ntwo\n", encoding="utf-8")
    args = ["embed", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "v.npy"), "--ray", "--ray-actors", "3",
            "--ray-cpus-per-actor", "1"]
    assert _error(args, capsys) == ("--ray-actors 3 with --ray-cpus-per-actor 1 need 3 CPUs, and the Ray cluster has 2; "
                                    "give fewer actors or a fraction of a CPU each")


def test_an_actors_mistake_reads_as_without_ray(ray_cluster, tmp_path, capsys):
    """A model that cannot load, a text too long with --no-truncate: the same sentence as in one
    process (the line counted in the whole file, not in the actor's block)."""
    lines = ["short text"] * 9 + ["word " * 400] + ["short"] * 3
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    embed = ["embed", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "v.npy"), "--no-truncate"]
    alone = _error(embed, capsys)
    assert alone.startswith(f"{tmp_path / 't.txt'} line 10: ")
    assert _error([*embed, "--ray", "--ray-batch-size", "4"], capsys) == alone
    missing = ["-m", str(tmp_path / "no-model")]
    assert _error([*embed, *missing, "--ray"], capsys) == _error([*embed, *missing], capsys)
    assert not (tmp_path / "v.npy").exists()


class _Dying:
    """An actor whose process ends at its first block, as one killed for memory does."""

    def __call__(self, batch):
        import os

        os._exit(3)


def test_actors_that_die_end_the_job_in_one_sentence(ray_cluster):
    import cloudpickle

    from lmatlas.ray_data import map_rows

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import the tests
    try:
        with pytest.raises(LmatlasError, match=r"^the Ray job lost its actors \(.+\); the nodes need lmatlas' dependencies"):
            map_rows({"x": np.arange(4)}, _Dying, RayOptions(actors=1, timeout=120))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_job_that_sends_nothing_in_time_is_given_up(ray_cluster, tmp_path, capsys):
    """Actors take seconds to start and load the model: no block comes back within 0.01 s. (Last
    in the module: the job given up still ends in the background.)"""
    (tmp_path / "t.txt").write_text("one\ntwo\n", encoding="utf-8")
    args = ["embed", "-i", str(tmp_path / "t.txt"), "-o", str(tmp_path / "v.npy"), "--ray", "--ray-timeout", "0.01"]
    assert _error(args, capsys).startswith("the Ray job sent no results for 0.01 s (--ray-timeout 0.01): ")
    assert not (tmp_path / "v.npy").exists()
