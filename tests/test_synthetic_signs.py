"""Each finding shows the sign a radiology textbook teaches, asserted on the rendered pixels
(noise-free films at the tiny profile's 128 px, compared with the same patient without it)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter, median_filter

from xraygpt_lab.data.synthetic import anatomy as anat
from xraygpt_lab.data.synthetic.anatomy import AnatomyParams, phantom_to_pixel, pixel_spacing_mm
from xraygpt_lab.data.synthetic.devices import device_tips, generator_centre
from xraygpt_lab.data.synthetic.geometry import MM_PER_UNIT
from xraygpt_lab.data.synthetic.lesions import Finding
from xraygpt_lab.data.synthetic.measure import cardiothoracic_ratio
from xraygpt_lab.data.synthetic.phantom import build_maps
from xraygpt_lab.data.synthetic import signs
from xraygpt_lab.data.synthetic.signs import bronchi
from xraygpt_lab.data.synthetic.skeleton import rib_point
from xraygpt_lab.data.synthetic.world import WorldConfig, phantom_coordinates, render_case

SIZE = 128
CLEAN = WorldConfig(noise_scale=0.0)
SEEDS = (3, 8, 14)


def pair(seed: int, finding: Finding, anatomy: AnatomyParams | None = None):
    """(case with the finding, its normal twin, with - without) on noise-free films."""
    case = render_case(seed, SIZE, CLEAN, findings=[finding], anatomy=anatomy)
    twin = render_case(seed, SIZE, CLEAN, findings=[], anatomy=case.anatomy)
    assert case.finding(finding.observation) is not None, "the finding must be visible"
    return case, twin, case.image - twin.image


def pixel(case, x: float, y: float) -> tuple[int, int]:
    """(row, column) of phantom point (x, y)."""
    c, r = phantom_to_pixel(case.anatomy, SIZE, np.array(x), np.array(y))
    return int(round(float(r))), int(round(float(c)))


def boneless(seed: int) -> AnatomyParams:
    """The seed's patient with no bone, breasts or marker: the lungs show only their markings."""
    from xraygpt_lab.data.synthetic.anatomy import sample_anatomy
    from xraygpt_lab.data.synthetic.world import _rng

    p = sample_anatomy(_rng(seed, 0))
    p.bone_density, p.breasts, p.marker = 0.0, 0.0, ""
    return p


def dome_row(case, column: np.ndarray, col: int, side: str) -> int:
    """Row of the steepest dark-to-bright step within 8 pixels of the hemidiaphragm's
    expected height in image column ``col``."""
    x, y = phantom_coordinates(case.anatomy, SIZE)
    u = anat.side_sign(side) * x[:, col]
    expected = np.argmin(np.abs(y[:, col] - anat.diaphragm_y(case.anatomy, np.abs(u), side)))
    lo, hi = max(1, expected - 8), min(SIZE - 2, expected + 8)
    return lo + int(np.argmax(np.diff(column)[lo:hi]))


