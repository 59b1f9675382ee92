"""Flask web app and JSON API over a pipeline run's trained artefacts.

``create_app(run_dirs)`` builds the app (:mod:`webapp.app`); ``python scripts/serve.py
run_dir=<dir>`` serves it with waitress. Pages: ``/`` (the page-group network and each policy's
recommendations) and ``/impact`` (policies against organic); the API is in :mod:`webapp.api`.
"""

from webapp.app import create_app

__all__ = ["create_app"]
