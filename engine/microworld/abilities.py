"""What a micro-world base model can do, measured on fresh scenes (no concept attached):
- question answering about a photo: each of `Scene.questions()` (bar the description) answered by likelihood
  among every answer the question can have, per attribute;
- questions without a photo about a creature named in words ("What colour is the red striped circle ...?");
- recognition of a creature named in words: a photo of it (yes), of a one-attribute change (no), of a random one;
- drawing: pictures for `Scene.prompt()`, read by the attribute reader, the share of each attribute drawn right,
  against the ceiling of the VQ image tokenizer's round trip.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from engine.evaluation.measure import option_scores
from engine.evaluation.metrics import choose
from engine.inference.assistant import Assistant
from engine.microworld.model_files import the
from engine.microworld.reader import AttributeReader
from engine.microworld.world import (
    ACCESSORY_PAIRS,
    ATTRIBUTE_VALUES,
    IDENTITY,
    Identity,
    Scene,
    answer_options,
    one_change,
    render,
    sample_identity,
    sample_pose,
    sample_scene,
)
from engine.training.data import RECOGNITION_QUESTIONS
from engine.training.selection import answers_yes, draw_prompt

PHOTO_QUESTIONS = ("shape", "colour", "pattern", "accessory", "size", "position", "background")
"""The attribute each of `Scene.questions()`'s first seven questions asks about, in order."""


def _variants(scene: Scene, attribute: str) -> list[Scene]:
    """The scene with `attribute` set to each of its values (the accessory with each of its colours)."""
    if attribute == "accessory":
        pairs = ACCESSORY_PAIRS
        return [replace(scene, identity=replace(scene.identity, accessory=a, accessory_colour=c)) for a, c in pairs]
    if attribute in IDENTITY:
        return [replace(scene, identity=replace(scene.identity, **{attribute: v})) for v in ATTRIBUTE_VALUES[attribute]]
    return [replace(scene, **{attribute: v}) for v in ATTRIBUTE_VALUES[attribute]]


def photo_qa(assistant: Assistant, scenes: list[Scene]) -> dict[str, float]:
    """Accuracy per attribute of answering `Scene.questions()` about the photo, and their mean."""
    right: dict[str, list[bool]] = {a: [] for a in PHOTO_QUESTIONS}
    tokens = assistant.loaded.image_tokenizer
    for scene in scenes:
        image = tokens.encode([render(scene)])[0].tolist()
        for number, attribute in enumerate(PHOTO_QUESTIONS):
            question, answer = scene.questions()[number]
            options = list(dict.fromkeys(v.questions()[number][1] for v in _variants(scene, attribute)))
            scores = option_scores(assistant, None, question, options, image)
            right[attribute].append(options[choose(scores)] == answer)
    out = {a: float(np.mean(v)) for a, v in right.items()}
    return {**out, "mean": float(np.mean(list(out.values())))}


def answers_right(assistant: Assistant, identity: Identity, name: str) -> dict[str, bool]:
    """Per attribute, whether the likeliest answer to `Identity.questions(name)` (asked without a photo) is the
    right one, among every answer the world has for that question."""
    right = {}
    for attribute, question, answer in identity.questions(name):
        options = answer_options(attribute)
        right[attribute] = options[choose(option_scores(assistant, None, question, options))] == answer
    return right


def named_qa(assistant: Assistant, count: int, rng: random.Random) -> dict[str, float]:
    """Accuracy per attribute of questions without a photo about creatures named in words."""
    right: dict[str, list[bool]] = {}
    for _ in range(count):
        identity = sample_identity(rng)
        for attribute, correct in answers_right(assistant, identity, the(identity)).items():
            right.setdefault(attribute, []).append(correct)
    out = {a: float(np.mean(v)) for a, v in right.items()}
    return {**out, "mean": float(np.mean(list(out.values())))}


def recognition(assistant: Assistant, count: int, rng: random.Random) -> dict[str, float]:
    """Yes on a photo of the named creature, no on a one-attribute change and on a random creature."""
    tokens = assistant.loaded.image_tokenizer
    hits: dict[str, list[bool]] = {"positive": [], "one_change": [], "random": []}
    for _ in range(count):
        scene = sample_scene(rng)
        question = rng.choice(RECOGNITION_QUESTIONS).format(n=the(scene.identity))
        shown = {
            "positive": scene,
            "one_change": sample_pose(one_change(scene.identity, rng), rng),
            "random": sample_scene(rng),
        }
        for kind, picture in shown.items():
            if kind == "random" and picture.identity == scene.identity:
                continue
            says = answers_yes(assistant, question, tokens.encode([render(picture)])[0].tolist(), [])
            hits[kind].append(says == (kind == "positive"))
    out = {k: float(np.mean(v)) for k, v in hits.items()}
    return {**out, "weighted": (out["positive"] + (out["one_change"] + out["random"]) / 2) / 2}


def drawing(assistant: Assistant, reader: AttributeReader, count: int, rng: random.Random) -> dict[str, float]:
    """Per attribute, the share of pictures drawn for `Scene.prompt()` whose attribute the reader reads right;
    `identity_exact` is the share with all five identity attributes right."""
    scenes = [sample_scene(rng) for _ in range(count)]
    pictures = [draw_prompt(assistant, scene.prompt(), [], number) for number, scene in enumerate(scenes)]
    return read_right(reader, pictures, scenes)


def round_trip(assistant: Assistant, reader: AttributeReader, count: int, rng: random.Random) -> dict[str, float]:
    """Per attribute, the share of scenes the reader still reads right after the VQ image tokenizer's round
    trip (encode to 64 tokens, decode): the ceiling for drawing."""
    scenes = [sample_scene(rng) for _ in range(count)]
    tokens = assistant.loaded.image_tokenizer
    return read_right(reader, tokens.decode(tokens.encode([render(s) for s in scenes])), scenes)


def read_right(reader: AttributeReader, pictures: list[Image.Image], scenes: list[Scene]) -> dict[str, float]:
    """Per attribute, the share of `pictures` the reader reads as their `scenes`; their mean; and the share with
    all five identity attributes right."""
    reads = reader.read(pictures)
    truth = [s.attributes() for s in scenes]
    out = {a: float(np.mean([r[a] == t[a] for r, t in zip(reads, truth, strict=True)])) for a in ATTRIBUTE_VALUES}
    exact = [all(r[a] == t[a] for a in IDENTITY) for r, t in zip(reads, truth, strict=True)]
    return {**out, "mean": float(np.mean(list(out.values()))), "identity_exact": float(np.mean(exact))}


def measure(
    assistant: Assistant, reader: AttributeReader, count: int, seed: int, report: Callable[[str], None]
) -> dict[str, Any]:
    """Every ability on `count` fresh scenes each (seeded)."""
    rng = random.Random(f"familiar-abilities-{seed}")
    report("questions about photos")
    results: dict[str, Any] = {"photo_qa": photo_qa(assistant, [sample_scene(rng) for _ in range(count)])}
    report("questions about named creatures")
    results["named_qa"] = named_qa(assistant, count, rng)
    report("recognition")
    results["recognition"] = recognition(assistant, count, rng)
    report("VQ round trip")
    results["round_trip"] = round_trip(assistant, reader, count, rng)
    report("drawing")
    results["drawing"] = drawing(assistant, reader, count, rng)
    return results
