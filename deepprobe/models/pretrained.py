"""Pretrained weights by name, through the libraries' own caches: timm (Hugging Face hub cache), torchvision
(torch hub cache) and Hugging Face hub models.

Cache first: when the files are in the cache they are loaded without any network access (the hub client would
otherwise ask the server whether a cached file changed). When they are not: online, the library downloads them
with its own progress bar; offline (HF_HUB_OFFLINE, `--offline`) or when the download fails, one line names the
model, the cache folder looked in, and `--weights FILE` as the alternative. Where the folders are is read from
the environment at each call (HF_HUB_CACHE / HF_HOME, TORCH_HOME), so a changed environment is honoured.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from torch import nn

from ..errors import DeepprobeError

Announce = Callable[[str], None]
_TRUE = {"1", "on", "yes", "true"}
# what an hf:ORG/NAME download fetches: configs, processor/tokenizer files and safetensors weights (the other
# frameworks' copies of the weights are skipped); repos without safetensors get their PyTorch files next
HF_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
HF_TORCH_FILES = ["pytorch_model*.bin"]


def is_offline(explicit: bool | None = None) -> bool:
    """True when downloads are off: `--offline` / offline=True, or HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set."""
    if explicit is not None:
        return explicit
    # the hub client reads the same variables (its constants); importing it would cost a bundled-model start-up
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache as the hub client would pick it from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "huggingface" / "hub"


def torch_cache_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints: where torch.hub (torchvision's weights enums) keeps downloads."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


LOCAL_FILE = "give a local file with --weights FILE (or --random-init for random weights)"
LOCAL_FOLDER = "give a folder saved with save_pretrained() as hf:DIR"


def _missing(what: str, where: Path, reason: str, instead: str = LOCAL_FILE) -> DeepprobeError:
    return DeepprobeError(f"{what}: pretrained weights are not in the cache ({where}) and {reason}; {instead}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _unreachable(url: str) -> str | None:
    """Why the host of `url` cannot be reached (one quick connection attempt), or None. Without it the hub client
    retries a dead network for most of a minute. Behind a proxy the proxy decides: no probe then."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    import socket

    parts = urlparse(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 443), timeout=5).close()
    except OSError as exc:
        return f"no network: cannot reach {parts.hostname} ({_first_line(exc)})"
    return None


@contextlib.contextmanager
def _download(what: str, where: Path, offline: bool, announce: Announce | None, url: str,
              instead: str = LOCAL_FILE) -> Iterator[None]:
    """Around a library call that downloads from `url`'s host: refuse when offline or when the host cannot be
    reached, announce it, and turn a failure into one line."""
    if offline:
        raise _missing(what, where, "downloads are off (HF_HUB_OFFLINE / --offline)", instead)
    reason = _unreachable(url)
    if reason:
        raise _missing(what, where, reason, instead)
    if announce:
        announce(f"downloading the pretrained weights of {what} into {where}")
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = are_progress_bars_disabled()
    enable_progress_bars()  # the libraries' own bars (hf.py turns transformers' loading bars off)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torch.hub prints "Downloading: ..." on stdout (--json's)
            yield
    except DeepprobeError:
        raise
    except Exception as exc:  # noqa: BLE001 - no network, a refused connection, a missing repository...
        raise _missing(what, where, f"the download failed ({_first_line(exc)})", instead) from exc
    finally:
        if quiet:
            disable_progress_bars()


@contextlib.contextmanager
def _cached_file(what: str, file: str | Path) -> Iterator[None]:
    """A cached file the library cannot load (truncated, not weights, pickled objects): one line naming it."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - whatever the library raises, the user needs the file's name
        raise DeepprobeError(f"{what}: cannot load the cached weights {file}: {_first_line(exc)} (delete the "
                             "file to download it again, or give --weights FILE)") from exc


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    """torchvision's builders call torch.hub.load_state_dict_from_url with weights_only=False: force the safe
    loader (torch reads TORCH_FORCE_WEIGHTS_ONLY_LOAD at each torch.load)."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


