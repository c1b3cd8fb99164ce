#!/usr/bin/env python
"""Reward throughput (images/s) on this machine, through the real loading code of each reward.

Model rewards are built at their full published architecture from configs, with random weights, saved to a
temporary folder and loaded with `from_pretrained` (this machine cannot download the real weights; the
compute, and so the throughput, does not depend on the values). The model-free rewards and OCR run as shipped.

    python benchmarks/reward_throughput.py                       # every reward, 512 px images
    python benchmarks/reward_throughput.py --rewards ocr jpeg_compressibility --images 32
    python benchmarks/reward_throughput.py --serve clipscore    # reward servers: one or two, batching on or off

`--serve NAME` measures the reward servers instead (`diffusers-nft serve`, each its own process on this machine):
`--clients` training processes (threads here), each sending `--request_images` images a request, score
`--images` images through `RemoteReward`, against one server and a pool of two that share the same CPU cores
(threads split evenly), with the server's batching of concurrent requests on (`--max_batch`) and off (1).
"""

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from tiny_reward_models import transformers_to_open_clip  # noqa: E402

from diffusers_nft.rewards import WeightedRewards  # noqa: E402
from diffusers_nft.rewards.aesthetic import AestheticMLP  # noqa: E402

CLIP_L = dict(text=(768, 12, 12, 3072), vision=(1024, 24, 16, 4096), projection=768, act="quick_gelu")
CLIP_H = dict(text=(1024, 24, 16, 4096), vision=(1280, 32, 16, 5120), projection=1024, act="gelu")


def save_clip(folder, spec):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from diffusers_nft.demo.offline_text import train_clip_tokenizer

    os.makedirs(folder, exist_ok=True)
    tokenizer = train_clip_tokenizer(folder)
    (th, tl, ta, ti), (vh, vl, va, vi) = spec["text"], spec["vision"]
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=th, num_hidden_layers=tl, num_attention_heads=ta,
                         intermediate_size=ti, hidden_act=spec["act"], projection_dim=spec["projection"],
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=vh, num_hidden_layers=vl, num_attention_heads=va, intermediate_size=vi,
                           patch_size=14, image_size=224, hidden_act=spec["act"], projection_dim=spec["projection"]),
        projection_dim=spec["projection"],
    )
    model = CLIPModel(config)
    model.save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return model


def save_mask2former(folder):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor, SwinConfig

    backbone = SwinConfig(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    labels = {i: f"class{i}" for i in range(80)}
    labels[0] = "person"
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=80, id2label=labels,
                               label2id={v: k for k, v in labels.items()}, use_timm_backbone=False)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)


def build(name, tmp):
    """Reward spec and options for `name`, with full-size random models written under `tmp`."""
    clip_l = os.path.join(tmp, "clip-l")
    if name in ("clipscore", "aesthetic", "geneval") and not os.path.isdir(clip_l):
        save_clip(clip_l, CLIP_L)
    if name == "clipscore":
        return {"model_id": clip_l}
    if name == "aesthetic":
        weights = os.path.join(tmp, "aesthetic.pth")
        torch.save(AestheticMLP(768).state_dict(), weights)
        return {"clip_model_id": clip_l, "weights": weights}
    if name in ("pickscore", "hpsv2"):
        clip_h = os.path.join(tmp, "clip-h")
        if not os.path.isdir(clip_h):
            model = save_clip(clip_h, CLIP_H)
            torch.save({"state_dict": transformers_to_open_clip(model.state_dict())}, os.path.join(tmp, "hps.pt"))
        if name == "pickscore":
            return {"model_id": clip_h, "processor_id": clip_h}
        return {"checkpoint": os.path.join(tmp, "hps.pt"), "base_model_id": clip_h}
    if name == "geneval":
        detector = os.path.join(tmp, "m2f")
        save_mask2former(detector)
        return {"detector_id": detector, "clip_model_id": clip_l}
    return {}


