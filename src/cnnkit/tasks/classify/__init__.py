"""Image classification: api.py (Classifier, the CLASSIFY recipe), task.py (loss, eval step, metrics,
drawing), features.py (pooled features, layer maps), explain.py (Grad-CAM), cli.py (`cnnkit classify …`)."""
