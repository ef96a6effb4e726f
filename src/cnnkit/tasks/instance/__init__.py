"""Instance segmentation (Mask R-CNN): api.py (InstanceSegmenter, the INSTANCE recipe), task.py (datasets,
unpasted masks in evaluation, COCO mask metrics). Its commands are `cnnkit segment …` (tasks/segment/cli.py)."""
