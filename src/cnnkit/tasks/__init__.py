"""One module of plain functions per task: model, loss, metrics, drawing. The engine does the rest."""
