"""Latent start rows: from the photos, real image-token rows, one per cluster of their tokens; from a description,
its words' rows in order."""

from __future__ import annotations

import pytest
import torch

from engine.concepts.start_rows import agreed_description, description_rows, photo_rows


def test_each_row_is_the_embedding_of_a_token_the_photos_contain() -> None:
    weight = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    photos = [[5, 5, 5, 6, 7, 40], [41, 42, 5, 90]]
    rows = photo_rows(weight, photos, 4)
    assert rows.shape == (4, 8) and rows.dtype == torch.float32
    used = {int(i) for i in torch.cdist(rows, weight).argmin(1)}
    assert used <= {5, 6, 7, 40, 41, 42, 90} and len(used) == 4
    assert 5 in used  # the most frequent token represents its cluster
    torch.testing.assert_close(photo_rows(weight, photos, 4), rows)


def test_far_apart_groups_of_tokens_each_get_a_row() -> None:
    weight = torch.zeros(20, 2)
    weight[:10, 0] = torch.linspace(0, 0.1, 10)  # a tight group: tokens 0-9
    weight[10:, 0] = 10 + torch.linspace(0, 0.1, 10)  # far away: tokens 10-19
    rows = photo_rows(weight, [[0, 0, 0, 1, 2, 3, 15]], 2)
    assert sorted(rows[:, 0].round().tolist()) == [0.0, 10.0]


def test_fewer_distinct_tokens_than_rows_repeat_in_order_of_frequency() -> None:
    weight = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    rows = photo_rows(weight, [[3, 3, 8]], 5)
    assert [int(r[0]) // 3 for r in rows] == [3, 8, 3, 8, 3]


def test_no_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="no image tokens"):
        photo_rows(torch.zeros(4, 2), [[]], 3)


def test_description_rows_are_its_words_in_order_repeated_when_short() -> None:
    weight = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    rows = description_rows(weight, [7, 3, 9], 5)
    assert [int(r[0]) // 2 for r in rows] == [7, 3, 9, 7, 3]
    assert [int(r[0]) // 2 for r in description_rows(weight, list(range(10)), 4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="no description tokens"):
        description_rows(weight, [], 4)


def test_the_agreed_description_is_the_one_most_like_the_others() -> None:
    descriptions = [
        "A large red plain circle with a blue hat on grass, on the left.",
        "A small red striped square with a blue hat at night, in the centre.",
        "A large red striped square with a blue hat by the sea, on the right.",
    ]
    assert agreed_description(descriptions) == descriptions[2]
    assert agreed_description(descriptions[:1]) == descriptions[0]
    assert agreed_description(["A red hat.", "A blue hat."]) == "A red hat."  # a tie: the first
    with pytest.raises(ValueError, match="no descriptions"):
        agreed_description([])
