"""Training one concept on the demo model: loss falls, base untouched, cancel and resume are exact."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from PIL import Image

from engine.concepts.prompts import IGNORE, Sample
from engine.errors import EngineError
from engine.inference.assistant import Assistant
from engine.model.loading import LoadedModel, load_model
from engine.training.data import (
    NEGATIVE_ANSWERS,
    POSITIVE_ANSWERS,
    RECOGNITION_QUESTIONS,
    ConceptData,
    Decision,
    augmentations,
    build_samples,
    fact_pairs,
)
from engine.training.loop import TrainingCancelled
from engine.training.recipe import Recipe
from engine.training.selection import recognition_accuracy, says_yes, score, yes_probability
from engine.training.trainer import (
    Checkpoint,
    Trainer,
    answer_weights,
    chunked_cross_entropy,
    collate,
    sample_weights,
    target_loss,
)


def _images(loaded: LoadedModel, colours: list[tuple[int, int, int]]) -> list[list[int]]:
    photos = [Image.new("RGB", (64, 64), colour) for colour in colours]
    return [row.tolist() for row in loaded.image_tokenizer.encode(photos)]


@pytest.fixture(scope="module")
def images(demo: LoadedModel) -> dict[str, list[list[int]]]:
    return {"photos": _images(demo, [(200, 40, 40), (180, 60, 30)]), "negatives": _images(demo, [(20, 40, 200)])}


def _fresh(name: str = "bo") -> Assistant:
    loaded = load_model("demo", device="cpu")
    assistant = Assistant(loaded)
    assistant.attach(assistant.slots.initial_state(name, loaded.tokenizer, "dog"))
    return assistant


def _samples(assistant: Assistant, images: dict[str, list[list[int]]]) -> list[Sample]:
    data = ConceptData("bo", "pet", images["photos"], images["negatives"], facts="breed: corgi\nHe loves the beach.")
    recipe = Recipe(recognition_per_photo=1, qa_repeats=1, generation_per_photo=0)
    return build_samples(assistant.prompts, data, recipe)


def test_phrasings_are_many_and_distinct() -> None:
    for phrasings in (RECOGNITION_QUESTIONS, POSITIVE_ANSWERS, NEGATIVE_ANSWERS):
        assert len(phrasings) >= 30 and len(set(phrasings)) == len(phrasings)
        assert all("<{n}>" in p for p in phrasings if p not in ("Yes.", "No."))


def test_facts_become_question_answer_pairs() -> None:
    pairs = fact_pairs("pet", "breed: corgi\nHe loves the beach. He is five.", "bo")
    assert ("What breed is <bo>?", "<bo>'s breed is corgi.") in pairs
    assert [a for _, a in pairs[1:]] == ["He loves the beach.", "He is five."]


def test_samples_open_with_their_self_prompt(images: dict[str, list[list[int]]]) -> None:
    assistant = _fresh()
    slot = assistant.slots.slot("bo")
    data = ConceptData(
        "bo", "pet", images["photos"], images["negatives"], soft_positive_tiers=[(3, images["negatives"])]
    )
    samples = build_samples(assistant.prompts, data, Recipe())
    boi = assistant.loaded.image_tokenizer.boi_id
    for sample in samples:
        target = [t for t in sample.labels if t != -100]
        if target[0] == boi:  # a soft positive: its prompt carries the first generation tokens
            assert sample.ids[: len(sample.ids) - len(target)][-4:-1] == list(slot.generation[:3])
        elif target[0] == slot.generation[0]:
            assert target[: len(slot.generation) + 1] == [*slot.generation, boi]
        else:
            assert target[: len(slot.understanding)] == list(slot.understanding)
    kinds = {next(t for t in s.labels if t != -100) for s in samples}
    assert kinds == {boi, slot.generation[0], slot.understanding[0]}


def test_augmentations_mirror_and_crop() -> None:
    image = Image.new("RGB", (100, 80))
    image.putpixel((0, 0), (255, 0, 0))
    _, mirrored, cropped = augmentations([image])
    assert mirrored.getpixel((99, 0)) == (255, 0, 0)
    assert cropped.size == (86, 68)


def test_training_lowers_loss_and_leaves_the_base_untouched(images: dict[str, list[list[int]]]) -> None:
    assistant = _fresh()
    before = {k: v.clone() for k, v in assistant.loaded.model.state_dict().items()}
    trainer = Trainer(assistant, "bo", _samples(assistant, images), Recipe(epochs=6, learning_rate=3e-2))
    progress = []
    losses = trainer.run(progress=progress.append)
    assert len(losses) == trainer.total_steps == len(progress)
    assert progress[-1].step == progress[-1].total and progress[-1].eta_seconds == 0
    epochs = trainer.steps_per_epoch
    assert sum(losses[-epochs:]) < sum(losses[:epochs]) - 0.5
    after = assistant.loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not assistant.slots.params("bo").embed.requires_grad


def test_cancel_then_resume_ends_where_an_uninterrupted_run_ends(images: dict[str, list[list[int]]]) -> None:
    config = Recipe(epochs=3, learning_rate=1e-2, seed=4)
    straight = _fresh()
    straight_losses = Trainer(straight, "bo", _samples(straight, images), config).run()

    first = _fresh()
    trainer = Trainer(first, "bo", _samples(first, images), config)
    saved: list[Checkpoint] = []
    with pytest.raises(TrainingCancelled) as info:
        trainer.run(on_checkpoint=saved.append, cancelled=lambda: len(trainer.optimizer.state) > 0 and len(saved) >= 1)
    checkpoint = info.value.checkpoint
    assert checkpoint is saved[-1] and 0 < checkpoint.step < trainer.total_steps

    second = _fresh()
    resumed = Trainer(second, "bo", _samples(second, images), config)
    losses = resumed.run(resume=Checkpoint(**{**vars(checkpoint)}))
    assert losses == straight_losses
    done, expected = second.slots.state("bo"), straight.slots.state("bo")
    assert torch.equal(done.embed, expected.embed) and torch.equal(done.head, expected.head)


def _largest_saved(loss: Callable[..., torch.Tensor], *args: object) -> tuple[torch.Tensor, int]:
    """`loss(*args)` and the element count of the largest tensor its graph keeps for the backward pass."""
    sizes = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        value = loss(*args)
    return value, max(sizes)


def test_chunked_loss_matches_the_plain_loss_and_keeps_no_full_logits(images: dict[str, list[list[int]]]) -> None:
    config = Recipe(recognition_per_photo=1, qa_repeats=1, generation_per_photo=1)
    assistant = _fresh()
    data = ConceptData("bo", "pet", images["photos"], images["negatives"], facts="breed: corgi")
    samples = build_samples(assistant.prompts, data, config)[:4]
    model, params = assistant.loaded.model, assistant.slots.params("bo").requires_grad_(True)
    ids, mask, labels = collate(samples, int(assistant.loaded.tokenizer.pad_token_id), torch.device("cpu"))
    selected = labels != IGNORE
    vocab, rows = model.config.vocab_size, int(selected.sum())
    assert rows > 40
    results = []
    for chunk in (rows, 16):
        params.zero_grad()
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[selected]
        loss, largest = _largest_saved(chunked_cross_entropy, model.lm_head, hidden, labels[selected], chunk)
        loss = loss / rows  # the summed loss, as a mean
        loss.backward()
        results.append((loss.detach(), largest, params.embed.grad.clone(), params.head.grad.clone()))
    (plain, plain_largest, *plain_grads), (chunked, chunked_largest, *chunked_grads) = results
    assert plain_largest >= rows * vocab and chunked_largest < 16 * vocab
    torch.testing.assert_close(chunked, plain, rtol=1e-6, atol=1e-6)
    for got, want in zip(chunked_grads, plain_grads, strict=True):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_image_targets_are_scored_over_the_image_rows_only(images: dict[str, list[list[int]]]) -> None:
    """The training loss: image-token targets against the image rows (what drawing samples from), every other
    target against the full vocabulary with the concept's rows, averaged over all targets."""
    config = Recipe(recognition_per_photo=1, qa_repeats=1, generation_per_photo=1)
    assistant = _fresh()
    data = ConceptData("bo", "pet", images["photos"], images["negatives"], facts="breed: corgi")
    samples = build_samples(assistant.prompts, data, config)[:6]
    model, params = assistant.loaded.model, assistant.slots.params("bo").requires_grad_(True)
    image_ids = assistant.loaded.image_tokenizer.image_token_ids.sort().values
    ids, mask, labels = collate(samples, int(assistant.loaded.tokenizer.pad_token_id), torch.device("cpu"))
    selected = labels != IGNORE
    targets = labels[selected]
    is_image = torch.isin(targets, image_ids)
    assert 0 < int(is_image.sum()) < len(targets)
    results = []
    for how in ("product", "by hand"):
        params.zero_grad()
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[selected]
        if how == "product":
            loss = target_loss(model.lm_head, hidden, targets, image_ids)
        else:
            logits = model.lm_head(hidden).float()
            image_part = torch.nn.functional.cross_entropy(
                logits[is_image][:, image_ids], torch.searchsorted(image_ids, targets[is_image]), reduction="sum"
            )
            text_part = torch.nn.functional.cross_entropy(logits[~is_image], targets[~is_image], reduction="sum")
            loss = (image_part + text_part) / len(targets)
        loss.backward()
        results.append((loss.detach(), params.embed.grad.clone(), params.head.grad.clone()))
    (product, *product_grads), (by_hand, *hand_grads) = results
    torch.testing.assert_close(product, by_hand, rtol=1e-6, atol=1e-6)
    for got, want in zip(product_grads, hand_grads, strict=True):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    full = torch.nn.functional.cross_entropy(model.lm_head(hidden).float(), targets)
    assert product < full  # a softmax over fewer rows: the image targets' share of the loss is lower


