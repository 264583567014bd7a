"""LoRA fine-tuning, datasets and evaluation gates. Arrive with the training issue."""
