"""Image embeddings and visual search: api.py (Embedder, EMBED_RECIPE, the index verbs), task.py (metric-learning
losses, retrieval validation), cli.py (`cnnkit embed …`)."""