def test_selection_scores_recognition(images: dict[str, list[list[int]]]) -> None:
    assistant = _fresh()
    positive, negative = recognition_accuracy(assistant, "bo", images["photos"], images["negatives"])
    assert positive in (0.0, 0.5, 1.0) and negative in (0.0, 1.0)
    scores = score(assistant, "bo", images["photos"], images["negatives"])
    assert scores.recognition == (positive + negative) / 2 and scores.image_similarity is None
    calls = []

    def similarity(generated: list[Image.Image], real: list[Image.Image]) -> float:
        calls.append((len(generated), len(real), generated[0].size))
        return 0.25

    with_images = score(assistant, "bo", images["photos"], images["negatives"], [Image.new("RGB", (8, 8))], similarity)
    size = assistant.loaded.image_tokenizer.resolution
    assert calls == [(1, 1, (size, size))]  # the unlabelled decode, never the demo's labelled picture
    assert with_images.score == pytest.approx((with_images.recognition + 0.25) / 2)


def test_soft_recognition_counts_each_answer_by_its_probability(images: dict[str, list[list[int]]]) -> None:
    assistant = _fresh()
    photos, negatives = images["photos"], images["negatives"]
    chances = {i: yes_probability(assistant, "bo", image) for i, image in enumerate(photos + negatives)}
    for i, image in enumerate(photos + negatives):
        assert 0 < chances[i] < 1 and (chances[i] > 0.5) == says_yes(assistant, "bo", image)
    positive, negative = recognition_accuracy(assistant, "bo", photos, negatives, soft=True)
    assert positive == pytest.approx(sum(chances[i] for i in range(len(photos))) / len(photos))
    others = range(len(photos), len(photos) + len(negatives))
    assert negative == pytest.approx(sum(1 - chances[i] for i in others) / len(negatives))
    assert score(assistant, "bo", photos, negatives, soft=True).recognition == pytest.approx((positive + negative) / 2)


