"""Flask web app and JSON API over trained artefacts."""
