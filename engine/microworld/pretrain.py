"""Train the micro-world base model: first the VQ image tokenizer, then the language model.

The VQ model is Chameleon's own encoder (transformers' `ChameleonVQVAE`) with the project's VQGAN
decoder, trained to reconstruct fresh scenes (MSE plus the VQ codebook and commitment terms, unused codes
restarted from encoder outputs). The language model is `FamiliarChameleon` trained from scratch on the
product's own sequence formats (engine/concepts/prompts.py), with freshly rendered scenes every step:
- text to image: "A photo of a large red striped circle with a blue hat on grass, on the left." (or only the
  creature, or the creature and the place), answered with the image;
- questions about a photo: shape, colour, pattern, accessory, size, position, place, description;
- recognition: the product's recognition questions about "the red striped circle with a blue hat", over a
  photo of it (yes), of a creature differing in one attribute (no) or of a random one (no);
- questions without a picture about a creature named in words: "What colour is the red striped circle with a
  blue hat?" answered "Red." (the format a concept's QA is measured in).
Each sample's loss is its mean over its target tokens, so long image targets do not drown short answers.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import ChameleonConfig, ChameleonVQVAEConfig, PreTrainedTokenizerBase
from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

from engine.concepts.layout import N_GENERATION
from engine.concepts.prompts import IGNORE, Prompts, Sample
from engine.concepts.slots import ConceptSlots
from engine.concepts.start_rows import spelled_ids
from engine.microworld.model_files import VQ_CONFIG, the
from engine.microworld.world import (
    ACCESSORY_PAIRS,
    ATTRIBUTE_VALUES,
    BACKGROUND_PHRASES,
    Identity,
    Scene,
    one_change,
    render,
    render_array,
    sample_identity,
    sample_pose,
    sample_scene,
    wearing,
)
from engine.model.chameleon import FamiliarChameleon
from engine.model.images import to_pixel_values
from engine.model.vqgan import Codebook, VQGANDecoder, load_decoder
from engine.training.data import NEGATIVE_ANSWERS, POSITIVE_ANSWERS, RECOGNITION_QUESTIONS
from engine.training.trainer import collate, sample_weights

Report = Callable[[str], None]


def scene_pixels(scenes: list[Scene]) -> torch.Tensor:
    """Rendered scenes as the VQ encoder's input, [B, 3, 32, 32] in [-1, 1]."""
    return to_pixel_values([render(s) for s in scenes], 32)


@dataclass
class VQResult:
    vqmodel: ChameleonVQVAE
    decoder: VQGANDecoder
    mse: float
    codes_used: int


DETAIL_WEIGHT = 6.0
"""How much more a pixel of pattern, eyes or accessory counts in the VQ loss than a pixel of background: with a
plain MSE the 8x8 code grid dropped small accessories (a hat is a few pixels high)."""

BODY_WEIGHT = 2.0
"""How much more a pixel of the creature's body colour counts than a pixel of background: with the details
weighted alone, checked and dotted creatures came back grey (pink and green read as white in 40 of 600)."""


def detail_weights(scenes: list[Scene]) -> torch.Tensor:
    """Per-pixel loss weights [B, 1, 32, 32]: 1 + DETAIL_WEIGHT where the scene differs from the same creature
    drawn plain and without an accessory (its pattern, eyes and accessory), 1 + BODY_WEIGHT on the rest of the
    creature (where it differs from the same scene with a creature of another colour), 1 elsewhere."""
    weights = []
    for scene in scenes:
        drawn = render_array(scene)
        bare = replace(scene.identity, pattern="plain", accessory="none", accessory_colour="none")
        detail = (drawn != render_array(replace(scene, identity=bare))).any(-1)
        recoloured = replace(scene.identity, colour="red" if scene.identity.colour == "white" else "white")
        body = (drawn != render_array(replace(scene, identity=recoloured))).any(-1)
        weights.append(1 + np.where(detail, DETAIL_WEIGHT, np.where(body, BODY_WEIGHT, 0.0)))
    return torch.from_numpy(np.stack(weights)).float().unsqueeze(1)


