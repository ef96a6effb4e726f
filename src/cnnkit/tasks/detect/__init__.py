"""Object detection: api.py (Detector, the DETECT recipe), task.py (datasets, mosaic, losses through
torchvision's interface, COCO metrics, drawing), cli.py (`cnnkit detect …`)."""
