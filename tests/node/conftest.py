"""Node test fixtures: a funded data directory, the real service and app, a real node process.

Everything is real: `init_data_dir` writes a genesis and a node key, `NodeService` opens the
flat-file chain store and the mempool journal, `create_app` is the production FastAPI app
(driven in-process through Starlette's TestClient), and `node_process` runs
`python -m hashcloud node start` as a child process on 127.0.0.1 with a free port.
Sizes are small (n = 64, a few hundred loops) so the whole node suite stays fast.

The PoC validator tests (`test_validator`, `test_challenges`, `test_limits`, `test_history`,
`test_audit_v11`) share the helpers of the last section: a settable `FakeClock`, a validator
with a seeded rng, and signed challenge / commit / reveal requests built like a real
worker's (a reveal carries the outputs its audit plan needs and the worker's signature,
SPEC 3 v1.1).
"""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hashcloud.api.models import (
    ChallengeRequest,
    ChallengeResponse,
    CommitRequest,
    CommitResponse,
    DeviceModel,
    RevealRequest,
    SampleModel,
)
from hashcloud.chain.epoch import scheduled_subsidy
from hashcloud.chain.genesis import chain_domain
from hashcloud.chain.tx import SUBMIT_RESULT_GAS, make_transfer
from hashcloud.client.http import NodeClient
from hashcloud.client.round import RoundOutcome, run_online_round
from hashcloud.crypto.keys import PrivateKey
from hashcloud.crypto.merkle import MerkleTree
from hashcloud.crypto.signatures import ChainDomain, sign
from hashcloud.engine.mining import Engine
from hashcloud.engine.rows import loop_output
from hashcloud.node.app import create_app
from hashcloud.node.config import NodeFiles, ValidatorConfig, init_data_dir, load_data_dir
from hashcloud.node.service import NodeService
from hashcloud.node.validator import PocValidator
from hashcloud.poc.challenge import Challenge, challenge_request_bytes, commit_message
from hashcloud.poc.plan import AuditPlan
from hashcloud.poc.proof import DeviceInfo, Sample
from hashcloud.poc.round import RoundWork, make_samples, run_loops, sign_reveal

N = 64
# A round records loops * n^3 of work; its claim fee (80,000 gas * 1,000) is deferred to the
# epoch payout (SPEC 6 v1.1).
ROUND_LOOPS = 400
MIN_GAS = 1000
CLAIM_FEE = SUBMIT_RESULT_GAS * MIN_GAS
FUNDED_AMOUNT = 10**15
BLOCK_TIME_MS = 300
FUNDED_KEY = PrivateKey(0xF00D_CAFE)
WORKER_KEY = PrivateKey(0x1234_5678)
OTHER_KEY = PrivateKey(0x8765_4321)
TEST_DEVICE = DeviceInfo(name="test cpu", backend="numpy")
LISTEN_RE = re.compile(r"hashcloud node listening on (http://127\.0\.0\.1:\d+) chain=(\S+) "
                       r"height=(\d+)")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class NodeDir:
    """An initialised node data directory and the key its genesis funds."""

    path: Path
    files: NodeFiles
    funded: PrivateKey

    @property
    def chain_id(self) -> str:
        return self.files.genesis.chain_id

    @property
    def domain(self) -> ChainDomain:
        """The chain's signing domain (SPEC 5 v1.1)."""
        return chain_domain(self.files.genesis)


def make_node_dir(path: Path, funded: PrivateKey = FUNDED_KEY) -> NodeDir:
    """`init_data_dir` with `funded` holding FUNDED_AMOUNT and a 300 ms block time."""
    files = init_data_dir(path, allocations={funded.public_key.address: FUNDED_AMOUNT},
                          block_time_ms=BLOCK_TIME_MS)
    return NodeDir(path, files, funded)


@pytest.fixture
def node_dir(tmp_path: Path) -> NodeDir:
    """A fresh single-node data dir whose genesis funds FUNDED_KEY."""
    return make_node_dir(tmp_path / "node")


@pytest.fixture
def service(node_dir: NodeDir) -> Iterator[NodeService]:
    """The real NodeService over `node_dir` (closed after the test)."""
    svc = NodeService(node_dir.files)
    yield svc
    svc.close()


def open_client(svc: NodeService, **app_options: object) -> TestClient:
    """A TestClient over the real app (server errors come back as 500s, never raised)."""
    app_options.setdefault("produce_blocks", False)
    return TestClient(create_app(svc, **app_options), raise_server_exceptions=False)  # type: ignore[arg-type]


@pytest.fixture
def api(service: NodeService) -> Iterator[TestClient]:
    """The real FastAPI app in-process, without the block producer: tests call
    `service.produce_block()` themselves."""
    with open_client(service) as client:
        yield client


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """The NumPy engine at n = 64."""
    with Engine("numpy", n=N) as eng:
        yield eng


def node_client(api: TestClient) -> NodeClient:
    """A NodeClient whose HTTP transport is the in-process app (no retries)."""
    client = NodeClient("http://testserver", retries=0)
    client.http.close()
    client.http = api
    return client


