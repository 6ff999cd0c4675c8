"""The embedded default dataset: procedurally rendered images in the CIFAR-100 schema.

Every class is a *combination* of shared visual building blocks:

* a **shape** (circle, ring, square, diamond, triangle, hexagon, cross, crescent, bar, arc),
* a **fill texture** inside the shape (solid, stripes, dots, checks, waves, grid, concentric rings),
* a **palette** (the two colours the fill texture alternates between),
* a **background texture** (plain gradient, stripes, dots, checks, grid, blotches).

The same blocks recur in many classes, so features learned on some classes (oriented edges,
texture frequencies, corners, colour contrasts) help on the others, which is what a learngene needs.
Inside a class every image gets a random position, scale, rotation, texture phase/frequency/angle,
colour jitter, a random background colour pair, random clutter strokes and pixel noise. The
background colours are *not* part of the class, and palettes are shared by many classes, so mean
colour says little about the class: a linear classifier on raw pixels does poorly while a small
convnet does well (see ``benchmarks/data_linear_vs_cnn.py``).

Rendering is vectorised numpy over all images of a class (no per-pixel Python loops), and the whole
dataset is deterministic given the seed: same arguments, same bytes. The class definitions depend on
``(seed, num_classes)``; the pixels of a class on its definition, ``(seed, class id, split)`` and
``image_size`` (images are rendered in fixed chunks of 100, so raising the per-class count keeps all
complete chunks of 100 of the smaller count).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..io import atomic_path, write_json_atomic

#: Bumped whenever the rendered pixels or class definitions change; part of every cache key.
GENERATOR_VERSION = "procedural-v1"

SHAPES: tuple[str, ...] = (
    "circle",
    "ring",
    "square",
    "diamond",
    "triangle",
    "hexagon",
    "cross",
    "crescent",
    "bar",
    "arc",
)
FILLS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered", "wavy", "gridded", "ringed")
BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "dots", "checks", "grid", "blotches")
# name -> (main colour, secondary colour), RGB in [0, 1]
PALETTES: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "red": ((0.90, 0.12, 0.10), (1.00, 0.85, 0.20)),
    "blue": ((0.10, 0.25, 0.90), (0.85, 0.95, 1.00)),
    "green": ((0.10, 0.70, 0.20), (0.05, 0.15, 0.05)),
    "purple": ((0.55, 0.15, 0.75), (1.00, 0.55, 0.10)),
    "orange": ((1.00, 0.50, 0.05), (0.10, 0.10, 0.40)),
    "teal": ((0.05, 0.65, 0.65), (0.95, 0.30, 0.55)),
    "yellow": ((0.95, 0.90, 0.10), (0.40, 0.05, 0.45)),
    "white": ((0.95, 0.95, 0.95), (0.20, 0.20, 0.20)),
}
_PALETTE_NAMES = tuple(PALETTES)
_MAX_CLASSES = len(SHAPES) * len(FILLS) * len(PALETTES) * len(BACKGROUNDS)

DEFAULT_CACHE_ENV = "LEARNGENE_HF_CACHE"
_CHUNK = 100  # images rendered per call; part of the generator (changing it changes the pixels)


@dataclass(frozen=True)
class ProceduralClass:
    """Definition of one procedural class: indices into SHAPES, FILLS, palette names, BACKGROUNDS."""

    shape: int
    fill: int
    palette: int
    background: int

    @property
    def name(self) -> str:
        """Descriptive class name, e.g. ``"red_triangle_striped_on_dots"``."""
        return (
            f"{_PALETTE_NAMES[self.palette]}_{SHAPES[self.shape]}_{FILLS[self.fill]}_on_{BACKGROUNDS[self.background]}"
        )


def class_definitions(num_classes: int = 100, seed: int = 0) -> list[ProceduralClass]:
    """Choose ``num_classes`` distinct attribute combinations, each attribute value used evenly.

    Every shape, fill, palette and background appears in about ``num_classes / len(values)``
    classes, so the building blocks are shared widely between classes.
    """
    if not 1 <= num_classes <= _MAX_CLASSES:
        raise ConfigError(f"num_classes={num_classes} is out of range: use 1..{_MAX_CLASSES}.")
    rng = np.random.default_rng([seed, 7919])
    sizes = (len(SHAPES), len(FILLS), len(PALETTES), len(BACKGROUNDS))
    columns = []
    for size in sizes:
        base = np.tile(np.arange(size), -(-num_classes // size))[:num_classes]
        columns.append(rng.permutation(base))
    combos = np.stack(columns, axis=1)
    # Repair duplicate combinations by swapping one attribute with another class (keeps balance).
    for _ in range(10_000):
        _, first, counts = np.unique(combos, axis=0, return_index=True, return_counts=True)
        dup_rows = [i for i in range(num_classes) if i not in set(first.tolist())]
        if not dup_rows:
            break
        row = dup_rows[0]
        col = int(rng.integers(4))
        other = int(rng.integers(num_classes))
        combos[[row, other], col] = combos[[other, row], col]
    else:  # pragma: no cover - would need an absurd num_classes close to the maximum
        raise ConfigError(f"could not choose {num_classes} distinct classes; use fewer classes.")
    return [ProceduralClass(*map(int, row)) for row in combos]


def class_names(num_classes: int = 100, seed: int = 0) -> list[str]:
    """The descriptive names of the procedural classes, in label order."""
    return [c.name for c in class_definitions(num_classes, seed)]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _soft(x: np.ndarray, sharpness: float = 3.0) -> np.ndarray:
    """Map a roughly [-1, 1] wave to [0, 1] with soft (anti-aliased) transitions."""
    return np.clip(0.5 + sharpness * x, 0.0, 1.0)


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance-like field (negative inside) of a unit-size shape in local coordinates."""
    r = np.sqrt(u * u + v * v)
    if shape == "circle":
        return r - 1.0
    if shape == "ring":
        return np.abs(r - 0.72) - 0.28
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8
    if shape == "diamond":
        return (np.abs(u) + np.abs(v)) / np.sqrt(2.0) - 0.72
    if shape in ("triangle", "hexagon"):
        count, inradius, start = (3, 0.55, -np.pi / 2) if shape == "triangle" else (6, 0.85, 0.0)
        d = None
        for k in range(count):
            a = start + 2 * np.pi * k / count
            dk = np.cos(a) * u + np.sin(a) * v - inradius
            d = dk if d is None else np.maximum(d, dk)
        return d
    if shape == "cross":
        arm_a = np.maximum(np.abs(u) - 0.3, np.abs(v) - 1.0)
        arm_b = np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.3)
        return np.minimum(arm_a, arm_b)
    if shape == "crescent":
        cut = np.sqrt((u - 0.45) ** 2 + (v + 0.1) ** 2)
        return np.maximum(r - 1.0, 0.8 - cut)
    if shape == "bar":
        return np.maximum(np.abs(u) - 1.05, np.abs(v) - 0.3)
    if shape == "arc":
        return np.maximum(np.abs(r - 0.75) - 0.22, -v - 0.15)
    raise ConfigError(f"unknown shape {shape!r}")  # pragma: no cover


