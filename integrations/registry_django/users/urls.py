from django.urls import path

from . import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("api/users", views.AccountCollection.as_view(), name="account-list"),
    path(
        "api/users/<str:username>",
        views.AccountDetail.as_view(),
        name="account-detail",
    ),
    path("admin/", views.admin, name="admin"),
    path("api/internal/purge", views.purge, name="purge"),
]
