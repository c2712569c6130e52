"""Checkpoints that a crash cannot corrupt.

    checkpoints/step-00001000/model.safetensors   weights (tied weights stored once)
                              state.pt            optimizer, scaler, step, data position, RNG, memory
                              config.json, meta.json
    checkpoints/last -> step-00001000             symlinks, switched by an atomic rename
    checkpoints/best -> step-00000800

A save writes a whole folder under a temporary name, renames it into place, then
repoints the symlink with os.replace; until that instant `last` names the previous
complete checkpoint. state.pt holds only tensors, numbers, strings, lists and dicts,
and is read with torch.load(weights_only=True): nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from txl.core.errors import TxlError
from txl.core.io import FILE_MODE, atomic_path, atomic_write_json, owner_tag, remove_stale


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_tensors(obj: Any, path: str | Path) -> None:
    """torch.save through a file Python opened: a full disk is then an OSError (ENOSPC), not torch's bare
    'unexpected pos' RuntimeError."""
    with open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch closing its archive after the OSError replaces it: raise the OSError
            cause = e.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from None


def save_checkpoint(
    root: str | Path,
    step: int,
    model: torch.nn.Module,
    state: dict,
    config: dict,
    meta: dict,
    names: tuple[str, ...] = ("last",),
) -> Path:
    """Write step `step` (if not already written) and point each of `names` at it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    folder = root / f"step-{step:08d}"
    if not (folder / "meta.json").exists():
        tmp = root / f".tmp-step-{step:08d}-{owner_tag()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            save_model(model, str(tmp / "model.safetensors"))
            save_tensors(state, tmp / "state.pt")
            atomic_write_json(tmp / "config.json", config)
            atomic_write_json(tmp / "meta.json", {**meta, "step": step})
            for f in tmp.iterdir():
                os.chmod(f, FILE_MODE)  # as the umask says (safetensors creates its file 0600)
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            shutil.rmtree(folder, ignore_errors=True)  # a folder left without meta.json by an earlier crash
            os.rename(tmp, folder)
            _fsync_dir(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:  # the same step again (the final evaluation after a scheduled save):
        # the weights are the same, the state may not be
        with atomic_path(folder / "state.pt") as tmp_state:
            save_tensors(state, tmp_state)
        atomic_write_json(folder / "meta.json", {**meta, "step": step})
    for name in names:
        link = root / f".{name}.link-{owner_tag()}"
        link.unlink(missing_ok=True)
        os.symlink(folder.name, link)
        os.replace(link, root / name)
    _fsync_dir(root)
    _prune(root)
    return folder


def clean_stale(root: Path) -> list[Path]:
    """Remove the temporary folders and links of saves that a dead process left unfinished."""
    return remove_stale(root, ".tmp-step-*") + remove_stale(root, ".*.link-*")


def _prune(root: Path) -> None:
    """Remove step folders that neither `last` nor `best` points at."""
    keep = {os.readlink(root / n) for n in ("last", "best") if (root / n).is_symlink()}
    for child in root.iterdir():
        if child.name.startswith("step-") and child.name not in keep and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)


def find_checkpoint(path: str | Path, name: str = "last") -> Path | None:
    """A checkpoint folder from a run folder, a checkpoints folder, or the checkpoint folder itself."""
    path = Path(path)
    for candidate in (path, path / name, path / "checkpoints" / name):
        if (candidate / "meta.json").exists() and (candidate / "model.safetensors").exists():
            return candidate.resolve()
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise TxlError(f"{path} is damaged (not JSON); the checkpoint cannot be read") from None
    if not isinstance(data, dict):
        raise TxlError(f"{path} is damaged (not a JSON object); the checkpoint cannot be read")
    return data


def read_config(folder: Path) -> dict:
    return _read_json(folder / "config.json")


def read_meta(folder: Path) -> dict:
    return _read_json(folder / "meta.json")


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def weights_dtype(folder: Path) -> torch.dtype | None:
    """The floating dtype the checkpoint's weights are stored in (None when it cannot tell): a model built to
    read them keeps it, so a float64 import evaluates in float64."""
    from safetensors import safe_open

    try:
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            kinds = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except Exception:  # unreadable: load_weights names the problem
        return None
    floats = [_SAFETENSORS_DTYPES[k] for k in sorted(kinds) if k in _SAFETENSORS_DTYPES]
    return floats[0] if len(floats) == 1 else None


def load_weights(model: torch.nn.Module, folder: Path, strict: bool = True, fresh: str | None = None) -> list[str]:
    """Read a checkpoint's weights into `model`; with `fresh`, parameters whose names contain it may be missing
    (they keep their initial values: a part the source never had). Returns the names so left."""
    path = folder / "model.safetensors"
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated or foreign file, or tensors whose shapes the config does not give
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise TxlError(f"cannot load {path} into the model its config.json describes ({first})") from None
    left = sorted(k for k in missing if fresh is not None and fresh in k)
    missing = [k for k in missing if k not in left]
    if strict and (missing or unexpected):
        raise TxlError(
            f"checkpoint {folder} does not fit this model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return left


def load_state(folder: Path) -> dict:
    try:
        return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt file or one holding pickled objects
        raise TxlError(
            f"cannot read {folder / 'state.pt'} as plain tensors ({type(e).__name__}); it is not a txl checkpoint"
        ) from None


def flatten_memory(mems_by_chunk: list) -> dict[str, torch.Tensor]:
    """Memory (per chunk, per layer, a LayerCache) as flat {'chunk.layer.key': tensor} for saving, the keys a
    layer's memory has always been saved under (LayerCache.to_dict)."""
    return {
        f"{c}.{layer}.{key}": t.detach().cpu()
        for c, mems in enumerate(mems_by_chunk)
        if mems is not None
        for layer, cache in enumerate(mems)
        for key, t in cache.to_dict().items()
    }


def unflatten_memory(flat: dict[str, torch.Tensor], chunks: int, n_layer: int, device: torch.device) -> list:
    """flatten_memory's output (of this or an earlier txl) read back as LayerCaches on `device`."""
    from txl.model.cache import LayerCache

    out: list = [None] * chunks
    for name, t in flat.items():
        c, layer, key = name.split(".", 2)
        c, layer = int(c), int(layer)
        if out[c] is None:
            out[c] = [{} for _ in range(n_layer)]
        out[c][layer][key] = t.to(device)
    return [None if chunk is None else [LayerCache.from_dict(d) for d in chunk] for chunk in out]
