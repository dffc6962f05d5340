"""Training: objectives (ranking + self-distillation), ranking losses, the trainer, checkpoints, run
directories, data parallelism."""
