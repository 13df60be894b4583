"""Stable reason codes carried by decisions, audit events and errors.

Tests and log pipelines match on these strings; renaming one is a breaking
change.
"""

from __future__ import annotations

# Credential extraction.
MISSING_TOKEN = "missing_token"
MALFORMED_AUTHORIZATION = "malformed_authorization"
MULTIPLE_CREDENTIALS = "multiple_credentials"
TOKEN_TOO_LARGE = "token_too_large"
MALFORMED_PATH = "malformed_path"

# Compact serialisation and header.
MALFORMED_TOKEN = "malformed_token"
MALFORMED_HEADER = "malformed_header"
ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
ALGORITHM_KEY_MISMATCH = "algorithm_key_mismatch"
FORBIDDEN_HEADER = "forbidden_header"
UNSUPPORTED_CRITICAL_HEADER = "unsupported_critical_header"
UNKNOWN_KEY = "unknown_kid"
BAD_SIGNATURE = "bad_signature"
WRONG_TOKEN_TYPE = "wrong_token_type"

# Claims.
MALFORMED_CLAIMS = "malformed_claims"
CLAIM_MISSING = "claim_missing"
CLAIM_INVALID = "claim_invalid"
TOKEN_EXPIRED = "token_expired"
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
ISSUED_IN_FUTURE = "issued_in_future"
LIFETIME_EXCEEDED = "lifetime_exceeded"
WRONG_ISSUER = "wrong_issuer"
WRONG_AUDIENCE = "wrong_audience"
TOKEN_UNVERIFIABLE = "token_unverifiable"

# Routes.
PUBLIC_ROUTE = "public_route"
CORS_PREFLIGHT = "cors_preflight"
ROUTE_UNANNOTATED = "route_unannotated"
SCOPE_MISSING = "scope_missing"
ACR_TOO_LOW = "acr_too_low"
AUTHENTICATION_TOO_OLD = "authentication_too_old"
ALLOWED = "allowed"

# Session and shared state.
TOKEN_REVOKED = "token_revoked"
SESSION_REVOKED = "session_revoked"
SUBJECT_REVOKED = "subject_revoked"
SERVICE_REVOKED = "service_revoked"
TOKEN_REPLAYED = "token_replayed"

# Risk and step-up.
RISK_TOO_HIGH = "risk_too_high"
STEP_UP_REQUIRED = "step_up_required"
STEP_UP_INVALID = "step_up_invalid"
STEP_UP_SESSION_MISMATCH = "step_up_session_mismatch"
STEP_UP_DEVICE_MISMATCH = "step_up_device_mismatch"

# The step-up endpoint and TOTP.
STEP_UP_PAGE = "step_up_page"
STEP_UP_SUCCEEDED = "step_up_succeeded"
STEP_UP_MALFORMED = "step_up_malformed"
STEP_UP_CROSS_ORIGIN = "step_up_cross_origin"
BODY_TOO_LARGE = "body_too_large"
TOTP_INVALID = "totp_invalid"
TOTP_REPLAYED = "totp_replayed"
TOTP_LOCKED_OUT = "totp_locked_out"
TOTP_NOT_ENROLLED = "totp_not_enrolled"
TOTP_SECRET_UNREADABLE = "totp_secret_unreadable"

# Infrastructure.
KEY_SOURCE_UNAVAILABLE = "key_source_unavailable"
STORE_UNAVAILABLE = "store_unavailable"
AUDIT_UNAVAILABLE = "audit_unavailable"
DECISION_ERROR = "decision_error"