def train_vq(
    config: ChameleonVQVAEConfig,
    steps: int,
    seed: int,
    report: Report,
    batch: int = 64,
    start: tuple[ChameleonVQVAE, VQGANDecoder] | None = None,
    peak_lr: float = 2e-3,
) -> VQResult:
    """Train encoder, codebook and decoder together on fresh scenes (from `start` when given, else from
    scratch), with detail-weighted MSE; returns them with held-out MSE."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if start is None:
        vqmodel, decoder = ChameleonVQVAE(config), VQGANDecoder(config)
    else:
        vqmodel, decoder = start
    vqmodel.train().requires_grad_(True)
    decoder.train().requires_grad_(True)
    decoder.quantize = vqmodel.quantize  # one codebook, shared while training
    parameters = [p for p in vqmodel.parameters()] + [
        p for name, p in decoder.named_parameters() if not name.startswith("quantize")
    ]
    optimizer = torch.optim.Adam(parameters, lr=peak_lr)
    usage = torch.zeros(config.num_embeddings)
    started = time.monotonic()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = peak_lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        scenes = [sample_scene(rng) for _ in range(batch)]
        pixels, weights = scene_pixels(scenes), detail_weights(scenes)
        latent = vqmodel.quant_conv(vqmodel.encoder(pixels))
        quantized, vq_loss, indices = vqmodel.quantize(latent)
        reconstruction = decoder.decoder(decoder.post_quant_conv(quantized))
        mse = (weights * (reconstruction - pixels) ** 2).sum() / (weights.sum() * 3)
        loss = mse + vq_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        usage += torch.bincount(indices, minlength=config.num_embeddings)
        if (step + 1) % 100 == 0 and step + 1 < steps * 0.8:
            _restart_dead_codes(vqmodel, latent.detach(), usage)
            usage.zero_()
        if (step + 1) % 200 == 0:
            report(f"vq step {step + 1}/{steps} loss {loss.item():.4f} ({time.monotonic() - started:.0f} s)")
    vqmodel.eval()
    decoder.eval()
    held_out_rng = random.Random(seed + 1)
    held_out = [sample_scene(held_out_rng) for _ in range(256)]
    mse, used = vq_quality(vqmodel, decoder, held_out)
    decoder.quantize = Codebook(config.num_embeddings, config.embed_dim)
    decoder.quantize.embedding.load_state_dict(vqmodel.quantize.embedding.state_dict())
    vqmodel.post_quant_conv.load_state_dict(decoder.post_quant_conv.state_dict())
    return VQResult(vqmodel, decoder, mse, used)


ENCODER_FILE = "vq_encoder.safetensors"
"""The VQ encoder's weights in a train_microworld work folder; an export holds them in model.safetensors."""

EXPORTED_PREFIX = "model.vqmodel."


def load_vq(folder: Path) -> tuple[ChameleonVQVAE, VQGANDecoder]:
    """The VQ encoder and decoder (in eval mode) of a train_microworld work folder or an exported model."""
    vqmodel = ChameleonVQVAE(ChameleonVQVAEConfig(**VQ_CONFIG))
    if (folder / ENCODER_FILE).is_file():
        vqmodel.load_state_dict(load_file(folder / ENCODER_FILE))
    else:
        weights = load_file(folder / "model.safetensors")
        vqmodel.load_state_dict(
            {k[len(EXPORTED_PREFIX) :]: v for k, v in weights.items() if k.startswith(EXPORTED_PREFIX)}
        )
    return vqmodel.eval(), load_decoder(folder, vqmodel.config).eval()


def _restart_dead_codes(vqmodel: ChameleonVQVAE, latent: torch.Tensor, usage: torch.Tensor) -> None:
    dead = (usage == 0).nonzero().flatten()
    if len(dead) == 0:
        return
    vectors = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])
    picks = vectors[torch.randint(len(vectors), (len(dead),))]
    with torch.no_grad():
        vqmodel.quantize.embedding.weight[dead] = picks + 0.01 * torch.randn_like(picks)


