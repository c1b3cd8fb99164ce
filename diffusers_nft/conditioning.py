"""Prompts with images: the conditioning columns of a prompt dataset (reference images, a mask, a control image),
checked before any model compute and read once per iteration for a whole group.

A column's values may be paths (or `file://` URLs of local files), PIL images, `datasets.Image` values (decoded to
PIL, or `{"path", "bytes"}` dicts), or lists of those (several reference images). Each column feeds one argument
of the pipeline's call, named as diffusers names it (`CONDITIONING_ARGUMENTS`).
"""

import io
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import torch
from PIL import Image

logger = logging.getLogger(__name__)

# pipeline-call argument -> the NFTConfig field that names its dataset column
CONDITIONING_ARGUMENTS = {"image": "image_column", "mask_image": "mask_column", "control_image": "control_column",
                          "video": "video_column"}
MODES = {"image": "RGB", "mask_image": "L", "control_image": "RGB", "video": "RGB"}


class ConditioningError(ValueError):
    """A conditioning value that cannot be used, with its row, its column and the fix."""


def columns_of(config) -> Dict[str, str]:
    """The conditioning columns a config names: pipeline-call argument -> dataset column."""
    return {arg: getattr(config, field) for arg, field in CONDITIONING_ARGUMENTS.items() if getattr(config, field, None)}


def _open(value, where: str) -> Image.Image:
    """One image value as a (lazily decoded) PIL image."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):  # a datasets.Image value not decoded
        value = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    if isinstance(value, str):
        path = value[len("file://"):] if value.startswith("file://") else value
        if "://" in path:
            raise ConditioningError(f"{where}: {value!r} is a remote URL; download it and give the local path.")
        if not os.path.isfile(path):
            raise ConditioningError(f"{where}: no file {path!r}. Fix the path (relative paths start from the working "
                                    "directory) or drop the row.")
        value = path
    if not isinstance(value, (str, io.BytesIO)):
        raise ConditioningError(f"{where}: a {type(value).__name__} is not an image; give a path, a PIL image or a "
                                "datasets.Image value.")
    try:
        return Image.open(value)
    except Exception as error:
        raise ConditioningError(f"{where}: cannot read {value!r} as an image ({type(error).__name__}: {error}).") \
            from error


def _images(value, where: str) -> List[Image.Image]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or any(v is None for v in values):
        raise ConditioningError(f"{where}: empty. Every row needs its conditioning; drop rows without it.")
    return [_open(v, f"{where}, item {i}" if len(values) > 1 else where) for i, v in enumerate(values)]


def _value(dataset, row: int, column: str):
    """A row's value of `column`; a list of paths kept as JSON text (`data.records_to_dataset`) decoded."""
    if column not in dataset.column_names and column + ".json" in dataset.column_names:
        text = dataset[row][column + ".json"]
        return json.loads(text) if text is not None else None
    return dataset[row][column]


def check_conditioning(dataset, columns: Dict[str, str], max_images: Dict[str, int], name: str = "train_dataset",
                       family: str = "the pipeline") -> None:
    """Open every conditioning value of `dataset` (headers only) and check what the pipeline can take.

    Args:
        dataset: The prompt rows.
        columns: Pipeline-call argument -> column (`columns_of`).
        max_images: Pipeline-call argument -> how many images one call takes (`PipelineFamily.conditioning`).
        name: The dataset's name in messages.
        family: What serves the pipeline, in messages.

    Raises:
        ConditioningError: Naming the row, the column and the fix: a missing column, file or value, an unreadable
            image, a mode that does not convert, too many images or another number than the first row's, a mask
            whose size is not its image's.
    """
    for arg, column in columns.items():
        if column not in dataset.column_names and column + ".json" not in dataset.column_names:
            raise ConditioningError(f"{name} has no column {column!r} (for the pipeline's `{arg}`); its columns are "
                                    f"{dataset.column_names}.")
        if arg not in max_images:
            raise ConditioningError(f"{family} takes no `{arg}`, but {name} gives it in column {column!r}. Drop the "
                                    f"column, or train a pipeline whose family takes {arg} (this one takes "
                                    f"{sorted(max_images) or 'none'}; diffusers_nft.pipelines.FAMILIES lists them).")
    counts = {}
    for row in range(len(dataset)):
        sizes = {}
        for arg, column in columns.items():
            where = f"{name} row {row}, column {column!r}"
            images = _images(_value(dataset, row, column), where)
            if len(images) > max_images[arg]:
                raise ConditioningError(f"{where}: {len(images)} images, but the pipeline takes at most "
                                        f"{max_images[arg]} as `{arg}`.")
            if counts.setdefault(arg, len(images)) != len(images):  # the rows of a batch share a sequence length
                raise ConditioningError(f"{where}: {len(images)} image(s), but row 0 gives {counts[arg]}. Every row "
                                        f"gives the same number of `{arg}` images: split the rows into runs by count.")
            for image in images:
                if image.mode not in ("RGB", "RGBA", "L", "P", "1", "I;16", "I", "F", "LA", "CMYK", "YCbCr"):
                    raise ConditioningError(f"{where}: mode {image.mode} does not convert to {MODES[arg]}.")
            sizes[arg] = images[0].size
        if "mask_image" in sizes and "image" in sizes and sizes["mask_image"] != sizes["image"]:
            raise ConditioningError(f"{name} row {row}: the mask is {sizes['mask_image']} but its image is "
                                    f"{sizes['image']}; give a mask of the image's size.")


