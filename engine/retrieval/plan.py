"""Soft positives and negatives for one concept: the retrieval plan the trainer consumes.

For k generation tokens (16 in Yo'Chameleon) the rule is:
- the query is the normalised mean of the concept photos' embeddings;
- the ``top_n`` nearest images, minus the concept's own photos (same sha256, or cosine above
  ``duplicate_threshold`` to one of them), the user's other concepts' photos (same sha256) and near-duplicates
  (cosine above the threshold to an image already kept, scanning from the most similar), sorted by similarity,
  are cut into k-1 contiguous tiers as equal as possible (the first ``len % (k-1)`` tiers get one more image;
  empty tiers are left out);
- tier i (0 = most similar) is trained on "A photo of <g1>...<g_n>." with n = k-1-i: 15 tokens for tier 0 down
  to 1 token for tier 14; the real photos get all k tokens plus the identifier;
- hard negatives are the next ``num_hard_negatives`` ranks after ``top_n`` (own and other concepts' photos
  removed); easy negatives are drawn at random (seeded) from the rest of the offline index; the user's other
  concepts' photos are negatives too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import EngineError
from engine.model.images import open_image
from engine.retrieval.index import EmbeddingIndex, Neighbour, Neighbours
from engine.retrieval.remote_knn import RemoteKnnSettings, find_neighbours
from engine.retrieval.vector_search import Backend

if TYPE_CHECKING:
    from engine.retrieval.embedder import Embedder

PLAN_VERSION = 1


@dataclass(frozen=True)
class PlanSettings:
    num_generation_tokens: int = 16
    top_n: int = 1000
    num_hard_negatives: int = 100
    num_easy_negatives: int = 100
    duplicate_threshold: float = 0.98
    seed: int = 0

    def validate(self) -> None:
        if self.num_generation_tokens < 2:
            raise EngineError("a concept needs at least 2 generation tokens to have soft-positive tiers")
        if min(self.top_n, self.num_hard_negatives, self.num_easy_negatives) < 0:
            raise EngineError("retrieval counts cannot be negative")
        if not 0.0 < self.duplicate_threshold <= 1.0:
            raise EngineError("duplicate_threshold must be in (0, 1]")


@dataclass(frozen=True)
class ConceptPhoto:
    """One of the user's photos of a concept (or of another concept)."""

    source: str
    sha256: str


@dataclass(frozen=True)
class Tier:
    """Soft positives trained on "A photo of <g1>...<g_{num_tokens}>."; tier 0 holds the most similar images."""

    tier: int
    num_tokens: int
    images: list[Neighbour]


@dataclass(frozen=True)
class OtherConceptPhoto:
    concept: str
    source: str
    sha256: str


