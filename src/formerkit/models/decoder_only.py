"""What every decoder-only family (GPT, Llama) shares: the backbone's forward over a causal
``Encoder`` stack with a KV cache, the language-modelling loss, the decoding protocol of
``formerkit.generation`` with its gathered one-token step, and last-token classification.

A family supplies the parts that differ: how tokens and positions become the stack's input
(``embed``: learned positions for GPT, rotary angles for Llama) and the gathered form of that for
decoding (``step_embedder``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from formerkit.generation import DecodingState
from formerkit.models.base import ModelOutput
from formerkit.models.heads import classification_loss
from formerkit.nn import KVCache, causal_mask, make_attention_mask, padding_mask
from formerkit.nn.decoding import DecodingPlan, StepLinear, step_linear
from formerkit.nn.linear import apply_linear
from formerkit.nn.losses import token_cross_entropy

Rotary = tuple[torch.Tensor, torch.Tensor]
# (tokens (B,), positions (B,) or int) -> (stack input (B, D), rotary (cos, sin) or None)
StepEmbedder = Callable[[torch.Tensor, "torch.Tensor | int"], "tuple[torch.Tensor, Rotary | None]"]


class DecoderBackbone:
    """Mixin of a decoder-only backbone. The class has ``config`` (``n_layers``,
    ``max_seq_len``), ``encoder`` (a causal pre-norm ``Encoder``) and implements ``embed``.

    ``bounded_positions``: positions past ``max_seq_len`` are an error (learned position
    tables); rotary models may run longer.
    """

    bounded_positions = True

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor
              ) -> tuple[torch.Tensor, Rotary | None]:
        """ids (B, T), positions (B|1, T) -> (x (B, T, D), rotary (cos, sin) or None)."""
        raise NotImplementedError

    def step_embedder(self) -> StepEmbedder:
        """``embed`` for one token per row, with its tensors gathered once per decoding run."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                output_attentions: bool = False) -> ModelOutput:
        """Run the blocks over new tokens.

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, Tk) 1 = token, 0 = padding; Tk covers cached tokens too.
            position_ids: (B|1, T); default ``past .. past + T - 1`` (as HF's forward; HF's
                ``generate`` derives them from the mask, as ``decoding_logits`` does).
            past_key_values: a ``KVCache`` holding earlier tokens; extended in place.
            use_cache: create a cache when none is given and return it.
            output_attentions: return per-layer weights (B, H, T, Tk) (math backend).

        Returns:
            ``ModelOutput`` with ``last_hidden_state`` (B, T, D), ``past_key_values``,
            ``attentions``.
        """
        length = input_ids.shape[1]
        limit = self.config.max_seq_len
        cache = past_key_values
        if cache is None and use_cache:
            cache = KVCache(self.config.n_layers, max_len=limit)
        past = cache.length if cache is not None else 0
        total = past + length
        if self.bounded_positions and total > limit:
            raise ValueError(f"sequence length {total} (cached {past} + new {length}) exceeds "
                             f"max_seq_len={limit}")
        if position_ids is None:
            position_ids = torch.arange(past, total, device=input_ids.device)[None]  # (1, T)
        elif (self.bounded_positions and position_ids.numel()
              and int(position_ids.max()) >= limit):
            raise ValueError(f"position_ids reach {int(position_ids.max())}, beyond "
                             f"max_seq_len={limit}")
        x, rotary = self.embed(input_ids, position_ids)
        mask = make_attention_mask(attention_mask, query_len=length, key_len=total)
        if mask is not None and length > 1:
            mask = mask & causal_mask(length, total, device=input_ids.device)  # (B, 1, T, Tk)
        # Without padding, SDPA's fused causal path (is_causal) needs no explicit mask.
        x, attentions = self.encoder(x, mask=mask, is_causal=mask is None, cache=cache,
                                     output_attentions=output_attentions, rotary=rotary)
        return ModelOutput(last_hidden_state=x, past_key_values=cache if use_cache or
                           past_key_values is not None else None, attentions=attentions)