# ----- timm --------------------------------------------------------------------------------------------------
def timm_cfg(name: str):
    """timm's pretrained config for NAME or NAME.TAG (the default tag when none is given), or a clear error."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        arch, _, tag = name.partition(".")
        tags = timm.list_pretrained(f"{arch}.*")
        if tags:
            raise DeepprobeError(f"timm:{name}: timm has no tag {tag!r} for {arch}; its pretrained tags: "
                                 + ", ".join(tags[:8]) + (" ..." if len(tags) > 8 else ""))
        raise DeepprobeError(f"timm:{name}: timm publishes no pretrained weights for {arch}; give --weights FILE "
                             "(or --random-init for random weights)")
    return cfg


def _timm_cached(cfg) -> str | None:
    """The cached weights file timm would load for this config, or None."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        from timm.models._hub import _get_safe_alternatives

        repo, _, revision = cfg.hf_hub_id.partition("@")
        wanted = cfg.hf_hub_filename or "pytorch_model.bin"
        names = [wanted] if wanted.endswith(".safetensors") else [*_get_safe_alternatives(wanted), wanted]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir(), revision=revision or None)
            if isinstance(found, str):
                return found
        return None
    if cfg.url:
        file = torch_cache_dir() / os.path.basename(urlparse(cfg.url).path)
        return str(file) if file.is_file() else None
    return None


def timm_pretrained(name: str, offline: bool, announce: Announce | None = None) -> tuple[nn.Module, str]:
    """(network with timm's pretrained weights, what was loaded) through timm's own loading."""
    import timm

    cfg = timm_cfg(name)
    full = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    cached = _timm_cached(cfg)
    if cached:  # timm's `file` override: its own loader (filters, safe torch.load) on the cached file
        with _cached_file(f"timm:{full}", cached):
            net = timm.create_model(full, pretrained=True, pretrained_cfg_overlay={"file": cached})
    else:
        where = hub_folder(cfg.hf_hub_id.partition("@")[0]) if cfg.hf_hub_id else torch_cache_dir()
        with _download(f"timm:{full}", where, offline, announce, _hub_endpoint() if cfg.hf_hub_id else cfg.url):
            net = timm.create_model(full, pretrained=True, cache_dir=hf_cache_dir() if cfg.hf_hub_id else None)
    source = cfg.hf_hub_id or cfg.url
    return net, f"pretrained timm {full} ({source})"


def timm_labels(net: nn.Module) -> list[str] | None:
    """Class names from the network's pretrained config: its label names, else the ImageNet subset its class
    count identifies (timm's own table); None when neither applies (a head-less or re-headed network)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    from .labels import imagenet_labels

    cfg = getattr(net, "pretrained_cfg", None) or {}
    classes = getattr(net, "num_classes", None)
    if cfg.get("label_names") and len(cfg["label_names"]) == classes:
        return list(cfg["label_names"])
    offset = int(cfg.get("label_offset") or 0)
    subset = infer_imagenet_subset({"num_classes": (classes or 0) - offset})
    if subset is None or not classes:
        return None
    # ImageNet-1k: torchvision's short names (same class order) are the names deepprobe takes everywhere
    names = imagenet_labels() if subset == "imagenet-1k" else \
        [d.split(",")[0] for d in ImageNetInfo(subset).label_descriptions()]
    return ["background"] * offset + names


# ----- torchvision -------------------------------------------------------------------------------------------
def torchvision_weights(name: str, choice: str | None = None):
    """The weights enum member for `torchvision:NAME[:ENUM]` (DEFAULT when none is named), or None when the
    builder publishes no weights and none was asked for."""
    from torchvision import models

    try:
        enum = models.get_model_weights(name)
    except (ValueError, KeyError):
        if choice:
            raise DeepprobeError(f"torchvision:{name} publishes no weights; {choice!r} does not exist") from None
        return None
    key = (choice or "DEFAULT").split(".")[-1]
    try:
        return enum[key]
    except KeyError:
        names = ", ".join(m.name for m in enum)
        raise DeepprobeError(f"torchvision:{name} has no weights {choice!r}; choose one of {names}") from None


def torchvision_file(weights) -> Path:
    """Where torch.hub keeps (or will keep) the weights enum's file."""
    return torch_cache_dir() / os.path.basename(urlparse(weights.url).path)


