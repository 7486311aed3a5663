"""`mreg ui`: a read-only browser over the registry API, served (`app`) or exported as static files (`export`).

Pages are built by `pages` (registry reads only) and rendered by one autoescaping Jinja environment; nothing
here writes to the registry.
"""

from __future__ import annotations
