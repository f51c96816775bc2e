"""Command-line applications that chain data preparation and bundle runs (``python -m mednet.app.X``)."""
