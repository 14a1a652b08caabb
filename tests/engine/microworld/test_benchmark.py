"""The personalization benchmark's data (concepts, negatives, retrieval) and the prompt layouts of its ablations."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from desktop.cli.bench import write_report
from desktop.cli.main import main
from engine.concepts.layout import N_GENERATION, PromptLayout
from engine.concepts.prompts import Prompts
from engine.inference.assistant import Assistant
from engine.microworld.benchmark import (
    CONDITIONS,
    Benchmark,
    BenchSettings,
    coarse_words,
    compared_pairs,
    make_concepts,
)
from engine.microworld.reader import load_reader
from engine.microworld.world import IDENTITY, Scene, render
from engine.progress import Progress
from engine.retrieval.plan import concept_query
from engine.training import personalization
from engine.training.recipe import Recipe
from store.library import Library

SMALL = BenchSettings(concepts=3, pool=400, soft_positives=30, train_negatives=10)


def test_concepts_are_deterministic_and_test_renders_show_new_backgrounds() -> None:
    concepts = make_concepts(SMALL)
    assert concepts == make_concepts(SMALL)
    assert make_concepts(replace(SMALL, seed=1)) != concepts
    for concept in concepts:
        seen = {s.background for s in concept.train}
        assert len(seen) == SMALL.train_renders
        assert all(s.background not in seen and s.identity == concept.identity for s in concept.test)
        for negative in concept.hard_negatives:
            changed = [a for a in IDENTITY if getattr(negative.identity, a) != getattr(concept.identity, a)]
            assert len(changed) == 1 or changed == ["accessory", "accessory_colour"]
        assert all(s.identity != concept.identity for s in concept.random_negatives)
    assert coarse_words(concepts[0].identity).split()[:2] == [concepts[0].identity.colour, concepts[0].identity.pattern]


def test_prompt_layouts_change_the_prefix_and_the_self_prompt(assistant: Assistant) -> None:
    state = assistant.slots.initial_state("bo", assistant.loaded.tokenizer)
    assistant.attach(state)
    try:
        tokens = assistant.loaded.image_tokenizer
        slot = assistant.slots.slot("bo")

        def prompts(layout: PromptLayout) -> Prompts:
            return Prompts(assistant.loaded.tokenizer, assistant.slots, tokens.boi_id, tokens.eoi_id, layout)

        default, shared, four = prompts(PromptLayout()), prompts(PromptLayout(shared=True)), prompts(PromptLayout(4))
        latent = set(slot.ids[1:])
        assert sum(i in latent for i in default.concept_prefix("bo")) == 2 * N_GENERATION
        assert [i for i in shared.concept_prefix("bo") if i in latent] == list(slot.generation)
        assert shared.self_prompt(["bo"], "text") == list(slot.generation)
        assert [i for i in four.concept_prefix("bo") if i in latent] == [*slot.generation[:4], *slot.understanding[:4]]
        assert prompts(PromptLayout(self_prompting=False)).self_prompt(["bo"], "text") == []
        with pytest.raises(ValueError):
            prompts(PromptLayout(tokens=0))
    finally:
        assistant.slots.detach("bo")


def test_retrieval_follows_the_plan_rules(assistant: Assistant) -> None:
    bench = Benchmark(assistant, load_reader(), SMALL)
    concept = make_concepts(SMALL)[0]
    photos = concept.train[:-1]
    tiers, negatives = bench.retrieval(concept, photos, 4, 0)
    assert [n for n, _ in tiers] == [3, 2, 1]
    positives = [s for _, scenes in tiers for s in scenes]
    assert 0 < len(positives) <= SMALL.soft_positives and len(negatives) == SMALL.train_negatives
    assert all(s.identity != concept.identity for s in positives + negatives)
    query = concept_query(bench.reader.embed([render(s) for s in photos]))

    def similarity(scenes: list[Scene]) -> np.ndarray:
        return bench.reader.embed([render(s) for s in scenes]) @ query

    hard = negatives[: SMALL.train_negatives // 2]
    assert similarity(positives).min() >= similarity(hard).max() - 1e-5
    assert similarity(hard).mean() > similarity(negatives[len(hard) :]).mean()
    assert bench.retrieval(concept, photos, 4, SMALL.soft_positives) == (tiers, negatives)

    # a recipe asking for more look-alikes than the benchmark's plans further down the ranking, as `familiar train`
    # plans its --soft-positives: more of them, and hard negatives from the ranks after them
    wider, wider_negatives = bench.retrieval(concept, photos, 4, 2 * SMALL.soft_positives)
    more = [s for _, scenes in wider for s in scenes]
    wider_hard = wider_negatives[: SMALL.train_negatives // 2]
    assert len(positives) < len(more) <= 2 * SMALL.soft_positives
    assert similarity(more).min() >= similarity(wider_hard).max() - 1e-5
    assert similarity(wider_hard).max() < similarity(hard).max()


@pytest.fixture()
def recipes(monkeypatch: pytest.MonkeyPatch) -> list[Recipe]:
    """The recipe of every call of the product's one training function, `personalization.personalize`."""
    calls: list[Recipe] = []
    real = personalization.personalize

    def spy(assistant: Assistant, concept: personalization.ConceptPhotos, recipe: Recipe, **kwargs: object):
        calls.append(recipe)
        return real(assistant, concept, recipe, **kwargs)

    monkeypatch.setattr(personalization, "personalize", spy)
    return calls