def test_cancel_right_after_an_epoch_checkpoint_saves_nothing_twice(images: dict[str, list[list[int]]]) -> None:
    assistant = _fresh()
    trainer = Trainer(assistant, "bo", _samples(assistant, images), Recipe(epochs=3))
    saved: list[Checkpoint] = []
    with pytest.raises(TrainingCancelled) as info:
        trainer.run(on_checkpoint=saved.append, cancelled=lambda: len(saved) == 1)
    assert [c.step for c in saved] == [trainer.steps_per_epoch]
    assert info.value.checkpoint is saved[0]


def test_recognition_reads_the_token_where_yes_and_no_differ(images: dict[str, list[list[int]]]) -> None:
    from engine.training.selection import QUESTION, answer_tokens, says_yes

    assistant = _fresh()
    prefix, yes, no = answer_tokens(assistant)
    assert yes != no
    assert assistant.loaded.tokenizer.encode(" Yes", add_special_tokens=False)[: len(prefix) + 1] == [*prefix, yes]
    prompts = assistant.prompts
    image = images["photos"][0]
    ids = prompts.prompt(QUESTION.format(n="bo"), image, ["bo"]) + prompts.self_prompt(["bo"], "text") + prefix
    head = assistant.loaded.model.get_output_embeddings().base
    with torch.no_grad():
        hidden = assistant.loaded.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        towards = 10 * hidden / hidden.norm() ** 2  # a row whose logit at the decision position is 10
        head.weight[yes], head.weight[no] = towards, -towards
        assert says_yes(assistant, "bo", image)
        head.weight[yes], head.weight[no] = -towards, towards
        assert not says_yes(assistant, "bo", image)


