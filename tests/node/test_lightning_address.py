"""Where a Lightning address is asked for an invoice (LUD-16), and what is never asked."""

from __future__ import annotations

import pytest

from routstr_node.lightning_address import LightningAddressError, lnurlp_url


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("operator@wallet.example", "https://wallet.example/.well-known/lnurlp/operator"),
        ("Op.Name+x@Sub.Wallet.Example", "https://sub.wallet.example/.well-known/lnurlp/Op.Name+x"),
        ("https://pay.example/lnurlp/op", "https://pay.example/lnurlp/op"),
        ("http://127.0.0.1:8080/lnurlp/op", "http://127.0.0.1:8080/lnurlp/op"),
        ("http://localhost/lnurlp/op", "http://localhost/lnurlp/op"),
    ],
)
def test_an_address_names_its_lnurlp_url(address: str, url: str) -> None:
    assert lnurlp_url(address) == url


@pytest.mark.parametrize(
    "address",
    [
        "http://wallet.example/lnurlp/op",  # plain http off this machine
        "ftp://wallet.example/op",
        "operator@",
        "not an address",
        "https://",
    ],
)
def test_anything_else_is_refused(address: str) -> None:
    with pytest.raises(LightningAddressError):
        lnurlp_url(address)
