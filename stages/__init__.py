"""The pipeline's stages: data → teacher → student → report. Each stage is one package."""
