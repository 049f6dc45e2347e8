"""Torch side: corpus, tokenizer, the network, the diffusion objective and training."""
