"""Views of the registry; each declares what it needs, the middleware checks it.

The API takes bearer tokens, not cookies, so there is no CSRF token to check
on its unsafe methods.
"""

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from zt_middleware import public, requires

from .models import Account


def json_object(request: HttpRequest) -> dict[str, Any] | None:
    try:
        body = json.loads(request.body)
    except ValueError:
        return None

    return body if isinstance(body, dict) else None


@public
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@method_decorator(csrf_exempt, name="dispatch")
class AccountCollection(View):
    """One URL, two requirements: each handler carries its own."""

    @requires("registry:read")
    def get(self, request: HttpRequest) -> JsonResponse:
        accounts = [account.as_dict() for account in Account.objects.all()]

        return JsonResponse({"users": accounts, "seen_by": request.principal.subject})

    @requires("registry:write")
    def post(self, request: HttpRequest) -> JsonResponse:
        body = json_object(request)
        if body is None:
            return JsonResponse({"error": "invalid_json"}, status=400)

        username, email = body.get("username"), body.get("email")
        if not isinstance(username, str) or not isinstance(email, str):
            return JsonResponse({"error": "username_and_email_required"}, status=400)

        account = Account(username=username, email=email)
        try:
            account.full_clean(validate_unique=False)
        except ValidationError as exc:
            return JsonResponse(
                {"error": "invalid_account", "fields": exc.message_dict}, status=400
            )

        # The unique constraint settles a race between two creators.
        try:
            account.save()
        except IntegrityError:
            return JsonResponse({"error": "username_taken"}, status=409)

        return JsonResponse(
            {"user": account.as_dict(), "created_by": request.principal.subject},
            status=201,
        )


@requires("registry:read")
class AccountDetail(View):
    def get(self, request: HttpRequest, username: str) -> JsonResponse:
        account = Account.objects.filter(username=username).first()
        if account is None:
            return JsonResponse({"error": "not_found"}, status=404)

        return JsonResponse(
            {"user": account.as_dict(), "seen_by": request.principal.subject}
        )


@requires("registry:admin")
@require_GET
def admin(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "service": "registry",
            "accounts": Account.objects.count(),
            "seen_by": request.principal.subject,
        }
    )


# Deliberately unannotated: default deny refuses it to every caller, whatever
# scopes the token carries.
@require_GET
def purge(request: HttpRequest) -> JsonResponse:
    deleted, _ = Account.objects.all().delete()

    return JsonResponse({"purged": deleted})
