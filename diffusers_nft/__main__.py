"""`python -m diffusers_nft <command>` (and `accelerate launch -m diffusers_nft train ...`): the `diffusers-nft` command."""

from .cli import main

main()
