"""`vlm_judge`: a vision-language model asked a yes/no question about each image; the reward is P("yes").

Any image-text-to-text model that `transformers.AutoModelForImageTextToText` loads (Qwen2.5-VL, Qwen3-VL, LLaVA,
...) with its `AutoProcessor`. The question is a template over the prompt and the prompt's metadata:

    VLMJudge("Qwen/Qwen2.5-VL-7B-Instruct", question="Does this image show {prompt}? Answer yes or no.")
"""

from typing import List, Optional, Sequence

import torch

from ..visualize import to_pil
from .base import ModelReward

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_QUESTION = "Does this image show {prompt}? Answer yes or no."
# For edits (image-conditioned runs): the model sees the source, then the edit.
EDIT_QUESTION = "Is the second image the first one edited as follows: {prompt}? Answer yes or no."


def answer_token_ids(tokenizer, words: Sequence[str]) -> List[int]:
    """The first token of each spelling of `words` (`yes`, ` yes`, `Yes`, ` Yes`): how an answer can begin."""
    ids = set()
    for word in words:
        for spelling in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            tokens = tokenizer.encode(spelling, add_special_tokens=False)
            if tokens:
                ids.add(tokens[0])
    return sorted(ids)


def last_token_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The next-token logits after each row's last real token, whichever side the processor padded."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.long()).argmax(dim=1)
    return logits[torch.arange(len(logits), device=logits.device), last]


class VLMJudge(ModelReward):
    """P("yes") of a vision-language model to a question about each image.

    Args:
        model_id: Hub id or folder of an `AutoModelForImageTextToText` model.
        question: The question, a `str.format` template over `prompt` and the prompt's metadata columns.
        processor_id: Its `AutoProcessor` (default: `model_id`).
        processor: A processor object to use instead of loading one.
        normalize: Score `P(yes) / (P(yes) + P(no))` instead of `P(yes)` over the whole vocabulary.
        with_source: Show the model each image's source first (its `"source_image"` metadata, in editing runs);
            the question then speaks of two images (`EDIT_QUESTION`, the default with it).
        **kwargs: `device`, `dtype`, `batch_size` of `ModelReward`.
    """

    def __init__(self, model_id: str = DEFAULT_MODEL, question: Optional[str] = None,
                 processor_id: Optional[str] = None, processor=None, normalize: bool = False,
                 with_source: bool = False, **kwargs):
        super().__init__(**kwargs)
        from transformers import AutoModelForImageTextToText, AutoProcessor

        question = question or (EDIT_QUESTION if with_source else DEFAULT_QUESTION)
        self.with_source = with_source
        if "{prompt}" not in question:
            raise ValueError(f"question must contain '{{prompt}}' (got {question!r}), e.g. {DEFAULT_QUESTION!r}.")
        self.processor = processor if processor is not None else AutoProcessor.from_pretrained(processor_id or model_id)
        self.model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=self.dtype)
        self.model.to(self.device).eval().requires_grad_(False)
        tokenizer = self.processor.tokenizer
        yes, no = answer_token_ids(tokenizer, ["yes"]), answer_token_ids(tokenizer, ["no"])
        # a first token that both answers can start with (a bare space) says nothing about the answer
        self.yes_ids, self.no_ids = [i for i in yes if i not in no], [i for i in no if i not in yes]
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"The tokenizer of {model_id} starts every spelling of 'yes' and 'no' with the same "
                             "tokens; use a model whose tokenizer has them as words.")
        self.question, self.normalize = question, normalize

    def texts(self, prompts: List[str], metadata: List[dict]) -> List[str]:
        """The chat-formatted question of each image, ending where the model's answer begins."""
        texts = []
        for prompt, meta in zip(prompts, metadata):
            question = self.question.format(**{**meta, "prompt": prompt})
            images = [{"type": "image"}] * (2 if self.with_source else 1)
            messages = [{"role": "user", "content": [*images, {"type": "text", "text": question}]}]
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        return texts

    def score(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> torch.Tensor:
        shown = to_pil(images)
        if self.with_source:  # each row: its source, then the edit
            sources = to_pil(torch.stack([_source(m, i, images.shape[-2:]) for i, m in enumerate(metadata)]))
            shown = [image for pair in zip(sources, shown) for image in pair]
        inputs = self.processor(text=self.texts(prompts, metadata), images=shown, padding=True,
                                return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        logits = last_token_logits(self.model(**inputs).logits, inputs["attention_mask"])
        probs = logits.float().softmax(dim=-1)
        yes = probs[:, self.yes_ids].sum(dim=1)
        if self.normalize:
            return yes / (yes + probs[:, self.no_ids].sum(dim=1)).clamp_min(1e-12)
        return yes


def _source(meta: dict, row: int, size) -> torch.Tensor:
    source = meta.get("source_image")
    if source is None:
        raise ValueError(f"vlm_judge with_source: image {row} has no source_image in its metadata (an editing run "
                         "gives it: --image_column).")
    source = source[0] if source.dim() == 4 else source
    return torch.nn.functional.interpolate(source[None].float(), size=tuple(size), mode="bilinear")[0]
