"""Train: sd-scripts configs, the estimate, the trainer and base model, the training run and headshots."""
