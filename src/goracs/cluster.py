"""The ``--ray`` option: which Ray cluster a command's work goes to, and the session with it.

``--ray local:N`` starts a Ray of N CPUs on this machine for the run and stops it at the end;
``--ray auto`` joins the cluster Ray itself finds (``RAY_ADDRESS`` or the one ``ray start``
left on this machine); ``--ray HOST:PORT`` (or ``ray://HOST:PORT``) joins the cluster at that
address. Ray is imported here only inside :func:`ray_session`: a run without ``--ray`` never
loads it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from goracs.errors import GoracsError

#: Seconds to wait for a cluster's address to accept a connection before giving up.
CONNECT_TIMEOUT_S = 5.0

#: The accepted ``--ray`` values, as every command's help text names them.
RAY_FORMS = ("local:N (a local Ray of N CPUs, started and stopped by this run), auto (the "
             "cluster Ray finds: RAY_ADDRESS or `ray start`'s) or HOST:PORT of a running "
             "cluster's head")


@dataclass(frozen=True)
class RaySpec:
    """A parsed ``--ray`` value: a local Ray of ``local_cpus`` CPUs, or a cluster's
    ``address`` (``"auto"``, ``host:port`` or ``ray://host:port``)."""

    text: str
    local_cpus: int | None = None
    address: str | None = None

    @property
    def local(self) -> bool:
        """Whether this run starts (and stops) its own Ray."""
        return self.local_cpus is not None


def parse_ray(value: str) -> RaySpec:
    """Check a ``--ray`` value and return what it names.

    Parameters
    ----------
    value : str
        ``local:N`` (N >= 1), ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.

    Returns
    -------
    RaySpec

    Raises
    ------
    GoracsError
        One line naming the accepted forms.
    """
    text = value.strip()
    forms = "local:N, auto, HOST:PORT or ray://HOST:PORT"
    if text.startswith("local"):
        n = text[len("local:"):] if text.startswith("local:") else ""
        if not n.isdigit() or int(n) < 1:
            raise GoracsError(f"--ray {value!r}: local needs a positive number of CPUs, "
                              "as in local:2")
        return RaySpec(text, local_cpus=int(n))
    if text == "auto":
        return RaySpec(text, address="auto")
    host, port = _host_port(text)
    if not host or port is None:
        raise GoracsError(f"--ray {value!r}: expected {forms}")
    return RaySpec(text, address=text)


def _host_port(address: str) -> tuple[str, int | None]:
    """Host and port of ``host:port`` or ``ray://host:port`` (port None when malformed)."""
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return host, None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in one line unless ``host:port`` accepts a TCP connection within ``timeout``.

    Ray's own ``ray.init`` keeps retrying an address that does not answer for a minute or
    more, logging from its C++ core as it goes; this check turns the common mistakes (a typo,
    a cluster not started, a firewall) into one line within seconds.
    """
    host, port = _host_port(address)
    if port is None:
        raise GoracsError(f"--ray {address!r}: expected HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise GoracsError(f"--ray {address}: no Ray cluster answers there "
                          f"({exc.strerror or type(exc).__name__}); start one with "
                          "`ray start --head` or use --ray local:N") from None


def _auto_address() -> str | None:
    """The address ``ray.init(address="auto")`` would join, when it can be told beforehand
    (Ray's lookup: ``RAY_ADDRESS``, then the cluster ``ray start`` recorded); None when not."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env
    try:
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment("auto", None)
    except Exception:  # no cluster recorded (Ray says so itself at init), or a changed API
        return None
    return found if isinstance(found, str) and found != "auto" else None


def check_ray(spec: RaySpec) -> None:
    """Fail early, in one line, when Ray is missing or the cluster ``spec`` names does not
    answer; commands call this before any work, :func:`ray_session` connects later."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise GoracsError("--ray needs Ray: pip install 'ray==2.60.0' (see requirements.txt)")
    if not spec.local:
        target = _auto_address() if spec.address == "auto" else spec.address
        if target is not None:
            check_reachable(target)


@contextlib.contextmanager
def ray_session(spec: RaySpec, log: Callable[[str], None] | None = None) -> Iterator[Any]:
    """Connect to (or start) the Ray that ``spec`` names; yield the ``ray`` module.

    A local Ray (``local:N``) is started with N CPUs and no dashboard and is shut down on
    leaving, whatever happens; leaving a cluster session disconnects this driver, which ends
    the actors it started (they are not detached) but leaves the cluster running.

    Raises
    ------
    GoracsError
        When Ray is not installed, the address does not answer, or Ray refuses to connect.
    """
    say = log or (lambda msg: None)
    try:
        import ray
    except ImportError:
        raise GoracsError("--ray needs Ray: pip install 'ray==2.60.0' (see "
                          "requirements.txt)") from None
    if ray.is_initialized():
        raise GoracsError("Ray is already initialised in this process; --ray starts its own "
                          "session")
    kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False,
                              "include_dashboard": False}
    if spec.local:
        kwargs.update(num_cpus=spec.local_cpus, num_gpus=0)
    else:
        target = _auto_address() if spec.address == "auto" else spec.address
        if target is not None:
            check_reachable(target)
        kwargs = {"address": spec.address, "logging_level": "ERROR", "log_to_driver": False}
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise GoracsError(f"--ray {spec.text}: cannot start or join Ray "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                          ) from None
    try:
        res = ray.cluster_resources()
        say(f"ray: {'started a local Ray' if spec.local else 'joined ' + spec.text} "
            f"({int(res.get('CPU', 0))} CPUs, {int(res.get('GPU', 0))} GPUs)")
        yield ray
    finally:
        ray.shutdown()


def actor_resources(threads: int | None, gpu: bool) -> dict[str, float]:
    """Ray resources one model actor asks for: ``threads`` CPUs (1 by default), and one GPU
    when the model runs on CUDA (Ray then makes that GPU the actor's ``cuda``)."""
    return {"num_cpus": float(threads or 1), "num_gpus": 1.0 if gpu else 0.0}


def actors_that_fit(ray: Any, resources: dict[str, float], wanted: int | None) -> int:
    """How many actors of ``resources`` the cluster holds at once (``wanted`` when given).

    Raises
    ------
    GoracsError
        When not even one fits: more threads or GPUs per actor than any cluster offers.
    """
    total = ray.cluster_resources()
    fits = []
    for ray_name, key in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
        if resources[key] > 0:
            fits.append(int(total.get(ray_name, 0) // resources[key]))
    n = min(fits) if fits else 1
    if n < 1:
        raise GoracsError(f"the Ray cluster ({int(total.get('CPU', 0))} CPUs, "
                          f"{int(total.get('GPU', 0))} GPUs) cannot hold one actor of "
                          f"{resources['num_cpus']:g} CPUs and {resources['num_gpus']:g} GPUs; "
                          "lower --threads or add resources")
    return min(n, wanted) if wanted is not None else n