def read_conditioning(rows, columns: Dict[str, str], resolution: int) -> List[Dict[str, object]]:
    """The conditioning of each row, decoded once, in its mode and at the trained (square) resolution: argument ->
    a PIL image, or a list of them where a row holds several."""
    out = []
    for row in range(len(rows)):
        values = {}
        for arg, column in columns.items():
            value = _value(rows, row, column)
            images = [_fit(image, MODES[arg], resolution) for image in _images(value, f"row {row}, column {column!r}")]
            values[arg] = images if isinstance(value, (list, tuple)) else images[0]
        out.append(values)
    return out


def _fit(image: Image.Image, mode: str, resolution: int) -> Image.Image:
    image = image.convert(mode)
    if image.size != (resolution, resolution):
        resample = Image.NEAREST if mode == "L" else Image.LANCZOS  # a mask stays a mask
        image = image.resize((resolution, resolution), resample)
    return image


def as_tensor(image) -> torch.Tensor:
    """A PIL image (or a list of them) as a float tensor `(C, H, W)` (`(N, C, H, W)`) in [0, 1], for rewards."""
    if isinstance(image, (list, tuple)):
        return torch.stack([as_tensor(i) for i in image])
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    channels = len(image.getbands())
    return data.view(image.height, image.width, channels).permute(2, 0, 1).float() / 255


def reward_metadata(values: Sequence[Dict[str, object]]) -> List[dict]:
    """What rewards see of each row's conditioning, in its metadata: `"source_image"` (the `image` argument, a
    tensor `(3, H, W)` in [0, 1], or `(N, 3, H, W)` for several), `"mask"` (`(1, H, W)`, 1 where the edit goes),
    `"control_image"` and `"source_video"` (the `video` argument's frames, `(F, 3, H, W)`)."""
    keys = {"image": "source_image", "mask_image": "mask", "control_image": "control_image", "video": "source_video"}
    return [{keys[arg]: as_tensor(value) for arg, value in row.items()} for row in values]


def shown_sources(values: Optional[Sequence[Dict[str, object]]]) -> Optional[List[Image.Image]]:
    """The image a grid shows beside each row's outputs: its `image` (the first of several), else its first
    conditioning image (a control image); None for text-only runs."""
    if not values:
        return None
    return [first_image(v.get("image", next(iter(v.values())))) for v in values]


def image_list(value) -> List[Image.Image]:
    """A row's conditioning value as a list: its images, or its one image."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def first_image(value) -> Optional[Image.Image]:
    """The image a grid shows for a row's conditioning value: the image, or the first of several."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def check_run_conditioning(family, config, datasets: Dict[str, object],
                           resolution: Optional[int] = None) -> Dict[str, str]:
    """The run's conditioning columns, checked against the family and every named dataset before any compute; the
    family is shown the first row's conditioning (`PipelineFamily.use_example_conditioning`).

    Raises:
        ConditioningError: A column the pipeline does not take, a conditioning it needs and is not given, or a bad
            value (`check_conditioning`).
    """
    columns = columns_of(config)
    name = type(family.pipeline).__name__
    missing = [arg for arg in family.required_conditioning if arg not in columns]
    if missing:
        flags = ", ".join(f"--{CONDITIONING_ARGUMENTS[arg]}" for arg in missing)
        raise ConditioningError(f"{name} needs {missing} for every prompt: name the dataset column with {flags}.")
    if family.conditioning and not columns:
        logger.warning("%s takes %s, but no conditioning column is named (--image_column ...): it trains and "
                       "samples from text alone.", name, sorted(family.conditioning))
    for dataset_name, dataset in datasets.items():
        if dataset is not None:
            check_conditioning(dataset, columns, family.conditioning, dataset_name,
                               f"{name} (served by {type(family).__name__})")
    first = next((d for d in datasets.values() if d is not None and len(d)), None)
    if columns and first is not None:
        size = resolution or config.resolution  # the run's trained size (evaluation passes its own)
        family.use_example_conditioning(read_conditioning(first.select([0]), columns, size)[0])
    return columns
