"""The online part of `hashcloud mine`: rounds against a node, then the reward claim.

With neither `--node` nor `$HASHCLOUD_NODE`, an embedded node is started on
`<home>/node` (created on first use, which is said on stderr) and reached over HTTP on
127.0.0.1 like any other node.

Resilience (SPEC 7 v1.1): `--rounds 0` never gives up on an outage. Between rounds an
unreachable node is retried with capped exponential backoff (1 s doubling to `--backoff-max`,
default 30 s, jittered), moving round-robin through the `--node` list; inside a round the
commit, reveal and claim keep retrying the round's own node while its challenge is valid (a
challenge is bound to the node that issued it, and nodes journal open challenges, so a
restart does not void the round). SIGTERM is Ctrl-C (`mine` maps it): the round in progress
is finished and summarised. `--json` prints each finished round as one line when it ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from hashcloud.api.models import NodeInfo
from hashcloud.cli.common import CliState, err, out, print_json
from hashcloud.cli.round_output import (
    compute_round,
    default_proof_path,
    summary_table,
    write_proof,
)
from hashcloud.client.http import MAX_RETRY_DELAY, Backoff, NodeClient
from hashcloud.client.round import run_online_round, submit_claim
from hashcloud.crypto.keys import PrivateKey
from hashcloud.engine.mining import Engine
from hashcloud.errors import HashCloudError, NodeError, NodeRejected, UsageError
from hashcloud.poc.proof import DeviceInfo
from hashcloud.types import to_phex
from hashcloud.units import format_hc

MAX_CONSECUTIVE_FAILURES = 3
"""Rounds the node refuses in a row (not audit rejections) before `mine` gives up."""

CLAIM_PATIENCE = 60.0
"""Seconds a claim keeps retrying a node that went away after the audit (the proof file is
written first, so a claim given up on can still be sent with `hashcloud submit`)."""


@contextlib.contextmanager
def node_url_for(st: CliState, node_url: str | None) -> Iterator[tuple[str, bool]]:
    """Yield (url, embedded): the given node, or an embedded node on the home's data dir."""
    if node_url:
        yield node_url, False
        return
    from hashcloud.node.server import EmbeddedNode

    data_dir = st.home / "node"
    with EmbeddedNode(data_dir) as node:
        if node.created:
            err.print(f"created a local chain (genesis + node key) in {data_dir}")
        # Always said (stderr), --json or not: stdout keeps its one JSON object.
        err.print(f"[dim]no --node given: using the embedded node in {data_dir} "
                  f"({node.url})[/]")
        yield node.url, True


def parse_node_urls(values: list[str] | None) -> list[str]:
    """The `--node` list: repeatable and/or comma-separated URLs, in order, duplicates
    dropped; an empty entry or a non-http(s) URL is a usage error."""
    urls: list[str] = []
    for value in values or []:
        for part in value.split(","):
            url = part.strip()
            if not url:
                raise UsageError("--node has an empty URL")
            if not url.startswith(("http://", "https://")):
                raise UsageError(f"--node must be an http:// or https:// URL, got {url!r}")
            if url not in urls:
                urls.append(url)
    return urls


