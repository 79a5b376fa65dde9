"""GroupViT as a Hugging Face Transformers model integration."""