def test_cancel_right_after_resuming_hands_back_the_resumed_checkpoint(images: dict[str, list[list[int]]]) -> None:
    assistant = _fresh()
    trainer = Trainer(assistant, "bo", _samples(assistant, images), Recipe(epochs=2))
    saved: list[Checkpoint] = []
    with pytest.raises(TrainingCancelled):
        trainer.run(on_checkpoint=saved.append, cancelled=lambda: len(saved) == 1)
    again: list[Checkpoint] = []
    with pytest.raises(TrainingCancelled) as info:
        trainer.run(on_checkpoint=again.append, cancelled=lambda: True, resume=saved[0])
    assert again == [] and info.value.checkpoint is saved[0]


def test_checkpoints_are_handed_over_in_eval_mode_with_checkpointing_off(images: dict[str, list[list[int]]]) -> None:
    """Scoring draws during training: with gradient checkpointing forced on (as on CUDA), a picture drawn from a
    handed-over checkpoint is exactly the one eval-mode drawing makes from the same rows afterwards."""
    from engine.training.selection import draw

    assistant = _fresh()
    trainer = Trainer(assistant, "bo", _samples(assistant, images), Recipe(epochs=2, learning_rate=1e-2))
    trainer.checkpointing = True
    seen: list[tuple[bool, bool, Checkpoint, bytes]] = []

    def score(checkpoint: Checkpoint) -> None:
        model = assistant.loaded.model
        picture = draw(assistant, "bo", seed=3).tobytes()
        seen.append((model.training, model.is_activation_checkpointing, checkpoint, picture))

    trainer.run(on_checkpoint=score)
    assert [(training, checkpointing) for training, checkpointing, _, _ in seen] == [(False, False)] * 2
    for _, _, checkpoint, picture in seen:
        assistant.slots.load("bo", checkpoint.state)
        assert draw(assistant, "bo", seed=3).tobytes() == picture