@torch.no_grad()
def vq_quality(vqmodel: ChameleonVQVAE, decoder: VQGANDecoder, scenes: list[Scene]) -> tuple[float, int]:
    """(reconstruction MSE in [-1, 1] pixel units, distinct codes used) over `scenes`."""
    pixels = scene_pixels(scenes)
    indices = vqmodel.encode(pixels).image_tokens.reshape(len(scenes), -1)
    reconstruction = decoder(indices)
    return float(nn.functional.mse_loss(reconstruction, pixels)), int(indices.unique().numel())


MIX = {"t2i": 0.18, "qa": 0.24, "describe": 0.07, "rec": 0.25, "check": 0.10, "about": 0.04, "defined": 0.12}
"""The sample mix: text to image, a question about a photo, "Describe this photo." (every attribute in one
answer), recognition, a yes/no check of one attribute ("Is it striped?"), a question about a creature named
in words, and a creature given a name in a definition before the turn (`SampleMaker.defined`). The first 2,000
steps of the shipped model used 42% / 26% / 0 / 22% / 0 / 10% / 0, the next 5,500 28% / 34% / 10% / 20% / 0 /
8% / 0; after them the model read photos (0.90) but still said yes to every recognition question, and a
concept's learned tokens did not beat words, so the third run weights recognition up and adds the checks and
the definitions. The fourth (shipped) run continued with `--mix` stages weighted to the checks (docs/microworld.md),
after which the checks and recognition began to be learned."""

KINDS = (*MIX, "hard", "concept", "wearing")
"""Every sample kind a mix may name: MIX's; "hard", recognition whose negatives are all one-attribute changes
(`hard_subject`), for stages that teach the discrimination the benchmark's headline measures; "concept", a
turn after the product's own concept prefix (`SampleMaker.concept`); and "wearing", only "What is it wearing?"
about a photo (the accessory with its colour, the attribute photo QA read worst)."""

NAMES = ("Bo", "Rex", "Mia", "Luna", "Max", "Coco", "Pip", "Kiki", "Taro", "Nemo", "Zed", "Olly", "Fig", "Juno")
"""Names the definitions give creatures; a concept's identifier token plays this part in the product."""

SHORT_ANSWER_SHARE = 0.7
"""The share of recognition samples answered with a bare "Yes." or "No.": the loss is a mean over the
answer's tokens, and in a long answer the one token that decides is a small part of it."""

CHECKED = ("shape", "colour", "pattern", "accessory")


def recognition_subject(shown: Identity, rng: random.Random) -> Identity:
    """The creature a recognition question asks about, given the one `shown` in the photo: itself half of the
    time, a one-attribute change (a hard negative) 35%, a random creature 15%."""
    roll = rng.random()
    if roll < 0.5:
        return shown
    return one_change(shown, rng) if roll < 0.85 else sample_identity(rng)


def hard_subject(shown: Identity, rng: random.Random) -> Identity:
    """The creature a hard recognition question asks about: the one `shown` half of the time, else a
    one-attribute change of it."""
    return shown if rng.random() < 0.5 else one_change(shown, rng)


def check_question(attribute: str, identity: Identity) -> str:
    """A yes/no question about one attribute of the creature in a photo: `Is it striped?`."""
    if attribute == "shape":
        return f"Is it a {identity.shape}?"
    if attribute == "accessory":
        return f"Is it wearing {wearing(identity).removesuffix('.').lower()}?"
    return f"Is it {getattr(identity, attribute)}?"


def changed(identity: Identity, attribute: str, rng: random.Random) -> Identity:
    """`identity` with `attribute` (the accessory with its colour) set to another of its values."""
    if attribute == "accessory":
        current = (identity.accessory, identity.accessory_colour)
        accessory, colour = rng.choice([pair for pair in ACCESSORY_PAIRS if pair != current])
        return replace(identity, accessory=accessory, accessory_colour=colour)
    value = rng.choice([v for v in ATTRIBUTE_VALUES[attribute] if v != getattr(identity, attribute)])
    return replace(identity, **{attribute: value})


IDENTITY_QUESTION_WEIGHT = 3.0
"""How much likelier a photo question about the creature (shape, colour, pattern, accessory) is than one
about its pose or the place, which the model learns quickly."""


