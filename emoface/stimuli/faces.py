"""Drawing schematic faces from facial-action-like parameters.

A face is an :class:`Identity` (skin, hair, face shape: fixed across that person's six images) plus an
:class:`Expression`: activations in [0, 1] of action units loosely following FACS (Ekman & Friesen):

====  ==========================  ==============================================
AU    parameter                   what moves in the drawing
====  ==========================  ==============================================
1     ``inner_brow_raise``        inner ends of the brows up (sad, fear, surprise)
2     ``outer_brow_raise``        outer ends of the brows up (surprise)
4     ``brow_lower``              brows down and together (anger)
5     ``upper_lid_raise``         eyes wide open, white above the iris (surprise, fear)
6     ``cheek_raise``             cheeks up, lower lids pushed up (happiness)
7     ``lid_tighten``             narrowed eyes (anger, disgust)
9     ``nose_wrinkle``            wrinkles over the nose bridge (disgust)
10    ``upper_lip_raise``         upper lip up, teeth shown (disgust)
12    ``lip_corner_pull``         mouth corners up (happiness)
15    ``lip_corner_depress``      mouth corners down (sadness, disgust)
20    ``lip_stretch``             mouth stretched sideways (fear)
23    ``lip_tighten``             lips pressed thin (anger)
26    ``jaw_drop``                mouth open (surprise, fear, laughter)
====  ==========================  ==============================================

Faces are drawn at 3x and downsampled with a Lanczos filter, so the same inputs give the same
pixels (and, with a fixed PNG encoder, the same bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 3


@dataclass(frozen=True)
class Expression:
    """Action-unit activations in [0, 1] (see the module docstring)."""

    inner_brow_raise: float = 0.0
    outer_brow_raise: float = 0.0
    brow_lower: float = 0.0
    upper_lid_raise: float = 0.0
    cheek_raise: float = 0.0
    lid_tighten: float = 0.0
    nose_wrinkle: float = 0.0
    upper_lip_raise: float = 0.0
    lip_corner_pull: float = 0.0
    lip_corner_depress: float = 0.0
    lip_stretch: float = 0.0
    lip_tighten: float = 0.0
    jaw_drop: float = 0.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, n) for n in self.names()], dtype=float)

    @classmethod
    def from_array(cls, values: np.ndarray) -> Expression:
        clipped = np.clip(np.asarray(values, dtype=float), 0.0, 1.0)
        return cls(**{n: float(v) for n, v in zip(cls.names(), clipped, strict=True)})


# Prototypes at full intensity, after the EMFACS descriptions of the six basic emotions.
PROTOTYPES: dict[str, Expression] = {
    "angry": Expression(brow_lower=1.0, lid_tighten=0.7, upper_lid_raise=0.25, lip_tighten=0.9,
                        lip_corner_depress=0.35),
    "disgusted": Expression(nose_wrinkle=1.0, upper_lip_raise=0.9, lip_corner_depress=0.5,
                            brow_lower=0.45, lid_tighten=0.45),
    "fearful": Expression(inner_brow_raise=1.0, outer_brow_raise=0.55, brow_lower=0.45,
                          upper_lid_raise=1.0, lip_stretch=1.0, jaw_drop=0.45),
    "happy": Expression(cheek_raise=0.9, lip_corner_pull=1.0, jaw_drop=0.35, lid_tighten=0.1),
    "sad": Expression(inner_brow_raise=0.9, brow_lower=0.3, lip_corner_depress=1.0,
                      lid_tighten=0.25),
    "surprised": Expression(inner_brow_raise=1.0, outer_brow_raise=1.0, upper_lid_raise=1.0,
                            jaw_drop=1.0),
}


@dataclass(frozen=True)
class Identity:
    """What stays fixed across one person's images."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    long_hair: bool
    face_width: float  # half-width as a share of the canvas
    face_height: float  # half-height as a share of the canvas
    eye_spacing: float  # distance of each eye from the midline, share of canvas
    eye_size: float
    mouth_width: float
    brow_thickness: float
    resting_mouth: float  # small person-specific mouth-corner offset (-1..1)
    lip: tuple[int, int, int]


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in rgb)  # type: ignore[return-value]


def _bezier(p0, p1, p2, n: int = 24) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t**2 * np.array(p2)
    return [(float(x), float(y)) for x, y in pts]


