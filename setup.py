from setuptools import find_packages, setup

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
    packages=find_packages(include=["diffusers_nft", "diffusers_nft.*"]),
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.35",
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
    ],
    extras_require={
        "test": ["pytest>=7", "sentencepiece>=0.2", "tokenizers>=0.19", "Jinja2>=3.0"],
        "dev": ["pytest>=7", "sentencepiece>=0.2", "tokenizers>=0.19", "Jinja2>=3.0", "ruff>=0.5"],
        "wandb": ["wandb"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "License :: OSI Approved :: Apache Software License",
    ],
)
