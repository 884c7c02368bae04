"""Model stage: pretrained backbone features per batch, and the three model families."""
