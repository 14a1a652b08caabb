"""Aligner training on DreamBooth subjects with the demo model and a tiny DINOv2: the dataset layout, the
Yes/No-weighted loss, the sample mix, lower loss with frozen base and encoder, and exact resume."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import Dinov2Config, Dinov2Model

from engine.aligner import training
from engine.aligner.model import AlignerConfig, AlignerError, DinoEncoder, build_aligner, new_aligner, read_aligner_file
from engine.aligner.training import (
    AlignerTrainConfig,
    AlignerTrainer,
    Decision,
    Draw,
    PreparedData,
    dataset_digest,
    describe_identities,
    description_targets,
    distill_loss,
    load_resume,
    plan_epoch,
    prepare_data,
    read_dataset,
    resume_path,
    save_checkpoint,
    weighted_token_loss,
)
from engine.concepts.prompts import IGNORE
from engine.concepts.state import ConceptState
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.model.images import open_image
from engine.model.loading import LoadedModel, demo_model_dir, read_config
from engine.training.data import describe_photos
from engine.training.loop import TrainingCancelled
from engine.training.personalization import start_state
from engine.training.recipe import Recipe

DEMO_HIDDEN = read_config(demo_model_dir()).hidden_size
TINY = AlignerConfig(
    vision_hidden=32, text_hidden=DEMO_HIDDEN, hidden=32, n_queries=16, n_blocks=1, n_heads=2, image_size=56
)
QUICK = AlignerTrainConfig(epochs=2, samples_per_identity=2, batch_size=2, micro_batch=1, learning_rate=1e-3)
SUBJECTS = ("dog", "cat", "backpack")


@pytest.fixture(scope="module")
def encoder() -> DinoEncoder:
    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=56, patch_size=14)
    return DinoEncoder(Dinov2Model(config), "tiny")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, dreambooth: Path) -> Path:
    """Three DreamBooth subjects, three photos each; the cat has facts."""
    root = tmp_path_factory.mktemp("identities")
    for subject in SUBJECTS:
        (root / subject).mkdir()
        for photo in sorted((dreambooth / subject).glob("*.jpg"))[:3]:
            (root / subject / photo.name).symlink_to(photo)
    (root / "cat" / "facts.txt").write_text("colour: grey and white\nShe sleeps all day.\n")
    return root


@pytest.fixture(scope="module")
def data(dataset: Path, demo: LoadedModel, encoder: DinoEncoder) -> PreparedData:
    return prepare_data(read_dataset(dataset), demo, encoder, TINY.image_size)


def trainer(demo: LoadedModel, data: PreparedData, config: AlignerTrainConfig = QUICK) -> AlignerTrainer:
    return AlignerTrainer(Assistant(demo), new_aligner(TINY, demo, seed=0), data, config)


def test_dataset_layout(tmp_path: Path) -> None:
    def photo(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (200, 10, 10)).save(path)

    for name in ("b.jpg", "a.jpg", "reference.png"):
        photo(tmp_path / "rex" / name)
    for name in ("2.jpg", "1.jpg"):
        photo(tmp_path / "tom" / name)
    (tmp_path / "tom" / "facts.txt").write_text("colour: black")
    (tmp_path / "tom" / "notes.md").write_text("ignored")
    rex, tom = read_dataset(tmp_path)
    assert [p.name for p in rex.photos] == ["reference.png", "a.jpg", "b.jpg"]
    assert [p.name for p in tom.photos] == ["1.jpg", "2.jpg"] and tom.facts == "colour: black"
    digest = dataset_digest([rex, tom])
    photo(tmp_path / "tom" / "3.jpg")
    assert dataset_digest(read_dataset(tmp_path)) != digest
    (tmp_path / "tom" / "3.jpg").unlink()
    (tmp_path / "tom" / "2.jpg").unlink()
    with pytest.raises(EngineError, match="one photo"):
        read_dataset(tmp_path)
    (tmp_path / "tom" / "1.jpg").unlink()
    with pytest.raises(EngineError, match="at least two identity folders"):
        read_dataset(tmp_path)


def test_weighted_loss_on_a_constructed_case() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 2, 2])
    each = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    weighted = weighted_token_loss(logits, labels, torch.tensor([1.0, 10.0, 1.0]))
    torch.testing.assert_close(weighted, (each[0] + 10 * each[1] + each[2]) / 12)
    assert weighted > each.mean()  # the badly predicted answer token dominates
    half = weighted_token_loss(logits[:1], labels[:1], torch.tensor([1.0]), normalizer=12.0)
    torch.testing.assert_close(half, each[0] / 12)


def test_only_the_yes_or_no_token_is_weighted(demo: LoadedModel, data: PreparedData) -> None:
    run = trainer(demo, data, replace(QUICK, answer_weight=10.0))
    decision = Decision.of(demo.tokenizer)
    for kind, query, word in (("yes", 1, decision.yes), ("no", 4, decision.no)):
        sample = run.sample(Draw(0, 0, query, kind, 3, 5))
        heavy = [token for token, weight in zip(sample.ids, sample.weights, strict=True) if weight == 10.0]
        assert heavy == list(word)
        labelled = [w for w, label in zip(sample.weights, sample.labels, strict=True) if label != IGNORE]
        assert set(labelled) == {1.0, 10.0} and len(labelled) == sum(1 for w in sample.weights if w > 0)
    qa = run.sample(Draw(1, 3, None, "qa", 0, 0))
    assert {w for w in qa.weights if w > 0} == {1.0}
    assert demo.tokenizer.decode(qa.ids).count("grey and white") == 1


def test_epoch_plans_are_deterministic_and_keep_the_positive_share(data: PreparedData) -> None:
    config = AlignerTrainConfig(samples_per_identity=300, positive_share=0.6, qa_share=0.1)
    plan = plan_epoch(data, config, 0)
    assert plan == plan_epoch(data, config, 0) and plan != plan_epoch(data, config, 1)
    kinds = Counter(draw.kind for draw in plan)
    assert abs(kinds["yes"] / (kinds["yes"] + kinds["no"]) - 0.6) < 0.05
    assert {draw.identity for draw in plan if draw.kind == "qa"} == {1}  # only the cat has facts
    for draw in plan:
        own = data.photo_ranges[draw.identity]
        assert draw.reference in own
        if draw.kind == "yes":
            assert draw.query in own and draw.query != draw.reference
        if draw.kind == "no":
            assert draw.query not in own
    fixed = plan_epoch(data, replace(config, rotate_references=False), 0)
    assert {draw.reference for draw in fixed} == {r[0] for r in data.photo_ranges}


def test_the_trained_path_matches_an_attached_instant_concept(demo: LoadedModel, data: PreparedData) -> None:
    run = trainer(demo, data)
    torch.nn.init.normal_(run.aligner.latent_embed.weight, std=0.5)
    torch.nn.init.normal_(run.aligner.latent_head.weight, std=0.5)
    draw = Draw(0, 1, 2, "yes", 0, 0)
    with torch.no_grad():
        trained = run.loss([draw])
        embed, head = run.rows([draw.reference])
    assistant = Assistant(demo)
    assistant.attach(ConceptState("identity", embed[0], head[0], demo.fingerprint))
    sample = run.sample(draw)
    with torch.no_grad():
        logits = demo.model(input_ids=torch.tensor([sample.ids])).logits[0, :-1]
    labels, weights = torch.tensor(sample.labels[1:]), torch.tensor(sample.weights[1:])
    keep = labels != IGNORE
    torch.testing.assert_close(trained, weighted_token_loss(logits[keep], labels[keep], weights[keep]))


@pytest.fixture(scope="module")
def distilled(data: PreparedData, demo: LoadedModel) -> PreparedData:
    descriptions = describe_identities(data.identities, demo)
    return replace(data, descriptions=descriptions, targets=description_targets(descriptions, demo))


def test_distillation_targets_are_the_recipes_description_start_rows(
    demo: LoadedModel, distilled: PreparedData
) -> None:
    assert distilled.targets is not None and distilled.targets.shape == (3, 32, DEMO_HIDDEN)
    for i, identity in enumerate(distilled.identities):
        assistant = Assistant(demo)
        descriptions = describe_photos(assistant, [open_image(p) for p in identity.photos])
        start = start_state(assistant, "bo", "object", "", [], descriptions, Recipe(start="description"))
        torch.testing.assert_close(distilled.targets[i], start.embed[1:], rtol=0, atol=0)
    assert not torch.equal(distilled.targets[0], distilled.targets[1])


def test_distillation_adds_its_weighted_term_and_training_pulls_the_rows_to_the_targets(
    demo: LoadedModel, data: PreparedData, distilled: PreparedData
) -> None:
    with pytest.raises(EngineError, match="description targets"):
        trainer(demo, data, replace(QUICK, distill_weight=1.0))
    draws = plan_epoch(distilled, QUICK, 0)[:2]
    plain, weighted = trainer(demo, distilled), trainer(demo, distilled, replace(QUICK, distill_weight=2.0))
    assert distilled.targets is not None
    with torch.no_grad():
        embed, _head = weighted.rows([d.reference for d in draws])
        term = distill_loss(embed[:, 1:], distilled.targets[[d.identity for d in draws]]).mean()
        torch.testing.assert_close(weighted.loss(draws), plain.loss(draws) + 2.0 * term)
        split = weighted.batch_loss(draws)
        torch.testing.assert_close(split(slice(0, 1)) + split(slice(1, 2)), weighted.loss(draws))
    assert distill_loss(distilled.targets[:1], distilled.targets[:1]).item() == 0.0

    def distance(run: AlignerTrainer) -> float:
        with torch.no_grad():
            rows = run.rows([r[0] for r in distilled.photo_ranges])[0][:, 1:]
        return distill_loss(rows, distilled.targets).mean().item()

    pulled = trainer(demo, distilled, replace(QUICK, epochs=10, distill_weight=100.0))
    before = distance(pulled)
    pulled.run()
    assert distance(pulled) < 0.5 * before


def test_recognition_compares_the_yes_and_no_logits_of_the_attached_rows(demo: LoadedModel, data: PreparedData) -> None:
    run = trainer(demo, data)
    torch.nn.init.normal_(run.aligner.latent_head.weight, std=2.0)
    torch.nn.init.normal_(run.aligner.identifier_embed[-1].weight, std=2.0)
    decision = Decision.of(demo.tokenizer)
    for reference, query in ((0, 1), (0, 4), (3, 7), (6, 2)):
        with torch.no_grad():
            embed, head = run.rows([reference])
        assistant = Assistant(demo)
        assistant.attach(ConceptState("identity", embed[0], head[0], demo.fingerprint))
        prompts = assistant.prompts
        ids = prompts.prompt("Is <identity> in this photo?", data.image_ids[query].tolist(), ["identity"])
        ids += [*prompts.self_prompt(["identity"], "text"), *decision.prefix]
        with torch.no_grad():
            logits = demo.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
        expected = bool(logits[decision.yes[0]] > logits[decision.no[0]])
        assert run.says_yes(reference, query) == expected
    scores = run.recognition(data, negatives_per_identity=1)
    assert scores["recognition"] == (scores["recognition_positive"] + scores["recognition_negative"]) / 2


def test_training_lowers_the_loss_and_leaves_base_and_encoder_untouched(
    demo: LoadedModel, data: PreparedData, encoder: DinoEncoder
) -> None:
    base = {k: v.clone() for k, v in demo.model.state_dict().items()}
    dino = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    run = trainer(demo, data, replace(QUICK, epochs=3))
    held = plan_epoch(data, QUICK, 99)
    with torch.no_grad():
        before = run.loss(held).item()
    losses = run.run()
    with torch.no_grad():
        after = run.loss(held).item()
    assert len(losses) == run.total_steps == 9
    assert after < before - 0.5
    assert all(torch.equal(base[k], v) for k, v in demo.model.state_dict().items())
    assert all(torch.equal(dino[k], v) for k, v in encoder.model.state_dict().items())
    assert all(p.grad is None for p in demo.model.parameters())


def test_resume_after_cancel_matches_an_uninterrupted_run(
    demo: LoadedModel, data: PreparedData, encoder: DinoEncoder, dataset: Path, tmp_path: Path
) -> None:
    whole = trainer(demo, data)
    expected = whole.run()

    output = tmp_path / "aligner.safetensors"
    first = trainer(demo, data)
    steps: list[int] = []
    with pytest.raises(TrainingCancelled) as stop:
        first.run(
            progress=lambda p: steps.append(p.step),
            cancelled=lambda: len(steps) >= 2,
            on_checkpoint=lambda c: save_checkpoint(output, first, c),
        )
    assert stop.value.checkpoint.step == 2 and resume_path(output).is_file()

    digest = dataset_digest(read_dataset(dataset))
    aligner, config, checkpoint, descriptions = load_resume(output, demo, encoder, digest)
    assert config == QUICK and checkpoint.step == 2 and descriptions is None  # no distillation, none kept
    second = AlignerTrainer(Assistant(demo), aligner, data, config)
    losses = second.run(on_checkpoint=lambda c: save_checkpoint(output, second, c), resume=checkpoint)
    assert losses == expected
    assert not resume_path(output).exists()
    tensors, metadata = read_aligner_file(output)
    final = build_aligner(tensors, metadata, "test").state_dict()
    assert all(torch.equal(final[k], v) for k, v in whole.aligner.state_dict().items())
    assert metadata["base_fingerprint"] == demo.fingerprint and metadata["encoder_fingerprint"] == encoder.fingerprint


def test_resuming_for_another_base_model_or_dataset_is_refused(
    demo: LoadedModel, data: PreparedData, encoder: DinoEncoder, tmp_path: Path
) -> None:
    output = tmp_path / "aligner.safetensors"
    run = trainer(demo, data)
    with pytest.raises(TrainingCancelled):
        run.run(cancelled=lambda: True, on_checkpoint=lambda c: save_checkpoint(output, run, c))
    with pytest.raises(AlignerError, match="another base model"):
        load_resume(output, replace(demo, fingerprint="0" * 64), encoder, data.digest)
    with pytest.raises(AlignerError, match="dataset changed"):
        load_resume(output, demo, encoder, "0" * 64)
    with pytest.raises(AlignerError, match="no interrupted run"):
        load_resume(tmp_path / "other.safetensors", demo, encoder, data.digest)


def test_a_resumed_distilling_run_reuses_the_photos_descriptions(
    demo: LoadedModel,
    distilled: PreparedData,
    encoder: DinoEncoder,
    dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = tmp_path / "aligner.safetensors"
    run = trainer(demo, distilled, replace(QUICK, distill_weight=1.0))
    with pytest.raises(TrainingCancelled):
        run.run(cancelled=lambda: True, on_checkpoint=lambda c: save_checkpoint(output, run, c))
    *_, descriptions = load_resume(output, demo, encoder, distilled.digest)
    assert descriptions == distilled.descriptions

    def no_describing(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a resumed run described the photos again")

    monkeypatch.setattr(training, "describe_photos", no_describing)
    identities = read_dataset(dataset)
    again = prepare_data(identities, demo, encoder, TINY.image_size, distill=True, descriptions=descriptions)
    assert again.targets is not None and distilled.targets is not None
    assert torch.equal(again.targets, distilled.targets)
    with pytest.raises(AlignerError, match="descriptions for 3 identities"):
        prepare_data(identities, demo, encoder, TINY.image_size, distill=True, descriptions=descriptions[:2])
