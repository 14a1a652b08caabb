"""Training samples for one concept, following the Yo'Chameleon recipe.

Four kinds of sample, every target opening with its self-prompt:
- recognition: "Is <bo> in this photo?" over the real photos (yes) and negatives (no), many phrasings;
- question answering: questions per kind answered from the user's facts (`key: value` lines and free
  sentences) and from the base model's own descriptions of the photos (no cloud model);
- generation: the real photos with the full prompt "A photo of <bo>." (all 16 generation tokens);
- soft positives: retrieved look-alikes in tiers, each trained on "A photo of <g1>...<g_n>." with more
  tokens the more similar the tier.
Photos arrive as VQ token ids computed once (with flipped and cropped variants as augmentation).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from engine.concepts.prompts import Prompts, Sample
from engine.errors import EngineError
from engine.inference.generation import Sampling
from engine.training.recipe import Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from engine.inference.assistant import Assistant

RECOGNITION_QUESTIONS = [
    "Is <{n}> in this photo?",
    "Can you see <{n}> in this image?",
    "Does this picture show <{n}>?",
    "Is <{n}> here?",
    "Do you spot <{n}> in this photo?",
    "Is this <{n}>?",
    "Does <{n}> appear in this image?",
    "Would you say <{n}> is in this picture?",
    "Is <{n}> visible in this photo?",
    "Can <{n}> be seen here?",
    "Is <{n}> somewhere in this image?",
    "Look at the photo: is <{n}> in it?",
    "Is that <{n}> in the picture?",
    "Am I looking at <{n}> here?",
    "Is <{n}> present in this image?",
    "Tell me whether <{n}> is in this photo.",
    "Check this image: does it contain <{n}>?",
    "Is <{n}> shown in this photo?",
    "Does this photo include <{n}>?",
    "Could this be <{n}>?",
    "Is <{n}> one of the things in this picture?",
    "Do you recognise <{n}> in this image?",
    "Is <{n}> pictured here?",
    "Have I got <{n}> in this shot?",
    "In this image, can you find <{n}>?",
    "Is <{n}> in the frame?",
    "Is it <{n}> in this photo?",
    "Does the image contain <{n}>?",
    "Is <{n}> featured in this picture?",
    "Answer yes or no: is <{n}> in this photo?",
    "Is this a photo of <{n}>?",
    "Is <{n}> in this shot?",
]
POSITIVE_ANSWERS = [
    "Yes, <{n}> is in this photo.",
    "Yes.",
    "Yes, that is <{n}>.",
    "Yes, I can see <{n}>.",
    "Yes, <{n}> is here.",
    "Yes, this picture shows <{n}>.",
    "Yes, <{n}> appears in the image.",
    "Yes, it is <{n}>.",
    "Yes, <{n}> is visible.",
    "Yes, I recognise <{n}>.",
    "Yes, <{n}> is in the picture.",
    "Yes, this is <{n}>.",
    "Yes, <{n}> is in the frame.",
    "Yes, the photo includes <{n}>.",
    "Yes, <{n}> is pictured here.",
    "Yes, <{n}> can be seen here.",
    "Yes, that's <{n}> in the image.",
    "Yes, <{n}> is present.",
    "Yes, you have <{n}> in this shot.",
    "Yes, <{n}> is shown in this photo.",
    "Yes, I spot <{n}>.",
    "Yes, this is a photo of <{n}>.",
    "Yes, <{n}> is featured here.",
    "Yes, the image contains <{n}>.",
    "Yes, I found <{n}> in the image.",
    "Yes, it looks like <{n}>.",
    "Yes, <{n}> is the one in the photo.",
    "Yes, <{n}> is in it.",
    "Yes, definitely <{n}>.",
    "Yes, <{n}> is right there.",
]
NEGATIVE_ANSWERS = [
    "No, <{n}> is not in this photo.",
    "No.",
    "No, that is not <{n}>.",
    "No, I cannot see <{n}>.",
    "No, <{n}> is not here.",
    "No, this picture does not show <{n}>.",
    "No, <{n}> does not appear in the image.",
    "No, it is not <{n}>.",
    "No, <{n}> is not visible.",
    "No, I do not recognise <{n}> here.",
    "No, <{n}> is not in the picture.",
    "No, this is not <{n}>.",
    "No, <{n}> is not in the frame.",
    "No, the photo does not include <{n}>.",
    "No, <{n}> is not pictured here.",
    "No, <{n}> cannot be seen here.",
    "No, that's not <{n}> in the image.",
    "No, <{n}> is absent.",
    "No, you do not have <{n}> in this shot.",
    "No, <{n}> is not shown in this photo.",
    "No, I do not spot <{n}>.",
    "No, this is not a photo of <{n}>.",
    "No, <{n}> is not featured here.",
    "No, the image does not contain <{n}>.",
    "No, I could not find <{n}> in the image.",
    "No, it does not look like <{n}>.",
    "No, someone else is in the photo, not <{n}>.",
    "No, <{n}> is not in it.",
    "No, definitely not <{n}>.",
    "No, <{n}> is nowhere in this photo.",
]
FACT_QUESTIONS = {
    "pet": {"breed": "What breed is <{n}>?", "colour": "What colour is <{n}>?", "age": "How old is <{n}>?"},
    "person": {"hair": "What is <{n}>'s hair like?", "age": "How old is <{n}>?", "job": "What does <{n}> do?"},
    "object": {
        "colour": "What colour is <{n}>?",
        "material": "What is <{n}> made of?",
        "brand": "What brand is <{n}>?",
    },
    "place": {"city": "Where is <{n}>?", "colour": "What colour is <{n}>?"},
}
OPEN_QUESTIONS = ["Tell me about <{n}>.", "What do you know about <{n}>?", "Describe <{n}>."]
DESCRIBE_QUESTIONS = ["Describe <{n}> in this photo.", "What does <{n}> look like?"]
KEY_VALUE = re.compile(r"^\s*([A-Za-z][A-Za-z ]{0,30})\s*:\s*(.+?)\s*$")
CLASS_WORDS = {"pet": "animal", "person": "person", "object": "object", "place": "place"}
CLASS_FACT = re.compile(r"^\s*class\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
DESCRIBE_PHOTO = "Describe this photo."
"""What the base model is asked about each training photo; its greedy answers become description targets (and,
where the recipe says so, start rows). The micro-world base model learned exactly this question
(`Scene.questions`): asked "Describe this photo in detail." it read shape right in 0.52 of the benchmark's photos
and the accessory in 0.38, against 0.98 and 0.77 asked this."""


@dataclass(frozen=True)
class Decision:
    """The tokens of " Yes" and " No": a shared prefix (a lone space in some tokenizers), then the tokens
    that differ, which carry the answer."""

    prefix: tuple[int, ...]
    yes: tuple[int, ...]
    no: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> Decision:
        yes = tuple(tokenizer.encode(" Yes", add_special_tokens=False))
        no = tuple(tokenizer.encode(" No", add_special_tokens=False))
        shared = next((k for k, (a, b) in enumerate(zip(yes, no, strict=False)) if a != b), min(len(yes), len(no)))
        if shared == len(yes) or shared == len(no):
            raise EngineError("the tokenizer does not tell ' Yes' from ' No' by any token")
        return cls(yes[:shared], yes[shared:], no[shared:])

    def positions(self, target: Sequence[int], opening: int, positive: bool, offset: int = 0) -> tuple[int, ...]:
        """Where the deciding tokens of the answer `target` (opened by `opening` self-prompt tokens) stand, plus
        `offset`; raises where the answer does not start with " Yes" or " No" as this tokenizer splits them."""
        answer = self.yes if positive else self.no
        word = [*self.prefix, *answer]
        if list(target[opening : opening + len(word)]) != word:
            raise EngineError("the tokenizer splits recognition answers so that the Yes/No token is not found")
        first = offset + opening + len(self.prefix)
        return tuple(range(first, first + len(answer)))


@dataclass
class ConceptData:
    """What the samples are built from; images are VQ token id lists."""

    name: str
    kind: str
    photos: list[list[int]]
    negatives: list[list[int]] = field(default_factory=list)
    soft_positive_tiers: list[tuple[int, list[list[int]]]] = field(default_factory=list)
    facts: str = ""
    descriptions: list[str] = field(default_factory=list)


def describe_photos(assistant: Assistant, images: Sequence[Image.Image]) -> list[str]:
    """The base model's own greedy description of each photo (`DESCRIBE_PHOTO`, at most 48 tokens); call it
    before the concept is attached."""
    out = []
    for image in images:
        answer = assistant.chat(DESCRIBE_PHOTO, image, Sampling(temperature=0, seed=0), max_new_tokens=48)
        out.append("".join(answer).strip())
    return out


def class_word(kind: str, facts: str) -> str:
    """The word a concept's rows start from: a `class: dog` line in the facts, else the kind's word."""
    match = CLASS_FACT.search(facts)
    return match.group(1) if match else CLASS_WORDS.get(kind, "object")


def fact_pairs(kind: str, facts: str, name: str) -> list[tuple[str, str]]:
    """(question, answer) pairs from the user's facts: `key: value` lines answer the kind's questions,
    other sentences answer open questions."""
    pairs: list[tuple[str, str]] = []
    questions = FACT_QUESTIONS.get(kind, FACT_QUESTIONS["object"])
    sentences: list[str] = []
    for line in facts.splitlines():
        match = KEY_VALUE.match(line)
        if match:
            key, value = match.group(1).strip().lower(), match.group(2)
            question = questions.get(key, f"What is <{{n}}>'s {key}?")
            pairs.append((question.format(n=name), f"<{name}>'s {key} is {value}."))
        else:
            sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if s.strip()]
    for i, sentence in enumerate(sentences):
        pairs.append((OPEN_QUESTIONS[i % len(OPEN_QUESTIONS)].format(n=name), sentence))
    return pairs


def build_samples(prompts: Prompts, data: ConceptData, recipe: Recipe) -> list[Sample]:
    """All samples of one concept in the recipe's mix (every negative of `data`, up to `recipe.soft_positives`
    soft positives), in a deterministic order for the recipe's seed."""
    rng = random.Random(recipe.seed)
    name = data.name
    samples: list[Sample] = []
    decision = Decision.of(prompts.tokenizer) if recipe.answer_weight != 1.0 else None
    opening = len(prompts.self_prompt([name], "text"))

    def recognition(image: list[int], positive: bool) -> Sample:
        question = rng.choice(RECOGNITION_QUESTIONS).format(n=name)
        answer = rng.choice(POSITIVE_ANSWERS if positive else NEGATIVE_ANSWERS).format(n=name)
        prompt, target = prompts.prompt(question, image, [name]), prompts.text_target(answer, [name])
        sample = prompts.sample(prompt, target)
        if decision is None:
            return sample
        return replace(sample, decision=decision.positions(target, opening, positive, len(prompt)))

    for photo in data.photos:
        samples += [recognition(photo, True) for _ in range(recipe.recognition_per_photo)]
        for _ in range(recipe.generation_per_photo):
            prompt = prompts.prompt(f"A photo of <{name}>.", None, [name])
            samples.append(prompts.sample(prompt, prompts.image_target(photo, [name])))
    samples += [recognition(negative, False) for negative in data.negatives]

    qa = fact_pairs(data.kind, data.facts, name)
    qa += [(rng.choice(DESCRIBE_QUESTIONS).format(n=name), text) for text in data.descriptions if text.strip()]
    for _ in range(recipe.qa_repeats):
        for question, answer in qa:
            samples.append(prompts.sample(prompts.prompt(question, None, [name]), prompts.text_target(answer, [name])))

    generation = prompts.generation_ids(name)
    budget = recipe.soft_positives
    for n_tokens, images in data.soft_positive_tiers:
        for image in images[: max(budget, 0)]:
            prompt = [prompts.bos_id, *prompts.text("A photo of "), *generation[:n_tokens], *prompts.text(".")]
            samples.append(prompts.sample(prompt, [*prompts.image(image), prompts.eos_id]))
        budget -= len(images)
    return samples


def augmentations(images: Sequence[Image.Image]) -> list[Image.Image]:
    """Each photo, its mirror image, and a centre crop of 85%."""
    out: list[Image.Image] = []
    for image in images:
        width, height = image.size
        dx, dy = int(width * 0.075), int(height * 0.075)
        out += [image, ImageOps.mirror(image), image.crop((dx, dy, width - dx, height - dy))]
    return out
