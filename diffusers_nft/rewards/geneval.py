"""GenEval-style compositional scoring with a transformers detector, partial credit per clause.

An approximation of the official GenEval evaluator (which uses mmdet's Mask2Former): same thresholds (0.3; 0.9 for
counting prompts), same metadata format, same colour and position rules, with transformers' Mask2Former and
CLIP zero-shot colour on masked crops.

Two rules turn an image's detections into its training reward (`GenEval(rules=...)`):
- `"release"` (the default, and the `sd35m_geneval` recipe's): the DiffusionNFT / Flow-GRPO release's training
  reward (`geneval_release_score`);
- `"evaluator"` (registered as `geneval_evaluator`): partial credit after the official evaluator's rules
  (`geneval_score`).
Either way `strict` is the evaluator's all-or-nothing correctness, GenEval's reported metric.

Metadata per prompt (GenEval's format): `{"tag": "counting", "include": [{"class": "cat", "count": 2,
"color": "red", "position": ["left of", 0]}], "exclude": [{"class": "cat", "count": 3}]}`. A `position`
`[relation, i]` says where this clause's object lies relative to the object of `include[i]`.
"""

from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

from ..visualize import to_pil
from .base import ModelReward

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
THRESHOLD, COUNTING_THRESHOLD, MAX_OBJECTS, POSITION_MARGIN = 0.3, 0.9, 16, 0.1

Detection = Dict[str, object]  # {"score": float, "box": (x0, y0, x1, y1), "mask": bool array, ...}


