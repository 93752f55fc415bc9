"""The local nutshell mint the demo and tests run, and the nutshell-made ecash."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.ecash import EcashFactory

from routstr_node.demo.mint import LocalMint, MintStartError, run_local_mint


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_mint_answers_info_and_keysets(mint: LocalMint) -> None:
    info = await _get(f"{mint.url}/v1/info")
    assert info["version"] == "Nutshell/0.20.0"
    assert info["nuts"]["7"]["supported"] is True

    keysets = (await _get(f"{mint.url}/v1/keysets"))["keysets"]
    active = [k for k in keysets if k["active"] and k["unit"] == "sat"]
    assert len(active) == 1
    assert active[0]["input_fee_ppk"] == 0
    assert active[0]["id"].startswith("01") and len(active[0]["id"]) == 66
    assert mint.url == f"http://127.0.0.1:{mint.port}"


async def test_fee_mint_keyset_charges_100_ppk(mint: LocalMint, fee_mint: LocalMint) -> None:
    keysets = (await _get(f"{fee_mint.url}/v1/keysets"))["keysets"]
    assert [k["input_fee_ppk"] for k in keysets if k["active"]] == [100]

    plain = (await _get(f"{mint.url}/v1/keysets"))["keysets"]
    assert {k["id"] for k in keysets}.isdisjoint(k["id"] for k in plain)


@pytest.mark.parametrize(("legacy", "prefix"), [(False, "cashuB"), (True, "cashuA")])
async def test_ecash_factory_makes_tokens_of_the_exact_amount(
    ecash: EcashFactory, mint: LocalMint, legacy: bool, prefix: str
) -> None:
    token = await ecash.token(1000, mint_url=mint.url, legacy=legacy)

    assert token.startswith(prefix)
    assert ecash.amount(token) == 1000
    assert len(token) < 2000, "split=amount_split keeps tokens small"


async def test_redeem_returns_the_value_and_spends_the_token(
    ecash: EcashFactory, mint: LocalMint
) -> None:
    token = await ecash.token(21, mint_url=mint.url)
    assert await ecash.is_spent(token) is False
    assert await ecash.proof_states(token) == ["UNSPENT"] * 3  # 16 + 4 + 1

    assert await ecash.redeem(token) == 21

    assert await ecash.is_spent(token) is True
    with pytest.raises(Exception, match="already spent"):
        await ecash.redeem(token)


async def test_redeem_on_the_fee_mint_pays_the_input_fee(
    ecash: EcashFactory, fee_mint: LocalMint
) -> None:
    token = await ecash.token(1000, mint_url=fee_mint.url, legacy=True)
    proofs = 6  # 1000 = 512 + 256 + 128 + 64 + 32 + 8

    received = await ecash.redeem(token)

    assert received == 1000 - math.ceil(proofs * 100 / 1000)
    assert await ecash.is_spent(token)


async def test_restart_keeps_keys_and_ignores_stray_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINT_INPUT_FEE_PPK", "777")
    monkeypatch.setenv("mint_backend_bolt11_sat", "LNbitsWallet")
    monkeypatch.setenv("CASHU_DIR", str(tmp_path / "elsewhere"))

    async with run_local_mint(tmp_path / "m") as first:
        before = (await _get(f"{first.url}/v1/keysets"))["keysets"]
    assert first.process.returncode is not None

    async with run_local_mint(tmp_path / "m") as second:
        after = (await _get(f"{second.url}/v1/keysets"))["keysets"]

    assert [k["input_fee_ppk"] for k in before] == [0]
    assert [k["id"] for k in after] == [k["id"] for k in before]
    assert not (tmp_path / "elsewhere").exists()


async def test_a_mint_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(MintStartError, match="exited with code") as failure:
            async with run_local_mint(tmp_path / "m", port=port):
                pytest.fail("the mint should not have started")

    assert str(tmp_path / "m" / "mint.log") in str(failure.value)
    assert "address already in use" in (tmp_path / "m" / "mint.log").read_text()