@dataclass
class RetrievalPlan:
    """Everything the trainer needs besides the photos' pixels; JSON-serialisable (``to_json``/``from_json``).

    Images with a ``row`` have their embedding (and VQ tokens, when ``index["vq"]`` names the trainer's base
    model) in the offline index at ``index["path"]``; the others are local files under ``source``.
    """

    concept: str
    num_generation_tokens: int
    photos: list[ConceptPhoto]
    tiers: list[Tier]
    hard_negatives: list[Neighbour]
    easy_negatives: list[Neighbour]
    other_concept_negatives: list[OtherConceptPhoto]
    source: str
    index: dict[str, Any] | None
    settings: PlanSettings
    dropped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    version: int = PLAN_VERSION

    @property
    def photo_tokens(self) -> int:
        """Generation tokens the real photos are trained with: all of them (plus the identifier)."""
        return self.num_generation_tokens

    @property
    def soft_positives(self) -> list[Neighbour]:
        return [image for tier in self.tiers for image in tier.images]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrievalPlan:
        if data.get("version") != PLAN_VERSION:
            raise EngineError(f"retrieval plan version {data.get('version')!r} is not supported")
        try:
            return cls(
                concept=data["concept"],
                num_generation_tokens=data["num_generation_tokens"],
                photos=[ConceptPhoto(**photo) for photo in data["photos"]],
                tiers=[Tier(t["tier"], t["num_tokens"], [Neighbour(**n) for n in t["images"]]) for t in data["tiers"]],
                hard_negatives=[Neighbour(**n) for n in data["hard_negatives"]],
                easy_negatives=[Neighbour(**n) for n in data["easy_negatives"]],
                other_concept_negatives=[OtherConceptPhoto(**o) for o in data["other_concept_negatives"]],
                source=data["source"],
                index=data["index"],
                settings=PlanSettings(**data["settings"]),
                dropped=dict(data["dropped"]),
                warnings=list(data["warnings"]),
            )
        except (KeyError, TypeError) as exc:
            raise EngineError(f"malformed retrieval plan: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> RetrievalPlan:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise EngineError(f"retrieval plan is not JSON: {exc}") from None
        return cls.from_dict(data)


def tier_token_counts(num_generation_tokens: int) -> list[int]:
    """Tokens per tier, most similar tier first: [k-1, k-2, ..., 1]."""
    return list(range(num_generation_tokens - 1, 0, -1))


def tier_sizes(count: int, num_generation_tokens: int) -> list[int]:
    """Images per tier for ``count`` soft positives: k-1 sizes as equal as possible, larger ones first."""
    base, extra = divmod(count, num_generation_tokens - 1)
    return [base + (i < extra) for i in range(num_generation_tokens - 1)]


def split_into_tiers(images: Sequence[Neighbour], num_generation_tokens: int) -> list[Tier]:
    """Images sorted by similarity (highest first) cut into k-1 contiguous tiers; empty tiers are left out."""
    ordered = sorted(images, key=lambda image: -image.similarity)
    tiers, start = [], 0
    for i, (size, tokens) in enumerate(
        zip(tier_sizes(len(ordered), num_generation_tokens), tier_token_counts(num_generation_tokens), strict=True)
    ):
        if size:
            tiers.append(Tier(i, tokens, list(ordered[start : start + size])))
        start += size
    return tiers


def concept_query(embeddings: np.ndarray) -> np.ndarray:
    """The normalised mean of the concept photos' unit embeddings: the retrieval query."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise EngineError("a concept needs at least one photo embedding")
    mean = embeddings.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm) or norm < 1e-6:
        raise EngineError("the concept photos' embeddings cancel out; cannot form a query")
    return mean / norm


def read_concept_photos(paths: Sequence[Path | str], embedder: Embedder) -> tuple[list[ConceptPhoto], np.ndarray]:
    """Hash, decode and embed the user's photos: (photos, float32 [n, dim] unit embeddings)."""
    photos, images = [], []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise EngineError(f"cannot read {path}: {exc.strerror or exc}") from None
        photos.append(ConceptPhoto(str(Path(path).resolve()), hashlib.sha256(data).hexdigest()))
        images.append(open_image(data))
    return photos, embedder.embed(images)


def _near(embeddings: np.ndarray, references: np.ndarray, threshold: float) -> np.ndarray:
    """For each row of ``embeddings``, whether it is above ``threshold`` cosine to any reference."""
    if len(references) == 0 or len(embeddings) == 0:
        return np.zeros(len(embeddings), dtype=bool)
    return (embeddings @ references.T).max(axis=1) > threshold


def _select_positives(
    neighbours: Neighbours,
    own: np.ndarray,
    own_sha: set[str],
    other_sha: set[str],
    settings: PlanSettings,
    dropped: dict[str, int],
) -> list[Neighbour]:
    top = min(settings.top_n, len(neighbours.items))
    near_own = _near(neighbours.embeddings[:top], own, settings.duplicate_threshold)
    kept: list[Neighbour] = []
    kept_vectors = np.empty((top, neighbours.embeddings.shape[1]), dtype=np.float32)
    for i, item in enumerate(neighbours.items[:top]):
        vector = neighbours.embeddings[i]
        if item.sha256 in own_sha or near_own[i]:
            dropped["own_photos"] += 1
        elif item.sha256 in other_sha:
            dropped["other_concepts"] += 1
        elif kept and float((kept_vectors[: len(kept)] @ vector).max()) > settings.duplicate_threshold:
            dropped["near_duplicates"] += 1
        else:
            kept_vectors[len(kept)] = vector
            kept.append(item)
    return kept


def _easy_negatives(
    index: EmbeddingIndex,
    query: np.ndarray,
    own: np.ndarray,
    excluded_sha: set[str],
    excluded_rows: set[int],
    settings: PlanSettings,
) -> list[Neighbour]:
    need = settings.num_easy_negatives
    if need == 0 or index.count == 0:
        return []
    rng = np.random.default_rng(settings.seed)
    draw = min(index.count, 2 * need + len(excluded_rows))
    rows = [int(row) for row in rng.choice(index.count, size=draw, replace=False) if int(row) not in excluded_rows]
    if not rows:
        return []
    vectors = np.asarray(index.embeddings[rows], dtype=np.float32)
    near_own = _near(vectors, own, settings.duplicate_threshold)
    chosen = []
    for row, record, vector, near in zip(rows, index.records(rows), vectors, near_own, strict=True):
        if not near and record.sha256 not in excluded_sha:
            chosen.append(Neighbour(record.source, record.caption, record.sha256, float(vector @ query), row=row))
            if len(chosen) == need:
                break
    return chosen


def plan_from_neighbours(
    concept: str,
    photos: Sequence[ConceptPhoto],
    photo_embeddings: np.ndarray,
    neighbours: Neighbours,
    settings: PlanSettings | None = None,
    easy_pool: EmbeddingIndex | None = None,
    other_concepts: Mapping[str, Sequence[ConceptPhoto]] | None = None,
    source: str = "offline",
    warnings: Sequence[str] = (),
) -> RetrievalPlan:
    """Apply the tier and negative rules (module docstring) to ranked ``neighbours`` of the concept query."""
    settings = settings or PlanSettings()
    settings.validate()
    own = np.asarray(photo_embeddings, dtype=np.float32)
    query = concept_query(own)
    if neighbours.embeddings.shape[1:] != own.shape[1:]:
        raise EngineError(
            f"neighbour embeddings {list(neighbours.embeddings.shape)} do not match the photos' {list(own.shape)}"
        )
    other_concepts = other_concepts or {}
    own_sha = {photo.sha256 for photo in photos}
    other_sha = {photo.sha256 for group in other_concepts.values() for photo in group}
    dropped = {"own_photos": 0, "other_concepts": 0, "near_duplicates": 0}
    positives = _select_positives(neighbours, own, own_sha, other_sha, settings, dropped)

    band = slice(settings.top_n, settings.top_n + settings.num_hard_negatives)
    band_items, band_vectors = neighbours.items[band], neighbours.embeddings[band]
    near_own = _near(band_vectors, own, settings.duplicate_threshold)
    hard = [
        item
        for item, near in zip(band_items, near_own, strict=True)
        if not near and item.sha256 not in own_sha | other_sha
    ]

    notes = list(warnings)
    easy: list[Neighbour] = []
    if easy_pool is not None:
        excluded_rows = {item.row for item in neighbours.items if item.row is not None}
        easy = _easy_negatives(easy_pool, query, own, own_sha | other_sha, excluded_rows, settings)
    if len(easy) < settings.num_easy_negatives:
        notes.append(f"only {len(easy)} of {settings.num_easy_negatives} easy negatives found")
    if len(positives) < settings.top_n:
        notes.append(f"{len(positives)} soft positives kept of the {settings.top_n} asked")

    index_info = None
    if easy_pool is not None:
        index_info = {
            "path": str(easy_pool.path.resolve()),
            "count": easy_pool.count,
            "embedder": easy_pool.embedder.to_dict(),
            "vq": None if easy_pool.vq is None else easy_pool.vq.to_dict(),
        }
    return RetrievalPlan(
        concept=concept,
        num_generation_tokens=settings.num_generation_tokens,
        photos=list(photos),
        tiers=split_into_tiers(positives, settings.num_generation_tokens),
        hard_negatives=hard,
        easy_negatives=easy,
        other_concept_negatives=[
            OtherConceptPhoto(name, photo.source, photo.sha256)
            for name, group in sorted(other_concepts.items())
            if name != concept
            for photo in group
        ],
        source=source,
        index=index_info,
        settings=settings,
        dropped=dropped,
        warnings=notes,
    )


def plan_concept(
    concept: str,
    photos: Sequence[ConceptPhoto],
    photo_embeddings: np.ndarray,
    index: EmbeddingIndex | None,
    other_concepts: Mapping[str, Sequence[ConceptPhoto]] | None = None,
    settings: PlanSettings | None = None,
    remote: RemoteKnnSettings | None = None,
    embedder: Embedder | None = None,
    download_dir: Path | None = None,
    backend: Backend = "auto",
) -> RetrievalPlan:
    """Retrieve neighbours (remote when enabled, else or on failure the offline index) and build the plan."""
    settings = settings or PlanSettings()
    query = concept_query(photo_embeddings)
    if index is not None and index.embedder.dim != len(query):
        raise EngineError(f"the photos' embeddings have dimension {len(query)}; the index holds {index.embedder.dim}")
    if index is not None and embedder is not None:
        index.embedder.check_compatible(embedder.info)
    found = find_neighbours(
        query, settings.top_n + settings.num_hard_negatives, index, remote, embedder, download_dir, backend
    )
    return plan_from_neighbours(
        concept,
        photos,
        photo_embeddings,
        found.neighbours,
        settings,
        index,
        other_concepts,
        found.source,
        found.warnings,
    )