def relative_position(box_a: Sequence[float], box_b: Sequence[float], margin: float = POSITION_MARGIN) -> set:
    """Relations of box a seen from box b ("left of", "right of", "above", "below"), ignoring small offsets."""
    a, b = np.asarray(box_a, dtype=float).reshape(2, 2), np.asarray(box_b, dtype=float).reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)
    size = (a[1] - a[0]) + (b[1] - b[0])
    revised = np.maximum(np.abs(offset) - margin * size, 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def geneval_score(
    metadata: dict, detections: Dict[str, List[Detection]], color_of: Callable[[str, Detection], str]
) -> Dict[str, float]:
    """Score one image against its GenEval metadata.

    Args:
        metadata: `tag`, `include` and optional `exclude` clauses.
        detections: Class name -> detections sorted by score, already filtered by the tag's threshold.
        color_of: Names the colour of a detected object of a class.

    Returns:
        `{"score": partial credit in [0, 1], "strict": 1.0 if every clause holds else 0.0}`. Each include clause
        gives a count credit (`1 - |n - found| / n` for counting prompts, `min(found, n) / n` otherwise), a colour
        credit (share of its n objects with the right colour) and a position credit (0 or 1); each exclude
        clause gives 1 if fewer than `count` objects of its class are found.
    """
    credits, strict = [], True
    counting = metadata.get("tag") == "counting"
    for clause in metadata.get("include") or []:
        n, found = clause.get("count") or 1, detections.get(clause["class"], [])[:MAX_OBJECTS]
        credits.append(max(0.0, 1 - abs(n - len(found)) / n) if counting else min(len(found), n) / n)
        strict &= len(found) >= n
        objects = found[:n]
        if clause.get("color") is not None:
            right = sum(color_of(clause["class"], obj) == clause["color"] for obj in objects)
            credits.append(right / n)
            strict &= right == n
        if clause.get("position") is not None:
            relation, index = clause["position"]
            reference = detections.get(metadata["include"][index]["class"], [])
            holds = bool(objects and reference) and relation in relative_position(objects[0]["box"], reference[0]["box"])
            credits.append(float(holds))
            strict &= holds
    for clause in metadata.get("exclude") or []:
        holds = len(detections.get(clause["class"], [])) < clause["count"]
        credits.append(float(holds))
        strict &= holds
    if not credits:
        raise ValueError(f"GenEval metadata has no include/exclude clause: {metadata!r}")
    return {"score": float(np.mean(credits)), "strict": float(strict)}


def geneval_release_score(
    metadata: dict, detections: Dict[str, List[Detection]], color_of: Callable[[str, Detection], str]
) -> float:
    """The release's training reward for one image: the mean of its include clauses' credits.

    Each include clause of count `n` with `found` detections (at most 16) gives `1 - |n - found| / n`, whatever the
    tag and with no floor (3 cats found for "a cat" give -1). When `found != n`, a clause with a colour or a position
    adds one 0. Otherwise a colour adds `right / n`, and a position, checked only when the colour held, compares every
    found object with every object of its reference clause (which must have held): it adds 1 when all relations
    hold, and 0 and then 1 when one fails (the release appends both). Exclude clauses are ignored. No clause: 0.
    """
    credits, held = [], []
    for clause in metadata.get("include") or []:
        n, found = clause["count"], detections.get(clause["class"], [])[:MAX_OBJECTS]
        credits.append(1 - abs(n - len(found)) / n)
        matched = len(found) == n
        if not matched:
            if clause.get("color") is not None or clause.get("position") is not None:
                credits.append(0.0)
        else:
            if clause.get("color") is not None:
                right = sum(color_of(clause["class"], obj) == clause["color"] for obj in found)
                credits.append(1 - abs(n - right) / n)
                matched = right == n
            if clause.get("position") is not None and matched:
                matched = _release_position(clause, found, held, credits)
        held.append(found if matched else None)
    return float(np.mean(credits)) if credits else 0.0


def _release_position(clause: dict, found: List[Detection], held: list, credits: List[float]) -> bool:
    """The release's position credit of a clause whose count (and colour) held; whether the relation holds."""
    relation, index = clause["position"]
    reference = held[index]
    if reference is None:
        credits.append(0.0)
        return False
    holds = all(relation in relative_position(obj["box"], ref["box"]) for obj in found for ref in reference)
    if not holds:
        credits.append(0.0)  # the release appends 0 on the first failing pair, then 1 after its loop
    credits.append(1.0)
    return holds


RULES = ("release", "evaluator")


class GenEval(ModelReward):
    """GenEval-style reward: a partial credit per image by `rules`; `strict` (GenEval's correctness) is returned too.

    Args:
        detector_id: A transformers instance-segmentation model trained on COCO.
        clip_model_id: The CLIP model of the zero-shot colour classifier.
        rules: `"release"` (the release's training reward, `geneval_release_score`: can be negative) or
            `"evaluator"` (partial credit in [0, 1] after the evaluator's rules, `geneval_score`).
        **kwargs: `device`, `dtype`, `batch_size`.
    """

    def __init__(
        self,
        detector_id: str = "facebook/mask2former-swin-small-coco-instance",
        clip_model_id: str = "openai/clip-vit-large-patch14",
        rules: str = "release",
        **kwargs,
    ):
        if rules not in RULES:
            raise ValueError(f"GenEval rules must be one of {RULES}, got {rules!r}.")
        super().__init__(**kwargs)
        self.rules = rules
        from transformers import AutoImageProcessor, CLIPModel, CLIPProcessor, Mask2FormerForUniversalSegmentation

        self.detector_processor = AutoImageProcessor.from_pretrained(detector_id)
        self.detector = Mask2FormerForUniversalSegmentation.from_pretrained(detector_id)
        self.clip_processor = CLIPProcessor.from_pretrained(clip_model_id)
        self.clip = CLIPModel.from_pretrained(clip_model_id)
        for model in (self.detector, self.clip):
            model.to(self.device, self.dtype).eval().requires_grad_(False)
        self.labels = self.detector.config.id2label

    def detect(self, image, threshold: float) -> Dict[str, List[Detection]]:
        """Detections of one PIL image by class name, best first, with boxes and masks."""
        inputs = self.detector_processor(images=[image], return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.detector(**inputs)
        result = self.detector_processor.post_process_instance_segmentation(
            outputs, threshold=threshold, target_sizes=[(image.height, image.width)], return_binary_maps=True
        )[0]
        masks = result["segmentation"]
        detections: Dict[str, List[Detection]] = {}
        for i, info in enumerate(result["segments_info"]):
            mask = (masks[i] if masks is not None and masks.ndim == 3 else masks == info["id"]).bool().cpu().numpy()
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            name = self.labels[int(info["label_id"])]
            detections.setdefault(name, []).append({"score": float(info["score"]), "box": box, "mask": mask})
        for objects in detections.values():
            objects.sort(key=lambda d: -d["score"])
        return detections

    def color(self, image, class_name: str, detection: Detection) -> str:
        """CLIP zero-shot colour of a detected object, on its crop with the background greyed out."""
        pixels = np.asarray(image).copy()
        pixels[~detection["mask"]] = 128
        x0, y0, x1, y1 = (int(v) for v in detection["box"])
        crop = pixels[y0:y1, x0:x1]
        texts = [f"a photo of a {c} {class_name}" for c in COLORS]
        inputs = self.clip_processor(text=texts, images=[crop], padding=True, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return COLORS[int(self.clip(**inputs).logits_per_image[0].argmax())]

    def _colors_of(self, image) -> Callable[[str, Detection], str]:
        """`color` on `image`, each object classified once (the reward and `strict` both ask)."""
        known = {}

        def color_of(class_name: str, detection: Detection) -> str:
            key = (class_name, id(detection))
            if key not in known:
                known[key] = self.color(image, class_name, detection)
            return known[key]

        return color_of

    def score(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, torch.Tensor]:
        scores, strict = [], []
        for image, meta in zip(to_pil(images), metadata):
            threshold = COUNTING_THRESHOLD if meta.get("tag") == "counting" else THRESHOLD
            detections = self.detect(image, threshold)
            color_of = self._colors_of(image)
            result = geneval_score(meta, detections, color_of)
            release = self.rules == "release"
            scores.append(geneval_release_score(meta, detections, color_of) if release else result["score"])
            strict.append(result["strict"])
        return {"scores": torch.tensor(scores), "strict": torch.tensor(strict)}