def draw_face(identity: Identity, expr: Expression, size: int) -> Image.Image:
    """Render one face as an RGB image of ``size`` x ``size`` pixels."""
    s = size * SUPERSAMPLE
    img = Image.new("RGB", (s, s), (214, 219, 226))
    d = ImageDraw.Draw(img)
    cx, cy = 0.5 * s, 0.47 * s
    fw, fh = identity.face_width * s, identity.face_height * s

    # Shoulders and neck.
    d.ellipse((cx - 0.46 * s, cy + 0.78 * fh, cx + 0.46 * s, cy + 1.9 * fh), fill=identity.shirt)
    d.rectangle((cx - 0.42 * fw, cy + 0.6 * fh, cx + 0.42 * fw, cy + 1.05 * fh),
                fill=_shade(identity.skin, 0.88))
    # Hair behind the head.
    if identity.long_hair:
        d.rounded_rectangle((cx - 1.22 * fw, cy - 1.12 * fh, cx + 1.22 * fw, cy + 1.0 * fh),
                            radius=int(0.9 * fw), fill=identity.hair)
    else:
        d.ellipse((cx - 1.07 * fw, cy - 1.12 * fh, cx + 1.07 * fw, cy + 0.35 * fh),
                  fill=identity.hair)
    # Ears and face.
    for side in (-1, 1):
        ex = cx + side * 0.98 * fw
        d.ellipse((ex - 0.14 * fw, cy - 0.12 * fh, ex + 0.14 * fw, cy + 0.18 * fh),
                  fill=_shade(identity.skin, 0.93))
    d.ellipse((cx - fw, cy - fh, cx + fw, cy + fh), fill=identity.skin)
    # Fringe over the forehead.
    d.chord((cx - 1.02 * fw, cy - 1.1 * fh, cx + 1.02 * fw, cy - 0.35 * fh), 180, 360,
            fill=identity.hair)

    _draw_eyes_and_brows(d, identity, expr, cx, cy, fw, fh, s)
    _draw_nose(d, identity, expr, cx, cy, fw, fh, s)
    _draw_mouth(d, identity, expr, cx, cy, fw, fh, s)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _draw_eyes_and_brows(d, ident: Identity, e: Expression, cx, cy, fw, fh, s) -> None:
    ey = cy - 0.08 * fh
    ew = ident.eye_size * s
    openness = 0.42 + 0.5 * e.upper_lid_raise - 0.22 * e.lid_tighten - 0.14 * e.cheek_raise
    eh = ew * max(openness, 0.12)
    line = max(1, int(0.012 * s))
    brow_w = max(2, int(ident.brow_thickness * s))
    dark = _shade(ident.hair, 0.8)
    for side in (-1, 1):
        ex = cx + side * ident.eye_spacing * s
        # Sclera, iris (flattened when the lids narrow), pupil, upper lid line.
        d.ellipse((ex - ew, ey - eh, ex + ew, ey + eh), fill=(250, 250, 250), outline=(60, 45, 40),
                  width=line)
        r = ew * 0.48
        ir_h = min(r, eh * 0.95)
        iris_y = ey + 0.15 * (eh - ir_h)
        d.ellipse((ex - r, iris_y - ir_h, ex + r, iris_y + ir_h), fill=(70, 45, 30))
        pr = r * 0.45
        d.ellipse((ex - pr, iris_y - min(pr, ir_h), ex + pr, iris_y + min(pr, ir_h)),
                  fill=(15, 10, 10))
        d.arc((ex - ew, ey - eh, ex + ew, ey + eh), 180, 360, fill=(40, 28, 25), width=line * 2)
        # Cheek raise: a fold under the eye and some colour on the cheek.
        if e.cheek_raise > 0.05:
            yy = ey + eh + 0.02 * fh
            d.arc((ex - ew, yy - 0.5 * eh, ex + ew, yy + 0.6 * eh), 20, 160,
                  fill=_shade(ident.skin, 0.75), width=line)
            cr = 0.16 * fw * e.cheek_raise
            ccx, ccy = ex + side * 0.12 * fw, ey + 0.36 * fh
            d.ellipse((ccx - 1.4 * cr, ccy - cr, ccx + 1.4 * cr, ccy + cr),
                      fill=_shade(ident.skin, 0.94) if ident.skin[0] < 150 else (230, 160, 150))
        # Brows: inner and outer ends move separately (AU1, AU2, AU4).
        base = ey - eh - 0.12 * fh - 0.06 * fh * e.upper_lid_raise
        inner_x = ex - side * (0.85 * ew - 0.25 * ew * e.brow_lower)
        outer_x = ex + side * 1.15 * ew
        inner_y = base - 0.17 * fh * e.inner_brow_raise + 0.16 * fh * e.brow_lower
        outer_y = base - 0.13 * fh * e.outer_brow_raise + 0.03 * fh * e.brow_lower
        mid = ((inner_x + outer_x) / 2,
               min(inner_y, outer_y) - 0.03 * fh + 0.02 * fh * e.brow_lower)
        d.line(_bezier((inner_x, inner_y), mid, (outer_x, outer_y)), fill=dark, width=brow_w,
               joint="curve")
    # Vertical furrow between lowered brows.
    if e.brow_lower > 0.3:
        fy = ey - eh - 0.06 * fh
        for dx in (-0.04, 0.04):
            d.line(((cx + dx * fw, fy - 0.1 * fh * e.brow_lower), (cx + dx * fw, fy)),
                   fill=_shade(ident.skin, 0.7), width=line)


