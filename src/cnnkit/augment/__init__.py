"""Augmentation presets built on torchvision.transforms.v2."""
