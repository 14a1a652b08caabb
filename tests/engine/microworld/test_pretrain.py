"""The base model's VQ loss weights the creature's small details (pattern, accessory) above body and background;
its one-attribute yes/no checks ask about exactly one attribute, with a wrong value for the "no" ones; its concept
turns read like the product's prompt for a concept whose rows start from a description."""

from __future__ import annotations

import random
from dataclasses import asdict, replace

import numpy as np
import pytest
from transformers import AutoTokenizer

from engine.concepts.layout import N_GENERATION
from engine.concepts.prompts import IGNORE
from engine.microworld.pretrain import (
    BODY_WEIGHT,
    CHECKED,
    DETAIL_WEIGHT,
    MIX,
    SampleMaker,
    changed,
    check_question,
    detail_weights,
    hard_subject,
    parse_mix,
    with_stage,
)
from engine.microworld.world import Identity, Scene, render_array, sample_identity, sample_scene
from engine.model.loading import demo_model_dir

PLAIN = Identity("circle", "red", "plain", "none", "none")


def test_a_plain_creature_weighs_its_body_more_than_the_background() -> None:
    scene = Scene(PLAIN, "large", "centre", "grass")
    weights = detail_weights([scene])[0, 0].numpy()
    white = Scene(replace(PLAIN, colour="white"), "large", "centre", "grass")
    body = (render_array(scene) != render_array(white)).any(-1)
    assert body.sum() > 50 and weights.shape == (32, 32)
    np.testing.assert_array_equal(weights, np.where(body, 1 + BODY_WEIGHT, 1.0))


def test_a_hat_and_a_pattern_weigh_most_exactly_where_they_are_drawn() -> None:
    hatted = replace(PLAIN, pattern="striped", accessory="hat", accessory_colour="blue")
    dressed = Scene(hatted, "small", "left", "snow")
    weights = detail_weights([dressed])[0, 0].numpy()
    drawn = (render_array(dressed) != render_array(Scene(PLAIN, "small", "left", "snow"))).any(-1)
    assert drawn.sum() > 10
    assert bool((weights[drawn] == 1 + DETAIL_WEIGHT).all())
    assert set(np.unique(weights[~drawn]).tolist()) == {1.0, 1 + BODY_WEIGHT}


def test_a_changed_identity_differs_in_the_checked_attribute_only() -> None:
    rng = random.Random(0)
    for _ in range(200):
        identity, attribute = sample_identity(rng), rng.choice(CHECKED)
        other = changed(identity, attribute, rng)
        differ = {k for k, v in asdict(identity).items() if asdict(other)[k] != v}
        allowed = {"accessory", "accessory_colour"} if attribute == "accessory" else {attribute}
        assert differ and differ <= allowed


def test_check_questions_name_the_value_asked_about() -> None:
    hatted = replace(PLAIN, pattern="striped", accessory="hat", accessory_colour="blue")
    assert check_question("shape", hatted) == "Is it a circle?"
    assert check_question("colour", hatted) == "Is it red?"
    assert check_question("pattern", hatted) == "Is it striped?"
    assert check_question("accessory", hatted) == "Is it wearing a blue hat?"
    assert check_question("accessory", PLAIN) == "Is it wearing nothing?"


