"""From materials along each ray to a processed film: Beer-Lambert, detector and processing.

Each pixel's ray crosses path lengths (cm) of soft tissue, air, cortical and medullary bone and
metal. The detector records ``N = N0 exp(-P)`` photons with the line integral
``P = sum_m mu_m(E) * l_m``; the linear attenuation coefficients are NIST XCOM values for water
and ICRU cortical bone (density 1.92) at the beam's effective energy (about ``0.36 kVp + 15``
keV for a filtered chest beam), interpolated log-log:

==========  ======  ======  ======  ======
keV          40      50      60      80
water        0.268   0.227   0.206   0.184   (1/cm)
bone         1.278   0.814   0.604   0.428   (1/cm)
==========  ======  ======  ======  ======

The processed image is what a CR/DR workstation shows: the log signal ``P`` (plus quantum
noise of variance ``1 / N``), a detector blur of about half a pixel, then an unsharp-mask
equalisation against a smooth version of the *anatomy alone* (dynamic-range compression as on
every chest workstation; computing it from the anatomy keeps each finding's change local) and
a sigmoid tone curve set so the lungs are dark grey and the mediastinum white.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from xraygpt_lab.data.synthetic.anatomy import AnatomyParams, lung_depth_cm
from xraygpt_lab.data.synthetic.geometry import clamp, pixel_centres

_KEV = np.array([40.0, 50.0, 60.0, 80.0])
_MU_WATER = np.array([0.2683, 0.2269, 0.2059, 0.1837])             # 1/cm, XCOM water
_MU_BONE = np.array([0.6655, 0.4242, 0.3148, 0.2229]) * 1.92       # 1/cm, ICRU cortical bone
#: Medullary (trabecular) bone: marrow and thin trabeculae, about 1.18 g/cm3.
MEDULLARY_BONE_FRACTION: float = 0.20
#: Metal of devices (titanium can, platinum-iridium lead coils, steel wires), 1/cm.
MU_METAL: float = 3.0
#: Unsharp-mask settings of the processing: gain of small local details.
DETAIL_GAIN: float = 2.0
#: Size of a "small" detail in line-integral units (a rib is about 0.2, an effusion 2).
DETAIL_SCALE: float = 0.25


def effective_kev(kvp: float) -> float:
    """Effective photon energy (keV) of a filtered chest beam at ``kvp``."""
    return 0.36 * kvp + 15.0


def attenuation(kvp: float) -> dict[str, float]:
    """Linear attenuation coefficients (1/cm) of soft tissue and cortical bone at ``kvp``."""
    e = clamp(effective_kev(kvp), _KEV[0], _KEV[-1])
    le = np.log(e)
    soft = float(np.exp(np.interp(le, np.log(_KEV), np.log(_MU_WATER))))
    bone = float(np.exp(np.interp(le, np.log(_KEV), np.log(_MU_BONE))))
    return {"soft": soft, "cortical": bone,
            "medullary": soft + MEDULLARY_BONE_FRACTION * (bone - soft), "metal": MU_METAL}


@dataclass
class Maps:
    """Path lengths (cm) of every material along the ray through each pixel, [H, W] float32.

    ``body`` soft tissue of the whole body; ``lung`` the lungs' geometric chord and
    ``lung_cut`` what the heart, great vessels and mediastinum take out of it; ``air_frac`` the
    aerated fraction of lung; ``solid`` tissue inside the lung that displaces air (vessels,
    nodules, septal lines); ``fluid`` pleural fluid; ``extra_air`` air outside aerated lung
    (trachea, stomach, pneumothorax beyond the lung, bronchograms); ``cortical``/``medullary``
    bone; ``metal`` devices and markers; ``space`` where a pneumothorax's pleural air is.
    """

    body: np.ndarray
    lung: np.ndarray
    lung_cut: np.ndarray
    air_frac: np.ndarray
    solid: np.ndarray
    fluid: np.ndarray
    extra_air: np.ndarray
    cortical: np.ndarray
    medullary: np.ndarray
    metal: np.ndarray
    space: np.ndarray
    extra: dict = field(default_factory=dict)

    def copy(self) -> "Maps":
        """Deep copy of the arrays (``extra`` is shared: it holds read-only anatomy)."""
        arrays = {k: getattr(self, k).copy() for k in
                  ("body", "lung", "lung_cut", "air_frac", "solid", "fluid", "extra_air",
                   "cortical", "medullary", "metal", "space")}
        return Maps(**arrays, extra=self.extra)

    def aerated(self) -> np.ndarray:
        """Lung chord left after the heart and mediastinum (cm)."""
        return clamp(self.lung - self.lung_cut, 0.0, None)

    def air(self) -> np.ndarray:
        """Total air along each ray (cm)."""
        lung = clamp(self.aerated() - self.solid - self.fluid, 0.0, None)
        return lung * self.air_frac + self.extra_air


def line_integral(maps: Maps, params: AnatomyParams) -> np.ndarray:
    """``P = sum_m mu_m l_m`` (dimensionless) at every pixel, float32 [H, W]."""
    mu = attenuation(params.kvp)
    dens = params.bone_density
    P = (mu["soft"] * (maps.body - maps.air())
         + dens * (mu["cortical"] - mu["soft"]) * maps.cortical
         + dens * (mu["medullary"] - mu["soft"]) * maps.medullary
         + (mu["metal"] - mu["soft"]) * maps.metal)
    return clamp(P, 0.0, None).astype(np.float32)


def reference_levels(params: AnatomyParams) -> tuple[float, float]:
    """Line integrals of a mid-lung ray and a mediastinal ray for this patient and beam: the
    processing maps them to fixed grey levels (as a workstation's histogram analysis does)."""
    mu = attenuation(params.kvp)["soft"]
    mid = 0.5 * (params.apex_y + params.costophrenic_y) + 0.1
    lung = mu * (params.body_depth_cm - 0.95 * float(lung_depth_cm(params, mid)) * params.lung_air)
    medi = mu * params.body_depth_cm
    return lung, medi


def smooth_background(P: np.ndarray, size: int) -> np.ndarray:
    """Low-pass of ``P`` (Gaussian of 2.5 % of the image width): the unsharp mask's background."""
    return gaussian_filter(P, sigma=3.2 * size / 128, mode="nearest", truncate=2.5).astype(np.float32)


@dataclass
class Processing:
    """Fixed per-film processing: the equalisation background and the tone curve."""

    background: np.ndarray  # [H, W] low-pass of the anatomy-only line integral
    centre: float
    width: float
    noise_sd: float         # sd of the line integral's noise at the lung reference


def processing_for(params: AnatomyParams, anatomy_P: np.ndarray, size: int) -> Processing:
    """The processing for this film, derived from the anatomy without findings."""
    background = smooth_background(anatomy_P, size)
    lung, medi = reference_levels(params)
    lo, hi = lung, medi
    # lung -> 0.36, mediastinum -> 0.84 at standard dose; more dose darkens the film a little
    a, b = np.log(0.36 / 0.64), np.log(0.84 / 0.16)
    width = (hi - lo) / (b - a)
    centre = lo - a * width + 0.35 * width * np.log(params.exposure)
    slope = 0.23 / width  # display change per unit of equalised P in the lungs
    noise_sd = params.noise_level / (DETAIL_GAIN * slope)
    return Processing(background, float(centre), float(width), float(noise_sd))


def develop(P: np.ndarray, params: AnatomyParams, proc: Processing, size: int,
            noise: np.ndarray | None) -> np.ndarray:
    """Blur, noise, equalise and tone-map a line integral into a display image in [0, 1]."""
    P = gaussian_filter(P, sigma=0.5 * size / 128, truncate=3.0)
    lung, _ = reference_levels(params)
    if noise is not None:
        # quantum noise: variance 1/N with N = N0 exp(-P), relative to a lung ray
        rel = np.exp(clamp(0.5 * (P - lung), -2.0, 1.6)) / np.sqrt(params.exposure)
        P = P + proc.noise_sd * rel * noise
    eq = proc.background + detail_curve(P - proc.background)
    img = 1.0 / (1.0 + np.exp(-(eq - proc.centre) / proc.width))
    img = 0.01 + 0.98 * img * (1.0 - 0.04 * pixel_centres(size)[1])  # anode heel effect
    return clamp(img, 0.0, 1.0).astype(np.float32)


def detail_curve(d: np.ndarray) -> np.ndarray:
    """Local detail ``d = P - background`` after enhancement: small details (ribs, vessels,
    noise) gain DETAIL_GAIN, large ones (an effusion, a consolidation) only a fixed offset
    (``d + (g - 1) d0 tanh(d / d0)``), so new opacities are not over-whitened."""
    return d + (DETAIL_GAIN - 1.0) * DETAIL_SCALE * np.tanh(d / DETAIL_SCALE)


_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


def marker_map(letter: str, size: int) -> np.ndarray:
    """Metal path length (cm) of a lead laterality marker burned into an upper corner: "L" on
    the image's right (the patient's left), "R" on the image's left."""
    out = np.zeros((size, size), np.float32)
    if not letter:
        return out
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]], dtype=np.float32)  # [7, 5]
    cell = max(1, round(size / 80))
    block = np.kron(glyph, np.ones((cell, cell), np.float32))
    box = np.zeros((block.shape[0] + 2 * cell, block.shape[1] + 2 * cell), np.float32)
    box[cell:-cell, cell:-cell] = block
    h, w = box.shape
    top = max(1, size // 25)
    left = size - w - top if letter == "L" else top
    out[top:top + h, left:left + w] = 0.35 * box + 0.05
    return out
