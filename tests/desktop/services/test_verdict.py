"""The readable verdict: counts from the selection's scores, "not measured" instead of 0, advice, raw numbers."""

from __future__ import annotations

from desktop.services.verdict import raw_numbers, verdict


def test_counts_read_as_photos_and_look_alikes() -> None:
    metrics = {
        "recognition_positive": 0.9,
        "recognition_negative": 0.95,
        "recognition": 0.925,
        "score": 0.925,
        "held_out_photos": 10,
        "held_out_negatives": 20,
    }
    shown = verdict("bo", metrics)
    assert shown.summary == "Recognises <bo> in 9 of 10 held-out photos; mistakes 1 of 20 other photos for it."
    assert shown.advice == ()
    assert shown.numbers == (
        "recognition 0.93 \u00b7 yes on its photos 0.90 (of 10) \u00b7 no on others 0.95 (of 20) \u00b7 score 0.93"
    )


def test_unmeasured_parts_are_said_not_printed_as_zero() -> None:
    metrics = {
        "recognition_positive": 0.5,
        "recognition": 0.5,
        "score": 0.5,
        "held_out_photos": 2,
        "held_out_negatives": 0,
    }
    shown = verdict("bo", metrics, photo_count=5)
    assert "1 of 2 held-out photos" in shown.summary and "look-alikes were not checked" in shown.summary
    assert "no on others not measured" in shown.numbers and "0.00" not in shown.numbers
    assert any("other angles" in a for a in shown.advice) and any("another concept" in a for a in shown.advice)

    nothing_held_out = verdict("bo", {"recognition_negative": 1.0, "held_out_photos": 0, "held_out_negatives": 3})
    assert "was not measured: no photo was held out" in nothing_held_out.summary
    assert "never mistakes any of the 3 other photos" in nothing_held_out.summary


def test_advice_follows_weak_scores_and_older_runs_read_as_shares() -> None:
    old = {"recognition_positive": 1.0, "recognition_negative": 0.5, "image_similarity": 0.3, "score": 0.6}
    shown = verdict("mimi", old, photo_count=2)
    assert shown.summary.startswith("Recognises <mimi> in 100% of the held-out photos; mistakes 50% of the other")
    assert "similarity 0.30" in shown.summary
    assert [a.split(" ")[0:3] for a in shown.advice] == [["Add", "photos", "of"], ["Its", "pictures", "do"]]
    assert verdict("mimi", {"recognition_positive": 0.0}, photo_count=2).advice[0].startswith("Add photos: 3-5")


def test_untrained_and_instant_versions() -> None:
    assert (
        verdict("bo", {}, kind="instant").summary == "<bo> was made instantly from one photo and has not been checked."
    )
    assert verdict("bo", {}).advice == ("Train it to check how well it is recognised.",)
    assert raw_numbers({"loss": 1.23456}) == "loss 1.235"
