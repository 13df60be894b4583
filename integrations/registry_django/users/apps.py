from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "integrations.registry_django.users"
    label = "users"
    verbose_name = "Users"
