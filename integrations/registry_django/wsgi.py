"""WSGI entry point for the registry project.

Serve it with e.g.
``waitress-serve integrations.registry_django.wsgi:application``.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrations.registry_django.settings")

application = get_wsgi_application()
