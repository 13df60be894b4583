"""ASGI entry point for the registry project.

Serve it with e.g. ``uvicorn integrations.registry_django.asgi:application``.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrations.registry_django.settings")

application = get_asgi_application()
