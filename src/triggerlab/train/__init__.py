"""The training loop and what it stands on: checkpoints, augmentation on the device, devices
and precision."""
