"""URLs of the registry project."""

from django.urls import include, path

urlpatterns = [
    path("", include("integrations.registry_django.users.urls")),
]
