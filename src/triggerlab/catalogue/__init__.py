"""Torch-free declarations: what each metric, trigger, defence, dataset and model is called,
its parameters and its description. Validating a config and listing a catalogue read only
this layer."""