class TokenStep(NamedTuple):
    """A causal LM's one-token decoding step with every tensor gathered once per decoding run:
    the embedding, the blocks' ``DecodingPlan`` and the LM head. Module attribute lookups cost
    about a microsecond each, comparable to a small operation."""

    plan: DecodingPlan
    embed: StepEmbedder
    head: StepLinear  # the LM head's (V, D) weight

    @classmethod
    def build(cls, backbone: DecoderBackbone, head: nn.Module) -> TokenStep | None:
        """``None`` where some part must run as a module (see ``DecodingPlan.build``)."""
        plan = DecodingPlan.build(backbone.encoder, head=head)
        if plan is None or plan.head is None or head.bias is not None:
            return None
        return cls(plan, backbone.step_embedder(), plan.head)

    def logits(self, tokens: torch.Tensor, positions: torch.Tensor | int, cache: KVCache,
               attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Equals ``lm_head(backbone(tokens[:, None], attention_mask, positions, cache))`` (as
        ``DecodingPlan.step`` does): (B,) ids -> float (B, V)."""
        x, rotary = self.embed(tokens, positions)
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        hidden = self.plan.step(x, cache, mask, rotary=rotary)
        return step_linear(hidden, self.head).float()


class CausalLMMixin:
    """``forward`` with HF's shifted-label loss and the decoding protocol, for a class with a
    backbone attribute named by ``backbone_name`` and an ``lm_head``."""

    backbone_name = "model"

    @property
    def backbone(self) -> DecoderBackbone:
        return getattr(self, self.backbone_name)

    def add_lm_head(self, std: float) -> None:
        """Create ``lm_head``: tied to the backbone's ``embed_tokens`` if the config says so,
        else normal(0, ``std``); and the generation defaults from the config's special ids."""
        config = self.config
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embed_tokens.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=std)
        self.generation_config = {k: getattr(config, k) for k in
                                  ("bos_token_id", "eos_token_id", "pad_token_id")
                                  if getattr(config, k) is not None} or None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                past_key_values: KVCache | None = None, use_cache: bool = False,
                output_attentions: bool = False) -> ModelOutput:
        """Next-token logits (B, T, V); with ``labels`` (B, T) also the mean cross-entropy.

        As in HF, ``labels`` are the input ids themselves (-100 = ignore): the model shifts
        them, so position t is scored on predicting ``labels[:, t + 1]``.
        """
        out = self.backbone(input_ids, attention_mask, position_ids, past_key_values,
                            use_cache, output_attentions)
        logits = apply_linear(self.lm_head, out.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            # Shift the labels rather than the logits: no copy of the (B, T, V) tensor.
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T)
            loss = token_cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return ModelOutput(loss=loss, logits=logits, past_key_values=out.past_key_values,
                           attentions=out.attentions)

    # ---- decoding protocol (formerkit.generation) ------------------------------------------
    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                       expand: int, max_new_tokens: int) -> tuple[torch.Tensor, DecodingState]:
        prompt_len, context = input_ids.shape[1], self.config.max_seq_len
        if self.backbone.bounded_positions:
            if prompt_len > context:
                raise ValueError(f"prompt of {prompt_len} tokens is longer than the model's "
                                 f"context of max_seq_len={context} tokens")
            if prompt_len + max_new_tokens > context:
                raise ValueError(f"prompt of {prompt_len} tokens + max_new_tokens="
                                 f"{max_new_tokens} exceeds the model's context of "
                                 f"max_seq_len={context}; lower max_new_tokens to at most "
                                 f"{context - prompt_len}")
        if expand > 1:
            input_ids = input_ids.repeat_interleave(expand, dim=0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(expand, dim=0)
        if attention_mask is not None and bool(attention_mask.bool().all()):
            attention_mask = None  # nothing padded: take the fused causal path
        cache = KVCache(self.config.n_layers, max_len=prompt_len + max_new_tokens)
        step = TokenStep.build(self.backbone, self.lm_head)  # None with LoRA, hooks, math
        return input_ids, DecodingState(cache, attention_mask, extras={"step": step})

    def decoding_logits(self, state: DecodingState, new_tokens: torch.Tensor) -> torch.Tensor:
        past, length = state.cache.length, new_tokens.shape[1]
        mask, position_ids = state.attention_mask, None
        if mask is not None:
            if past:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], length)], dim=1)
                state.attention_mask = mask
                position_ids = state.extras["next_position"][:, None] + torch.arange(
                    length, device=mask.device)  # (N, T)
            else:
                # As HF generate: positions count real tokens, so left padding does not shift.
                position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
            state.extras["next_position"] = position_ids[:, -1] + 1
        step = state.extras.get("step")
        if past and length == 1 and step is not None and not self.training:
            positions = past if position_ids is None else position_ids[:, 0]
            return step.logits(new_tokens[:, 0], positions, state.cache, mask)  # (N, V)
        hidden = self.backbone(new_tokens, mask, position_ids, state.cache).last_hidden_state
        # (N, V): the head on the last position only
        return apply_linear(self.lm_head, hidden[:, -1]).float()


def last_token_logits(hidden: torch.Tensor, input_ids: torch.Tensor, pad_token_id: int | None,
                      score: nn.Module) -> torch.Tensor:
    """``score`` at each row's rightmost token that is not ``pad_token_id`` (0 if the row is
    all padding), as HF's ``*ForSequenceClassification``: hidden (B, T, D) -> (B, labels)."""
    batch, length = input_ids.shape
    if pad_token_id is None:
        if batch != 1:
            raise ValueError("sequence classification needs config.pad_token_id to find each "
                             f"row's last token in a batch of {batch}")
        last = torch.full((1,), length - 1, device=input_ids.device)
    else:
        not_pad = (input_ids != pad_token_id).long()
        last = (torch.arange(length, device=input_ids.device) * not_pad).argmax(-1)
    return score(hidden[torch.arange(batch, device=input_ids.device), last])  # (B, labels)


class SequenceClassifierMixin:
    """``forward`` of a decoder-only classifier: ``score`` on the last non-pad token."""

    backbone_name = "model"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_attentions: bool = False) -> ModelOutput:
        """Logits (B, num_labels) pooled at each row's last non-pad token.

        Args:
            labels: (B,) class ids (cross-entropy), float (B,) targets when ``num_labels == 1``
                (MSE), or float (B, num_labels) multi-label targets (BCE with logits).
        """
        backbone = getattr(self, self.backbone_name)
        out = backbone(input_ids, attention_mask, position_ids,
                       output_attentions=output_attentions)
        logits = last_token_logits(out.last_hidden_state, input_ids, self.config.pad_token_id,
                                   self.score)
        loss = classification_loss(self.config, logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions)