def test_benchmark_trains_measures_and_reports_and_leaves_the_base_model_untouched(
    assistant: Assistant, tmp_path: Path, recipes: list[Recipe]
) -> None:
    reference = {k: v.clone() for k, v in assistant.loaded.model.state_dict().items()}
    settings = replace(SMALL, concepts=1, epochs=2, drawings=1, conditions=("trained", "text_prompt"))
    updates: list[Progress] = []
    bench = Benchmark(assistant, load_reader(), settings, progress=updates.append)
    results = bench.run()
    assert [(u.phase, u.step, u.total) for u in updates] == [("benchmark", n, 2) for n in range(3)]
    assert updates[1].eta_seconds is not None and updates[2].eta_seconds == 0.0
    assert recipes == [settings.recipe()]  # the trained condition is the product's function and recipe
    trained = results["concepts"][0]["conditions"]["trained"]
    assert trained["steps"] > 0 and trained["last_epoch_loss"] < trained["first_epoch_loss"]
    for key in ("recognition_weighted", "generation_attribute_accuracy"):
        assert 0.0 <= results[key] <= 1.0 and 0.0 <= results["baselines"]["text_prompt"][key] <= 1.0
    assert assistant.slots.names() == [] and assistant.prompts is bench.base_prompts
    after = assistant.loaded.model.state_dict()
    assert all(torch.equal(reference[k], after[k]) for k in reference)
    results.update(command="test", machine="test")
    docs = tmp_path / "docs" / "personalization.md"
    write_report(results, docs, tmp_path / "results.json", bench)
    assert "| trained |" in docs.read_text() and (docs.parent / "personalization-examples.png").is_file()
    assert "![baselines](personalization-baselines.png)" in docs.read_text()
    assert (docs.parent / "personalization-baselines.png").is_file()
    assert "![ablations]" not in docs.read_text() and not (docs.parent / "personalization-ablations.png").exists()


def test_every_condition_changes_the_recipe_into_a_valid_one() -> None:
    base = SMALL.recipe()
    for condition in CONDITIONS.values():
        recipe = condition.recipe(base)  # Recipe checks its fields
        assert {f.name for f in fields(Recipe) if getattr(recipe, f.name) != getattr(base, f.name)} == set(
            condition.changes
        ), condition.name


def test_bench_command_refuses_unknown_conditions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "personalization", "--conditions", "magic", "-o", str(tmp_path / "r.json")])
    assert code == 2 and "unknown conditions ['magic']" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_familiar_train_runs_the_function_the_benchmark_runs(tmp_path: Path, recipes: list[Recipe]) -> None:
    concept = make_concepts(SMALL)[0]
    photos = []
    for number, scene in enumerate(concept.train):
        photos.append(tmp_path / f"{number}.png")
        render(scene).resize((128, 128)).save(photos[-1])
    with Library.open(tmp_path / "library") as library:
        library.concepts.add("bo", photos, kind="pet")
    args = ["--data-dir", str(tmp_path / "library"), "train", "bo", "--epochs", "1", "--learning-rate", "0.01"]
    assert main([*args, "--device", "cpu", "--seed", "5", "--no-index"]) == 0
    (recipe,) = recipes
    expected = Recipe(epochs=1, learning_rate=0.01, seed=5)  # the rest: the recipe's own defaults
    assert {f.name: getattr(recipe, f.name) for f in fields(Recipe)} == vars(expected)


