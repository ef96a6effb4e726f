"""Knowledge distillation: api.py (distill(), classification's and segmentation's distillation runs), task.py
(DistillTask: a frozen teacher around the student's own task; hints). Commands: `cnnkit distill`, `cnnkit segment distill`."""
