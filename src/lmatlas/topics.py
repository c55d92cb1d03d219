"""Topic modelling with a pre-trained BERT model, after BERTopic (Grootendorst, 2022).

1. embed every text with a sentence-embedding model (all-MiniLM-L6-v2 by default);
2. reduce the embeddings to two dimensions with t-SNE, which gathers texts of similar meaning
   into dense clumps (BERTopic uses UMAP for this; t-SNE comes with scikit-learn, and its two
   dimensions are also the picture);
3. cluster the clumps with HDBSCAN, which finds clusters of any shape and leaves the texts that
   belong to none as outliers (topic -1);
4. name each topic by class-based TF-IDF: the words frequent in the topic's texts taken together,
   and rare in the other topics'.

scikit-learn (t-SNE, HDBSCAN, the word counts) and matplotlib (the plot) are optional: install
them with ``pip install 'lmatlas[topics]'``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import LmatlasError

OUTLIERS = -1


@dataclass
class Topic:
    topic: int  # -1 holds the outliers
    size: int
    keywords: list[tuple[str, float]]  # (word, c-TF-IDF weight), best first
    representative: list[str]  # the texts nearest the topic's centre

    @property
    def name(self) -> str:
        words = "_".join(w for w, _ in self.keywords[:4])
        return f"{self.topic}_{words}" if words else str(self.topic)

    def to_dict(self) -> dict:
        return {
            "topic": self.topic,
            "name": self.name,
            "size": self.size,
            "keywords": [{"word": w, "weight": round(float(s), 6)} for w, s in self.keywords],
            "representative": self.representative,
        }


@dataclass
class TopicModel:
    """The topics of a collection: ``topics`` (largest first, outliers last), and for each text
    its topic, its membership strength (HDBSCAN's probability) and its place in the 2-D map."""

    texts: list[str]
    topics: list[Topic]
    assignments: np.ndarray  # topic of each text
    probabilities: np.ndarray
    coordinates: np.ndarray  # (n, 2) t-SNE map
    parameters: dict = field(default_factory=dict)

    def topic(self, number: int) -> Topic:
        return next(t for t in self.topics if t.topic == number)

    def to_dict(self, lines: Sequence[int] | None = None) -> dict:
        docs = []
        for i, text in enumerate(self.texts):
            doc = {"text": text, "topic": int(self.assignments[i]), "probability": round(float(self.probabilities[i]), 4),
                   "x": round(float(self.coordinates[i, 0]), 3), "y": round(float(self.coordinates[i, 1]), 3)}
            docs.append({"line": lines[i], **doc} if lines is not None else doc)
        return {"parameters": self.parameters, "topics": [t.to_dict() for t in self.topics], "documents": docs}


def _sklearn():
    try:
        from sklearn.cluster import HDBSCAN
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.manifold import TSNE
    except ImportError:
        raise LmatlasError(
            "topic modelling needs scikit-learn (1.3 or later): pip install 'lmatlas[topics]'"
        ) from None
    return HDBSCAN, CountVectorizer, TSNE


def find_topics(
    texts: Sequence[str],
    model: str | os.PathLike | None = None,
    min_topic_size: int = 10,
    min_samples: int | None = None,
    keywords: int = 10,
    representative: int = 3,
    reduce_outliers: bool = False,
    stop_words: str | None = "english",
    seed: int = 0,
    batch_size: int = 32,
    embeddings: np.ndarray | None = None,
    progress: bool = False,
) -> TopicModel:
    """The topics of ``texts`` (see the module docstring).

    ``min_topic_size``: the smallest group of texts that makes a topic (HDBSCAN's
    min_cluster_size); ``min_samples``: how dense a clump must be (default a third of
    min_topic_size: lower finds more topics, with fewer outliers); ``reduce_outliers``: give
    every outlier the topic whose centre is nearest in embedding space; ``embeddings``: vectors
    already computed for ``texts``; ``progress``: a bar on standard error while they are embedded.
    """
    HDBSCAN, CountVectorizer, TSNE = _sklearn()
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise LmatlasError(f"text {i} is a {type(t).__name__}, not a string")
    if isinstance(min_topic_size, bool) or not isinstance(min_topic_size, int) or min_topic_size < 2:
        raise LmatlasError(f"min_topic_size must be an integer of at least 2, not {min_topic_size!r}")
    if min_samples is None:
        min_samples = max(2, min_topic_size // 3)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise LmatlasError(f"min_samples must be a positive integer, not {min_samples!r}")
    for name, value, least in (("keywords", keywords, 1), ("representative", representative, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise LmatlasError(f"{name} must be an integer of at least {least}, not {value!r}")
    if len(texts) < 2 * min_topic_size:
        raise LmatlasError(
            f"{len(texts)} texts are too few for topics of at least {min_topic_size} texts; "
            "give more texts or a smaller min_topic_size"
        )

    if embeddings is None:
        from .embeddings import embed

        embeddings = embed(texts, model=model, batch_size=batch_size, progress=progress)
    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.shape[0] != len(texts):
        raise LmatlasError(f"{vectors.shape[0]} embeddings for {len(texts)} texts")
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    coords = _tsne(vectors, TSNE, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notice about `copy`
        clusterer = HDBSCAN(min_cluster_size=min_topic_size, min_samples=min_samples, cluster_selection_method="leaf")
        labels = clusterer.fit_predict(coords)
    probabilities = np.asarray(clusterer.probabilities_, dtype=np.float64)
    labels = _by_size(labels)
    found = sorted(set(labels.tolist()) - {OUTLIERS})
    if reduce_outliers and found and (labels == OUTLIERS).any():
        centres = np.stack([_centre(vectors[labels == t]) for t in found])
        lost = labels == OUTLIERS
        labels[lost] = np.array(found)[np.argmax(vectors[lost] @ centres.T, axis=1)]
        probabilities[lost] = 0.0

    words = _keywords(texts, labels, CountVectorizer, keywords, stop_words)
    topics = []
    for t in found + ([OUTLIERS] if (labels == OUTLIERS).any() else []):
        members = np.flatnonzero(labels == t)
        centre = _centre(vectors[members])
        nearest = members[np.argsort(-(vectors[members] @ centre), kind="stable")[:representative]]
        topics.append(Topic(t, len(members), words.get(t, []), [texts[i] for i in nearest]))
    parameters = {
        "model": str(model) if model is not None else "all-MiniLM-L6-v2 (default)",
        "texts": len(texts),
        "min_topic_size": min_topic_size,
        "min_samples": min_samples,
        "reduce_outliers": reduce_outliers,
        "seed": seed,
        "method": "sentence embeddings -> t-SNE (2-D) -> HDBSCAN (leaf clusters) -> class-based TF-IDF",
    }
    return TopicModel(texts, topics, labels, probabilities, coords, parameters)


def _tsne(vectors: np.ndarray, TSNE, seed: int) -> np.ndarray:
    n = len(vectors)
    # Fifty principal components keep what t-SNE's neighbourhoods need and make it faster.
    x = vectors - vectors.mean(axis=0)
    if x.shape[1] > 50 and n > 50:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:50].T
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x.astype(np.float32)).astype(np.float64)


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber topics 0, 1, 2... from the largest; outliers stay -1."""
    labels = np.asarray(labels).copy()
    ids, counts = np.unique(labels[labels != OUTLIERS], return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    out = np.full_like(labels, OUTLIERS)
    for new, old in enumerate(order):
        out[labels == old] = new
    return out


def _centre(vectors: np.ndarray) -> np.ndarray:
    c = vectors.mean(axis=0)
    return c / max(float(np.linalg.norm(c)), 1e-12)


def _keywords(texts, labels, CountVectorizer, n: int, stop_words) -> dict[int, list[tuple[str, float]]]:
    """Class-based TF-IDF: each topic's texts are one document. A word's weight in a topic is
    its frequency there (as a share of the topic's words) times log(1 + A / its frequency in
    all topics), A being the average number of words per topic."""
    topics = sorted(set(labels.tolist()))
    min_df = 2 if len(texts) >= 100 else 1
    try:
        counter = CountVectorizer(stop_words=stop_words, min_df=min_df)
        counts = counter.fit_transform(texts)
    except ValueError:  # nothing but stop words
        return {}
    vocab = counter.get_feature_names_out()
    per_topic = np.vstack([np.asarray(counts[labels == t].sum(axis=0)).ravel() for t in topics]).astype(np.float64)
    tf = per_topic / np.maximum(per_topic.sum(axis=1, keepdims=True), 1)
    average = per_topic.sum() / len(topics)
    idf = np.log1p(average / np.maximum(per_topic.sum(axis=0), 1))
    weights = tf * idf
    out = {}
    for row, t in enumerate(topics):
        best = np.argsort(-weights[row], kind="stable")[:n]
        out[t] = [(str(vocab[j]), float(weights[row, j])) for j in best if weights[row, j] > 0]
    return out


def plot_topics(result: TopicModel, path: str | os.PathLike, title: str | None = None, words: int = 3) -> None:
    """The 2-D map of the texts, coloured by topic, each topic named by its first keywords at
    its centre; outliers in light grey."""
    from .plots import check_path, pyplot, save_figure

    out = check_path(path)

    plt = pyplot("the topic plot")

    xy, labels = result.coordinates, result.assignments
    found = [t for t in result.topics if t.topic != OUTLIERS]
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(12, 9), dpi=130)
    lost = labels == OUTLIERS
    if lost.any():
        ax.scatter(xy[lost, 0], xy[lost, 1], s=6, c="0.82", linewidths=0, label=f"outliers ({int(lost.sum())})")
    for i, t in enumerate(found):
        members = labels == t.topic
        ax.scatter(xy[members, 0], xy[members, 1], s=10, color=cmap(i % 20), linewidths=0)
    names = []
    for i, t in enumerate(found):
        centre = np.median(xy[labels == t.topic], axis=0)
        label = f"{t.topic}: " + ", ".join(w for w, _ in t.keywords[:words])
        names.append(ax.annotate(
            label, centre, xytext=(0, 0), textcoords="offset points", ha="center", va="center", fontsize=8,
            color="black", bbox=dict(boxstyle="round,pad=0.2", fc=cmap(i % 20), ec="none", alpha=0.8), zorder=5,
        ))
    ax.set_xticks([])
    ax.set_yticks([])
    n = len(result.texts)
    ax.set_title(title or f"{len(found)} topics in {n} texts (t-SNE map of sentence embeddings, HDBSCAN clusters)",
                 fontsize=12)
    if lost.any():
        ax.legend(loc="lower right", fontsize=8, markerscale=2, framealpha=0.8)
    fig.tight_layout()
    _part(fig, names)
    save_figure(fig, out)


def _part(fig, names, rounds: int = 60) -> None:
    """Move overlapping topic names apart vertically, a little at a time, until none overlap."""
    if len(names) < 2:
        return
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_points = 72.0 / fig.dpi
    offsets = [0.0] * len(names)
    for _ in range(rounds):
        boxes = [n.get_window_extent(renderer) for n in names]
        moved = False
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                a, b = boxes[i], boxes[j]
                if a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1:
                    step = (min(a.y1, b.y1) - max(a.y0, b.y0)) / 2 + 1
                    up, down = (i, j) if (a.y0 + a.y1) >= (b.y0 + b.y1) else (j, i)
                    offsets[up] += step * to_points
                    offsets[down] -= step * to_points
                    moved = True
        if not moved:
            return
        for n, dy in zip(names, offsets):
            n.xyann = (0, dy)