def test_a_step_that_runs_out_of_memory_is_taken_again_with_checkpointing(images: dict[str, list[list[int]]]) -> None:
    """Where a run went without checkpointing (the memory model said it fits) and a step still runs out of memory
    halfway through its micro-batches, that step is taken again with checkpointing, which stays on: the run ends
    with the losses and rows, bit for bit, of a run that never ran out."""
    recipe = Recipe(epochs=2, micro_batch=2)
    assistant = _fresh()
    expected = Trainer(assistant, "bo", _samples(assistant, images), recipe).run()
    expected_rows = assistant.slots.state("bo")

    assistant = _fresh()
    trainer = Trainer(assistant, "bo", _samples(assistant, images), recipe)
    assert not trainer.checkpointing and trainer.micro_batch == 2 and len(trainer.samples) > 4
    real, calls, checkpointed = trainer.loss, [0], []

    def loss(batch: Sequence[Sample]) -> torch.Tensor:
        calls[0] += 1
        checkpointed.append(assistant.loaded.model.is_activation_checkpointing)
        if calls[0] == 4:  # the second micro-batch of the second step, after the first one's backward
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch)

    trainer.loss = loss  # type: ignore[method-assign]
    losses = trainer.run()
    assert trainer.checkpointing and checkpointed[:4] == [False] * 4 and all(checkpointed[4:])
    assert not assistant.loaded.model.is_activation_checkpointing  # off again once the run ends
    rows = assistant.slots.state("bo")
    assert losses == expected
    assert torch.equal(rows.embed, expected_rows.embed) and torch.equal(rows.head, expected_rows.head)


def test_sample_mean_loss_is_the_mean_of_each_samples_own_mean(images: dict[str, list[list[int]]]) -> None:
    """With `Recipe.sample_mean` a short recognition answer weighs as much as a long drawing: the loss is the mean
    over samples of the loss each sample has alone, in one chunk or in many."""
    assistant = _fresh()
    data = ConceptData("bo", "pet", images["photos"], images["negatives"], facts="breed: corgi")
    samples = build_samples(assistant.prompts, data, Recipe(recognition_per_photo=1, qa_repeats=1))[:5]
    model = assistant.loaded.model
    image_ids = assistant.loaded.image_tokenizer.image_token_ids.sort().values
    pad = int(assistant.loaded.tokenizer.pad_token_id)

    def loss(batch: list[Sample], weighted: bool) -> torch.Tensor:
        ids, mask, labels = collate(batch, pad, torch.device("cpu"))
        selected = labels != IGNORE
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[selected]
        weights = sample_weights(selected) if weighted else None
        return target_loss(model.lm_head, hidden, labels[selected], image_ids, weights)

    with torch.no_grad():
        alone = torch.stack([loss([s], weighted=False) for s in samples]).mean()
        together = loss(samples, weighted=True)
        sizes = {len([x for x in s.labels if x != IGNORE]) for s in samples}
        assert len(sizes) > 1  # samples of different lengths, so the two means differ
        assert not torch.allclose(loss(samples, weighted=False), alone, rtol=1e-3)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    rows, targets, weights = torch.randn(50, 8), torch.randint(0, 5, (50,)), torch.rand(50)
    head = torch.nn.Linear(8, 5)
    whole = chunked_cross_entropy(head, rows, targets, chunk=64, weights=weights)
    torch.testing.assert_close(chunked_cross_entropy(head, rows, targets, chunk=7, weights=weights), whole)


def _weighted_samples(assistant: Assistant, images: dict[str, list[list[int]]]) -> list[Sample]:
    data = ConceptData("bo", "pet", images["photos"], images["negatives"], facts="breed: corgi\nHe loves the beach.")
    recipe = Recipe(recognition_per_photo=1, qa_repeats=1, generation_per_photo=0, answer_weight=10.0)
    return build_samples(assistant.prompts, data, recipe)


