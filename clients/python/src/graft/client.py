"""The Graft client: a registry behind `graft serve`, from Python."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import requests
import requests.adapters

from . import _tensors
from .errors import GraftError, Unavailable, from_answer

_SEGMENT_SAFE = "-._~@:"
#: Blobs sent at once during an upload (the CLI sends four too).
PARALLEL_UPLOADS = 4


@dataclass
class Checkpoint:
    """A committed checkpoint: ``ref`` is ``NAME@N``."""

    ref: str
    model: str
    number: int
    digest: str
    #: Bytes this client sent for the commit (blobs the server lacked, the proposal, the commit).
    bytes_uploaded: int | None = None
    #: For ``best``: the metric's value.
    value: float | None = None
    metric: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Model:
    """A model: a base or a student with its resolved frozen-layer manifest."""

    name: str
    kind: str
    manifest: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def frozen(self) -> list[str]:
        """The tensors the manifest freezes."""
        return [e["name"] for e in (self.manifest or {}).get("entries", []) if e.get("state") == "frozen"]


class Client:
    """A Graft registry served by ``graft serve``.

    >>> client = graft.Client("http://127.0.0.1:8470", token=os.environ["GRAFT_TOKEN"])
    >>> client.register_base("resnet18", "resnet18.safetensors", license="bsd-3-clause")
    >>> client.create_student("resnet18-ft", "resnet18@1", freeze=["conv1", "layer1"])
    >>> client.commit("resnet18-ft", model.state_dict(), epoch=1, metrics={"val/accuracy": 0.91})

    ``url`` defaults to ``$GRAFT_URL`` (else ``$GRAFT_REGISTRY`` when it is a URL), ``token`` to
    ``$GRAFT_TOKEN``.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 600.0, verify: bool | str = True):
        url = url or os.environ.get("GRAFT_URL") or os.environ.get("GRAFT_REGISTRY")
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError("a Graft server URL is needed: Client(url=...) or $GRAFT_URL (http(s)://HOST:PORT)")
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("GRAFT_TOKEN")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.verify = verify
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=PARALLEL_UPLOADS * 2)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if self.token:
            self._session.headers["Authorization"] = f"Bearer {self.token}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return self._json("GET", ["v1", "models"])

    def model(self, name: str) -> Model:
        detail = self._json("GET", ["v1", "models", name])
        summary = detail["model"]
        return Model(name=summary["name"], kind=summary["kind"], manifest=detail.get("manifest"), raw=detail)

    def checkpoints(self, name: str) -> list[Checkpoint]:
        return [_checkpoint(c) for c in self._json("GET", ["v1", "models", name, "checkpoints"])]

    def metrics(self, ref: str) -> dict[str, Any]:
        return self._json("GET", ["v1", "checkpoints", ref, "metrics"])

    def best(
        self, metric: str, *, under: str | None = None, model: str | None = None, split: str | None = None,
        mode: str | None = None, include_flagged: bool = False,
    ) -> Checkpoint:
        """The best checkpoint by ``metric``: of one ``model``, of everything ``under`` a base
        (any depth), or of the whole registry. ``mode`` is ``"max"`` or ``"min"`` (else the
        metric's name decides by whole words: loss, error, perplexity, wer … minimise)."""
        if under and model:
            raise ValueError("under and model exclude each other")
        if mode not in (None, "max", "min"):
            raise ValueError("mode is 'max' or 'min'")
        query = {"metric": metric, "under": under, "model": model, "split": split, "direction": mode}
        if include_flagged:
            query["include_flagged"] = "true"
        result = self._json("GET", ["v1", "best"], query=query)
        found = _checkpoint(result["checkpoint"])
        found.value, found.metric, found.raw = result["value"], result["metric"], result
        return found

    def lineage(self, name: str, *, metric: str | None = None) -> dict[str, Any]:
        """Ancestors up to the root base (each edge's exact parent checkpoint) and descendants."""
        return self._json("GET", ["v1", "models", name, "lineage"], query={"metric": metric})

    def affected(self, ref: str, *, paths: bool = True) -> list[dict[str, Any]]:
        """Every descendant inheriting an open advisory on ``ref`` or above it, each with the
        checkpoint it derives from (``parent``) and, unless ``paths=False``, its whole path."""
        return self._json("GET", ["v1", "checkpoints", ref, "affected"], query={"paths": "true" if paths else "false"})

    # -- writes ------------------------------------------------------------------------------

    def register_base(
        self, name: str, source: Any, *, license: str | None = None, source_url: str | None = None,
        dataset: str | None = None, architecture: str | None = None, task: str | None = None,
        description: str | None = None,
    ) -> Checkpoint:
        """Registers a pretrained base (``NAME@1``) from a safetensors path or a state_dict."""
        provenance = {"source": source_url, "license": license, "dataset": dataset, "architecture": architecture,
                      "task": task, "description": description}
        commit = {"provenance": {k: v for k, v in provenance.items() if v is not None}}
        return self._upload(["v1", "bases", name], _layout(source), commit)

    def create_student(
        self, name: str, parent: str, *, freeze: Iterable[str] = (), train: Iterable[str] = (), drop: Iterable[str] = (),
        reinit: Iterable[str] = (), freeze_through: str | None = None, relation: str = "finetune",
        description: str | None = None,
    ) -> Model:
        """A student of the parent checkpoint ``parent`` (``NAME@N``) with its frozen-layer
        manifest: the CLI's rules (a tensor name, a layer prefix or a glob)."""
        body: dict[str, Any] = {"name": name, "parent": parent, "relation": relation}
        for key, patterns in (("freeze", freeze), ("train", train), ("drop", drop), ("reinit", reinit)):
            patterns = [patterns] if isinstance(patterns, str) else list(patterns)
            if patterns:
                body[key] = patterns
        if freeze_through:
            body["freeze_through"] = freeze_through
        if description:
            body["description"] = description
        result = self._json("POST", ["v1", "students"], body=body)
        return Model(name=result["model"], kind="student", manifest=result["manifest"], raw=result)

    def commit(
        self, model: str, state_dict_or_path: Any, *, step: int | None = None, epoch: int | float | None = None,
        metrics: Mapping[str, float] | None = None, split: str | None = None,
    ) -> Checkpoint:
        """Commits the model's next checkpoint. For a student the manifest is enforced from the
        digests before any tensor data moves (:class:`FrozenTensorChanged` names each offending
        tensor; nothing is stored); only tensors the server lacks are sent."""
        commit: dict[str, Any] = {}
        if step is not None:
            commit["step"] = int(step)
        if epoch is not None:
            commit["epoch"] = int(epoch)
        if metrics:
            commit["metrics"] = {str(k): float(v) for k, v in metrics.items()}
        if split is not None:
            commit["split"] = split
        return self._upload(["v1", "models", model, "checkpoints"], _layout(state_dict_or_path), commit)

    def log_metrics(self, ref: str, metrics: Mapping[str, float], *, split: str | None = None) -> str:
        """Evaluation metrics of a checkpoint (a bare NAME means its newest); returns ``NAME@N``."""
        body: dict[str, Any] = {"metrics": {str(k): float(v) for k, v in metrics.items()}}
        if split is not None:
            body["split"] = split
        return self._json("POST", ["v1", "checkpoints", ref, "metrics"], body=body)["checkpoint"]

    def log_curve(self, model: str, step: int, metrics: Mapping[str, float]) -> None:
        """Training-curve points of a model at ``step``."""
        self._request("POST", ["v1", "models", model, "curves"],
                      json_body={"step": int(step), "metrics": {str(k): float(v) for k, v in metrics.items()}})

    def tag(self, ref: str, alias: str) -> dict[str, Any]:
        """Points ``alias`` at a checkpoint (``NAME@ALIAS``)."""
        return self._json("PUT", ["v1", "checkpoints", ref, "aliases", alias])

    # -- downloads ---------------------------------------------------------------------------

    def download(self, ref: str, path: str | os.PathLike[str]) -> str:
        """Writes the checkpoint's byte-exact safetensors file to ``path`` (a temporary file
        renamed into place once its digest is checked); returns the checkpoint digest."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".graft-download-", delete=False) as out:
            try:
                expected = self._download_to(ref, out)
                out.flush()
                os.fsync(out.fileno())
                digest = _verified(ref, _tensors.from_path(out.name), expected)
            except BaseException:
                os.unlink(out.name)
                raise
        os.replace(out.name, path)
        return digest

    def load_numpy(self, ref: str) -> dict[str, Any]:
        """The checkpoint's tensors as numpy arrays (bf16 has no numpy dtype: use load_state_dict)."""
        from safetensors.numpy import load

        return load(self._download_bytes(ref))

    def load_state_dict(self, ref: str, *, device: str = "cpu") -> dict[str, Any]:
        """The checkpoint as a torch state_dict on ``device``, bit-exact."""
        from safetensors.torch import load

        tensors = load(self._download_bytes(ref))
        return {name: tensor.to(device) for name, tensor in tensors.items()} if device != "cpu" else tensors

    # -- internals ---------------------------------------------------------------------------

    def _upload(self, path: list[str], layout: _tensors.Layout, commit: dict[str, Any]) -> Checkpoint:
        digests = [_tensors.digest(layout.view(start, end)) for _, start, end in layout.tensors]
        proposal = {
            "header": base64.b64encode(layout.header).decode(),
            "tensors": [{"name": name, "digest": d, "length": end - start}
                        for (name, start, end), d in zip(layout.tensors, digests)],
        }
        proposal_body = json.dumps(proposal).encode()
        plan = self._json("POST", path + ["proposal"], raw_body=proposal_body)
        sent = len(proposal_body)
        spans = {name: (start, end) for name, start, end in layout.tensors}

        def put(blob: Mapping[str, Any]) -> int:
            start, end = spans[blob["name"]]
            self._request("PUT", ["v1", "blobs", blob["digest"]], data=layout.view(start, end),
                          headers={"Content-Type": "application/octet-stream"})
            return end - start

        missing = plan["missing"]
        if len(missing) > 1:
            with ThreadPoolExecutor(max_workers=min(PARALLEL_UPLOADS, len(missing))) as pool:
                sent += sum(pool.map(put, missing))
        else:
            sent += sum(put(blob) for blob in missing)
        for entry, (name, start, end) in zip(proposal["tensors"], layout.tensors):
            if end - start < plan["inline_below"]:
                entry["data"] = base64.b64encode(layout.view(start, end)).decode()
        commit_body = json.dumps(dict(commit, proposal=proposal)).encode()
        sent += len(commit_body)
        result = self._json("POST", path, raw_body=commit_body)
        return Checkpoint(ref=result["checkpoint"], model=result["model"], number=int(result["checkpoint"].rsplit("@", 1)[1]),
                          digest=result["digest"], bytes_uploaded=sent, raw=result)

    def _download_bytes(self, ref: str) -> bytes:
        import io

        buffer = io.BytesIO()
        expected = self._download_to(ref, buffer)
        data = buffer.getvalue()
        _verified(ref, _tensors.parse(data), expected)
        return data

    def _download_to(self, ref: str, out: Any) -> str:
        """Streams the file to ``out``; returns the digest the server announced (its ETag)."""
        response = self._request("GET", ["v1", "checkpoints", ref, "safetensors"], stream=True)
        for chunk in response.iter_content(chunk_size=1 << 20):
            out.write(chunk)
        return response.headers.get("ETag", "").strip('"')

    def _json(self, method: str, path: list[str], *, query: Mapping[str, Any] | None = None, body: Any = None,
              raw_body: bytes | None = None) -> Any:
        response = self._request(method, path, query=query, json_body=body, data=raw_body,
                                 headers={"Content-Type": "application/json"} if raw_body is not None else None)
        return response.json()

    def _request(self, method: str, path: list[str], *, query: Mapping[str, Any] | None = None, json_body: Any = None,
                 data: Any = None, headers: Mapping[str, str] | None = None, stream: bool = False) -> requests.Response:
        url = self.url + "/" + "/".join(quote(str(segment), safe=_SEGMENT_SAFE) for segment in path)
        params = {k: v for k, v in (query or {}).items() if v is not None}
        try:
            response = self._session.request(method, url, params=params, json=json_body, data=data, headers=headers,
                                             timeout=self.timeout, stream=stream)
        except requests.RequestException as error:
            raise Unavailable(f"cannot reach the registry at {self.url}: {error}", kind="unavailable") from error
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise from_answer(response.status_code, body, f"the server answered {response.status_code}")
        return response


def _verified(ref: str, layout: _tensors.Layout, expected: str) -> str:
    """The checkpoint digest of downloaded bytes, which must be the one the server announced."""
    actual = _tensors.checkpoint_digest(layout, [_tensors.digest(layout.view(s, e)) for _, s, e in layout.tensors])
    if expected and actual != expected:
        raise GraftError(f"the download of {ref} hashes to {actual[:19]}…, not {expected[:19]}…", kind="damage")
    return actual


def _checkpoint(summary: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(ref=summary["ref"], model=summary["model"], number=int(summary["number"]), digest=summary["digest"], raw=dict(summary))


def _layout(source: Any) -> _tensors.Layout:
    if isinstance(source, (str, os.PathLike)):
        return _tensors.from_path(source)
    if isinstance(source, Mapping):
        return _tensors.from_state_dict(source)
    if hasattr(source, "state_dict") and callable(source.state_dict):
        return _tensors.from_state_dict(source.state_dict())
    raise TypeError("a checkpoint is a safetensors path, a state_dict (torch or numpy), or a module with state_dict()")
