"""The online part of `hashcloud mine`: rounds against a node, then the reward claim.

With neither `--node` nor `$HASHCLOUD_NODE`, an embedded node is started on
`<home>/node` (created on first use, which is said on stderr) and reached over HTTP on
127.0.0.1 like any other node.
"""

from __future__ import annotations

import contextlib
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
from hashcloud.client.http import NodeClient
from hashcloud.client.round import run_online_round, submit_claim
from hashcloud.crypto.keys import PrivateKey
from hashcloud.engine.mining import Engine
from hashcloud.errors import HashCloudError, NodeError, NodeRejected
from hashcloud.poc.proof import DeviceInfo
from hashcloud.types import to_phex

MAX_CONSECUTIVE_FAILURES = 3
"""Rounds the node refuses in a row (not audit rejections) before `mine` gives up."""


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


def mine_online(st: CliState, engine: Engine, key: PrivateKey, *, duration: float,
                node_url: str | None, out_path: Path | None, rounds: int, json_: bool) -> None:
    """Mine `rounds` audited rounds (0: until Ctrl-C) and claim each accepted one."""
    device = DeviceInfo(name=engine.device, backend=engine.backend)
    stats = {"accepted": 0, "rejected": 0, "rewards": 0}
    results: list[dict] = []

    def on_retry(reason: str, attempt: int, delay: float) -> None:
        err.print(f"[yellow]{reason}; retry {attempt} in {delay:.1f} s[/]")

    with node_url_for(st, node_url) as (url, embedded), \
            NodeClient(url, on_retry=on_retry) as client:
        info = client.info()
        address = key.public_key.address
        number = failures = 0
        last_error: HashCloudError | None = None
        while rounds == 0 or number < rounds:
            number += 1
            try:
                row, stop = _play_round(st, client, info, engine, key, device, duration,
                                        out_path, rounds, number, stats, json_, url, embedded)
            except KeyboardInterrupt:
                err.print("interrupted: stopping (a proof already written can still be "
                          "claimed with `hashcloud submit PROOF`)")
                break
            except NodeRejected as exc:
                # e.g. the node restarted and forgot the challenge: drop the round, go on.
                last_error, failures = exc, failures + 1
                stats["rejected"] += 1
                err.print(f"[red]round {number} aborted:[/] {exc.detail}")
                results.append({"round": number, "accepted": False, "reason": exc.detail,
                                "loops": 0, "compute_time": 0.0, "merkle_root": None,
                                "proof_path": None, "reward": 0, "tx_id": None,
                                "height": None})
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    err.print(f"{failures} rounds in a row failed: stopping")
                    break
                continue
            except NodeError as exc:  # unreachable after the retries: stop, but report
                last_error = exc
                err.print(f"[red]stopping:[/] {exc}")
                break
            failures = 0
            results.append(row)
            if stop:
                break
        try:
            balance = client.account(address).balance if results else None
        except NodeError:
            balance = None
    if not results:
        if last_error is not None:
            raise last_error
        raise typer.Exit(130)
    last = results[-1]
    if json_:
        print_json({**{k: last[k] for k in ("loops", "compute_time", "merkle_root", "accepted",
                                             "proof_path", "reason", "reward", "tx_id",
                                             "height")},
                    "address": address, "balance": balance, "node": url, "embedded": embedded,
                    "backend": engine.backend, "device": engine.device,
                    "accepted_rounds": stats["accepted"], "rejected_rounds": stats["rejected"],
                    "rewards": stats["rewards"], "rounds": results})
    else:
        shown = "unknown" if balance is None else f"{balance:,}"
        out.print(f"{address}: balance {shown} after {stats['accepted']} accepted / "
                  f"{stats['rejected']} rejected rounds, rewards {stats['rewards']:,}")
    if stats["accepted"] == 0:
        raise typer.Exit(1)


def _play_round(st: CliState, client: NodeClient, info: NodeInfo, engine: Engine,
                key: PrivateKey,
                device: DeviceInfo, duration: float, out_path: Path | None, rounds: int,
                number: int, stats: dict, json_: bool, url: str, embedded: bool
                ) -> tuple[dict, bool]:
    """One round: compute, audit, write the proof, claim; (result row, stop after it)."""
    outcome = run_online_round(
        client, key, engine.n, device,
        lambda seed: compute_round(engine, seed, duration, live=not json_,
                                   phase=f"round {number}", stats=stats),
        info)
    proof = outcome.proof
    path = write_proof(out_path if (out_path and rounds == 1)
                       else _round_path(st, out_path, proof.challenge_id), proof)
    row = {"round": number, "loops": outcome.work.loops,
           "compute_time": outcome.work.compute_time,
           "merkle_root": to_phex(outcome.work.merkle_root), "accepted": outcome.accepted,
           "proof_path": str(path), "reason": outcome.reason, "reward": 0,
           "tx_id": None, "height": None}
    if outcome.accepted:
        stats["accepted"] += 1
        try:
            txid, height = submit_claim(client, key, proof)
            row.update(tx_id=txid, height=height, reward=outcome.reward_estimate)
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
            extra["reward"] = f"{row['reward']:,}"
        out.print(summary_table(outcome.work, engine, extra))
    return row, outcome.work.interrupted


def _round_path(st: CliState, out_path: Path | None, challenge_id: str) -> Path:
    if out_path is None:
        return default_proof_path(st, challenge_id)
    return out_path.with_name(f"{out_path.stem}-{challenge_id[:8]}{out_path.suffix}")
