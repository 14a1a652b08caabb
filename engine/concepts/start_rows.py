"""Latent start rows for a new concept, from what its photos show rather than from the class word.

A concept's latent tokens sit in the prompt (`<bo> is <latent tokens>. `) where the model otherwise reads words
or pictures. Starting them from the class word ("dog") tells the model nothing about this dog. `photo_rows`
starts them from the photos' own image tokens (UniCTokens-style), `description_rows` from the words of the base
model's description of a photo, so the prefix first reads like `<bo> is a red striped circle ...`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

KMEANS_ITERATIONS = 20


def photo_rows(weight: torch.Tensor, image_ids: Sequence[Sequence[int]], count: int) -> torch.Tensor:
    """`count` float32 rows summarising the photos: weighted k-means over the embedding rows (`weight`) of the
    distinct image tokens in `image_ids` (each weighted by how often it occurs), started from the most frequent
    tokens; each cluster is represented by the row of its most frequent token, an embedding the model has read
    before. Deterministic. With fewer distinct tokens than `count`, rows repeat in order of frequency."""
    flat = torch.tensor([i for photo in image_ids for i in photo], dtype=torch.long)
    if flat.numel() == 0:
        raise ValueError("no image tokens to start rows from")
    tokens, counts = flat.unique(return_counts=True)
    order = torch.argsort(counts, descending=True, stable=True)
    tokens, counts = tokens[order], counts[order].float()
    points = weight[tokens.to(weight.device)].float().cpu()
    k = min(count, len(tokens))
    centroids = points[:k].clone()
    assignment = torch.zeros(len(tokens), dtype=torch.long)
    for _ in range(KMEANS_ITERATIONS):
        assignment = torch.cdist(points, centroids).argmin(1)
        for cluster in range(k):
            members = assignment == cluster
            if members.any():
                w = counts[members, None]
                centroids[cluster] = (points[members] * w).sum(0) / w.sum()
    # The most frequent member of each cluster (tokens are sorted by frequency, so the first one).
    representatives = [int((assignment == c).nonzero()[0]) if (assignment == c).any() else c for c in range(k)]
    rows = points[representatives]
    return rows[torch.arange(count) % k]


def agreed_description(descriptions: Sequence[str]) -> str:
    """The description that shares the most words with the others (the first among equals): a description of
    one photo can misread a detail that the others get right, and the one most like the rest is the likeliest
    to be right about all of them."""
    if not descriptions:
        raise ValueError("no descriptions to choose from")
    words = [set(text.lower().replace(",", " ").replace(".", " ").split()) for text in descriptions]
    agreement = [sum(len(mine & theirs) for j, theirs in enumerate(words) if j != i) for i, mine in enumerate(words)]
    return descriptions[agreement.index(max(agreement))]


def spelled_ids(token_ids: Sequence[int], count: int) -> list[int]:
    """The description's first `count` token ids, repeated from its start when it is shorter: how a description
    spells a concept's latent positions (the micro-world base model learns this spelling, `SampleMaker.concept`)."""
    if not token_ids:
        raise ValueError("no description tokens to start rows from")
    return [token_ids[i % len(token_ids)] for i in range(count)]


def description_rows(weight: torch.Tensor, token_ids: Sequence[int], count: int) -> torch.Tensor:
    """`count` float32 rows: the embedding rows of `spelled_ids`."""
    ids = spelled_ids(token_ids, count)
    return weight[torch.tensor(ids, device=weight.device)].float().cpu()