def test_compared_pairs_put_the_aligner_conditions_against_trained_and_untrained() -> None:
    assert compared_pairs(("trained", "untrained", "instant", "refined", "text_prompt")) == [
        ("trained", "untrained"),
        ("trained", "text_prompt"),
        ("instant", "trained"),
        ("instant", "untrained"),
        ("refined", "trained"),
        ("refined", "untrained"),
    ]
    assert compared_pairs(("instant", "untrained")) == [("instant", "untrained")]


@pytest.fixture()
def measured(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """The concept's embedding rows each condition was measured with, by condition."""
    rows: dict[str, torch.Tensor] = {}
    real_measure = Benchmark.measure

    def measure(self: Benchmark, concept, condition: str, subject: str, drawing: str, names: list[str]):
        rows[condition] = self.assistant.slots.state(concept.name).embed.clone()
        return real_measure(self, concept, condition, subject, drawing, names)

    monkeypatch.setattr(Benchmark, "measure", measure)
    return rows


def test_instant_measures_the_aligner_rows_and_refined_trains_from_them(
    assistant: Assistant, monkeypatch: pytest.MonkeyPatch, measured: dict[str, torch.Tensor]
) -> None:
    settings = replace(
        SMALL, concepts=1, epochs=1, drawings=1, conditions=("trained", "untrained", "instant", "refined")
    )
    bench = Benchmark(assistant, load_reader(), settings)
    concept = make_concepts(settings)[0]
    predicted = bench.instant_rows(concept)
    starts: list[torch.Tensor | None] = []
    real_personalize = personalization.personalize

    def spy(assistant: Assistant, photos: personalization.ConceptPhotos, recipe: Recipe, **kwargs: object):
        starts.append(None if photos.start is None else photos.start.embed.clone())
        return real_personalize(assistant, photos, recipe, **kwargs)

    monkeypatch.setattr(personalization, "personalize", spy)
    results = bench.run()
    assert starts[0] is None and torch.equal(starts[1], predicted.embed)  # trained, then refined
    assert torch.equal(measured["instant"], predicted.embed)
    assert not torch.equal(measured["untrained"], predicted.embed)
    row = results["concepts"][0]["conditions"]
    # selection may keep the Aligner's rows (epoch 0); any later epoch has trained away from them
    assert torch.equal(measured["refined"], predicted.embed) == (row["refined"]["best_epoch"] == 0)
    assert row["refined"]["steps"] > 0 and "steps" not in row["instant"]
    pairs = {(r["condition"], r["other"]) for r in results["paired"]}
    assert pairs == {
        ("trained", "untrained"),
        *((c, o) for c in ("instant", "refined") for o in ("trained", "untrained")),
    }
    difference = next(
        r
        for r in results["paired"]
        if (r["condition"], r["other"], r["metric"]) == ("instant", "untrained", "qa_accuracy")
    )
    assert difference["mean"] == pytest.approx(row["instant"]["qa_accuracy"] - row["untrained"]["qa_accuracy"])
    assert assistant.slots.names() == []


def test_untrained_rows_from_the_class_word_encode_no_training_photos(
    assistant: Assistant, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []
    real = personalization.training_photo_ids

    def spy(assistant: Assistant, photos: list, recipe: Recipe) -> list[list[int]]:
        encoded.append(len(photos))
        return real(assistant, photos, recipe)

    monkeypatch.setattr(personalization, "training_photo_ids", spy)
    settings = replace(SMALL, concepts=1, drawings=1, conditions=("untrained",))
    results = Benchmark(assistant, load_reader(), settings).run()
    assert encoded == [] and 0.0 <= results["concepts"][0]["conditions"]["untrained"]["recognition_weighted"] <= 1.0


def test_truth_untrained_spells_the_start_rows_from_the_true_attributes(
    assistant: Assistant, measured: dict[str, torch.Tensor]
) -> None:
    settings = replace(SMALL, concepts=1, drawings=1, conditions=("description_untrained", "truth_untrained"))
    bench = Benchmark(assistant, load_reader(), settings)
    concept = make_concepts(settings)[0]
    bench.run()
    tokenizer = assistant.loaded.tokenizer
    weight = assistant.loaded.model.get_input_embeddings().weight
    ids = tokenizer.encode(f" a {concept.identity.describe()}.", add_special_tokens=False)
    spelled = weight[[ids[i % len(ids)] for i in range(N_GENERATION)]].float()
    truth = measured["truth_untrained"]
    assert torch.equal(truth[-N_GENERATION:], spelled)  # the understanding set, the last rows
    assert not torch.equal(measured["description_untrained"], truth)  # the base model's own caption
