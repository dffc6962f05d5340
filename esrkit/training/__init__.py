"""Training: batches built on the device, objectives (ranking + self-distillation), the trainer, run
directories."""
