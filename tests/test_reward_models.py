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


def _open_clip_state(width=32, layers=2, vocab=99, context=77, patch=4, image=16, embed=16):
    """A state dict with open_clip's own key names and shapes (open_clip.model.CLIP: TextTransformer and
    VisionTransformer of `transformer.resblocks`), written out here independently of our converter. Every tensor
    holds distinct values, so that any mix-up of names, halves or transposes shows."""
    shapes = {"logit_scale": (), "positional_embedding": (context, width), "token_embedding.weight": (vocab, width),
              "ln_final.weight": (width,), "ln_final.bias": (width,), "text_projection": (width, embed),
              "visual.class_embedding": (width,), "visual.positional_embedding": ((image // patch) ** 2 + 1, width),
              "visual.proj": (width, embed), "visual.conv1.weight": (width, 3, patch, patch),
              "visual.ln_pre.weight": (width,), "visual.ln_pre.bias": (width,),
              "visual.ln_post.weight": (width,), "visual.ln_post.bias": (width,)}
    block = {"ln_1.weight": (width,), "ln_1.bias": (width,), "attn.in_proj_weight": (3 * width, width),
             "attn.in_proj_bias": (3 * width,), "attn.out_proj.weight": (width, width), "attn.out_proj.bias": (width,),
             "ln_2.weight": (width,), "ln_2.bias": (width,), "mlp.c_fc.weight": (4 * width, width),
             "mlp.c_fc.bias": (4 * width,), "mlp.c_proj.weight": (width, 4 * width), "mlp.c_proj.bias": (width,)}
    for tower in ("transformer.resblocks", "visual.transformer.resblocks"):
        for i in range(layers):
            shapes.update({f"{tower}.{i}.{name}": shape for name, shape in block.items()})
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def test_open_clip_conversion_against_open_clips_own_key_names():
    from transformers import CLIPConfig, CLIPModel

    state = _open_clip_state()
    converted = open_clip_to_transformers(state)
    config = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu"),
        vision_config=dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=16, patch_size=4, hidden_act="gelu"),
        projection_dim=16,
    )
    model = CLIPModel(config)
    expected = {k: v.shape for k, v in model.state_dict().items() if "position_ids" not in k}
    assert {k: v.shape for k, v in converted.items()} == expected  # every tensor, and the right shape
    model.load_state_dict(converted, strict=False)
    # the fused qkv is split in q, k, v order; the projections are transposed (open_clip multiplies x @ proj)
    layer = "text_model.encoder.layers.1.self_attn"
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(converted[f"{layer}.{name}.weight"], state["transformer.resblocks.1.attn.in_proj_weight"][32 * i : 32 * (i + 1)])
        assert torch.equal(converted[f"{layer}.{name}.bias"], state["transformer.resblocks.1.attn.in_proj_bias"][32 * i : 32 * (i + 1)])
    x = torch.randn(2, 32)
    torch.testing.assert_close(model.text_projection(x), x @ state["text_projection"])
    torch.testing.assert_close(model.visual_projection(x), x @ state["visual.proj"])
    vision = "vision_model.encoder.layers.0"
    assert torch.equal(converted[f"{vision}.mlp.fc1.weight"], state["visual.transformer.resblocks.0.mlp.c_fc.weight"])
    assert torch.equal(converted[f"{vision}.layer_norm2.bias"], state["visual.transformer.resblocks.0.ln_2.bias"])
    assert torch.equal(converted["vision_model.pre_layrnorm.weight"], state["visual.ln_pre.weight"])
    assert torch.equal(converted["vision_model.embeddings.class_embedding"], state["visual.class_embedding"])
    # checkpoints saved from DataParallel carry a module. prefix
    prefixed = open_clip_to_transformers({f"module.{k}": v for k, v in state.items()})
    assert prefixed.keys() == converted.keys()