def mine_online(st: CliState, engine: Engine, key: PrivateKey, *, duration: float,
                node_urls: list[str], out_path: Path | None, rounds: int, json_: bool,
                backoff_max: float = MAX_RETRY_DELAY, print_time: float = 10.0,
                payout_address: str | None = None) -> None:
    """Mine `rounds` audited rounds (0: until Ctrl-C / SIGTERM) and claim each accepted one.

    With `--rounds 0` an unreachable node never ends mining: the miner waits with capped
    exponential backoff (1 s doubling to `backoff_max`, with jitter) and moves on to the next
    of `node_urls` each time, round-robin; a finite `--rounds` tries each node once, then
    stops at an outage the client's own retries do not ride out. With `json_` each finished
    round is one JSON line on stdout as it ends (the last one carries the running totals)."""
    device = DeviceInfo(name=engine.device, backend=engine.backend)
    stats = {"accepted": 0, "rejected": 0, "rewards": 0}
    results: list[dict] = []
    keep_going = rounds == 0

    def on_retry(reason: str, attempt: int, delay: float) -> None:
        err.print(f"[yellow]{reason}; retry {attempt} in {delay:.1f} s[/]", soft_wrap=True)

    with contextlib.ExitStack() as stack:
        embedded = not node_urls
        urls = node_urls or [stack.enter_context(node_url_for(st, None))[0]]
        # Rounds 0: fail fast on one node (the loop below backs off and fails over); the
        # commit and reveal of a round still ride out a restart (`run_online_round`).
        clients = [stack.enter_context(NodeClient(
            url, on_retry=on_retry, retries=2 if keep_going else 5, max_delay=backoff_max))
            for url in urls]
        backoff = Backoff(min(1.0, backoff_max), backoff_max)
        address = payout_address or key.public_key.address  # where the coins go
        current = number = failures = down = 0
        last_error: HashCloudError | None = None
        try:  # Ctrl-C / SIGTERM at any point of the loop: stop after what is done
            while rounds == 0 or number < rounds:
                client = clients[current]
                try:
                    try:
                        info = client.info()
                    except NodeError as exc:  # unreachable (or not a node): back off, fail over
                        last_error = exc
                        down += 1
                        if not keep_going and down >= len(urls):  # every node tried once
                            err.print(f"[red]stopping:[/] {exc}")
                            break
                        current = _fail_over(urls, current, backoff, exc)
                        continue
                    backoff.reset()
                    down = 0
                    number += 1
                    row, stop = _play_round(st, client, info, engine, key, device, duration,
                                            out_path, rounds, number, stats, json_,
                                            client.base_url, embedded, print_time=print_time,
                                            payout_address=payout_address, finished=results)
                except NodeRejected as exc:
                    # e.g. the node restarted and forgot the challenge: drop the round, go on.
                    last_error, failures = exc, failures + 1
                    stats["rejected"] += 1
                    err.print(f"[red]round {number} aborted:[/] {exc.detail}")
                    _emit({"round": number, "accepted": False, "reason": exc.detail, "loops": 0,
                           "compute_time": 0.0, "merkle_root": None, "proof_path": None,
                           "reward": 0, "tx_id": None, "height": None}, client=client,
                          engine=engine, stats=stats, json_=json_, embedded=embedded,
                          address=address, balance=None, finished=results)
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        err.print(f"{failures} rounds in a row failed: stopping")
                        break
                    continue
                except NodeError as exc:  # unreachable after the retries
                    last_error = exc
                    if not keep_going:
                        err.print(f"[red]stopping:[/] {exc}")
                        break
                    err.print(f"[red]round {number} lost:[/] {exc}")
                    current = _fail_over(urls, current, backoff, exc)
                    continue
                failures = 0  # `row` is in `results` already (`_emit`)
                if stop:
                    break
        except KeyboardInterrupt:
            err.print("interrupted: stopping (a proof already written can still be "
                      "claimed with `hashcloud submit PROOF`)")
    if not results:
        if last_error is not None:
            raise last_error
        raise typer.Exit(130)
    last = results[-1]
    if not json_:
        shown = "unknown" if last.get("balance") is None else format_hc(last["balance"])
        out.print(f"{address}: balance {shown} after {stats['accepted']} accepted / "
                  f"{stats['rejected']} rejected rounds, expected payouts "
                  f"~{format_hc(stats['rewards'])} (paid at epoch ends)",
                  soft_wrap=True)
    if stats["accepted"] == 0:
        raise typer.Exit(1)


def _fail_over(urls: list[str], current: int, backoff: Backoff, exc: HashCloudError) -> int:
    """Say that `urls[current]` failed, wait the next backoff delay, return the next node."""
    nxt = (current + 1) % len(urls)
    delay = backoff.next_delay()
    then = f"trying {urls[nxt]}" if len(urls) > 1 else "retrying"
    said = str(exc) if urls[current] in str(exc) else f"{urls[current]}: {exc}"
    err.print(f"[yellow]{said}; {then} in {delay:.1f} s[/]", soft_wrap=True)
    time.sleep(delay)
    return nxt


