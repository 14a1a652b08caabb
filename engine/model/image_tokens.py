"""Images <-> Chameleon vocabulary ids, through the VQ encoder and the project's VQGAN decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from PIL import Image
from transformers.models.chameleon.modeling_chameleon import (
    ChameleonImageVocabularyMapping,
    ChameleonVQVAE,
)

from engine.errors import EngineError
from engine.model.images import to_pil, to_pixel_values
from engine.model.vqgan import VQGANDecoder

BOI_TOKEN = "<racm3:break>"
EOI_TOKEN = "<eoss>"


class ImageTokenizer:
    """Turns images into the vocabulary ids of their image tokens, and such ids back into images."""

    def __init__(self, vqmodel: ChameleonVQVAE, decoder: VQGANDecoder, vocabulary_map: dict[str, int]) -> None:
        self.vqmodel = vqmodel
        self.decoder = decoder
        num_embeddings = vqmodel.config.num_embeddings
        if decoder.config.num_embeddings != num_embeddings:
            raise EngineError(
                f"The VQ encoder has {num_embeddings} codes but the decoder has {decoder.config.num_embeddings}."
            )
        missing = [name for name in (BOI_TOKEN, EOI_TOKEN) if name not in vocabulary_map]
        if missing:
            raise EngineError(f"The vocabulary has no {' or '.join(missing)} token.")
        self.boi_id = vocabulary_map[BOI_TOKEN]
        self.eoi_id = vocabulary_map[EOI_TOKEN]

        mapping = ChameleonImageVocabularyMapping(vocabulary_map)
        codes = sorted(mapping.img2bpe)
        if codes != list(range(num_embeddings)):
            raise EngineError(
                f"The vocabulary's image tokens do not cover the VQ codebook: {len(codes)} image tokens "
                f"for {num_embeddings} codes."
            )
        self._code_to_vocab = torch.tensor([mapping.img2bpe[c] for c in codes], dtype=torch.long)
        self.image_token_ids = torch.tensor(mapping.image_tokens, dtype=torch.long)
        self._vocab_to_code = torch.full((int(self.image_token_ids.max()) + 1,), -1, dtype=torch.long)
        self._vocab_to_code[self._code_to_vocab] = torch.arange(num_embeddings)

    @property
    def tokens_per_image(self) -> int:
        return self.decoder.tokens_per_image

    @property
    def resolution(self) -> int:
        return self.vqmodel.config.resolution

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image], fit: Literal["crop", "pad"] = "crop") -> torch.Tensor:
        """Images -> LongTensor [B, tokens_per_image] of vocabulary ids (on the CPU)."""
        if not images:
            return torch.empty(0, self.tokens_per_image, dtype=torch.long)
        parameter = next(self.vqmodel.parameters())
        pixels = to_pixel_values(images, self.resolution, fit).to(parameter.device, parameter.dtype)
        codes = self.vqmodel.encode(pixels).image_tokens.reshape(len(images), -1).cpu()
        return self._code_to_vocab[codes]

    @torch.no_grad()
    def decode(self, vocab_ids: torch.Tensor) -> list[Image.Image]:
        """LongTensor [B, tokens_per_image] of image-token vocabulary ids -> images of ``resolution``."""
        if vocab_ids.ndim != 2 or vocab_ids.shape[1] != self.tokens_per_image:
            raise EngineError(
                f"An image is {self.tokens_per_image} image tokens; got ids of shape {list(vocab_ids.shape)} "
                f"instead of [batch, {self.tokens_per_image}]."
            )
        ids = vocab_ids.detach().cpu().long()
        in_range = (ids >= 0) & (ids < len(self._vocab_to_code))
        codes = torch.where(in_range, self._vocab_to_code[ids.clamp(0, len(self._vocab_to_code) - 1)], -1)
        bad = ids[codes < 0].unique()
        if bad.numel():
            shown = ", ".join(str(i) for i in bad[:5].tolist())
            raise EngineError(f"{bad.numel()} id(s) are not image tokens (e.g. {shown}); cannot draw them.")
        parameter = next(self.decoder.parameters())
        return to_pil(self.decoder(codes.to(parameter.device)))