class SampleMaker:
    """Renders base-model training samples in the product's formats."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vqmodel: ChameleonVQVAE,
        code_to_vocab: torch.Tensor,
        boi: int,
        eoi: int,
    ) -> None:
        # No concept is ever mentioned in base-model text, so the prompt renderer needs no slots.
        self.prompts = Prompts(tokenizer, cast(ConceptSlots, None), boi, eoi)
        self.vqmodel = vqmodel
        self.code_to_vocab = code_to_vocab

    @torch.no_grad()
    def image_ids(self, scenes: list[Scene]) -> list[list[int]]:
        codes = self.vqmodel.encode(scene_pixels(scenes)).image_tokens.reshape(len(scenes), -1)
        return self.code_to_vocab[codes].tolist()

    def text_to_image(self, scene: Scene, image: list[int], rng: random.Random) -> Sample:
        roll = rng.random()
        if roll < 0.5:
            text = scene.prompt()
        elif roll < 0.75:
            text = f"A photo of a {scene.identity.describe()}."
        else:
            text = f"A photo of a {scene.identity.describe()} {BACKGROUND_PHRASES[scene.background]}."
        prompt = self.prompts.prompt(text, None, [])
        return self.prompts.sample(prompt, [*self.prompts.image(image), self.prompts.eos_id])

    def question(self, scene: Scene, image: list[int], rng: random.Random) -> Sample:
        pairs = scene.questions()[:-1]  # shape, colour, pattern, wearing, size, position, place; not the description
        weights = [IDENTITY_QUESTION_WEIGHT] * 4 + [1.0] * (len(pairs) - 4)
        question, answer = rng.choices(pairs, weights=weights)[0]
        return self.answered(question, answer, image)

    def accessory_question(self, scene: Scene, image: list[int]) -> Sample:
        """Asks "What is it wearing?" about the photo: `A blue hat.`"""
        return self.answered("What is it wearing?", wearing(scene.identity), image)

    def describe(self, scene: Scene, image: list[int]) -> Sample:
        question, answer = scene.questions()[-1]
        return self.answered(question, answer, image)

    def answered(self, question: str, answer: str, image: list[int]) -> Sample:
        prompt = self.prompts.prompt(question, image, [])
        return self.prompts.sample(prompt, self.prompts.text_target(answer, []))

    def about(self, identity: Identity, rng: random.Random) -> Sample:
        """A question about a creature named in words, without a picture."""
        _, question, answer = rng.choice(identity.questions(the(identity)))
        prompt = self.prompts.prompt(question, None, [])
        return self.prompts.sample(prompt, self.prompts.text_target(answer, []))

    def recognition(self, asked: Identity, image: list[int], positive: bool, rng: random.Random) -> Sample:
        name = the(asked)
        question = rng.choice(RECOGNITION_QUESTIONS).format(n=name)
        if rng.random() < SHORT_ANSWER_SHARE:
            answer = "Yes." if positive else "No."
        else:
            answer = rng.choice(POSITIVE_ANSWERS if positive else NEGATIVE_ANSWERS).format(n=name)
        return self.answered(question, answer, image)

    def check(self, shown: Identity, image: list[int], rng: random.Random) -> Sample:
        """A yes/no question about one attribute of the creature in the photo, half of them with a wrong value."""
        attribute = rng.choice(CHECKED)
        positive = rng.random() < 0.5
        asked = shown if positive else changed(shown, attribute, rng)
        return self.answered(check_question(attribute, asked), "Yes." if positive else "No.", image)

    def turn(
        self, name: str, identity: Identity, defined: Identity, image: list[int], roll: float, rng: random.Random
    ) -> tuple[list[int], list[int]]:
        """(prompt, target) of a turn about `name`, defined as `defined` before it, with the photo of `identity`:
        recognition of the photo against the definition (`roll` < 0.45), a question about the name without a
        photo (< 0.7), or "A photo of Bo." drawn."""
        if roll < 0.45:
            question = rng.choice(RECOGNITION_QUESTIONS).replace("<{n}>", name)
            answer = "Yes." if defined == identity else "No."
            return self.prompts.prompt(question, image, []), self.prompts.text_target(answer, [])
        if roll < 0.7:
            _, question, answer = rng.choice(identity.questions(name))
            return self.prompts.prompt(question, None, []), self.prompts.text_target(answer, [])
        return self.prompts.prompt(f"A photo of {name}.", None, []), [*self.prompts.image(image), self.prompts.eos_id]

    def defined(self, scene: Scene, image: list[int], rng: random.Random) -> Sample:
        """A turn after a definition, as the product's concept prefix (`<bo> is <latent tokens>. `) is:
        `Bo is a red striped circle with a blue hat. ` then a `turn` (for recognition the photo's creature, a
        one-attribute change or a random one is defined)."""
        name, roll = rng.choice(NAMES), rng.random()
        identity = scene.identity
        defined = recognition_subject(identity, rng) if roll < 0.45 else identity
        prompt, target = self.turn(name, identity, defined, image, roll, rng)
        definition = self.prompts.tokenizer.encode(f"{name} is a {defined.describe()}. ", add_special_tokens=False)
        return Sample(
            ids=[prompt[0], *definition, *prompt[1:], *target],
            labels=[IGNORE] * (len(definition) + len(prompt)) + target,
        )

    def concept(self, scene: Scene, image: list[int], rng: random.Random) -> Sample:
        """A `turn` after the product's concept prefix, `Bo is <g1>...<g16><u1>...<u16>. `, its latent tokens
        spelled by a description of the defined creature as a concept's rows start from one
        (`Recipe.start="description"`, `start_rows.description_rows`): a caption of it in another pose, or its
        attributes, the first 16 tokens repeated from the start in both sets. The answer opens with the
        understanding set, a picture with the generation set (the self-prompt, with no loss on it)."""
        name, roll = rng.choice(NAMES), rng.random()
        identity = scene.identity
        defined = recognition_subject(identity, rng) if roll < 0.45 else identity
        words = sample_pose(defined, rng).caption() if rng.random() < 0.7 else f"a {defined.describe()}."
        encode = self.prompts.tokenizer.encode
        spelled = encode(f" {words}", add_special_tokens=False)
        latent = spelled_ids(spelled, N_GENERATION)
        prefix = [*encode(f"{name} is", add_special_tokens=False), *latent, *latent]
        prefix += encode(". ", add_special_tokens=False)
        prompt, target = self.turn(name, identity, defined, image, roll, rng)
        return Sample(
            ids=[prompt[0], *prefix, *prompt[1:], *latent, *target],
            labels=[IGNORE] * (len(prefix) + len(prompt) + len(latent)) + target,
        )

    def batch(self, size: int, rng: random.Random, mix: dict[str, float] | None = None) -> list[Sample]:
        """`size` samples drawn by `mix` (default MIX): text to image ("t2i"), questions about a photo ("qa"),
        recognition ("rec", half of them negative; "hard", its negatives all one-attribute changes), one-attribute
        checks ("check"), questions about a creature named in words ("about"), turns after a definition
        ("defined") and after a concept prefix spelled in words ("concept"), and accessory questions ("wearing")."""
        mix = mix or MIX
        kinds = rng.choices(list(mix), weights=list(mix.values()), k=size)
        scenes: list[Scene] = []
        asked: list[Identity] = []
        for kind in kinds:
            scene = sample_scene(rng)
            if kind == "rec":
                asked.append(recognition_subject(scene.identity, rng))
            elif kind == "hard":
                asked.append(hard_subject(scene.identity, rng))
            scenes.append(scene)
        images = self.image_ids(scenes)
        samples, questions = [], iter(asked)
        for kind, scene, image in zip(kinds, scenes, images, strict=True):
            if kind == "t2i":
                samples.append(self.text_to_image(scene, image, rng))
            elif kind == "qa":
                samples.append(self.question(scene, image, rng))
            elif kind == "describe":
                samples.append(self.describe(scene, image))
            elif kind == "wearing":
                samples.append(self.accessory_question(scene, image))
            elif kind == "about":
                samples.append(self.about(scene.identity, rng))
            elif kind == "check":
                samples.append(self.check(scene.identity, image, rng))
            elif kind == "defined":
                samples.append(self.defined(scene, image, rng))
            elif kind == "concept":
                samples.append(self.concept(scene, image, rng))
            else:
                identity = next(questions)
                samples.append(self.recognition(identity, image, identity == scene.identity, rng))
        return samples


def parse_mix(text: str) -> dict[str, float]:
    """A sample mix written as `kind=weight,...` (`check=0.4,rec=0.2`), checked against `KINDS`."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"unknown sample kind {kind!r} in the mix; the kinds are {', '.join(KINDS)}")
        try:
            mix[kind] = float(weight)
        except ValueError:
            raise ValueError(f"the weight of {kind!r} in the mix is not a number: {weight!r}") from None
        if not mix[kind] > 0:
            raise ValueError(f"the weight of {kind!r} in the mix must be positive, got {weight}")
    return mix


