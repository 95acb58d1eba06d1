"""The embedded synthetic dataset ``shapes``: geometric objects on cluttered backgrounds.

Each image holds one object whose class is its shape (``CLASS_NAMES``, in label order),
drawn with a random saturated colour, scale, rotation and position on a textured
background: a smooth two-colour gradient, low-frequency colour noise, a faint
sinusoidal grating, thin distractor strokes (line segments and arcs that are not class
shapes) and pixel noise. The object's ground-truth mask comes with every image.

Everything is rendered with tensor operations over coordinate grids, a chunk of images
at a time (loops run over chunks, classes and strokes only), on the CPU with one seeded
``torch.Generator``: the same arguments give bit-identical tensors on any machine and
with any number of threads.

Shapes are implicit inside-tests on the object's local coordinates ``(u, v)`` (rotated,
translated, and divided by the object radius, so every shape fits in the unit disk).
The object's coverage is supersampled 3×3 per pixel; the mask is coverage > 1/2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "heart",
    "arrow",
    "hourglass",
)

SUPERSAMPLE = 3  # odd, so coverage is never exactly 1/2
RADIUS_RANGE = (0.2, 0.35)  # object radius (of its bounding disk) / image side
PIXEL_BUDGET = 512 * 32 * 32  # images per chunk = PIXEL_BUDGET // (H * W)
MAX_STROKES = 5
MIN_STROKES = 2
COLOUR_CANDIDATES = 6  # the object colour is the candidate farthest from the background


# --------------------------------------------------------------------------- shapes


def _star_polygon(u: torch.Tensor, v: torch.Tensor, points: int, inner: float) -> torch.Tensor:
    """Inside a regular star polygon: outer vertices on the unit circle (one on +u), inner
    vertices at radius ``inner``. Covers the regular ``points``-gon when ``inner`` equals
    ``cos(pi / points)``."""
    sector = 2 * math.pi / points
    r = torch.hypot(u, v)
    a = torch.remainder(torch.atan2(v, u), sector)
    a = torch.minimum(a, sector - a)  # fold into [0, pi / points]
    x, y = r * torch.cos(a), r * torch.sin(a)
    ix, iy = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    # the boundary in this sector is the segment from (1, 0) to (ix, iy)
    return (x - 1) * iy + y * (1 - ix) <= 0


def _circle(u, v):
    return u * u + v * v <= 0.85**2


def _square(u, v):
    return _star_polygon(u, v, 4, math.cos(math.pi / 4))


def _triangle(u, v):
    return _star_polygon(u, v, 3, math.cos(math.pi / 3))


def _star(u, v):
    return _star_polygon(u, v, 5, 0.42)


def _cross(u, v):
    au, av = u.abs(), v.abs()
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 0.92**2) & (r2 >= 0.52**2)


def _crescent(u, v):
    return (u * u + v * v <= 0.92**2) & ((u - 0.45) ** 2 + v * v >= 0.72**2)


def _heart(u, v):
    # two lobes (disks) on a downward-pointing triangle, lobes towards +v
    lobes = ((u.abs() - 0.4) ** 2 + (v - 0.3) ** 2) <= 0.42**2
    point = (v <= 0.3) & (v >= -0.95 + 1.25 / 0.82 * u.abs())
    return lobes | point


def _arrow(u, v):
    shaft = (u >= -0.95) & (u <= 0.1) & (v.abs() <= 0.2)
    head = (u >= 0.05) & (v.abs() <= 0.62 * (0.95 - u) / 0.9)
    return shaft | head


def _hourglass(u, v):
    # bow-tie: two triangles meeting tip to tip with a narrow waist
    return (u.abs() <= 0.68) & (v.abs() <= 0.08 + 0.95 * u.abs())


_SHAPES = (
    _circle,
    _square,
    _triangle,
    _star,
    _cross,
    _ring,
    _crescent,
    _heart,
    _arrow,
    _hourglass,
)
assert len(_SHAPES) == len(CLASS_NAMES)


# --------------------------------------------------------------------------- rendering


def _grid(size: int, supersample: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-unit coordinates of the (sub)pixel centres, shaped (1, H*s, 1) and (1, 1, W*s)."""
    c = (torch.arange(size * supersample, dtype=torch.float32) + 0.5) / supersample
    return c.view(1, -1, 1), c.view(1, 1, -1)


