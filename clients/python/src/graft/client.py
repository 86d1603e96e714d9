"""The Graft client: a registry behind `graft serve`, from Python."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import requests
import requests.adapters

from . import _tensors
from .errors import GraftError, InvalidInput, Unavailable, from_answer

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

    def affected(self, ref: str, *, paths: bool = True, exposure: str = "drift") -> list[dict[str, Any]]:
        """Every descendant inheriting an open advisory on ``ref`` or above it, each with the
        checkpoint it derives from (``parent``) and, unless ``paths=False``, its whole path.

        ``exposure`` (``"drift"``, ``"digests"`` or ``"none"``) adds how much of the flagged
        checkpoint each one's newest checkpoint still holds: ``exposure`` (the share of its bytes
        held unchanged), ``frozen_depth``, ``drift`` (relative L2 distance of what changed) and
        ``layers``. ``"digests"`` reads no tensor data (drift only where measured before). An
        exposure of 0 is not safety: a full fine-tune holds none of its teacher's bytes and still
        starts from them."""
        if exposure not in ("drift", "digests", "none"):
            raise ValueError("exposure is 'drift', 'digests' or 'none'")
        query = {"paths": "true" if paths else "false", "exposure": exposure}
        return self._json("GET", ["v1", "checkpoints", ref, "affected"], query=query)

    def exposure(self, ref: str, *, to: str, digests_only: bool = False) -> dict[str, Any]:
        """How much of the ancestor checkpoint ``to`` the checkpoint ``ref`` still carries (a bare
        name is its newest): ``exposure``, ``held_bytes``, ``ancestor_bytes``, ``frozen_depth``,
        ``drift`` and per layer ``{name, identical, drift, bytes}`` (docs/JSON.md)."""
        query = {"to": to, "detail": "digests" if digests_only else "drift"}
        return self._json("GET", ["v1", "checkpoints", ref, "exposure"], query=query)

    # -- writes ------------------------------------------------------------------------------

    def register_base(
        self, name: str, source: Any, *, license: str | None = None, source_url: str | None = None,
        dataset: str | None = None, architecture: str | None = None, task: str | None = None,
        description: str | None = None, exclude: Iterable[str] = (),
    ) -> Checkpoint:
        """Registers a pretrained base (``NAME@1``) from a safetensors path, a state_dict, or a
        model directory (``save_pretrained`` output, sharded or not: config, tokenizer and every
        other file kept byte for byte; ``exclude`` globs leave files out)."""
        provenance = {"source": source_url, "license": license, "dataset": dataset, "architecture": architecture,
                      "task": task, "description": description}
        commit = {"provenance": {k: v for k, v in provenance.items() if v is not None}}
        if _is_directory(source):
            return self._upload_directory(["v1", "bases", name], _read_directory(source, exclude), commit)
        return self._upload(["v1", "bases", name], _layout(source), commit)

    def create_student(
        self, name: str, parent: str, *, freeze: Iterable[str] = (), train: Iterable[str] = (), drop: Iterable[str] = (),
        reinit: Iterable[str] = (), freeze_through: str | None = None, relation: str = "finetune",
        description: str | None = None, prefix: str | None = None, adapter: bool = False,
    ) -> Model:
        """A student of the parent checkpoint ``parent`` (``NAME@N``) with its frozen-layer
        manifest: the CLI's rules (a tensor name, a layer prefix or a glob). A task model that
        names the base's tensors under a prefix (``bert.``) says so with ``prefix``, or writes
        its rules in its own names (``freeze=["bert.embeddings"]``): the prefix is inferred.

        ``adapter=True`` makes an adapter student (mode and relation ``adapter``): every parent
        tensor frozen and never stored; its checkpoints are PEFT adapters (commit a ``PeftModel``
        or its ``save_pretrained`` directory), and it takes no other rule."""
        if adapter:
            if any(list(p) for p in (freeze, train, drop, reinit)) or freeze_through or prefix:
                raise ValueError("an adapter student freezes every parent tensor: it takes no freeze, train, drop, reinit, "
                                 "freeze_through or prefix")
            relation = "adapter"
        body: dict[str, Any] = {"name": name, "parent": parent, "relation": relation}
        if adapter:
            body["adapter"] = True
        for key, patterns in (("freeze", freeze), ("train", train), ("drop", drop), ("reinit", reinit)):
            patterns = [patterns] if isinstance(patterns, str) else list(patterns)
            if patterns:
                body[key] = patterns
        if freeze_through:
            body["freeze_through"] = freeze_through
        if prefix:
            body["prefix"] = prefix
        if description:
            body["description"] = description
        result = self._json("POST", ["v1", "students"], body=body)
        return Model(name=result["model"], kind="student", manifest=result["manifest"], raw=result)

    def commit(
        self, model: str, state_dict_or_path: Any, *, step: int | None = None, epoch: int | float | None = None,
        metrics: Mapping[str, float] | None = None, split: str | None = None, exclude: Iterable[str] = (),
    ) -> Checkpoint:
        """Commits the model's next checkpoint: a state_dict, a module, a safetensors path or a
        model directory (its config, tokenizer and other files kept too; ``exclude`` globs leave
        files out). For a student the manifest is enforced from the digests before any tensor
        data moves (:class:`FrozenTensorChanged` names each offending tensor; nothing is
        stored); only tensors and files the server lacks are sent.

        A PEFT ``PeftModel`` commits its adapter only (``adapter_model.safetensors`` and
        ``adapter_config.json`` as ``save_pretrained`` writes them), to an adapter student."""
        commit: dict[str, Any] = {}
        if step is not None:
            commit["step"] = int(step)
        if epoch is not None:
            if float(epoch) != int(epoch):
                # Never truncated silently: the registry records whole epochs, the step says where within one.
                raise ValueError(f"epoch {epoch} is not a whole epoch: pass whole epochs, and step for a position within one")
            commit["epoch"] = int(epoch)
        if metrics:
            commit["metrics"] = {str(k): float(v) for k, v in metrics.items()}
        if split is not None:
            commit["split"] = split
        if _is_peft(state_dict_or_path):
            with tempfile.TemporaryDirectory(prefix="graft-adapter-") as directory:
                state_dict_or_path.save_pretrained(directory)
                # PEFT's generated card is boilerplate: the adapter is its weights and config.
                kept = ("adapter_model.safetensors", "adapter_config.json")
                extra = [name for name in os.listdir(directory) if name not in kept]
                return self._upload_directory(["v1", "models", model, "checkpoints"],
                                              _read_directory(directory, [*exclude, *extra]), commit)
        if _is_directory(state_dict_or_path):
            return self._upload_directory(["v1", "models", model, "checkpoints"], _read_directory(state_dict_or_path, exclude),
                                          commit)
        return self._upload(["v1", "models", model, "checkpoints"], _layout(state_dict_or_path), commit)

    def load_adapter(self, ref: str, base_model: Any, *, is_trainable: bool = False) -> Any:
        """The adapter checkpoint ``ref`` (an adapter student's; a bare NAME means its newest) on
        ``base_model`` as a ``peft.PeftModel``: its PEFT directory fetched once into the snapshot
        cache (:meth:`snapshot`) and loaded with ``PeftModel.from_pretrained``. ``base_model`` is
        the adapter's parent, loaded by the caller (``from_pretrained(client.snapshot(parent))``)."""
        from peft import PeftModel

        detail = self._json("GET", ["v1", "checkpoints", ref])
        if not any(f["path"] == "adapter_config.json" for f in detail.get("files") or []):
            raise InvalidInput(f"{detail['checkpoint']['ref']} is not an adapter checkpoint (it has no adapter_config.json)",
                               kind="invalid_input")
        return PeftModel.from_pretrained(base_model, self.snapshot(detail["checkpoint"]["ref"]), is_trainable=is_trainable)

    def apply_manifest(self, module: Any, student: str) -> list[str]:
        """Makes a torch module train what the student's manifest lets it train: frozen
        parameters get ``requires_grad=False``, and a module whose parameters and buffers are all
        frozen (BatchNorm, Dropout, a whole frozen block) is put in eval mode and kept there (its
        ``train()`` becomes a no-op), so its running statistics never move. Names are the
        module's ``state_dict`` names. Returns the frozen parameter names."""
        manifest = self.model(student).manifest
        if manifest is None:
            raise ValueError(f"{student} is a base: it has no manifest")
        frozen = {e["name"] for e in manifest["entries"] if e["state"] == "frozen"}
        names = []
        for name, parameter in module.named_parameters():
            if name in frozen:
                parameter.requires_grad_(False)
                names.append(name)
        for prefix, child in module.named_modules():
            own = [f"{prefix}.{n}" if prefix else n for n in child.state_dict(keep_vars=True)]
            if own and all(n in frozen for n in own) and prefix:
                child.eval()
                child.train = _stay_in_eval.__get__(child)  # type: ignore[method-assign]
        return names

    def check_manifest(self, module: Any, student: str) -> None:
        """Raises :class:`ValueError` naming the parameters a student's manifest freezes that the
        module would still train (``requires_grad``): what a commit would refuse after a whole
        epoch, said before training starts."""
        manifest = self.model(student).manifest
        if manifest is None:
            return
        if manifest.get("mode") == "adapter":
            # The base is frozen by PEFT; what matters is that an adapter is what gets committed.
            if not _is_peft(module):
                raise ValueError(f"{student} is an adapter student: train a peft.PeftModel (get_peft_model) and commit it")
            return
        frozen = {e["name"] for e in manifest["entries"] if e["state"] == "frozen"}
        trainable = [name for name, p in module.named_parameters() if p.requires_grad and name in frozen]
        if trainable:
            shown = ", ".join(trainable[:5]) + (f" and {len(trainable) - 5} more" if len(trainable) > 5 else "")
            raise ValueError(
                f"{student}'s manifest freezes {len(trainable)} parameter(s) the model would train: {shown}; "
                f"call client.apply_manifest(model, {student!r}) before training")

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

    def signature(self, ref: str) -> dict[str, Any] | None:
        """The checkpoint's OpenSSF model signature, or ``None``: ``verified`` (a public key
        checked it against the files), ``key_hint`` (hex SHA-256 of the signing key's PEM),
        ``files``, ``root_digest``, ``origin`` (``graft`` or ``imported``), ``signed_at``."""
        return self._json("GET", ["v1", "checkpoints", ref]).get("signature")

    def download(self, ref: str, path: str | os.PathLike[str], *, signature: bool = True) -> str:
        """Writes the checkpoint's byte-exact safetensors file to ``path`` (a temporary file
        renamed into place once its digest is checked); a checkpoint kept as a model directory
        is written as that directory, every file checked (written beside ``path``, renamed into
        place whole). A signed checkpoint's ``model.sig`` goes inside the directory (or beside
        the file as ``FILE.sig``) unless ``signature=False``; ``model_signing verify key``
        checks it. Returns the checkpoint digest."""
        path = os.fspath(path)
        detail = self._json("GET", ["v1", "checkpoints", ref])
        if detail.get("files"):
            self._download_directory(detail, path)
            if signature and detail.get("signature"):
                self._write_signature(detail["checkpoint"]["ref"], os.path.join(path, "model.sig"))
            return detail["checkpoint"]["digest"]
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
        if signature and detail.get("signature"):
            self._write_signature(detail["checkpoint"]["ref"], path + ".sig")
        return digest

    def _write_signature(self, ref: str, path: str) -> None:
        """The checkpoint's ``model.sig`` bytes to ``path`` (written beside, flushed, renamed)."""
        import base64

        answer = self._json("GET", ["v1", "checkpoints", ref, "signature"])
        if answer.get("bundle") is None:
            return
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(path)), prefix=".graft-sig-", delete=False) as out:
            out.write(base64.b64decode(answer["bundle"]))
            out.flush()
            os.fsync(out.fileno())
        os.replace(out.name, path)

    def snapshot(self, ref: str) -> str:
        """A local directory holding the checkpoint, ready for ``from_pretrained``: downloaded
        once into the cache (``$GRAFT_CACHE``, else ``~/.cache/graft``) under its digest, and
        reused while the digest is the same. A single-file checkpoint becomes a directory with
        ``model.safetensors``."""
        detail = self._json("GET", ["v1", "checkpoints", ref])
        digest = detail["checkpoint"]["digest"].split(":", 1)[1]
        cache = os.environ.get("GRAFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "graft")
        target = os.path.join(cache, "snapshots", digest)
        if os.path.isdir(target):
            return target
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".graft-snapshot-")
        try:
            if detail.get("files"):
                self._download_directory(detail, os.path.join(staging, "tree"))
                os.replace(os.path.join(staging, "tree"), target)
            else:
                os.makedirs(os.path.join(staging, "tree"))
                self.download(detail["checkpoint"]["ref"], os.path.join(staging, "tree", "model.safetensors"))
                os.replace(os.path.join(staging, "tree"), target)
        except OSError:
            if not os.path.isdir(target):  # another process may have won the race; its copy is as good
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

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
        spans = [(name, layout, start, end) for name, start, end in layout.tensors]
        proposal = {"header": base64.b64encode(layout.header).decode(), "tensors": _proposed(spans)}
        return self._send(path, proposal, spans, {}, commit)

    def _upload_directory(self, path: list[str], directory: _tensors.Directory, commit: dict[str, Any]) -> Checkpoint:
        """A model directory: its shards' headers and every tensor's and file's digest proposed
        (the server builds the header the shards read as one file under), then what it lacks."""
        spans = [(name, layout, start, end) for _, layout in directory.shards for name, start, end in layout.tensors]
        files = [{"path": rel, "shard_header": base64.b64encode(layout.header).decode()} for rel, layout in directory.shards]
        sources: dict[str, tuple[str, int]] = {}
        for rel, real, size in directory.files:
            digest = _tensors.file_digest(real)
            files.append({"path": rel, "digest": digest, "length": size})
            sources[digest] = (real, size)
        files.sort(key=lambda f: f["path"].encode("utf-8", "surrogateescape"))
        proposal = {"header": "", "tensors": _proposed(spans), "files": files}
        return self._send(path, proposal, spans, sources, commit)

    def _send(self, path: list[str], proposal: dict[str, Any], spans: list[tuple[str, Any, int, int]],
              files: Mapping[str, tuple[str, int]], commit: dict[str, Any]) -> Checkpoint:
        """The upload protocol after the proposal is made: the plan, the missing blobs (from a
        tensor's bytes or a file), the small ones inline, and the commit, retried with its
        idempotency key when the answer is lost."""
        proposal_body = json.dumps(proposal).encode()
        plan = self._json("POST", path + ["proposal"], raw_body=proposal_body)
        sent = len(proposal_body)
        by_digest = {entry["digest"]: (layout, start, end) for entry, (_, layout, start, end) in zip(proposal["tensors"], spans)}

        def put(blob: Mapping[str, Any]) -> int:
            headers = {"Content-Type": "application/octet-stream"}
            if blob["digest"] in by_digest:
                layout, start, end = by_digest[blob["digest"]]
                self._request("PUT", ["v1", "blobs", blob["digest"]], data=layout.view(start, end), headers=headers)
                return end - start
            real, size = files[blob["digest"]]
            with open(real, "rb") as source:  # streamed from the file
                self._request("PUT", ["v1", "blobs", blob["digest"]], data=source, headers=dict(headers, **{"Content-Length": str(size)}))
            return size

        missing = plan["missing"]
        if len(missing) > 1:
            with ThreadPoolExecutor(max_workers=min(PARALLEL_UPLOADS, len(missing))) as pool:
                sent += sum(pool.map(put, missing))
        else:
            sent += sum(put(blob) for blob in missing)
        held = set(plan.get("inline_present") or [])  # small ones the server holds: not sent again
        for entry, (_, layout, start, end) in zip(proposal["tensors"], spans):
            if end - start < plan["inline_below"] and entry["digest"] not in held:
                entry["data"] = base64.b64encode(layout.view(start, end)).decode()
        for entry in proposal.get("files", []):
            if "digest" in entry and entry["length"] < plan["inline_below"] and entry["digest"] not in held:
                with open(files[entry["digest"]][0], "rb") as source:
                    entry["data"] = base64.b64encode(source.read()).decode()
        commit_body = json.dumps(dict(commit, proposal=proposal, idempotency_key=uuid.uuid4().hex)).encode()
        sent += len(commit_body)
        for attempt in range(3):
            try:
                result = self._json("POST", path, raw_body=commit_body)
                break
            except Unavailable:
                # The same key: a commit that went through answers its checkpoint, never a second one.
                if attempt == 2:
                    raise
        return Checkpoint(ref=result["checkpoint"], model=result["model"], number=int(result["checkpoint"].rsplit("@", 1)[1]),
                          digest=result["digest"], bytes_uploaded=sent, raw=result)

    def _download_directory(self, detail: Mapping[str, Any], path: str) -> None:
        """Every file of a directory checkpoint into a hidden folder beside ``path``, each
        length (and a plain file's digest) checked, then renamed into place."""
        import hashlib

        ref = detail["checkpoint"]["ref"]
        target = os.path.abspath(path)
        staging = tempfile.mkdtemp(dir=os.path.dirname(target), prefix="." + os.path.basename(target) + ".graft-download-")
        try:
            for file in detail["files"]:
                relative = file["path"]
                parts = relative.split("/")
                if relative.startswith("/") or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
                    raise GraftError(f"the server listed a file {relative!r} that is not a plain relative path", kind="damage")
                out_path = os.path.join(staging, *parts)
                os.makedirs(os.path.dirname(out_path), exist_ok=True)
                response = self._request("GET", ["v1", "checkpoints", ref, "file"], query={"path": relative}, stream=True)
                hasher = hashlib.sha256()
                written = 0
                with open(out_path, "wb") as out:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        hasher.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                if written != file["bytes"] or (file["kind"] == "file" and "sha256:" + hasher.hexdigest() != file["digest"]):
                    raise GraftError(f"the download of {relative} from {ref} does not match its listing", kind="damage")
            if os.path.exists(target):
                shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _download_bytes(self, ref: str) -> bytes:
        import io

        detail = self._json("GET", ["v1", "checkpoints", ref])
        exact = detail["checkpoint"]["ref"]
        buffer = io.BytesIO()
        expected = self._download_to(exact, buffer)
        data = buffer.getvalue()
        layout = _tensors.parse(data)
        if detail.get("files"):
            # A model directory's digest covers its files too: check each tensor against its listing.
            listed = {t["name"]: t["digest"] for layer in detail["layers"] for t in layer["tensors"]}
            for name, start, end in layout.tensors:
                if listed.get(name) != _tensors.digest(layout.view(start, end)):
                    raise GraftError(f"the download of {exact}: tensor {name} does not match its digest", kind="damage")
            if len(listed) != len(layout.tensors):
                raise GraftError(f"the download of {exact} holds {len(layout.tensors)} tensors, not {len(listed)}", kind="damage")
        else:
            _verified(exact, layout, expected)
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


def _proposed(spans: list[tuple[str, Any, int, int]]) -> list[dict[str, Any]]:
    return [{"name": name, "digest": _tensors.digest(layout.view(start, end)), "length": end - start}
            for name, layout, start, end in spans]


def _stay_in_eval(self: Any, mode: bool = True) -> Any:
    """``train()`` of a module the manifest freezes whole: it stays in eval mode."""
    return self


def _is_peft(source: Any) -> bool:
    """A PEFT model (``PeftModel`` and its task subclasses), without importing peft."""
    return hasattr(source, "peft_config") and hasattr(source, "save_pretrained") and hasattr(source, "get_base_model")


def _is_directory(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and os.path.isdir(source)


def _read_directory(source: Any, exclude: Iterable[str]) -> _tensors.Directory:
    try:
        return _tensors.read_directory(source, tuple([exclude] if isinstance(exclude, str) else exclude))
    except ValueError as error:
        raise InvalidInput(str(error), kind="invalid_input") from error


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
