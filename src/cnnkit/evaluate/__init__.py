"""Evaluation outputs: training curves, confusion matrices, PR curves, image grids, HTML reports."""
