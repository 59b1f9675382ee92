"""Clickstream data layer: analytics exports in, one canonical session table and page catalog out.

Loaders (``ga360``, ``ga4``, ``csv``, ``msnbc``) return raw page views
(:class:`clickstream.schema.LoadResult`); :mod:`clickstream.pages` normalises and groups pages;
:mod:`clickstream.catalog` builds the page catalog and transition tables; :mod:`clickstream.splits`
assigns temporal splits; :mod:`clickstream.prepare` runs it all and writes the outputs.
"""

from clickstream.errors import ClickstreamError
from clickstream.schema import ENTRY, EXIT, OTHER_GROUP, LoadResult

__all__ = ["ENTRY", "EXIT", "OTHER_GROUP", "ClickstreamError", "LoadResult"]