def _object_alpha(
    labels: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    radius: torch.Tensor,
    angle: torch.Tensor,
    image_size: int,
    supersample: int = SUPERSAMPLE,
) -> torch.Tensor:
    """Coverage in [0, 1], (B, H, W), of shape ``labels[i]`` centred at (cx, cy) (pixel
    units, x along columns), of bounding radius ``radius`` (pixels), rotated by ``angle``."""
    ys, xs = _grid(image_size, supersample)
    b = labels.shape[0]
    n = image_size * supersample
    inside = torch.zeros(b, n, n, dtype=torch.bool)
    for k in torch.unique(labels).tolist():
        idx = (labels == k).nonzero().squeeze(1)
        c = torch.cos(angle[idx]).view(-1, 1, 1)
        s = torch.sin(angle[idx]).view(-1, 1, 1)
        dx = xs - cx[idx].view(-1, 1, 1)
        dy = ys - cy[idx].view(-1, 1, 1)
        r = radius[idx].view(-1, 1, 1)
        u = (dx * c + dy * s) / r
        v = (dy * c - dx * s) / r
        inside[idx] = _SHAPES[k](u, v)
    alpha = inside.float().unsqueeze(1)
    if supersample > 1:
        alpha = F.avg_pool2d(alpha, supersample)
    return alpha.squeeze(1)


