"""`cnnkit serve`: any cnnkit weights or deployed file behind an HTTP API with dynamic batching, Prometheus metrics
and a web page (app.py: the routes; batching.py: the queues; models.py: loading and the task calls; page.html)."""