def _draw_nose(d, ident: Identity, e: Expression, cx, cy, fw, fh, s) -> None:
    line = max(1, int(0.012 * s))
    shade = _shade(ident.skin, 0.7)
    crease = _shade(ident.skin, 0.55)
    top, tip = cy + 0.02 * fh, cy + 0.3 * fh - 0.04 * fh * e.nose_wrinkle
    flare = 0.16 * fw * (1 + 0.35 * e.nose_wrinkle)
    d.line(((cx - 0.05 * fw, top), (cx - 0.08 * fw, tip - 0.05 * fh)), fill=shade, width=line)
    d.arc((cx - flare, tip - 0.08 * fh, cx + flare, tip + 0.06 * fh), 0, 180, fill=shade,
          width=line * 2)
    if e.nose_wrinkle > 0.1:
        n = 2 + int(2 * e.nose_wrinkle)
        for i in range(n):
            y = cy - 0.06 * fh + i * 0.045 * fh
            w = 0.09 * fw * e.nose_wrinkle
            d.arc((cx - w, y - 0.02 * fh, cx + w, y + 0.03 * fh), 200, 340, fill=crease,
                  width=2 * line)
        # Nasolabial folds deepen with the raised upper lip.
        for side in (-1, 1):
            x0 = cx + side * 1.1 * flare
            d.line(((x0, tip - 0.02 * fh), (x0 + side * 0.1 * fw, tip + 0.2 * fh)), fill=crease,
                   width=line)


def _draw_mouth(d, ident: Identity, e: Expression, cx, cy, fw, fh, s) -> None:
    line = max(1, int(0.012 * s))
    my = cy + 0.55 * fh
    # A dropped jaw without a smile or stretch narrows the mouth into an 'O'.
    o_shape = e.jaw_drop * (1 - max(e.lip_corner_pull, e.lip_stretch))
    half = ident.mouth_width * s * (1 + 0.25 * e.lip_corner_pull + 0.35 * e.lip_stretch
                                    - 0.18 * e.lip_tighten - 0.3 * o_shape)
    corner_y = (my - 0.16 * fh * e.lip_corner_pull + 0.13 * fh * e.lip_corner_depress
                + 0.03 * fh * e.lip_stretch - 0.02 * fh * ident.resting_mouth)
    # Disgust raises the upper lip more on one side.
    lift = 0.12 * fh * e.upper_lip_raise
    upper_y = my - lift - 0.01 * fh * e.jaw_drop
    opening = 0.3 * fh * e.jaw_drop + 0.05 * fh * e.lip_stretch + 0.5 * lift
    lower_y = my + opening + 0.06 * fh * e.lip_corner_pull
    left, right = (cx - half, corner_y + 0.2 * lift), (cx + half, corner_y - 0.6 * lift)
    upper = _bezier(left, (cx, 2 * upper_y - corner_y + 0.02 * fh), right)
    # A smile curves the lower lip down in the middle; sadness arches the mouth.
    lower_ctrl_y = 2 * lower_y - corner_y
    lower = _bezier(right, (cx, lower_ctrl_y), left)
    thickness = max(line, int(0.035 * fh * (1 - 0.7 * e.lip_tighten)))
    if opening > 0.035 * fh or e.lip_corner_pull > 0.55:
        d.polygon(upper + lower, fill=(95, 25, 35))
        show_teeth = max(e.lip_corner_pull, e.upper_lip_raise, e.lip_stretch) > 0.35
        if show_teeth:
            tooth_h = 0.05 * fh + 0.25 * (lower_ctrl_y - upper_y) * 0.25
            teeth = upper + [(x, y + tooth_h) for x, y in reversed(upper)]
            d.polygon(teeth, fill=(245, 245, 240))
        d.line(upper, fill=ident.lip, width=thickness, joint="curve")
        d.line(lower, fill=ident.lip, width=thickness, joint="curve")
    else:
        d.line(upper, fill=ident.lip, width=thickness, joint="curve")
        d.line(_bezier(left, (cx, corner_y + 2 * (my - corner_y) + 0.05 * fh), right),
               fill=ident.lip, width=thickness, joint="curve")
        d.line(_bezier(left, (cx, 2 * my - corner_y), right), fill=(90, 40, 40), width=line)