def _texture(
    kind: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator, n: int, period: tuple[float, float]
) -> np.ndarray:
    """Texture value in [0, 1] for ``n`` images; ``u, v`` are [n, S, S] coordinates.

    ``period`` is the range of the texture period in the units of ``u, v``; the period, the
    texture angle and the phase are drawn per image.
    """
    shape = (n, 1, 1)
    freq = (2 * np.pi / rng.uniform(*period, size=shape)).astype(np.float32)
    angle = rng.uniform(0, np.pi, size=shape).astype(np.float32)
    phase_a = rng.uniform(0, 2 * np.pi, size=shape).astype(np.float32)
    phase_b = rng.uniform(0, 2 * np.pi, size=shape).astype(np.float32)
    ca, sa = np.cos(angle), np.sin(angle)
    a = (ca * u + sa * v) * freq
    b = (-sa * u + ca * v) * freq
    if kind in ("solid", "plain"):
        # A soft gradient so "plain" is not a constant.
        return np.clip(0.5 + 0.25 * a / freq, 0.0, 1.0) * 0.35
    if kind in ("striped", "stripes"):
        return _soft(np.sin(a + phase_a))
    if kind in ("dotted", "dots"):
        da = np.sin(0.5 * (a + phase_a))
        db = np.sin(0.5 * (b + phase_b))
        return _soft(0.55 - np.sqrt(da * da + db * db), 4.0)
    if kind in ("checkered", "checks"):
        return _soft(np.sin(0.7 * (a + phase_a)) * np.sin(0.7 * (b + phase_b)), 6.0)
    if kind == "wavy":
        return _soft(np.sin(a + 1.6 * np.sin(0.6 * b + phase_b) + phase_a))
    if kind in ("gridded", "grid"):
        line_a = np.cos(0.8 * (a + phase_a))
        line_b = np.cos(0.8 * (b + phase_b))
        return _soft(np.maximum(line_a, line_b) - 0.75, 4.0)
    if kind == "ringed":
        r = np.sqrt(u * u + v * v) * freq
        return _soft(np.sin(1.3 * r + phase_a))
    if kind == "blotches":
        # Sum of a few random low-frequency waves: irregular blobs.
        acc = np.zeros(np.broadcast_shapes(u.shape, v.shape, shape), dtype=np.float32)
        for _ in range(3):
            ang = rng.uniform(0, 2 * np.pi, size=shape).astype(np.float32)
            ph = rng.uniform(0, 2 * np.pi, size=shape).astype(np.float32)
            acc += np.sin((np.cos(ang) * u + np.sin(ang) * v) * freq * 0.5 + ph)
        return _soft(acc / 2.0, 2.0)
    raise ConfigError(f"unknown texture {kind!r}")  # pragma: no cover


