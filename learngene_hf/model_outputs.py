"""transformers forward glue shared by the VGG-BN wrappers (collective and individual models).

Depends only on torch and transformers (plus the sibling ``vgg`` module), so it travels with a
model pushed as remote code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput

from .vgg import VGGBN


def vgg_base_forward(
    vgg: VGGBN,
    config: PreTrainedConfig,
    pixel_values: torch.Tensor,
    output_hidden_states: bool | None,
    return_dict: bool | None,
) -> BaseModelOutputWithPoolingAndNoAttention | tuple:
    """The base-model forward shared by the VGG-BN families (see :class:`CollectiveBaseModel`)."""
    output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
    return_dict = return_dict if return_dict is not None else config.return_dict
    hidden_states = None
    if output_hidden_states:
        last, intermediates = vgg.forward_intermediates(pixel_values)
        hidden_states = tuple(intermediates)
    else:
        last = vgg.forward_features(pixel_values)
    pooled = vgg.forward_head(last, pre_logits=True)
    if not return_dict:
        return (last, pooled) + ((hidden_states,) if hidden_states is not None else ())
    return BaseModelOutputWithPoolingAndNoAttention(last_hidden_state=last, pooler_output=pooled, hidden_states=hidden_states)


def classifier_output(
    logits: torch.Tensor, labels: torch.Tensor | None, base_output: Any, return_dict: bool
) -> ImageClassifierOutput | tuple:
    """Loss (cross-entropy when ``labels`` [B] is given) and output packing shared by the heads."""
    loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
    if not return_dict:
        out = (logits,) + tuple(base_output[2:])
        return ((loss,) + out) if loss is not None else out
    return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=base_output.hidden_states)