def honest_round(client: NodeClient, key: PrivateKey, engine: Engine,
                 loops: int = ROUND_LOOPS) -> RoundOutcome:
    """One honest online round through `run_online_round` (challenge, commit, reveal)."""
    return run_online_round(client, key, N, TEST_DEVICE,
                            lambda seed: run_loops(engine, seed, 0, max_loops=loops))


def epoch_pool(files: NodeFiles) -> int:
    """The whole pool of epoch 0 (SPEC 6 v1.1): what a sole miner's first epoch pays,
    before its deferred claim fees."""
    g = files.genesis
    return scheduled_subsidy(1, g.epoch_length, g.subsidy0, g.halving_interval)


def transfer(nd: NodeDir, nonce: int, *, amount: int = 1, to: str | None = None,
             gas_price: int = MIN_GAS, key: PrivateKey | None = None):
    """A signed TRANSFER from the funded key (or `key`) on the node's chain."""
    return make_transfer(key or nd.funded, to or OTHER_KEY.public_key.address, amount, nonce,
                         gas_price, domain=nd.domain)


# ----------------------------------------------------------------------- real processes


def hashcloud_cmd(home: Path, *args: str) -> list[str]:
    """argv of the CLI run as `python -m hashcloud --home HOME ...`."""
    return [sys.executable, "-m", "hashcloud", "--home", str(home), *args]


def cli_env() -> dict[str, str]:
    """The environment of CLI subprocesses: no inherited node URL, home or passphrase."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HASHCLOUD_NODE", "HASHCLOUD_HOME", "HASHCLOUD_PASSPHRASE")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "200"
    return env


def run_cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion."""
    return subprocess.run(hashcloud_cmd(home, *args), capture_output=True, text=True,
                          timeout=timeout, env=cli_env(), cwd=home.parent)


@dataclass
class NodeProcess:
    """A running `hashcloud node start` child process."""

    url: str
    proc: subprocess.Popen[str]
    data_dir: Path
    home: Path
    stderr_path: Path
    port: int = 0

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 5 s."""
        stop_process(self.proc, grace=5)

    def kill9(self) -> None:
        """SIGKILL: no cleanup at all in the node."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM `proc`, then SIGKILL if it has not exited within `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_node(data_dir: Path, home: Path, *, block_time: float = 0.3,
               deadline: float = 20.0, extra_args: tuple[str, ...] = (), port: int = 0,
               env: dict[str, str] | None = None) -> NodeProcess:
    """Start a node on `data_dir` (port 0: any free) and wait for its listening line; `env`
    defaults to `cli_env()` (the CLI suite passes its own, without `COLUMNS`)."""
    home.mkdir(parents=True, exist_ok=True)
    stderr_path = home / f"node-{time.monotonic_ns()}.stderr"
    err_fh = open(stderr_path, "w")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        hashcloud_cmd(home, "node", "start", "--data-dir", str(data_dir), "--port", str(port),
                      "--block-time", str(block_time), *extra_args),
        stdout=subprocess.PIPE, stderr=err_fh, stdin=subprocess.DEVNULL, text=True,
        env=cli_env() if env is None else env, cwd=home.parent)
    err_fh.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps the stdout pipe drained for the node's whole life
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    node = NodeProcess("", proc, data_dir, home, stderr_path)
    end = time.monotonic() + deadline
    while True:
        try:
            line = lines.get(timeout=max(0.01, end - time.monotonic()))
        except queue.Empty:
            node.stop()
            pytest.fail(f"node did not print its listening line in {deadline} s:\n"
                        f"{node.stderr()}")
        if line is None:
            node.stop()
            pytest.fail(f"node exited ({proc.returncode}) before listening:\n{node.stderr()}")
        match = LISTEN_RE.search(line)
        if match:
            node.url = match.group(1)
            node.port = int(node.url.rsplit(":", 1)[1])
            return node


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path, PrivateKey]]:
    """A real node process on 127.0.0.1 (random port, 0.3 s blocks) over a funded data dir:
    yields (url, proc, data_dir, funded key); terminated (kill fallback) at teardown."""
    nd = make_node_dir(tmp_path / "node")
    node = start_node(nd.path, tmp_path / "home")
    try:
        yield node.url, node.proc, nd.path, nd.funded
    finally:
        node.stop()


def reopen(nd_path: Path) -> NodeDir:
    """The NodeDir of an existing data directory."""
    return NodeDir(nd_path, load_data_dir(nd_path), FUNDED_KEY)


