"""The contract's error envelope, and the one mapping from typed failures to it."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from mints import errors as mint_errors
from routstr_node import media
from routstr_node.routing import errors as routing_errors
from wallet import errors as wallet_errors


class ApiError(Exception):
    """An error answer: status, type, code and a message people can act on."""

    def __init__(
        self,
        status: int,
        type_: str,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.body()).encode(),
            content_type="application/json",
            headers=self.headers,
        )


def invalid_request(code: str, message: str, *, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request_error", code, message, param=param)


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, "not_found_error", code, message)


def unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, "authentication_error", code, message)


def from_domain(exc: Exception) -> ApiError | None:
    """The contract's answer for a mint, wallet or routing failure (None: not one of ours)."""
    match exc:
        case routing_errors.ModelUnavailable():
            return not_found("model_not_available", exc.message)
        case routing_errors.InvalidProvider():
            return invalid_request("invalid_provider", exc.message, param=exc.param)
        case routing_errors.NoProviderAvailable():
            return not_found("no_provider_available", exc.message)
        case routing_errors.WrongCategory():
            return invalid_request("model_wrong_category", exc.message, param="model")
        case media.UnsupportedSize():
            return invalid_request("unsupported_size", exc.message, param="size")
        case mint_errors.TokenInvalid():
            return invalid_request("cashu_token_invalid", exc.message)
        case mint_errors.UnitUnsupported():
            return invalid_request("cashu_unit_unsupported", exc.message)
        case mint_errors.MintUntrusted():
            return invalid_request("cashu_mint_untrusted", exc.message)
        case mint_errors.AmountTooSmall():
            return ApiError(402, "insufficient_quota", "payment_required", exc.message)
        case mint_errors.ProofsSpent() | wallet_errors.TokenAlreadyRedeemed():
            return invalid_request("cashu_token_spent", "this token has already been spent")
        case mint_errors.ProofsPending() | wallet_errors.TokenBeingRedeemed():
            return ApiError(
                409,
                "invalid_request_error",
                "cashu_token_pending",
                "this token is being redeemed by another request",
            )
        case mint_errors.MintUnreachable() | mint_errors.MintRateLimited():
            return ApiError(503, "api_error", "cashu_mint_unreachable", exc.message)
        case mint_errors.KeysetInactive():
            # the mint's fault, not the token's: nothing was spent, the same call can work later
            return ApiError(
                503,
                "api_error",
                "cashu_mint_unreachable",
                "the mint would not sign with the keyset it names as active; nothing was"
                f" spent, try again later ({exc.detail})",
            )
        case mint_errors.MintRefused():
            return invalid_request(
                "cashu_token_invalid", f"the mint refused the token: {exc.detail}"
            )
        case wallet_errors.StoreUnavailable():
            return ApiError(
                503,
                "api_error",
                "database_unavailable",
                "the node's database cannot be reached now; nothing was charged, try again shortly",
            )
        case wallet_errors.PayoutKeyReused():
            return invalid_request("idempotency_key_reused", exc.message)
        case wallet_errors.InsufficientEarnings():
            return invalid_request("insufficient_earnings", exc.message, param="amount")
        case wallet_errors.InvoiceAmountMismatch():
            return invalid_request("invoice_amount_mismatch", exc.message, param="invoice")
        case wallet_errors.InvoiceRejected():
            return invalid_request("invalid_invoice", exc.message, param="invoice")
        case wallet_errors.PaymentFailed():
            return ApiError(502, "upstream_error", "payment_failed", exc.message)
        case wallet_errors.PayoutPending():
            return ApiError(409, "invalid_request_error", "operation_pending", exc.message)
        case wallet_errors.InsufficientBalance():
            return ApiError(402, "insufficient_quota", "insufficient_balance", exc.message)
        case wallet_errors.PaymentInFlight():
            return ApiError(409, "invalid_request_error", "cashu_token_pending", exc.message)
        case wallet_errors.AccountNotFound():
            return unauthorized("invalid_api_key", "the account behind this key no longer exists")
        case wallet_errors.InvalidAmount():
            return invalid_request("invalid_amount", exc.message, param="amount")
        case wallet_errors.OperationInFlight():
            return ApiError(
                409,
                "invalid_request_error",
                "operation_pending",
                "the mint has not settled this operation yet; it will be finished automatically",
            )
        case mint_errors.ProtocolError() | wallet_errors.InsufficientCustody():
            return ApiError(502, "upstream_error", "cashu_mint_error", exc.message)
    return None


# -- an upstream's failure, as the client sees it ------------------------------------------


def upstream_timeout(provider: str) -> ApiError:
    return ApiError(
        504,
        "upstream_error",
        "upstream_timeout",
        f"the upstream '{provider}' did not answer in time",
    )


def upstream_failed(provider: str, why: str) -> ApiError:
    return ApiError(
        502, "upstream_error", "upstream_error", f"the upstream '{provider}' failed: {why}"
    )


_CLIENT_ERRORS = {
    400: (400, "invalid_request_error"),
    404: (404, "not_found_error"),
    409: (409, "invalid_request_error"),
    413: (413, "invalid_request_error"),
    422: (400, "invalid_request_error"),
}


def upstream_status_error(
    provider: str, status: int, raw: bytes, retry_after: str | None = None
) -> ApiError:
    """Client errors the upstream found are the client's to see; the rest is a 502.

    An upstream's 429 keeps its ``Retry-After`` (in seconds) when it gave one.
    """
    message = ""
    upstream_code = None
    param = None
    try:
        err = json.loads(raw).get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            upstream_code = err.get("code")
            param = err.get("param") if isinstance(err.get("param"), str) else None
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError, RecursionError):
        pass
    if status in _CLIENT_ERRORS:
        # in the contract's own pairs of status and type (it has no 422: that is a 400)
        answered, type_ = _CLIENT_ERRORS[status]
        return ApiError(
            answered,
            type_,
            str(upstream_code or "upstream_rejected"),
            message or f"the upstream rejected the request ({status})",
            param=param,
        )
    if status == 429:
        return ApiError(
            429,
            "rate_limit_error",
            "rate_limited",
            message or "the upstream is rate limiting",
            headers={"Retry-After": retry_after if retry_after and retry_after.isdigit() else "1"},
        )
    return ApiError(
        502,
        "upstream_error",
        "upstream_error",
        f"the upstream '{provider}' answered {status}" + (f": {message}" if message else ""),
    )
