from setuptools import find_packages, setup

OCR = ["rapidocr_onnxruntime>=1.3", "rapidfuzz>=3.0"]
SERVE = ["fastapi>=0.100", "uvicorn>=0.23"]
DEMO = ["scikit-learn>=1.0"]  # the digits of the demo world ship inside scikit-learn
DEEPSPEED = ["deepspeed>=0.16"]
DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"]
# ftfy: WanImageToVideoPipeline cleans its prompts with it
TEST = ["pytest>=7", "sentencepiece>=0.2", "tokenizers>=0.19", "Jinja2>=3.0", "ftfy>=6"] + DEMO + DEEPSPEED + DOCS

with open("README.md", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="diffusers-nft",
    version="0.1.0",
    description="DiffusionNFT: online reinforcement learning on the forward process for flow-matching diffusers pipelines",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["diffusers_nft", "diffusers_nft.*"]) + ["diffusers_nft.model_cards"],
    package_dir={"diffusers_nft.model_cards": "model_cards"},
    package_data={"diffusers_nft.model_cards": ["*.md"], "diffusers_nft.demo": ["weights/*.safetensors", "weights/ensemble/*.safetensors", "weights/pipeline/*.json", "weights/pipeline/*/*",
                                           "weights/edit_pipeline/*.json", "weights/edit_pipeline/*/*"]},
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.42",
        "transformers>=4.51",
        "accelerate>=1.0",
        "peft>=0.15",
        "datasets>=3.0",
        "safetensors>=0.4",
        "huggingface_hub>=0.30",
        "numpy",
        "pillow",
        "tqdm",
        "matplotlib>=3.7",
        "tensorboard>=2.14",
        "httpx>=0.24",
        "pyyaml>=5.4",
    ],
    extras_require={
        "ocr": OCR,
        "serve": SERVE,
        "rewards": OCR + SERVE,
        "demo": DEMO,
        "deepspeed": DEEPSPEED,
        "docs": DOCS,
        "test": TEST + OCR + SERVE,
        "dev": TEST + OCR + SERVE + ["ruff>=0.5"],
        "wandb": ["wandb"],
    },
    entry_points={
        "console_scripts": ["diffusers-nft=diffusers_nft.cli:main", "diffusers-nft-evaluate=diffusers_nft.evaluate:main"],
        # modules that register rewards when imported (diffusers_nft.rewards.registry.PLUGIN_GROUP)
        "diffusers_nft.plugins": ["demo = diffusers_nft.demo"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "License :: OSI Approved :: Apache Software License",
    ],
)