def test_parse_mix_reads_kinds_and_weights() -> None:
    assert parse_mix("check=0.4, rec=0.2,t2i=1") == {"check": 0.4, "rec": 0.2, "t2i": 1.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [("cheque=0.4", "unknown sample kind 'cheque'"), ("rec=lots", "not a number"), ("qa=0", "must be positive")],
)
def test_parse_mix_refuses_bad_mixes(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_a_resume_with_another_mix_or_schedule_starts_a_new_stage() -> None:
    first = with_stage([], 0, 3000, {"check": 0.5, "qa": 0.5})
    assert first == [{"from": 0, "total": 3000, "mix": {"check": 0.5, "qa": 0.5}}]
    assert with_stage(first, 1250, 3000, {"check": 0.5, "qa": 0.5}) == first
    second = with_stage(first, 2000, 5000, {"check": 0.5, "qa": 0.5})
    assert second[1] == {"from": 2000, "total": 5000, "mix": {"check": 0.5, "qa": 0.5}}
    third = with_stage(second, 5000, 5000, None)
    assert len(third) == 3 and third[2]["mix"] == MIX and third[2]["from"] == 5000
    gentler = with_stage(third, 5000, 5000, None, peak_lr=3e-4)
    assert len(gentler) == 4 and gentler[3] == {"from": 5000, "total": 5000, "mix": MIX, "peak_lr": 3e-4}
    assert with_stage(gentler, 5250, 5000, None, peak_lr=3e-4) == gentler


def test_hard_recognition_asks_about_the_creature_or_a_one_attribute_change_never_a_random_one() -> None:
    rng = random.Random(1)
    shown = sample_identity(rng)
    asked = [hard_subject(shown, rng) for _ in range(400)]

    def changes(other: Identity) -> int:
        wearing = (other.accessory, other.accessory_colour) != (shown.accessory, shown.accessory_colour)
        return sum(getattr(other, f) != getattr(shown, f) for f in ("shape", "colour", "pattern")) + wearing

    differences = [changes(a) for a in asked]
    assert set(differences) == {0, 1}
    assert 160 < differences.count(0) < 240
    assert parse_mix("hard=0.3,qa=0.7") == {"hard": 0.3, "qa": 0.7}


def test_a_concept_turn_spells_the_products_prefix_with_a_description_and_trains_only_the_answer() -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir())
    vocab = tokenizer.get_vocab()
    maker = SampleMaker(tokenizer, None, None, vocab["<racm3:break>"], vocab["<eoss>"])  # type: ignore[arg-type]
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    rng, image = random.Random(5), [7] * 4
    kinds = set()
    for _ in range(60):
        scene = sample_scene(rng)
        sample = maker.concept(scene, image, rng)
        name_ids = sample.ids[1 : sample.ids.index(encode(" is")[0])]
        start = 1 + len(name_ids) + len(encode(" is"))
        latent = sample.ids[start : start + N_GENERATION]
        assert sample.ids[start + N_GENERATION : start + 2 * N_GENERATION] == latent
        words = tokenizer.decode(latent)
        after = start + 2 * N_GENERATION
        assert sample.ids[after : after + len(encode(". "))] == encode(". ")
        # The answer opens with the understanding set (the self-prompt), which carries no loss; the loss is on
        # the answer or the picture alone.
        trained = [i for i, label in enumerate(sample.labels) if label != IGNORE]
        assert sample.ids[trained[0] - N_GENERATION : trained[0]] == latent
        assert sample.ids[trained[-1]] == tokenizer.eos_token_id
        assert sample.labels[: trained[0]] == [IGNORE] * trained[0]
        target = tokenizer.decode(sample.ids[trained[0] :], skip_special_tokens=True)
        kind = "picture" if image[0] in sample.ids[trained[0] :] else target.split()[0].rstrip(".")
        if kind not in ("Yes", "No"):  # a drawing or a named question: the definition is the creature shown
            assert scene.identity.describe() in words
        kinds.add(kind)
    assert {"picture", "Yes", "No"} <= kinds and len(kinds) > 3  # drawings, recognition and named questions


def test_a_wearing_sample_asks_about_the_photos_accessory_and_trains_only_its_answer() -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo_model_dir())
    vocab = tokenizer.get_vocab()
    maker = SampleMaker(tokenizer, None, None, vocab["<racm3:break>"], vocab["<eoss>"])  # type: ignore[arg-type]
    hat = Scene(Identity("circle", "red", "plain", "hat", "blue"), "large", "left", "grass")
    sample = maker.accessory_question(hat, [7] * 4)
    trained = [i for i, label in enumerate(sample.labels) if label != IGNORE]
    assert "What is it wearing?" in tokenizer.decode(sample.ids[: trained[0]])
    assert tokenizer.decode(sample.ids[trained[0] :], skip_special_tokens=True).strip() == "A blue hat."
    assert 7 in sample.ids[: trained[0]]  # the photo is in the prompt
    assert parse_mix("wearing=0.1,qa=0.9") == {"wearing": 0.1, "qa": 0.9}
