"""A verdict people can read from a checkpoint's scores (the ones selection chose it by), with advice, and the raw
numbers behind it; used by the library's cards, the training view and `familiar concept show` / `familiar train`.

The scores come from `engine.training.selection`: the share of held-out photos of the concept the model says yes to
(`recognition_positive`), the share of other photos it says no to (`recognition_negative`), their counts
(`held_out_photos`, `held_out_negatives`), and where measured the similarity of a drawn picture to the photos. A
part that was not measured (no held-out photo, no negatives) is absent from the metrics, and the verdict says so.
Runs from before the counts were kept give shares only: the verdict then speaks in percentages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.training.metrics_text import shown

GOOD_RECOGNITION = 0.8
"""Below this share of its own held-out photos recognised, the advice is to add photos from other angles."""
GOOD_REJECTION = 0.8
"""Below this share of other photos rejected, the advice is to add photos in other places and negatives."""
LOW_SIMILARITY = 0.5
"""Below this image similarity (CLIP-I; the paper's trained concepts reach about 0.78), pictures get advice."""

RAW_LABELS = (
    ("recognition", "recognition"),
    ("recognition_positive", "yes on its photos"),
    ("recognition_negative", "no on others"),
    ("image_similarity", "image similarity"),
    ("score", "score"),
)
NOT_MEASURED = {
    "recognition_positive": "held_out_photos",
    "recognition_negative": "held_out_negatives",
}


@dataclass(frozen=True)
class Verdict:
    """`summary`: one or two plain sentences; `advice`: what to do next (empty when nothing is needed);
    `numbers`: the raw scores in one line."""

    summary: str
    advice: tuple[str, ...]
    numbers: str

    def lines(self) -> list[str]:
        """The summary, then each piece of advice as its own line (what the CLI prints)."""
        return [self.summary, *(f"Advice: {a}" for a in self.advice)]


def raw_numbers(metrics: Mapping[str, object]) -> str:
    """e.g. "recognition 0.83 · yes on its photos 1.00 (of 2) · no on others not measured · score not measured ·
    chosen by held-out loss 1.20": a score stored as None (or with a count of 0) reads "not measured", and where
    there is no score the loss the checkpoint was chosen by follows."""
    parts = []
    for key, label in RAW_LABELS:
        value = _float(metrics.get(key))
        count = metrics.get(NOT_MEASURED[key]) if key in NOT_MEASURED else None
        if value is not None:
            parts.append(f"{label} {value:.2f}" + (f" (of {count})" if isinstance(count, int) else ""))
        elif (key in metrics and key != "image_similarity") or count == 0:
            parts.append(f"{label} {shown(None)}")
    if "score" in metrics and metrics["score"] is None:
        for key, label in (("held_out_loss", "held-out loss"), ("loss", "training loss")):
            chosen = _float(metrics.get(key))
            if chosen is not None:
                parts.append(f"chosen by {label} {chosen:.2f}")
                break
    else:
        loss = _float(metrics.get("loss"))
        if loss is not None:
            parts.append(f"loss {loss:.3f}")
    return " \u00b7 ".join(parts)


def verdict(
    name: str, metrics: Mapping[str, object], *, kind: str = "trained", photo_count: int | None = None
) -> Verdict:
    """The verdict on a concept version's `metrics` (`kind` "instant" or "trained"); `photo_count` sharpens advice."""
    numbers = raw_numbers(metrics)
    shown = f"<{name}>"
    positive = _float(metrics.get("recognition_positive"))
    negative = _float(metrics.get("recognition_negative"))
    similarity = _float(metrics.get("image_similarity"))
    if positive is None and negative is None and similarity is None:
        if kind == "instant":
            return Verdict(
                f"{shown} was made instantly from one photo and has not been checked.",
                ("Train it to check how well it is recognised and to refine it.",),
                numbers,
            )
        return Verdict(f"{shown} has no scores yet.", ("Train it to check how well it is recognised.",), numbers)
    sentences, advice = [], []
    if positive is not None:
        sentences.append(f"Recognises {shown} in {_share(positive, metrics.get('held_out_photos'))} held-out photos")
        if positive < GOOD_RECOGNITION:
            few = photo_count is not None and photo_count < 3
            advice.append(
                "Add photos: 3-5 from different angles work best."
                if few
                else "Add photos from other angles and in other light, then retrain."
            )
    else:
        sentences.append(f"Recognition of {shown} in its own photos was not measured: no photo was held out")
        advice.append("Add a third photo, so that one can be held out to check it.")
    others = metrics.get("held_out_negatives")
    if negative is not None:
        if negative == 1:
            sentences.append(f"never mistakes {_any_of(others)} for it")
        else:
            noun = "other photo" if others == 1 else "other photos"
            sentences.append(f"mistakes {_share(1 - negative, others)} {noun} for it")
        if negative < GOOD_REJECTION:
            advice.append("Add photos of it in other places, and more concepts (or an index) to compare it with.")
    else:
        sentences.append("look-alikes were not checked: there were no other photos to compare with")
        advice.append("Add another concept (or an index of look-alikes) to check it against.")
    summary = "; ".join(sentences) + "."
    if similarity is not None:
        summary += f" Its pictures resemble the photos with similarity {similarity:.2f} (1 is identical)."
        if similarity < LOW_SIMILARITY:
            advice.append("Its pictures do not look like the photos yet: train with look-alikes (an index) or longer.")
    return Verdict(summary, tuple(advice), numbers)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _share(fraction: float, count: object) -> str:
    """ "9 of 10" when the count is known, else "83% of the"."""
    if isinstance(count, int) and count > 0:
        return f"{round(fraction * count)} of {count}"
    return f"{round(fraction * 100)}% of the"


def _any_of(count: object) -> str:
    if isinstance(count, int) and count != 1:
        return f"any of the {count} other photos"
    return "the other photo" if count == 1 else "any other photo"
