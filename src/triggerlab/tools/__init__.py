"""Tools around the experiments: auditing a foreign model, explaining a model's attention, user
model modules and trigger previews."""