# ------------------------------------------------------------------------------- effusion
@pytest.mark.parametrize("severity", ["small", "moderate", "large"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_effusion_meniscus_blunted_angle_at_every_severity(severity, side):
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Pleural Effusion", side=side, severity=severity))
        p = case.anatomy
        s = anat.side_sign(side)
        fluid = diff > 0.05
        assert fluid.sum() >= 20, "an effusion of every severity is visible"
        cp = p.costophrenic(side)
        wall = float(anat.lateral_wall(p, cp))
        # blunted costophrenic angle: dark lung on the twin, fluid on the film
        r, c = pixel(case, s * (wall - 0.035), cp - 0.035)
        assert twin.image[r, c] < case.image[r, c] - 0.15
        # meniscus: the fluid's top is higher at the lateral wall than half-way in
        def top(u_frac: float) -> int:
            _, col = pixel(case, s * u_frac * wall, cp)
            rows = np.nonzero(fluid[:, col])[0]
            return int(rows.min()) if rows.size else SIZE
        assert top(0.88) < top(0.5), (seed, top(0.88), top(0.5))


# --------------------------------------------------------------------------- pneumothorax
@pytest.mark.parametrize("severity", ["moderate", "large"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_pneumothorax_pleural_line_and_no_markings_beyond(severity, side):
    for seed in SEEDS:
        p = boneless(seed)
        case, twin, diff = pair(seed, Finding("Pneumothorax", side=side, severity=severity), anatomy=p)
        mask = case.masks["Pneumothorax"]
        x, y = phantom_coordinates(p, SIZE)
        lateral = anat.side_sign(side) * x > 0.5 * anat.lateral_wall(p, y)
        space = binary_erosion(mask, iterations=3) & lateral  # the lateral rim, clear of its edges
        # no lung markings beyond the line: thin vessels stand out of a 5 x 5 median; such pixels
        # were there on the normal film and are (nearly) gone from the pleural space
        def vessel_like(img):  # a vessel is a thin line brighter than its surroundings
            return img - median_filter(img, size=5) > 0.008
        assert space.sum() >= 10
        before, after = vessel_like(twin.image)[space].mean(), vessel_like(case.image)[space].mean()
        assert before > 0.05 and after < 0.3 * before, (seed, before, after)
        assert diff[space].mean() < -0.02  # black pleural air
        # the visceral pleural line: on rows through the space, a thin ridge brighter than the
        # air beside it and the lung inside it
        s = anat.side_sign(side)
        hx, hy = anat.hilum_point(p, side)
        ridges = rows = 0
        for y in np.linspace(hy - 0.25, hy + 0.15, 10):  # the lateral rim, below the apical cap
            r, c_mid = pixel(case, s * 0.5 * float(anat.lateral_wall(p, y)), y)
            cols = np.nonzero(mask[r])[0]
            cols = cols[(cols - c_mid) * s > 0]  # the rim lateral of mid-hemithorax
            if cols.size < 3:
                continue
            rows += 1
            prof = case.image[r]
            edge = cols.min() if s > 0 else cols.max()  # the medial end of the rim: the line
            peak = max(range(edge - 2, edge + 3), key=lambda k: prof[k])
            ridges += prof[peak] > prof[peak + 3 * s] + 0.02 and prof[peak] > prof[peak - 2 * s] + 0.005
        assert rows >= 4 and ridges >= 0.6 * rows, (seed, ridges, rows)


# -------------------------------------------------------------------------- consolidation
@pytest.mark.parametrize("side", ["left", "right"])
def test_consolidation_air_bronchograms(side, monkeypatch):
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Consolidation", side=side, zone="middle"))
        core = binary_erosion(case.masks["Consolidation"], iterations=3) & (diff > 0.15)
        air = bronchi(build_maps(case.anatomy, SIZE))  # where the bronchi run (cm of lumen air)
        on = core & (air > 0.15)
        assert on.sum() >= 5, "bronchi run through the opacity"
        # the bronchi keep their air: along them the opacity is darker than the same opacity
        # with airless bronchi (lucent branching lines inside the white)
        with monkeypatch.context() as m:
            m.setattr(signs, "BRONCHOGRAM", 0.0)
            airless = render_case(seed, SIZE, CLEAN, findings=[case.finding("Consolidation")], anatomy=case.anatomy)
        assert (case.image - airless.image)[on].mean() < -0.03


@pytest.mark.parametrize("side", ["left", "right"])
def test_consolidation_silhouettes_the_heart_border(side):
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Consolidation", side=side, zone="middle"))
        g = anat.heart_geometry(case.anatomy, case.anatomy.heart_ctr)
        s = anat.side_sign(side)
        border = g["left"] if side == "left" else g["right"]
        mask = case.masks["Consolidation"]
        ratios = []
        for y in np.linspace(g["cy"] - 0.05, g["cy"] + 0.05, 5):
            r, c = pixel(case, s * border, y)
            if not mask[r, max(0, c - 3):c + 4].any():
                continue
            span = slice(max(0, c - 4), min(SIZE, c + 5))
            edge = lambda img: np.abs(np.diff(gaussian_filter(img, 0.7)[r, span])).max()  # noqa: E731
            ratios.append(edge(case.image) / edge(twin.image))
        assert ratios and np.mean(ratios) < 0.45, (seed, ratios)  # the border is erased


@pytest.mark.parametrize("side", ["left", "right"])
def test_lower_lobe_consolidation_silhouettes_the_dome(side):
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Consolidation", side=side, zone="lower"))
        mask = case.masks["Consolidation"]
        ratios = []
        for col in np.nonzero(mask.any(axis=0))[0]:
            twin_col = gaussian_filter(twin.image, 0.7)[:, col]
            r = dome_row(case, twin_col, col, side)
            if not mask[max(0, r - 3):r + 1, col].any():
                continue
            case_col = gaussian_filter(case.image, 0.7)[:, col]
            ratios.append(np.diff(case_col)[r] / np.diff(twin_col)[r])
        assert len(ratios) >= 3 and np.median(ratios) < 0.45, (seed, ratios)


# ---------------------------------------------------------------------------- atelectasis
@pytest.mark.parametrize("severity", ["mild", "moderate"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_atelectasis_raises_the_hemidiaphragm(severity, side):
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Atelectasis", side=side, severity=severity))
        p = case.anatomy
        s = anat.side_sign(side)
        wall = float(anat.lateral_wall(p, p.dome_peak(side)))
        lifts = []
        for frac in (0.6, 0.7, 0.8):
            _, col = pixel(case, s * frac * wall, p.dome_peak(side))
            dome = lambda img: dome_row(case, gaussian_filter(img, 0.7)[:, col], col, side)  # noqa: E731
            lifts.append(dome(twin.image) - dome(case.image))
        assert np.median(lifts) >= 1, (seed, lifts)  # volume loss: the dome is higher
        assert (diff[case.masks["Atelectasis"]] > 0.05).sum() >= 8  # and the lung above is denser


# ---------------------------------------------------------------------------------- edema
@pytest.mark.parametrize("severity", ["mild", "moderate", "severe"])
def test_edema_bat_wing_and_kerley_lines(severity):
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Edema", severity=severity))
        p = case.anatomy
        x, y = phantom_coordinates(p, SIZE)
        for side in ("right", "left"):
            s = anat.side_sign(side)
            hx, hy = anat.hilum_point(p, side)
            wall = anat.lateral_wall(p, y)
            u = s * x
            band = np.abs(y - hy) < 0.12
            lung = case.masks["Edema"]
            inner = band & lung & (u > abs(hx)) & (u < abs(hx) + 0.25 * wall)
            outer = band & lung & (u > 0.80 * wall) & (u < 0.95 * wall)
            # bat wing: opaque around the hila, the periphery spared
            assert diff[inner].mean() > 2.0 * max(diff[outer].mean(), 0.005), (seed, side)
            # Kerley B lines: horizontal septal lines at the lateral lower zone
            cp = p.costophrenic(side)
            region = lung & (y > cp - 0.35) & (y < cp - 0.02) & (u > wall - 0.12) & (u < wall)
            # thin lines: the second difference across them (vertical) beats the one along them
            inside = region[1:-1, 1:-1]
            across = np.abs(diff[:-2, 1:-1] - 2 * diff[1:-1, 1:-1] + diff[2:, 1:-1])[inside].mean()
            along = np.abs(diff[1:-1, :-2] - 2 * diff[1:-1, 1:-1] + diff[1:-1, 2:])[inside].mean()
            assert across > 1.5 * along and (diff[region] > 0.04).sum() >= 4, (seed, side, across, along)


# --------------------------------------------------------------------------- cardiomegaly
def test_cardiothoracic_ratio_measured_on_the_film():
    """Read off the pixels alone, the CTR is above 0.5 with cardiomegaly and at most 0.5
    without, on nearly every film, and close to the true ratio."""
    right, errors = 0, []
    for seed in range(30):
        normal = render_case(seed, SIZE, findings=[])
        big = render_case(seed, SIZE, findings=[Finding("Cardiomegaly", severity=("mild", "severe")[seed % 2])])
        read_normal, read_big = cardiothoracic_ratio(normal.image).ctr, cardiothoracic_ratio(big.image).ctr
        right += (read_normal <= 0.5) + (read_big > 0.5)
        errors += [read_normal - normal.anatomy.heart_ctr, read_big - big.finding("Cardiomegaly").detail["ctr"]]
    assert right >= 0.95 * 60, right
    assert np.median(np.abs(errors)) <= 0.04, np.median(np.abs(errors))


@pytest.mark.parametrize("severity", ["mild", "moderate", "severe"])
def test_cardiomegaly_mask_lies_within_the_cardiac_silhouette(severity):
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Cardiomegaly", severity=severity))
        mask = case.masks["Cardiomegaly"]
        img = gaussian_filter(case.image, 0.7)
        lung_level = np.percentile(twin.image[case.masks["Cardiomegaly"] & (diff > 0.2)], 10) if (diff > 0.2).any() else 0.3
        heart_level = np.median(img[binary_erosion(mask, iterations=3)])
        threshold = 0.5 * (np.percentile(twin.image, 20) + heart_level)
        assert (img[mask] > threshold).mean() > 0.9, (seed, lung_level)
        # the silhouette ends at the domes: no mask below the lowest lung pixel beside it
        lung_rows = np.nonzero((twin.image < threshold).any(axis=1))[0]
        assert np.nonzero(mask.any(axis=1))[0].max() <= lung_rows.max()


# --------------------------------------------------------------------------- nodule / mass
@pytest.mark.parametrize("kind, size_mm", [("nodule", 20), ("nodule", 25), ("nodule", 30),
                                           ("mass", 40), ("mass", 55)])
def test_nodule_and_mass_are_round_soft_edged_and_of_the_stated_size(kind, size_mm):
    for seed in SEEDS:
        f = Finding("Lung Lesion", side="right", zone="upper", detail={"kind": kind, "size_mm": size_mm})
        case, twin, diff = pair(seed, f)
        spacing = pixel_spacing_mm(case.anatomy, SIZE)  # mm per pixel at the patient
        d = gaussian_filter(diff, 0.5)
        peak = d.max()
        blob = d > 0.25 * peak  # the sphere's chord is 25 % of its maximum at 0.97 radius
        diameter_mm = 2.0 * np.sqrt(blob.sum() / np.pi) * spacing
        assert 0.7 * size_mm <= diameter_mm <= 1.35 * size_mm + spacing, (seed, diameter_mm, size_mm)
        rows, cols = np.nonzero(blob)
        extent = max(np.ptp(rows), np.ptp(cols)) + 1
        assert blob.sum() / (np.pi * (extent / 2) ** 2) > 0.6  # round
        # soft edge: from 80 % to 20 % of the peak takes more than a pixel
        assert ((d > 0.2 * peak) & (d < 0.8 * peak)).sum() > 0.5 * (d > 0.8 * peak).sum()
    assert (kind == "nodule") == (size_mm <= 30)


# ------------------------------------------------------------------------------- fracture
@pytest.mark.parametrize("side", ["left", "right"])
def test_rib_fracture_shows_a_gap_and_a_cortical_step(side):
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Fracture", side=side))
        region = case.masks["Fracture"]
        assert diff[region].min() < -0.04  # a gap where bone was
        assert diff[region].max() > 0.04   # the displaced fragment where there was none
        assert np.abs(diff[~binary_dilation(region, iterations=3)]).max() < 1e-6  # nothing else
        # the extrapleural hematoma: a lens of soft tissue in profile just inside the lateral
        # wall at the fracture's level, thicker than two pixels and densest at the wall
        f = case.finding("Fracture")
        _, by = rib_point(case.anatomy, side, f.detail["rib"], f.detail["u"])
        row, col = pixel(case, anat.side_sign(side) * float(anat.lateral_wall(case.anatomy, by)), by)
        inward = int(np.sign(pixel(case, 0.0, by)[1] - col))
        profile = diff[row, col + inward * np.arange(6)]  # from the wall towards the midline
        bright = np.count_nonzero(profile > 0.08)
        assert bright >= 2, (seed, side, np.round(profile, 2))


# ------------------------------------------------------------------------------- devices
def test_support_devices_tips_lie_where_they_belong():
    devices = ["endotracheal tube", "central venous catheter", "pacemaker"]
    for seed in SEEDS:
        case, twin, diff = pair(seed, Finding("Support Devices", detail={"devices": devices}))
        p = case.anatomy
        f = case.finding("Support Devices")
        metal = diff > 0.06
        near_metal = diff > 0.02  # over the heart the tone curve compresses a wire's contrast
        x, y = phantom_coordinates(p, SIZE)
        cx, cy = anat.carina_point(p)
        # endotracheal tube: its lowest opaque pixel over the trachea lies 3-7 cm above the carina
        tube = metal & (np.abs(x - cx) < 0.03) & (y < cy)
        tip_y = y[tube].max()
        above_cm = (cy - tip_y) * MM_PER_UNIT / 10
        assert 2.0 <= above_cm <= 8.0, (seed, above_cm)
        # central line: its tip in the SVC, right of the midline, above the right atrium
        tips = device_tips(p, f)
        lx, ly = tips["central venous catheter"]
        r, c = pixel(case, lx, ly)
        assert near_metal[max(0, r - 1):r + 2, max(0, c - 1):c + 2].any()
        assert lx < 0 and abs(lx) < p.mediastinum_half_width + 0.02
        g = anat.heart_geometry(p, p.heart_ctr)
        assert ly < g["ra_cy"] - 0.5 * g["ra_b"]
        # pacemaker: generator left infraclavicular (image right), lead tip over the right
        # ventricle: inside the cardiac silhouette, left of the midline, in its lower half
        bx, by = generator_centre(p)
        r, c = pixel(case, bx, by)
        assert c > SIZE // 2 and metal[r, c] and by > p.clavicle_y
        tx, ty = tips["pacemaker lead"]
        r, c = pixel(case, tx, ty)
        assert near_metal[max(0, r - 1):r + 2, max(0, c - 1):c + 2].any()
        assert anat.heart_sdf(p, np.array(tx), np.array(ty), p.heart_ctr) < 0
        assert tx > 0 and ty > g["cy"] - 0.02
