"""Training: the loop (trainer), what a step's loss is made of (objective, losses), the teacher
targets students read, input statistics, distributed set-up and TensorBoard logs."""