def text_images(prompts, resolution):
    """White images with each prompt's quoted text written large, so OCR detects and reads something."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=resolution // 8)
    arrays = []
    for prompt in prompts:
        image = Image.new("RGB", (resolution, resolution), "white")
        ImageDraw.Draw(image).text((resolution // 10, resolution // 3), prompt.split('"')[1], fill="black", font=font)
        arrays.append(np.asarray(image))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def start_server(name, options, port, threads, max_batch, log_dir):
    """`diffusers-nft serve` in its own process with `threads` torch threads, its output in
    `log_dir/server_<port>.log`; returns the process once it answers."""
    import subprocess

    import httpx

    flags = ["--model_id", options["model_id"]] if "model_id" in options else []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = open(os.path.join(log_dir, f"server_{port}.log"), "w")
    process = subprocess.Popen([sys.executable, "-m", "diffusers_nft.rewards.serve", "--reward", name, "--port",
                                str(port), "--device", "cpu", "--batch_size", "32", "--max_batch", str(max_batch),
                                *flags], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the {name} server on port {port} did not start within 300 s")


def served_rate(urls, images, prompts, clients, request_images):
    """Images/s when `clients` threads send `request_images`-image requests of `images` through `RemoteReward`."""
    from concurrent.futures import ThreadPoolExecutor

    from diffusers_nft.rewards import RemoteReward

    for url in urls:  # warm-up: each server's model is loaded and has run once
        RemoteReward(url, timeout=600)(images[:1], prompts[:1])
    remote = RemoteReward(urls, timeout=600)
    starts = range(0, len(images), request_images)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: remote(images[i:i + request_images], prompts[i:i + request_images]), starts))
    return len(images) / (time.perf_counter() - start)


def serve_table(cli) -> None:
    """One server against a pool of two on the same cores, batching on and off."""
    import socket

    cores = len(os.sched_getaffinity(0))
    images = torch.rand(cli.images, 3, cli.resolution, cli.resolution, generator=torch.Generator().manual_seed(0))
    prompts = [f"a photo of {i} cats" for i in range(cli.images)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        options = build(cli.serve, tmp)
        for servers in (1, 2):
            for max_batch in (1, cli.max_batch):
                ports = []
                for _ in range(servers):
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", 0))
                        ports.append(s.getsockname()[1])
                threads = max(1, cores // servers)
                processes = [start_server(cli.serve, options, port, threads, max_batch, tmp) for port in ports]
                try:
                    urls = [f"http://127.0.0.1:{port}" for port in ports]
                    rate = served_rate(urls, images, prompts, cli.clients, cli.request_images)
                except Exception:
                    for port in ports:  # the servers' own errors, before their folder goes
                        with open(os.path.join(tmp, f"server_{port}.log")) as log:
                            print(f"--- server {port}:\n{log.read()[-3000:]}", file=sys.stderr)
                    raise
                finally:
                    for process in processes:
                        process.kill()
                rows.append((servers, threads, max_batch, rate))
                print(f"{servers} server(s) x {threads} thread(s), max_batch {max_batch}: {rate:.2f} images/s",
                      flush=True)
    print(f"\n{cli.serve} served on this machine's {cores} CPU cores: {cli.images} images of {cli.resolution} px, "
          f"{cli.clients} clients sending {cli.request_images} images a request.\n")
    print("| servers | torch threads each | max_batch | images/s |")
    print("| ---: | ---: | ---: | ---: |")
    for servers, threads, max_batch, rate in rows:
        print(f"| {servers} | {threads} | {max_batch}{' (off)' if max_batch == 1 else ''} | {rate:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rewards", nargs="+", default=[
        "jpeg_compressibility", "ocr", "clipscore", "aesthetic", "pickscore", "hpsv2", "geneval"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--serve", default=None, help="Measure this reward through servers instead (see above).")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--request_images", type=int, default=4)
    parser.add_argument("--max_batch", type=int, default=32)
    cli = parser.parse_args()
    if cli.serve:
        return serve_table(cli)
    images = torch.rand(cli.images, 3, cli.resolution, cli.resolution, generator=torch.Generator().manual_seed(0))
    prompts = [f'a sign that says "nft {i}"' for i in range(cli.images)]
    metadata = [{"tag": "two_object", "include": [{"class": "person", "count": 1}, {"class": "class1", "count": 1}]}
                for _ in prompts]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in cli.rewards:
            options = build(name, tmp)
            from diffusers_nft.rewards.registry import _REGISTRY

            reward = _REGISTRY[name](device="cpu", batch_size=8, **options)
            scorer = WeightedRewards(reward)
            batch = text_images(prompts, cli.resolution) if name == "ocr" else images
            scorer(batch[:1], prompts[:1], metadata[:1])  # warm-up
            start = time.perf_counter()
            scorer(batch, prompts, metadata)
            seconds = time.perf_counter() - start
            rows.append((name, cli.images / seconds))
            print(f"{name}: {cli.images / seconds:.2f} images/s", flush=True)
    print(f"\nCPU, {torch.get_num_threads()} threads, {cli.resolution} px images, {cli.images} images per reward, fp32.\n")
    print("| reward | images/s |")
    print("| --- | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} |")


if __name__ == "__main__":
    main()