LM_PEAK_LR = 1e-3
"""The language model's default peak learning rate."""


def with_stage(
    stages: list[dict], step: int, total: int, mix: dict[str, float] | None, peak_lr: float = LM_PEAK_LR
) -> list[dict]:
    """A run's stages (each `{"from": step, "total": schedule length, "mix": ...}`, plus `"peak_lr"` where it is
    not the default) as they stand when it (re)starts at `step`: a new stage where the schedule's total, the mix
    or the peak learning rate differs from the last one's."""
    stage: dict = {"from": step, "total": total, "mix": dict(mix or MIX)}
    if peak_lr != LM_PEAK_LR:
        stage["peak_lr"] = peak_lr
    if stages and {**stages[-1], "from": step} == stage:
        return stages
    return [*stages, stage]


def per_sample_loss(model: FamiliarChameleon, samples: list[Sample], pad_id: int) -> torch.Tensor:
    """Mean over samples of each sample's mean next-token loss on its target."""
    ids, mask, labels = collate(samples, pad_id, torch.device("cpu"))
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    selected = labels != IGNORE
    losses = nn.functional.cross_entropy(model.lm_head(hidden[selected]), labels[selected], reduction="none")
    return (losses * sample_weights(selected)).sum()


def new_language_model(config: ChameleonConfig, vqmodel: ChameleonVQVAE, seed: int) -> FamiliarChameleon:
    torch.manual_seed(seed)
    model = FamiliarChameleon(config)
    model.model.vqmodel.load_state_dict(vqmodel.state_dict())
    model.model.vqmodel.requires_grad_(False)
    return model


