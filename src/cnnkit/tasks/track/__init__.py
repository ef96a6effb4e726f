"""Multi-object tracking by detection: api.py (Tracker: track, val), task.py (crops, MOT rows, drawing, plots),
cli.py (`cnnkit track …`). The trackers themselves live in cnnkit/track/."""
