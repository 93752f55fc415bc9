"""A real user's wallet: nutshell's ``cashu`` console script, run as a user runs it.

The node's tokens must work in wallets it has never seen, and tokens those wallets make
must work at the node; the CLI is such a wallet (its own database, its own HTTP client).
Each call costs about 1.3 s (Python start-up), so tests use it sparingly.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from routstr_node.demo.mint import child_environment

TIMEOUT_S = 60.0
_TOKEN = re.compile(r"cashu[AB][A-Za-z0-9_\-+/=]+")
_QUOTE = re.compile(r"--id\s+(\S+)")
_BALANCE = re.compile(r"Balance:\s+(\d+)\s+sat")


class CashuCliError(RuntimeError):
    pass


class CashuCli:
    """One CLI wallet on one mint, in a directory of its own."""

    def __init__(self, mint_url: str, directory: Path) -> None:
        self.mint_url = mint_url
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        # nutshell reads ./.env (else ~/.cashu/.env) over the environment: keep both out
        (directory / ".env").write_text("# empty on purpose: see tests/support/cashu_cli.py\n")

    def _environment(self) -> dict[str, str]:
        return child_environment(
            {"MINT_URL": self.mint_url, "CASHU_DIR": str(self.directory), "TOR": "FALSE"}
        )

    async def run(self, *args: str) -> str:
        """Run ``cashu --yes <args>``; its output (stdout and stderr) or an error."""
        executable = Path(sys.executable).parent / "cashu"
        process = await asyncio.create_subprocess_exec(
            str(executable),
            "--yes",
            *args,
            cwd=self.directory,
            env=self._environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            raw, _ = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise CashuCliError(f"cashu {args[0]} did not finish in {TIMEOUT_S:.0f} s") from None
        output = raw.decode(errors="replace")
        if process.returncode != 0:
            raise CashuCliError(
                f"cashu {' '.join(args[:1])} exited {process.returncode}:\n{output}"
            )
        return output

    async def fund(self, amount_sat: int) -> None:
        """Pay a mint invoice (FakeWallet pays it) and mint the proofs, in two calls.

        A plain ``cashu invoice N`` hangs when the mint pays at once (see the notes).
        """
        output = await self.run("invoice", str(amount_sat), "--no-check")
        found = _QUOTE.search(output)
        if found is None:
            raise CashuCliError(f"no quote id in the invoice output:\n{output}")
        await self.run("invoice", str(amount_sat), "--id", found.group(1))

    async def send(self, amount_sat: int, *, legacy: bool = False) -> str:
        """A token of ``amount_sat``: cashuB, or cashuA with ``legacy``."""
        args = ["send", "--legacy", str(amount_sat)] if legacy else ["send", str(amount_sat)]
        output = await self.run(*args)
        found = _TOKEN.search(output)
        if found is None:
            raise CashuCliError(f"no token in the send output:\n{output}")
        return found.group(0)

    async def receive(self, token: str) -> int:
        """Receive a token; the wallet's balance afterwards."""
        return _balance(await self.run("receive", token))

    async def balance(self) -> int:
        return _balance(await self.run("balance"))


def _balance(output: str) -> int:
    found = _BALANCE.findall(output)
    if not found:
        raise CashuCliError(f"no balance in the output:\n{output}")
    return int(found[-1])
