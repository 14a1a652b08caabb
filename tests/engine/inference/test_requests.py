"""Requests to draw are recognised by their wording and rewritten as the description the model draws from."""

from __future__ import annotations

import pytest

from engine.inference.requests import drawing_prompt


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("Draw <bo> at the beach", "A photo of <bo> at the beach."),
        ("draw <bo> at the beach.", "A photo of <bo> at the beach."),
        ("Show me <bo> in the snow!", "A photo of <bo> in the snow."),
        ("Make a picture of a red bus", "A photo of a red bus."),
        ("Please make me a photo of <bo> on the sofa, please", "A photo of <bo> on the sofa."),
        ("Can you paint <bo> and <kiki>?", "A photo of <bo> and <kiki>."),
        ("Could you please generate an image of <bo> asleep?", "A photo of <bo> asleep."),
        ("Draw a photo of <bo>", "A photo of <bo>."),
        ("Show me what <bo> looks like", "A photo of <bo>."),
        ("I'd like you to sketch a small blue square on sand", "A photo of a small blue square on sand."),
        ("Create a quick drawing of <bo>", "A photo of <bo>."),
    ],
)
def test_requests_to_draw_become_descriptions(text: str, prompt: str) -> None:
    assert drawing_prompt(text) == prompt


@pytest.mark.parametrize(
    "text",
    [
        "What is <bo> doing?",
        "Is <bo> in this photo?",
        "A photo of <bo> at the beach.",
        "Show me how to train a concept",
        "Make <bo> a birthday cake",
        "Give me three facts about <bo>",
        "Tell me about the drawing of <bo>",
        "Draw",
        "",
        "Drawing is fun, isn't it?",
    ],
)
def test_anything_else_is_not_a_request(text: str) -> None:
    assert drawing_prompt(text) is None