def test_recognition_samples_mark_the_tokens_that_decide_the_answer(images: dict[str, list[list[int]]]) -> None:
    """Where the recipe weighs the answer, each recognition sample knows where its " Yes" or " No" stands (after the
    self-prompt), and no other sample marks anything."""
    assistant = _fresh()
    decision = Decision.of(assistant.loaded.tokenizer)
    assert not any(s.decision for s in _samples(assistant, images))  # at the default weight nothing is marked
    samples = _weighted_samples(assistant, images)
    marked = [s for s in samples if s.decision]
    assert len(marked) == len(images["photos"]) + len(images["negatives"])
    words = {tuple(s.ids[p] for p in s.decision) for s in marked}
    assert words == {decision.yes, decision.no}
    for sample in marked:
        assert all(sample.labels[p] == sample.ids[p] for p in sample.decision)  # inside the target
    with pytest.raises(EngineError, match="Yes/No token is not found"):
        decision.positions([1, 2, 3], 1, positive=True)


def test_answer_weight_scales_only_the_deciding_positions(images: dict[str, list[list[int]]]) -> None:
    """`answer_weights` makes the deciding tokens `weight` times heavier than the rest and sums to 1; a loss with
    them moves towards those tokens' loss."""
    assistant = _fresh()
    samples = [s for s in _weighted_samples(assistant, images) if s.decision][:3]
    pad = int(assistant.loaded.tokenizer.pad_token_id)
    _, _, labels = collate(samples, pad, torch.device("cpu"))
    selected = labels != IGNORE
    weights = answer_weights(samples, selected, 10.0)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    deciding = torch.zeros_like(selected)
    for row, sample in enumerate(samples):
        for position in sample.decision:
            deciding[row, position - 1] = True
            assert labels[row, position - 1] == sample.ids[position]
    heavy = weights[deciding[selected]]
    light = weights[~deciding[selected]]
    torch.testing.assert_close(heavy, torch.full_like(heavy, 10 * float(light[0])))
    torch.testing.assert_close(light, torch.full_like(light, float(light[0])))
    per_sample = sample_weights(selected)
    scaled = per_sample * torch.where(deciding[selected], 10.0, 1.0)
    torch.testing.assert_close(answer_weights(samples, selected, 10.0, per_sample), scaled / scaled.sum())
    with pytest.raises(EngineError, match="answer weight"):
        Recipe(answer_weight=0.0)


@pytest.mark.parametrize("route", [False, True])
def test_routed_rows_train_only_the_samples_own_task_set(images: dict[str, list[list[int]]], route: bool) -> None:
    """With `Recipe.route_rows` a drawing's gradient reaches the generation rows and not the understanding rows, a
    text answer's the other way round; without it both sets get both. The loss itself is the same."""
    assistant = _fresh()
    data = ConceptData("bo", "pet", images["photos"], images["negatives"])
    recipe = Recipe(recognition_per_photo=1, generation_per_photo=1, qa_repeats=0, route_rows=route)
    samples = build_samples(assistant.prompts, data, recipe)
    image_ids = set(assistant.loaded.image_tokenizer.image_token_ids.tolist())
    drawing = next(s for s in samples if image_ids & set(s.labels))
    answer = next(s for s in samples if not image_ids & set(s.labels))
    trainer = Trainer(assistant, "bo", samples, recipe)
    plain = Trainer(assistant, "bo", samples, Recipe(**{**vars(recipe), "route_rows": False}))
    trainer.train_mode(True)
    generation, understanding = slice(1, 17), slice(17, 33)
    for sample, own, other in ((drawing, generation, understanding), (answer, understanding, generation)):
        trainer.params.zero_grad(set_to_none=True)
        loss = trainer.loss([sample])
        loss.backward()
        grad = trainer.params.embed.grad
        assert grad is not None and bool(grad[own].abs().sum() > 0)
        assert bool(grad[other].abs().sum() == 0) == route
        with torch.no_grad():
            torch.testing.assert_close(plain.loss([sample]), loss.detach())
    trainer.train_mode(False)
