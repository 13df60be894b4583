"""Account registry: a Django project guarded by the Django middleware."""
