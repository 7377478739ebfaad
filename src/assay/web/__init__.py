"""The web UI: server-rendered pages (Jinja2) over the REST API's own views, live over server-sent events.

:func:`web_routers` returns the HTML router (``/ui``) and the JSON twins of its pages (``/api/v2/ui``);
``assay.api.create_app`` mounts both, so ``assay serve`` serves the UI. No front-end build step: the only
script is ``static/assay.js``, shipped as package data.
"""

from assay.web._roles import ROLES, allowed, role_of
from assay.web._routes import web_routers

__all__ = ["ROLES", "allowed", "role_of", "web_routers"]
