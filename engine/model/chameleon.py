"""A Chameleon model whose logits include image tokens, so it can draw and be trained on images.

The stock `ChameleonForConditionalGeneration.forward` sets every image token's logit to the minimum,
which makes image generation impossible and image labels give an infinite loss. This subclass computes
plain `lm_head` logits and can restrict them to the positions and vocabulary rows that are needed.
"""

from __future__ import annotations

import torch
from transformers import ChameleonForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast


class FamiliarChameleon(ChameleonForConditionalGeneration):
    """Chameleon with unmasked logits.

    `logits_positions` (LongTensor of sequence positions) computes logits only there: recognition and QA
    samples have a few labelled tokens out of about a thousand, and a full logits tensor is large.
    """

    _keep_in_fp32_modules_strict = ["vqmodel"]  # noqa: RUF012 - the type transformers declares and reads
    """The VQ encoder is read in float32 whatever dtype is asked for: rounding its weights to bfloat16 at load
    time changes the codes it picks (docs/engine.md)."""

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        logits_positions: torch.LongTensor | None = None,
        **kwargs: object,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        hidden = outputs.last_hidden_state
        if logits_positions is not None:
            hidden = hidden[:, logits_positions]
        elif logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return CausalLMOutputWithPast(logits=self.lm_head(hidden), past_key_values=outputs.past_key_values)
