"""Fine-tuning for the brains: data from the tool registry, LoRA training, evaluation.

Importing the package imports nothing heavy; see finetune/README.md.
"""