def run_cli_async(home: Path, *args: str) -> subprocess.Popen[str]:
    """Start one CLI command without waiting (stdout/stderr captured)."""
    return subprocess.Popen(hashcloud_cmd(home, *args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())


# ------------------------------------------------------------------- PoC validator helpers

CHAIN = ChainDomain("hc-test", "5eed" * 4)
HEAD_HASH = "ab" * 32
HEAD_HEIGHT = 7
IP = "192.0.2.1"
T0 = 1_700_000_000.0
LOOPS = 24  # s = min(24, max(10, 1)) = 10 samples
NODE_KEY = PrivateKey(0xC0FFEE)
CPU = DeviceModel(name="test cpu", backend="numpy")


class FakeClock:
    """A settable clock (unix seconds) injected as the validator's / service's `clock`."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at T0."""
    return FakeClock()


def make_validator(data_dir: Path, clock: FakeClock, config: ValidatorConfig | None = None,
                   **injected: object) -> PocValidator:
    """A validator over `data_dir` with `clock`, a seeded rng (unless `rng` is given) and
    `config` (default options unless given)."""
    injected.setdefault("rng", random.Random(1))
    return PocValidator(NODE_KEY, CHAIN, data_dir, config or ValidatorConfig(), clock=clock,
                        **injected)  # type: ignore[arg-type]


@pytest.fixture
def validator(tmp_path: Path, clock: FakeClock) -> PocValidator:
    """A validator with default options over a fresh directory."""
    return make_validator(tmp_path, clock)


def challenge_request(key: PrivateKey, clock: FakeClock, *, n: int = N,
                      time_ms: int | None = None, address: str | None = None,
                      signer: PrivateKey | None = None) -> ChallengeRequest:
    """A worker's signed challenge request (optionally forged in one field)."""
    address = address or key.public_key.address
    time_ms = int(clock() * 1000) if time_ms is None else time_ms
    signature = sign(signer or key, challenge_request_bytes(CHAIN, address, n, time_ms))
    return ChallengeRequest(worker_address=address, public_key=key.public_key.hex(), n=n,
                            request_time_ms=time_ms, signature=signature.hex())


def issue(v: PocValidator, clock: FakeClock, key: PrivateKey = WORKER_KEY,
          ip: str = IP) -> ChallengeResponse:
    """Ask `v` for a challenge for `key` from `ip`."""
    return v.issue(challenge_request(key, clock), HEAD_HEIGHT, HEAD_HASH, ip)


def mine(engine: Engine, seed: str, loops: int = LOOPS) -> RoundWork:
    """Honest work on `seed`."""
    return run_loops(engine, seed, 0, max_loops=loops)


def commit_request(key: PrivateKey, challenge_id: str, seed: str, *, loops: int,
                   merkle_root: bytes | str, compute_time: float = 2.0,
                   device: DeviceModel = CPU, n: int = N,
                   address: str | None = None) -> CommitRequest:
    """A commitment signed by `key` over the SPEC 4 commit message (for `address`, default
    the key's own); `merkle_root` as bytes or its `0x` hex."""
    address = address or key.public_key.address
    root = bytes.fromhex(merkle_root[2:]) if isinstance(merkle_root, str) else merkle_root
    msg = commit_message(challenge_id, seed, n, address, loops, compute_time, root)
    return CommitRequest(loops=loops, compute_time=compute_time, merkle_root=root,
                         device=device, device_signature=sign(key, msg))


def reveal_request(ch: Challenge, tree: MerkleTree, leaves: list[bytes], indices: list[int],
                   plan: AuditPlan | None = None, *, key: PrivateKey = WORKER_KEY,
                   outputs: Mapping[int, bytes] | None = None,
                   root: bytes | None = None) -> RevealRequest:
    """The reveal of `indices` for challenge `ch`, signed by `key` (SPEC 3 v1.1): leaf and
    audit path of each and, for the samples a `rows` plan audits, the loop's output
    (recomputed honestly unless `outputs` is given). The signature covers `root`, the
    committed root (default: `tree`'s own)."""
    if outputs is None and plan is not None and plan.mode == "rows":
        outputs = {i: loop_output(ch.seed, i, ch.n) for i in plan.audited}
    samples = make_samples(tree, leaves, indices, outputs)
    return signed_reveal(ch, tree.root if root is None else root, samples, key=key)


def signed_reveal(ch: Challenge, merkle_root: bytes, samples: list[Sample], *,
                  key: PrivateKey = WORKER_KEY) -> RevealRequest:
    """A reveal of exactly `samples` (however tampered), signed by `key` over the root."""
    return RevealRequest(samples=[SampleModel.model_validate(s, from_attributes=True)
                                  for s in samples],
                         signature=sign_reveal(key, CHAIN, ch.challenge_id, merkle_root, samples))


def honest_reveal(ch: Challenge, work: RoundWork, com: CommitResponse, *,
                  key: PrivateKey = WORKER_KEY) -> RevealRequest:
    """The honest worker's signed reveal of the drawn indices, per the commit answer."""
    return reveal_request(ch, work.tree, work.leaves, list(com.indices), com.audit, key=key)


def committed_challenge(v: PocValidator, clock: FakeClock, engine: Engine,
                        key: PrivateKey = WORKER_KEY):
    """Issue, mine honestly (5 s on the clock), commit; returns (challenge, work, commit
    response)."""
    ch: Challenge = issue(v, clock, key).challenge
    work = mine(engine, ch.seed)
    clock.advance(5)
    com = v.commit(ch.challenge_id, commit_request(key, ch.challenge_id, ch.seed,
                                                   loops=work.loops,
                                                   merkle_root=work.merkle_root))
    return ch, work, com