def _emit(row: dict, *, client: NodeClient, engine: Engine, stats: dict, json_: bool,
          embedded: bool, address: str, balance: int | None,
          finished: list[dict] | None = None) -> dict:
    """Complete a round's row with the running totals, record it in `finished` (if not yet:
    an interrupt right after the line must not lose the round) and, under --json, print it
    as one line now (SPEC 7 v1.1: each finished round is one JSON line as it ends)."""
    row.update(address=address, balance=balance, node=client.base_url, embedded=embedded,
               backend=engine.backend, device=engine.device,
               accepted_rounds=stats["accepted"], rejected_rounds=stats["rejected"],
               rewards=stats["rewards"])
    if finished is not None:
        finished.append(row)
    if json_:
        print_json(row)
    return row


def _play_round(st: CliState, client: NodeClient, info: NodeInfo, engine: Engine,
                key: PrivateKey,
                device: DeviceInfo, duration: float, out_path: Path | None, rounds: int,
                number: int, stats: dict, json_: bool, url: str, embedded: bool, *,
                print_time: float = 10.0, payout_address: str | None = None,
                finished: list[dict] | None = None) -> tuple[dict, bool]:
    """One round: compute, audit, write the proof, claim; (result row, stop after it).

    SPEC 6 v1.1: a claim mints nothing; the row shows the work credited to the payout
    address and the node's estimate of its payout at the epoch's close (`reward`)."""
    outcome = run_online_round(
        client, key, engine.n, device,
        lambda seed: compute_round(engine, seed, duration, live=not json_,
                                   phase=f"round {number}", stats=stats,
                                   print_every=print_time),
        info, payout_address=payout_address)
    proof = outcome.proof
    path = write_proof(out_path if (out_path and rounds == 1)
                       else _round_path(st, out_path, proof.challenge_id), proof)
    row = {"round": number, "loops": outcome.work.loops,
           "compute_time": outcome.work.compute_time,
           "merkle_root": to_phex(outcome.work.merkle_root), "accepted": outcome.accepted,
           "proof_path": str(path), "reason": outcome.reason, "reward": 0,
           "tx_id": None, "height": None, "interrupted": outcome.work.interrupted}
    if finished is not None:
        finished.append(row)  # recorded now: an interrupt from here on keeps the round
    if outcome.accepted:
        stats["accepted"] += 1
        try:
            with client.retrying_until(time.time() + CLAIM_PATIENCE):  # ride out a restart
                txid, height = submit_claim(client, key, proof)
            row.update(tx_id=txid, height=height, reward=outcome.reward_estimate,
                       work=outcome.work_credited,
                       payout_address=payout_address or key.public_key.address)
            stats["rewards"] += outcome.reward_estimate
        except HashCloudError as exc:
            row["claim_error"] = str(exc)
            err.print(f"[red]claim failed:[/] {exc}")
    else:
        stats["rejected"] += 1
        err.print(f"[red]round {number} rejected:[/] {outcome.reason}")
    if not json_:
        extra = {"node": url + (" (embedded)" if embedded else ""), "proof": str(path),
                 "status": "[green]accepted[/]" if outcome.accepted
                 else f"[red]rejected: {outcome.reason}[/]"}
        if row.get("tx_id"):
            extra["claim"] = f"tx {row['tx_id'][:16]}... in block {row['height']}"
            extra["work credited"] = (f"{row['work']:,} to {row['payout_address']} "
                                      "(paid at the epoch's end)")
            extra["expected payout"] = f"~{format_hc(row['reward'])} (estimate)"
        out.print(summary_table(outcome.work, engine, extra))
    # The balance shown is the payout address's: with --payout the rig key holds nothing.
    paid_to = payout_address or key.public_key.address
    try:
        balance: int | None = client.account(paid_to).balance
    except NodeError:
        balance = None
    _emit(row, client=client, engine=engine, stats=stats, json_=json_, embedded=embedded,
          address=paid_to, balance=balance)
    return row, outcome.work.interrupted


def _round_path(st: CliState, out_path: Path | None, challenge_id: str) -> Path:
    if out_path is None:
        return default_proof_path(st, challenge_id)
    return out_path.with_name(f"{out_path.stem}-{challenge_id[:8]}{out_path.suffix}")
