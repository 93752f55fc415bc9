"""Which contract error a mint's refusal becomes: the token's fault, or the mint's."""

from __future__ import annotations

import pytest

from mints.errors import KeysetInactive, MintRefused, ProofsSpent
from routstr_node.errors import from_domain


@pytest.mark.parametrize(
    ("refusal", "status", "code"),
    [
        # the mint will not sign with the keyset it lists: the token is fine, try later
        (
            KeysetInactive("refused", code=12002, detail="Keyset is inactive"),
            503,
            "cashu_mint_unreachable",
        ),
        (ProofsSpent("Token already spent."), 400, "cashu_token_spent"),
        (
            MintRefused("refused", code=11000, detail="no outputs provided."),
            400,
            "cashu_token_invalid",
        ),
    ],
)
def test_a_refusal_is_blamed_on_what_caused_it(
    refusal: MintRefused, status: int, code: str
) -> None:
    error = from_domain(refusal)
    assert error is not None
    assert (error.status, error.code) == (status, code)