def _rand(g: torch.Generator, shape, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(shape, generator=g) * (hi - lo) + lo


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV (each (B,), in [0, 1]) to RGB (B, 3)."""
    n = torch.tensor([5.0, 3.0, 1.0])
    k = torch.remainder(n + h.unsqueeze(1) * 6, 6)
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * f


def _background(g: torch.Generator, b: int, size: int) -> torch.Tensor:
    """Smooth part of the background: gradient, low-frequency noise, grating. (B, 3, H, W)."""
    ys, xs = _grid(size)
    xs, ys = xs / size - 0.5, ys / size - 0.5  # in [-0.5, 0.5]
    # two low/mid-saturation colours blended along a random direction
    c1 = _hsv_to_rgb(_rand(g, b), _rand(g, b, 0.0, 0.35), _rand(g, b, 0.25, 0.8))
    c2 = _hsv_to_rgb(_rand(g, b), _rand(g, b, 0.0, 0.35), _rand(g, b, 0.25, 0.8))
    theta = _rand(g, b, 0, 2 * math.pi).view(-1, 1, 1)
    t = (xs * torch.cos(theta) + ys * torch.sin(theta)).clamp(-0.5, 0.5) + 0.5  # (B, H, W)
    t = t.unsqueeze(1)
    bg = c1.view(b, 3, 1, 1) * (1 - t) + c2.view(b, 3, 1, 1) * t
    # low-frequency noise: a luminance part and a weaker colour part
    lum = torch.randn(b, 1, 4, 4, generator=g) * 0.07
    chroma = torch.randn(b, 3, 4, 4, generator=g) * 0.03
    noise = F.interpolate(lum + chroma, size=(size, size), mode="bicubic", align_corners=False)
    bg = bg + noise
    # a faint sinusoidal grating (texture)
    freq = _rand(g, b, 3.0, 8.0).view(-1, 1, 1)  # cycles per image side
    phi = _rand(g, b, 0, 2 * math.pi).view(-1, 1, 1)
    psi = _rand(g, b, 0, 2 * math.pi).view(-1, 1, 1)
    amp = _rand(g, b, 0.02, 0.06).view(-1, 1, 1)
    proj = xs * torch.cos(phi) + ys * torch.sin(phi)
    bg = bg + (amp * torch.sin(2 * math.pi * freq * proj + psi)).unsqueeze(1)
    return bg


def _strokes(g: torch.Generator, bg: torch.Tensor) -> torch.Tensor:
    """Paint thin distractor strokes (segments and arcs, anti-aliased) onto ``bg``."""
    b, _, size, _ = bg.shape
    ys, xs = _grid(size)
    count = torch.randint(MIN_STROKES, MAX_STROKES + 1, (b,), generator=g)
    for k in range(MAX_STROKES):
        is_arc = (torch.rand(b, generator=g) < 0.4).view(-1, 1, 1)
        width = torch.clamp(_rand(g, b, 0.025, 0.05) * size, min=1.0).view(-1, 1, 1)
        colour = _hsv_to_rgb(_rand(g, b), _rand(g, b, 0.2, 0.8), _rand(g, b, 0.2, 0.95))
        opacity = _rand(g, b, 0.7, 1.0) * (k < count).float()
        # segment from a to b
        ax, ay = _rand(g, b, 0, size).view(-1, 1, 1), _rand(g, b, 0, size).view(-1, 1, 1)
        length = _rand(g, b, 0.3, 0.7).view(-1, 1, 1) * size
        phi = _rand(g, b, 0, 2 * math.pi).view(-1, 1, 1)
        ex, ey = torch.cos(phi) * length, torch.sin(phi) * length
        t = (((xs - ax) * ex + (ys - ay) * ey) / (length * length)).clamp(0, 1)
        d_seg = torch.hypot(xs - ax - t * ex, ys - ay - t * ey)
        # arc around a with radius r, from angle phi over span
        r = _rand(g, b, 0.15, 0.4).view(-1, 1, 1) * size
        span = _rand(g, b, math.pi / 4, 0.9 * math.pi).view(-1, 1, 1)
        dx, dy = xs - ax, ys - ay
        rel = torch.remainder(torch.atan2(dy, dx) - phi, 2 * math.pi)
        d_ring = (torch.hypot(dx, dy) - r).abs()
        d_end0 = torch.hypot(dx - r * torch.cos(phi), dy - r * torch.sin(phi))
        d_end1 = torch.hypot(dx - r * torch.cos(phi + span), dy - r * torch.sin(phi + span))
        d_arc = torch.where(rel <= span, d_ring, torch.minimum(d_end0, d_end1))
        d = torch.where(is_arc, d_arc, d_seg)
        a = (width / 2 - d + 0.5).clamp(0, 1) * opacity.view(-1, 1, 1)
        a = a.unsqueeze(1)
        bg = bg * (1 - a) + colour.view(b, 3, 1, 1) * a
    return bg


def _render_chunk(g: torch.Generator, labels: torch.Tensor, size: int):
    b = labels.shape[0]
    smooth = _background(g, b, size)
    bg = _strokes(g, smooth)

    radius = _rand(g, b, *RADIUS_RANGE) * size
    margin = radius + 1.0  # the shape never reaches the outermost pixel row/column
    cx = margin + torch.rand(b, generator=g) * (size - 2 * margin)
    cy = margin + torch.rand(b, generator=g) * (size - 2 * margin)
    angle = _rand(g, b, 0, 2 * math.pi)
    alpha = _object_alpha(labels, cx, cy, radius, angle, size)

    # object colour: of several saturated candidates, the one farthest (worst case over
    # five points across the object) from the smooth background
    cand = _hsv_to_rgb(
        _rand(g, b * COLOUR_CANDIDATES),
        _rand(g, b * COLOUR_CANDIDATES, 0.65, 1.0),
        _rand(g, b * COLOUR_CANDIDATES, 0.6, 1.0),
    ).view(b, COLOUR_CANDIDATES, 3)
    offsets = torch.tensor([[0.0, 0.0], [0.6, 0.0], [-0.6, 0.0], [0.0, 0.6], [0.0, -0.6]])
    px = (cx.view(-1, 1) + offsets[:, 0] * radius.view(-1, 1)).long().clamp(0, size - 1)
    py = (cy.view(-1, 1) + offsets[:, 1] * radius.view(-1, 1)).long().clamp(0, size - 1)
    flat = smooth.clamp(0, 1).view(b, 3, size * size)
    samples = torch.gather(flat, 2, (py * size + px).unsqueeze(1).expand(b, 3, -1))  # (B,3,5)
    diff = cand.unsqueeze(2) - samples.transpose(1, 2).unsqueeze(1)  # (B, C, 5, 3)
    dist = (diff * diff).sum(dim=3)  # squared distances, (B, C, 5)
    best = dist.amin(dim=2).argmax(dim=1)
    colour = cand[torch.arange(b), best]  # (B, 3)

    # light shading across the object, so it is not flat
    ys, xs = _grid(size)
    sh = _rand(g, b, 0, 2 * math.pi).view(-1, 1, 1)
    strength = _rand(g, b, 0.05, 0.2).view(-1, 1, 1)
    proj = (xs - cx.view(-1, 1, 1)) * torch.cos(sh) + (ys - cy.view(-1, 1, 1)) * torch.sin(sh)
    shade = 1 + strength * (proj / radius.view(-1, 1, 1)).clamp(-1, 1)
    obj = colour.view(b, 3, 1, 1) * shade.unsqueeze(1)

    a = alpha.unsqueeze(1)
    image = a * obj + (1 - a) * bg
    image = image + torch.randn(image.shape, generator=g) * 0.025
    image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return image, alpha > 0.5


def generate_shapes(
    n: int, image_size: int = 32, num_classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``n`` images of the ``shapes`` dataset.

    Returns ``(images, labels, masks)``: images uint8 (n, 3, H, W), labels int64 (n,)
    (balanced: each class appears ``n // num_classes`` or one more times, in a seeded
    random order), masks bool (n, H, W), True on the object's pixels. Classes are the
    first ``num_classes`` of ``CLASS_NAMES``. Deterministic for a seed (CPU, any thread
    count).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an integer >= 16, got {image_size!r}")
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or not 2 <= num_classes <= len(CLASS_NAMES)
    ):
        raise ValueError(
            f"num_classes must be an integer in 2..{len(CLASS_NAMES)}, got {num_classes!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")

    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    masks = torch.empty(n, image_size, image_size, dtype=torch.bool)
    chunk = max(1, PIXEL_BUDGET // (image_size * image_size))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        images[start:stop], masks[start:stop] = _render_chunk(g, labels[start:stop], image_size)
    return images, labels.to(torch.int64), masks