def lm_parameters(model: FamiliarChameleon) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if ".vqmodel." not in f".{name}"]


def learning_rate(step: int, total: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@dataclass
class LMState:
    model: FamiliarChameleon
    optimizer: torch.optim.Optimizer
    step: int
    losses: list[float]


def train_language_model(
    state: LMState,
    maker: SampleMaker,
    total_steps: int,
    seed: int,
    report: Report,
    checkpoint: Callable[[LMState], None],
    batch: int = 32,
    peak_lr: float = LM_PEAK_LR,
    checkpoint_every: int = 250,
    stop_at: float | None = None,
    mix: dict[str, float] | None = None,
) -> None:
    """Train until `total_steps` (or the monotonic time `stop_at`) on samples drawn by `mix` (default `MIX`),
    checkpointing as it goes."""
    model, optimizer = state.model, state.optimizer
    pad_id = int(maker.prompts.tokenizer.pad_token_id)
    model.train()
    model.model.vqmodel.eval()
    started, first = time.monotonic(), state.step
    while state.step < total_steps:
        rng = random.Random(seed * 1_000_003 + state.step)
        samples = maker.batch(batch, rng, mix)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state.step, total_steps, peak_lr)
        loss = per_sample_loss(model, samples, pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(lm_parameters(model), 1.0)
        optimizer.step()
        state.step += 1
        state.losses.append(loss.item())
        if state.step % 50 == 0:
            rate = (time.monotonic() - started) / (state.step - first)
            recent = sum(state.losses[-50:]) / 50
            report(f"lm step {state.step}/{total_steps} loss {recent:.3f} ({rate:.2f} s/step)")
        if state.step % checkpoint_every == 0 or state.step == total_steps:
            checkpoint(state)
        if stop_at is not None and time.monotonic() > stop_at:
            checkpoint(state)
            break
    model.eval()
