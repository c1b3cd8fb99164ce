import pytest
import torch

from diffusers_nft.rewards.aesthetic import Aesthetic, AestheticMLP
from diffusers_nft.rewards.clip import ClipScore, HPSv2, PickScore, clip_similarity, open_clip_to_transformers
from diffusers_nft.rewards.registry import load_reward

from tiny_reward_models import random_images, save_tiny_clip, transformers_to_open_clip

PROMPTS = ["a red cat", "a blue dog", "a green tree", "a yellow house", "a photo of the sea"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_tiny_clip(str(tmp_path_factory.mktemp("clip")), seed=0)


def test_clip_similarity_hand_computed():
    image = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    text = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    # cos = (12 + 12) / 25 = 0.96 and 0
    torch.testing.assert_close(clip_similarity(image, text), torch.tensor([0.96, 0.0]))
    torch.testing.assert_close(clip_similarity(image, text, scale=100 / 26), torch.tensor([0.96 * 100 / 26, 0.0]))


def _reference_cosine(model, processor, images, prompts):
    from diffusers_nft.visualize import to_pil

    inputs = processor(text=prompts, images=to_pil(images), padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.vision_model(pixel_values=inputs["pixel_values"]).pooler_output
        img = model.visual_projection(img)
        txt = model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).pooler_output
        txt = model.text_projection(txt)
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    return (img * txt).sum(-1)


def test_clipscore_and_pickscore_scales(clip_dir):
    from transformers import CLIPModel, CLIPProcessor

    images = random_images(5)
    model, processor = CLIPModel.from_pretrained(clip_dir), CLIPProcessor.from_pretrained(clip_dir)
    cosine = _reference_cosine(model, processor, images, PROMPTS)
    clipscore = ClipScore(clip_dir, device="cpu")(images, PROMPTS, [{}] * 5)
    torch.testing.assert_close(torch.tensor(clipscore), cosine, atol=1e-5, rtol=1e-5)
    pickscore = PickScore(clip_dir, clip_dir, device="cpu")(images, PROMPTS, [{}] * 5)
    expected = model.logit_scale.exp().item() * cosine / 26
    torch.testing.assert_close(torch.tensor(pickscore), expected, atol=1e-5, rtol=1e-5)


def test_batching_matches_one_by_one(clip_dir):
    images = random_images(5, seed=1)
    batched = ClipScore(clip_dir, device="cpu", batch_size=4)(images, PROMPTS, [{}] * 5)
    single = ClipScore(clip_dir, device="cpu", batch_size=1)
    one_by_one = [single(images[i : i + 1], PROMPTS[i : i + 1], [{}])[0] for i in range(5)]
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(one_by_one), atol=1e-5, rtol=1e-5)


def test_dtype_handling(clip_dir):
    reward = ClipScore(clip_dir, device="cpu", dtype="bf16")
    assert reward.model.dtype == torch.bfloat16
    scores = reward(random_images(2), PROMPTS[:2], [{}, {}])
    reference = ClipScore(clip_dir, device="cpu")(random_images(2), PROMPTS[:2], [{}, {}])
    assert all(isinstance(s, float) for s in scores)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(reference), atol=0.05, rtol=0.1)


def test_hpsv2_loads_an_open_clip_checkpoint(tmp_path):
    from transformers import CLIPModel

    base = save_tiny_clip(str(tmp_path / "base"), seed=1, hidden_act="gelu")  # the architecture, other weights
    tuned = save_tiny_clip(str(tmp_path / "tuned"), seed=2, hidden_act="gelu")
    tuned_state = CLIPModel.from_pretrained(tuned).state_dict()
    checkpoint = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": transformers_to_open_clip(tuned_state)}, checkpoint)
    converted = open_clip_to_transformers(torch.load(checkpoint)["state_dict"])
    assert converted.keys() == {k for k in tuned_state if "position_ids" not in k}
    images = random_images(3, seed=3)
    hps = HPSv2(checkpoint=str(checkpoint), base_model_id=base, device="cpu")(images, PROMPTS[:3], [{}] * 3)
    tuned_scores = ClipScore(tuned, device="cpu")(images, PROMPTS[:3], [{}] * 3)
    base_scores = ClipScore(base, device="cpu")(images, PROMPTS[:3], [{}] * 3)
    torch.testing.assert_close(torch.tensor(hps), torch.tensor(tuned_scores), atol=1e-5, rtol=1e-5)
    assert max(abs(a - b) for a, b in zip(hps, base_scores)) > 1e-3


def test_aesthetic_mlp_on_normalised_embeddings(clip_dir, tmp_path):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from diffusers_nft.visualize import to_pil

    torch.manual_seed(0)
    mlp = AestheticMLP(16)
    weights = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(mlp.state_dict(), weights)
    images = random_images(4, seed=4)
    scores = Aesthetic(clip_dir, weights=str(weights), device="cpu")(images, PROMPTS[:4], [{}] * 4)
    vision = CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
    pixels = CLIPImageProcessor.from_pretrained(clip_dir)(images=to_pil(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds = vision(pixel_values=pixels).image_embeds
        expected = mlp.eval()(embeds / embeds.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(torch.tensor(scores), expected, atol=1e-5, rtol=1e-5)
    assert list(mlp.state_dict()) == [f"layers.{i}.{k}" for i in (0, 2, 4, 6, 7) for k in ("weight", "bias")]


def test_registry_loads_model_rewards_once(clip_dir):
    first = load_reward("clipscore", model_id=clip_dir, device="cpu")
    assert load_reward("clipscore", model_id=clip_dir, device="cpu") is first
    assert load_reward("clipscore", model_id=clip_dir, device="cpu", batch_size=2) is not first