def torchvision_pretrained(name: str, weights, offline: bool, announce: Announce | None = None,
                           **kwargs) -> tuple[nn.Module, str]:
    """(network built with the weights enum by torchvision's builder, what was loaded)."""
    from torchvision import models

    file = torchvision_file(weights)
    with _weights_only():
        if file.is_file():
            with _cached_file(f"torchvision:{name} ({weights})", file):
                net = models.get_model(name, weights=weights, **kwargs)
        else:
            with _download(f"torchvision:{name} ({weights})", file.parent, offline, announce, weights.url):
                net = models.get_model(name, weights=weights, **kwargs)
    return net, f"pretrained {weights} ({weights.url})"


def torchvision_preprocess(weights, default):
    """The Preprocess a weights enum's transforms describe (resize, crop, mean, std, interpolation)."""
    from .preprocess import Preprocess

    if weights is None:
        return default
    tf = weights.transforms()
    crop = getattr(tf, "crop_size", None)
    resize = getattr(tf, "resize_size", None)
    mode = getattr(tf, "interpolation", None)
    return Preprocess(crop=(int(crop[0]), int(crop[-1])) if crop else default.crop,
                      resize=int(resize[0]) if resize else None if crop else default.resize,
                      mean=tuple(getattr(tf, "mean", default.mean)), std=tuple(getattr(tf, "std", default.std)),
                      interpolation=mode.value if mode is not None else default.interpolation)


# ----- Hugging Face hub --------------------------------------------------------------------------------------
def hf_snapshot(repo_id: str, offline: bool, announce: Announce | None = None) -> tuple[Path, str]:
    """(local snapshot folder, what was loaded) for a hub id ORG/NAME[@REVISION]: the cached snapshot, else a
    download of its configs and weights."""
    from huggingface_hub import snapshot_download

    repo, _, revision = repo_id.partition("@")
    cache = hf_cache_dir()
    try:
        folder = snapshot_download(repo, revision=revision or None, cache_dir=cache, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and kin): download below
        with _download(f"hf:{repo_id}", hub_folder(repo), offline, announce, _hub_endpoint(), LOCAL_FOLDER):
            folder = snapshot_download(repo, revision=revision or None, cache_dir=cache, allow_patterns=HF_FILES)
            if not any(Path(folder).glob("*.safetensors")):
                folder = snapshot_download(repo, revision=revision or None, cache_dir=cache,
                                           allow_patterns=HF_TORCH_FILES)
    return Path(folder), f"pretrained {repo_id} (Hugging Face hub, {Path(folder).name[:12]})"


# ----- what is cached ----------------------------------------------------------------------------------------
def cached_models() -> list[dict]:
    """Pretrained names whose files are in the local caches: {"spec", "cache", "path"} per name."""
    rows = []
    cache = hf_cache_dir()
    if cache.is_dir():
        from huggingface_hub import scan_cache_dir

        try:
            info = scan_cache_dir(cache)
        except Exception:  # noqa: BLE001 - an unreadable cache lists nothing rather than failing the command
            info = None
        for repo in sorted(info.repos if info else [], key=lambda r: r.repo_id):
            if repo.repo_type != "model" or not any(r.files for r in repo.revisions):
                continue
            org, _, rest = repo.repo_id.partition("/")
            spec = f"timm:{rest}" if org == "timm" else f"hf:{repo.repo_id}"
            rows.append({"spec": spec, "cache": "Hugging Face hub", "path": str(repo.repo_path)})
    checkpoints = torch_cache_dir()
    files = {p.name: p for p in checkpoints.glob("*")} if checkpoints.is_dir() else {}
    if files:
        from torchvision import models

        for name in models.list_models():
            try:
                enum = models.get_model_weights(name)
            except (ValueError, KeyError):
                continue
            for member in enum:
                file = files.get(os.path.basename(urlparse(member.url).path))
                if file is not None:
                    rows.append({"spec": f"torchvision:{name}:{member.name}", "cache": "torch hub",
                                 "path": str(file)})
    return rows