def _jitter_colour(rng: np.random.Generator, base: Sequence[float], n: int, amount: float) -> np.ndarray:
    """[n, 1, 1, 3] colours: ``base`` with per-channel jitter and a per-image brightness change."""
    col = np.asarray(base, dtype=np.float32)[None, :] + rng.normal(0, amount, size=(n, 3))
    col *= rng.uniform(0.75, 1.15, size=(n, 1))
    return np.clip(col, 0.0, 1.0).astype(np.float32)[:, None, None, :]


def render_class(definition: ProceduralClass, count: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``count`` images of one class. Returns uint8 ``[count, image_size, image_size, 3]``."""
    n, size = count, image_size
    if n == 0:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    px = 2.0 / size  # one pixel in normalized coordinates ([-1, 1] spans the image)
    grid = (np.arange(size, dtype=np.float32) + 0.5) * px - 1.0
    x = grid[None, None, :]
    y = grid[None, :, None]
    col = lambda values: values.astype(np.float32).reshape(n, 1, 1)  # noqa: E731

    # Background: two random colours (not class specific) and the class's background texture.
    bg_kind = BACKGROUNDS[definition.background]
    bg_t = _texture(bg_kind, x, y, rng, n, period=(0.3, 0.55))
    bg_a = np.clip(rng.uniform(0.0, 1.0, size=(n, 1, 1, 3)), 0, 1).astype(np.float32)
    bg_b = np.clip(bg_a + rng.uniform(-0.45, 0.45, size=(n, 1, 1, 3)), 0, 1).astype(np.float32)
    image = bg_a + (bg_b - bg_a) * bg_t[..., None]  # [n, S, S, 3] float32

    # Foreground shape: random position, scale and rotation.
    cx = col(rng.uniform(-0.38, 0.38, size=n))
    cy = col(rng.uniform(-0.38, 0.38, size=n))
    scale = col(rng.uniform(0.42, 0.75, size=n))
    theta = col(rng.uniform(0, 2 * np.pi, size=n))
    aspect = col(rng.uniform(0.85, 1.15, size=n))
    ct, st = np.cos(theta), np.sin(theta)
    dx, dy = x - cx, y - cy
    u = (ct * dx + st * dy) / (scale * aspect)
    v = (-st * dx + ct * dy) * aspect / scale
    dist = _shape_distance(SHAPES[definition.shape], u, v)
    mask = np.clip(0.5 - dist * scale / px, 0.0, 1.0)  # ~1 pixel soft edge

    main, second = PALETTES[_PALETTE_NAMES[definition.palette]]
    fg_a = _jitter_colour(rng, main, n, 0.10)
    fg_b = _jitter_colour(rng, second, n, 0.10)
    fill_t = _texture(FILLS[definition.fill], u, v, rng, n, period=(0.55, 0.85))
    if FILLS[definition.fill] == "solid":
        fill_t = fill_t * 0.5  # a faint shading only: a solid shape is mostly the main colour
    fg = fg_a + (fg_b - fg_a) * fill_t[..., None]
    # A thin dark or light outline makes the silhouette visible on any background.
    outline = np.clip(1.0 - np.abs(dist * scale / px) / 0.9, 0.0, 1.0) * col(rng.uniform(0.0, 0.6, size=n))
    fg -= image
    fg *= mask[..., None]
    image += fg
    image += (col(rng.uniform(0, 1, size=n))[..., None] - image) * outline[..., None]

    # Clutter: up to three thin random strokes over the whole image.
    for _ in range(3):
        active = col((rng.random(n) < 0.6).astype(np.float32))
        p0 = rng.uniform(-1, 1, size=(2, n)).astype(np.float32)
        p1 = p0 + rng.normal(0, 0.6, size=(2, n)).astype(np.float32)
        ax, ay, bx, by = (col(p) for p in (p0[0], p0[1], p1[0], p1[1]))
        ex, ey = bx - ax, by - ay
        t = np.clip(((x - ax) * ex + (y - ay) * ey) / (ex * ex + ey * ey + 1e-6), 0.0, 1.0)
        d = np.sqrt((x - ax - t * ex) ** 2 + (y - ay - t * ey) ** 2)
        width = col(rng.uniform(0.5, 1.2, size=n)) * px
        stroke = np.clip(1.0 - (d - width) / px, 0.0, 1.0) * active
        stroke_col = rng.uniform(0, 1, size=(n, 1, 1, 3)).astype(np.float32)
        image += (stroke_col - image) * stroke[..., None]

    # Global photometric jitter and sensor noise.
    contrast = rng.uniform(0.7, 1.2, size=(n, 1, 1, 1)).astype(np.float32)
    brightness = rng.uniform(-0.1, 0.1, size=(n, 1, 1, 1)).astype(np.float32)
    image -= 0.5
    image *= contrast
    image += 0.5 + brightness
    noise = rng.standard_normal(size=image.shape, dtype=np.float32)
    noise *= 0.04
    image += noise
    np.clip(image, 0.0, 1.0, out=image)
    image *= 255.0
    image += 0.5
    return image.astype(np.uint8)


def _validate_generation_args(num_classes: int, train_per_class: int, test_per_class: int, image_size: int) -> None:
    for name, value, low in (
        ("num_classes", num_classes, 1),
        ("train_per_class", train_per_class, 1),
        ("test_per_class", test_per_class, 0),
        ("image_size", image_size, 8),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name}={value!r} is invalid: it must be an integer >= {low}.")
    if num_classes > _MAX_CLASSES:
        raise ConfigError(
            f"num_classes={num_classes} is too large: the procedural dataset has at most "
            f"{_MAX_CLASSES} distinct classes."
        )
    needed = num_classes * (train_per_class + test_per_class) * image_size * image_size * 3  # uint8 pixels
    memory = _physical_memory()
    if memory and needed > 0.8 * memory:
        raise ConfigError(
            f"{num_classes} classes of {train_per_class} + {test_per_class} images of {image_size}x{image_size} "
            f"would take {needed / 2**30:.1f} GiB, more than this machine's {memory / 2**30:.1f} GiB of memory can "
            "hold; use fewer images per class (--images-per-class, --test-per-class) or a smaller image size."
        )


def _physical_memory() -> int | None:
    """Bytes of physical memory of this machine (``None`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def generate_arrays(
    seed: int = 0, num_classes: int = 100, train_per_class: int = 600, test_per_class: int = 100, image_size: int = 32
) -> dict[str, np.ndarray | list[str]]:
    """Render the procedural dataset into memory (no cache).

    Returns a dict with ``train_images`` uint8 ``[num_classes*train_per_class, H, W, 3]``,
    ``train_labels`` int64 ``[N]``, ``test_images``, ``test_labels`` and ``class_names``.
    Images are ordered by class; within a class, by draw order.
    """
    _validate_generation_args(num_classes, train_per_class, test_per_class, image_size)
    defs = class_definitions(num_classes, seed)
    out: dict[str, np.ndarray | list[str]] = {"class_names": [d.name for d in defs]}
    for split_id, (split, per_class) in enumerate((("train", train_per_class), ("test", test_per_class))):
        images = np.empty((num_classes * per_class, image_size, image_size, 3), dtype=np.uint8)
        for c, definition in enumerate(defs):
            # Small chunks keep the float32 work arrays in the CPU cache (about 2x faster).
            for chunk, start in enumerate(range(0, per_class, _CHUNK)):
                count = min(_CHUNK, per_class - start)
                rng = np.random.default_rng([seed, c, split_id, chunk, 104729])
                offset = c * per_class + start
                images[offset : offset + count] = render_class(definition, count, image_size, rng)
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    return out


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$LEARNGENE_HF_CACHE`` if set, else ``~/.cache/learngene_hf``."""
    env = os.environ.get(DEFAULT_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "learngene_hf"


def generation_key(seed: int, num_classes: int, train_per_class: int, test_per_class: int, image_size: int) -> str:
    """Cache folder name: readable arguments plus a hash of all arguments and the generator version."""
    args = {
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_classes": int(num_classes),
        "train_per_class": int(train_per_class),
        "test_per_class": int(test_per_class),
        "image_size": int(image_size),
    }
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    return f"{GENERATOR_VERSION}-seed{seed}-c{num_classes}-{train_per_class}x{test_per_class}-{image_size}px-{digest}"


def _cache_folder(cache_dir: str | os.PathLike | None, key: str) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "procedural" / key


def load_or_generate_arrays(
    seed: int = 0,
    num_classes: int = 100,
    train_per_class: int = 600,
    test_per_class: int = 100,
    image_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray | list[str]]:
    """Like :func:`generate_arrays`, but read from / written to the on-disk cache.

    The cache file is ``<cache>/procedural/<key>/arrays.safetensors`` (no pickles), written
    atomically, so concurrent processes at worst both generate and one rename wins.
    """
    from safetensors.numpy import load_file, save_file

    _validate_generation_args(num_classes, train_per_class, test_per_class, image_size)
    key = generation_key(seed, num_classes, train_per_class, test_per_class, image_size)
    folder = _cache_folder(cache_dir, key)
    path = folder / "arrays.safetensors"
    if path.is_file():
        try:
            arrays = load_file(str(path))
            names = json.loads((folder / "class_names.json").read_text(encoding="utf-8"))
            return {**arrays, "class_names": names}
        except Exception:  # corrupt cache entry: regenerate below
            pass
    arrays = generate_arrays(seed, num_classes, train_per_class, test_per_class, image_size)
    try:
        write_json_atomic(folder / "class_names.json", arrays["class_names"])
        with atomic_path(path) as tmp:
            save_file(
                {k: np.ascontiguousarray(v) for k, v in arrays.items() if k != "class_names"},
                str(tmp),
                metadata={"generator": GENERATOR_VERSION, "key": key},
            )
    except OSError:
        pass  # a read-only cache must not stop the run; the arrays are in memory
    return arrays


def _png_bytes(images: np.ndarray) -> list[dict]:
    from PIL import Image as PILImage

    out = []
    for img in images:
        buf = io.BytesIO()
        PILImage.fromarray(img).save(buf, format="PNG", compress_level=1)
        out.append({"bytes": buf.getvalue(), "path": None})
    return out


def arrays_to_dataset_dict(arrays: dict) -> "datasets.DatasetDict":  # noqa: F821
    """Wrap rendered arrays in a ``DatasetDict`` with the CIFAR-100 schema (``img``, ``fine_label``)."""
    import datasets

    features = datasets.Features(
        {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=list(arrays["class_names"]))}
    )
    splits = {}
    for split in ("train", "test"):
        splits[split] = datasets.Dataset.from_dict(
            {"img": _png_bytes(arrays[f"{split}_images"]), "fine_label": arrays[f"{split}_labels"].tolist()},
            features=features,
            split=datasets.Split(split),
        )
    return datasets.DatasetDict(splits)


def make_procedural_dataset(
    seed: int = 0,
    num_classes: int = 100,
    train_per_class: int = 600,
    test_per_class: int = 100,
    image_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
) -> "datasets.DatasetDict":  # noqa: F821
    """The embedded default dataset as a ``datasets.DatasetDict`` (``train``/``test``).

    Schema as CIFAR-100: ``img`` (``datasets.Image``, RGB ``image_size`` x ``image_size``) and
    ``fine_label`` (``datasets.ClassLabel`` with descriptive names such as
    ``"red_triangle_striped_on_dots"``). The default (100 classes, 600 train / 100 test per class,
    32x32) renders in seconds; the result is cached with ``save_to_disk`` under
    ``cache_dir`` (default ``$LEARNGENE_HF_CACHE`` or ``~/.cache/learngene_hf``), keyed by every
    argument and the generator version, and later calls memory-map it.
    """
    import datasets

    _validate_generation_args(num_classes, train_per_class, test_per_class, image_size)
    key = generation_key(seed, num_classes, train_per_class, test_per_class, image_size)
    folder = _cache_folder(cache_dir, key) / "dataset"
    if (folder / "dataset_dict.json").is_file():
        try:
            return datasets.load_from_disk(str(folder))
        except Exception:  # corrupt entry: rebuild below
            shutil.rmtree(folder, ignore_errors=True)
    arrays = load_or_generate_arrays(seed, num_classes, train_per_class, test_per_class, image_size, cache_dir)
    dsd = arrays_to_dataset_dict(arrays)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dataset.", dir=folder.parent))
        try:
            dsd.save_to_disk(str(tmp))
            try:
                os.replace(tmp, folder)
            except OSError:
                if not (folder / "dataset_dict.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return datasets.load_from_disk(str(folder))
    except OSError:
        return dsd
