"""Semantic segmentation: api.py (Segmenter, the SEGMENT recipe), task.py (datasets, losses, whole-image and
sliding-window inference, metrics, overlays), cli.py (`cnnkit segment …`, Mask R-CNN's included)."""
