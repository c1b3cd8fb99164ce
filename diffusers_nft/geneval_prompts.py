"""GenEval-style prompt sets of our own: six compositional tasks over the 80 COCO classes, with the metadata that
the `geneval` reward reads.

    python -m diffusers_nft.geneval_prompts --output_dir geneval-prompts --num_train 5000 --num_test 500

writes `train_metadata.jsonl` and `test_metadata.jsonl` (one record a line: `prompt`, `tag`, `include`, optional
`exclude`, as GenEval's own metadata), which `--prompts` and `load_prompts` read. The two splits share no prompt.
The tasks follow GenEval's templates: `single_object` ("a photo of a cat"), `two_object` ("a photo of a cat and a
dog"), `counting` ("a photo of three cats", with an exclude clause for one more), `colors` ("a photo of a red
cat"), `position` ("a photo of a cat left of a dog") and `color_attr` ("a photo of a red cat and a blue dog").
"""

import argparse
import json
import logging
import os
import random
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {2: "two", 3: "three", 4: "four"}
_MAX_MISSES = 2000  # draws of one task in a row that give no new prompt before it counts as spent
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
# Plurals that adding "s" gets wrong.
_PLURALS = {"person": "people", "bus": "buses", "sheep": "sheep", "skis": "pairs of skis", "knife": "knives",
            "sandwich": "sandwiches", "broccoli": "heads of broccoli", "couch": "couches", "mouse": "computer mice",
            "scissors": "pairs of scissors", "wine glass": "wine glasses", "bench": "benches", "tv": "tvs",
            "toothbrush": "toothbrushes", "hair drier": "hair driers"}


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def plural(name: str) -> str:
    """The plural of a COCO class name, as a counting prompt says it."""
    return _PLURALS.get(name, name + "s")


def _two(rng: random.Random, classes: Sequence[str]) -> Tuple[str, str]:
    a, b = rng.sample(list(classes), 2)
    return a, b


def make_record(task: str, rng: random.Random, classes: Sequence[str] = COCO_CLASSES) -> Dict:
    """One random prompt of `task` with its GenEval metadata."""
    if task == "single_object":
        name = rng.choice(classes)
        return {"tag": task, "prompt": f"a photo of {_article(name)}", "include": [{"class": name, "count": 1}]}
    if task == "two_object":
        a, b = _two(rng, classes)
        return {"tag": task, "prompt": f"a photo of {_article(a)} and {_article(b)}",
                "include": [{"class": a, "count": 1}, {"class": b, "count": 1}]}
    if task == "counting":
        name, n = rng.choice(classes), rng.choice(sorted(NUMBERS))
        return {"tag": task, "prompt": f"a photo of {NUMBERS[n]} {plural(name)}",
                "include": [{"class": name, "count": n}], "exclude": [{"class": name, "count": n + 1}]}
    if task == "colors":
        name, color = rng.choice(classes), rng.choice(COLORS)
        return {"tag": task, "prompt": f"a photo of {_article(color)} {name}",
                "include": [{"class": name, "count": 1, "color": color}]}
    if task == "position":
        a, b = _two(rng, classes)
        relation = rng.choice(RELATIONS)
        return {"tag": task, "prompt": f"a photo of {_article(a)} {relation} {_article(b)}",
                "include": [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}]}
    if task == "color_attr":
        (a, b), (ca, cb) = _two(rng, classes), rng.sample(COLORS, 2)
        return {"tag": task, "prompt": f"a photo of {_article(ca)} {a} and {_article(cb)} {b}",
                "include": [{"class": a, "count": 1, "color": ca}, {"class": b, "count": 1, "color": cb}]}
    raise ValueError(f"Unknown GenEval task {task!r}; choose from {TASKS}.")


def generate(num_train: int, num_test: int, seed: int = 0, tasks: Sequence[str] = TASKS) -> Dict[str, List[Dict]]:
    """A train and a test split of distinct prompts, seeded. The tasks take turns, so their shares are equal (no
    two counts differ by more than one) until a task runs out of new prompts (`single_object` has 80, `counting`
    240) and the others share the rest; each task is split between train and test in the splits' proportion.

    Returns:
        `{"train": records, "test": records}`; no prompt is in both.

    Raises:
        ValueError: If the tasks cannot give that many distinct prompts.
    """
    rng, total = random.Random(seed), num_train + num_test
    by_task = {task: [] for task in tasks}
    for record in _draw(total, tasks, rng):
        by_task[record["tag"]].append(record)
    exact = {task: len(records) * num_test / max(total, 1) for task, records in by_task.items()}
    quota = {task: int(share) for task, share in exact.items()}
    # the test prompts left over go to the tasks with the largest remainders (the first tasks on ties)
    for task in sorted(tasks, key=lambda t: quota[t] - exact[t])[: num_test - sum(quota.values())]:
        quota[task] += 1
    splits = {"train": [], "test": []}
    for task, records in by_task.items():
        splits["test"] += records[: quota[task]]
        splits["train"] += records[quota[task]:]
    for records in splits.values():
        rng.shuffle(records)
    return splits


def _draw(count: int, tasks: Sequence[str], rng: random.Random) -> List[Dict]:
    """`count` distinct records, the tasks taken in turn while they have new prompts."""
    records, seen, open_tasks, misses = [], set(), list(tasks), 0
    while len(records) < count:
        if not open_tasks:
            raise ValueError(f"Could not draw {count} distinct prompts of {list(tasks)}; ask for fewer.")
        task = open_tasks[len(records) % len(open_tasks)]
        record = make_record(task, rng)
        if record["prompt"] in seen:
            misses += 1
            if misses > _MAX_MISSES:  # this task has (almost surely) no new prompt left
                open_tasks.remove(task)
                misses = 0
            continue
        seen.add(record["prompt"])
        records.append(record)
        misses = 0
    return records


def write(splits: Dict[str, List[Dict]], output_dir: str) -> List[str]:
    """Write `<split>_metadata.jsonl` files; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for split, records in splits.items():
        path = os.path.join(output_dir, f"{split}_metadata.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        paths.append(path)
    return paths


def main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="geneval-prompts")
    parser.add_argument("--num_train", type=int, default=5000)
    parser.add_argument("--num_test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    args = parser.parse_args(argv)
    from .command_line import exit_on_setup_error

    splits = exit_on_setup_error(lambda: generate(args.num_train, args.num_test, args.seed, args.tasks))
    for path in write(splits, args.output_dir):
        logger.info("Wrote %s", path)


if __name__ == "__main__":
    main()
