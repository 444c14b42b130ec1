"""Sensors described as data: band ids, common names, wavelengths, scale and offset.

The common band vocabulary follows spyndex's band codes so that any index in its
catalogue can be evaluated on any scene whose bands we can name:

    coastal=A  blue=B  green=G  red=R  rededge1..3=RE1..RE3  nir=N  nir08=N2
    water_vapour=WV  cirrus  swir1=S1  swir2=S2  thermal1=T1  thermal2=T2
    VV VH HH HV (SAR, backscatter in dB)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Common name -> spyndex band code. Names with no spyndex code (cirrus, pan) still
# name bands, they just cannot feed an index.
SPYNDEX_CODE: dict[str, str] = {
    "coastal": "A",
    "blue": "B",
    "green": "G",
    "red": "R",
    "rededge1": "RE1",
    "rededge2": "RE2",
    "rededge3": "RE3",
    "nir": "N",
    "nir08": "N2",
    "water_vapour": "WV",
    "swir1": "S1",
    "swir2": "S2",
    "thermal1": "T1",
    "thermal2": "T2",
    "VV": "VV",
    "VH": "VH",
    "HH": "HH",
    "HV": "HV",
}
COMMON_NAMES: tuple[str, ...] = (*SPYNDEX_CODE, "cirrus", "pan")

# Words people and file names use for a band, normalised (lower case, no separators).
# fmt: off
ALIASES: dict[str, str] = {
    "coastal": "coastal", "aerosol": "coastal", "coastalaerosol": "coastal", "ca": "coastal",
    "blue": "blue", "b": "blue",
    "green": "green", "g": "green",
    "red": "red", "r": "red",
    "rededge1": "rededge1", "re1": "rededge1", "vre1": "rededge1", "rededge": "rededge1",
    "rededge2": "rededge2", "re2": "rededge2", "vre2": "rededge2",
    "rededge3": "rededge3", "re3": "rededge3", "vre3": "rededge3",
    "nir": "nir", "n": "nir", "nearinfrared": "nir", "nir1": "nir",
    "nir08": "nir08", "n2": "nir08", "nirnarrow": "nir08", "narrownir": "nir08",
    "rededge4": "nir08", "re4": "nir08",
    "watervapour": "water_vapour", "watervapor": "water_vapour", "wv": "water_vapour",
    "cirrus": "cirrus",
    "swir1": "swir1", "s1": "swir1", "swir16": "swir1", "swir": "swir1", "mir": "swir1",
    "swir2": "swir2", "s2": "swir2", "swir22": "swir2",
    "thermal": "thermal1", "thermal1": "thermal1", "tir": "thermal1", "tir1": "thermal1",
    "lwir": "thermal1", "lwir11": "thermal1", "t1": "thermal1",
    "thermal2": "thermal2", "tir2": "thermal2", "lwir12": "thermal2", "t2": "thermal2",
    "pan": "pan", "panchromatic": "pan",
    "vv": "VV", "vh": "VH", "hh": "HH", "hv": "HV",
}
# fmt: on


def normalise_token(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def common_name(text: str) -> str | None:
    """Map a user's or a file's word for a band to the common vocabulary."""
    return ALIASES.get(normalise_token(text))


@dataclass(frozen=True)
class BandSpec:
    band_id: str  # the sensor's own id: "B8A", "B5", "VV"
    name: str  # common vocabulary
    wavelength_nm: float | None  # centre wavelength; None for SAR
    resolution_m: float


@dataclass(frozen=True)
class SensorSpec:
    key: str
    title: str
    bands: tuple[BandSpec, ...]
    scale: float = 1.0  # reflectance = DN * scale + offset
    offset: float = 0.0
    units: str = "reflectance"  # or "dB", "DN"
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())  # id tokens that name this band set

    def band_by_id(self, band_id: str) -> BandSpec | None:
        wanted = _canonical_band_id(band_id)
        for band in self.bands:
            if _canonical_band_id(band.band_id) == wanted:
                return band
        return None

    def band_by_name(self, name: str) -> BandSpec | None:
        return next((b for b in self.bands if b.name == name), None)


def _canonical_band_id(band_id: str) -> str:
    """'B02', 'b2', 'B2' all name band 2; 'B8A' stays 'B8A'."""
    token = normalise_token(band_id).upper()
    match = re.fullmatch(r"B?0*(\d+)(A?)", token)
    if match:
        return f"B{match.group(1)}{match.group(2)}"
    return token


_S2_BANDS = (
    BandSpec("B1", "coastal", 442.7, 60),
    BandSpec("B2", "blue", 492.4, 10),
    BandSpec("B3", "green", 559.8, 10),
    BandSpec("B4", "red", 664.6, 10),
    BandSpec("B5", "rededge1", 704.1, 20),
    BandSpec("B6", "rededge2", 740.5, 20),
    BandSpec("B7", "rededge3", 782.8, 20),
    BandSpec("B8", "nir", 832.8, 10),
    BandSpec("B8A", "nir08", 864.7, 20),
    BandSpec("B9", "water_vapour", 945.1, 60),
    BandSpec("B10", "cirrus", 1373.5, 60),
    BandSpec("B11", "swir1", 1613.7, 20),
    BandSpec("B12", "swir2", 2202.4, 20),
)

_TM_BANDS = (
    BandSpec("B1", "blue", 485, 30),
    BandSpec("B2", "green", 560, 30),
    BandSpec("B3", "red", 660, 30),
    BandSpec("B4", "nir", 830, 30),
    BandSpec("B5", "swir1", 1650, 30),
    BandSpec("B6", "thermal1", 11450, 120),
    BandSpec("B7", "swir2", 2215, 30),
)
_ETM_BANDS = (*_TM_BANDS, BandSpec("B8", "pan", 710, 15))
_OLI_BANDS = (
    BandSpec("B1", "coastal", 443, 30),
    BandSpec("B2", "blue", 482, 30),
    BandSpec("B3", "green", 561.5, 30),
    BandSpec("B4", "red", 654.5, 30),
    BandSpec("B5", "nir", 865, 30),
    BandSpec("B6", "swir1", 1608.5, 30),
    BandSpec("B7", "swir2", 2200.5, 30),
    BandSpec("B8", "pan", 589.5, 15),
    BandSpec("B9", "cirrus", 1373.5, 30),
    BandSpec("B10", "thermal1", 10895, 100),
    BandSpec("B11", "thermal2", 12005, 100),
)
# Collection 2 Level-2 surface reflectance: USGS product guide, scale 2.75e-5, offset -0.2.
_C2L2_SCALE, _C2L2_OFFSET = 0.0000275, -0.2

SENSORS: dict[str, SensorSpec] = {
    "sentinel2_l1c": SensorSpec(
        "sentinel2_l1c",
        "Sentinel-2 MSI Level-1C (top-of-atmosphere)",
        _S2_BANDS,
        scale=1e-4,
        aliases=("msil1c", "l1c"),
        notes="Top-of-atmosphere reflectance; indices are slightly biased versus surface "
        "reflectance (L2A).",
    ),
    "sentinel2_l2a": SensorSpec(
        "sentinel2_l2a",
        "Sentinel-2 MSI Level-2A (surface reflectance)",
        tuple(b for b in _S2_BANDS if b.band_id != "B10"),
        scale=1e-4,
        aliases=("msil2a", "l2a"),
    ),
    "landsat45_tm": SensorSpec(
        "landsat45_tm",
        "Landsat 4-5 TM",
        _TM_BANDS,
        aliases=("lt04", "lt05", "tm"),
    ),
    "landsat7_etm": SensorSpec(
        "landsat7_etm",
        "Landsat 7 ETM+",
        _ETM_BANDS,
        aliases=("le07", "lsat7", "etm"),
    ),
    "landsat89_oli": SensorSpec(
        "landsat89_oli",
        "Landsat 8-9 OLI/TIRS",
        _OLI_BANDS,
        aliases=("lc08", "lc09", "lo08", "lo09", "oli"),
    ),
    "sentinel1_grd": SensorSpec(
        "sentinel1_grd",
        "Sentinel-1 C-band SAR GRD",
        (
            BandSpec("VV", "VV", None, 10),
            BandSpec("VH", "VH", None, 10),
            BandSpec("HH", "HH", None, 10),
            BandSpec("HV", "HV", None, 10),
        ),
        units="dB",
        aliases=("s1", "grd", "sentinel1", "s1a", "s1b"),
    ),
    "rgb": SensorSpec(
        "rgb",
        "RGB (aerial or visible-only imagery)",
        (
            BandSpec("1", "red", 650, 0),
            BandSpec("2", "green", 550, 0),
            BandSpec("3", "blue", 470, 0),
        ),
        units="DN",
        notes="Visible bands only: no NIR or SWIR, so vegetation and water indices that "
        "need them are unavailable.",
    ),
}

# Sentinel-2 processing baseline 04.00 (from 25 January 2022) adds a radiometric
# offset of -1000 DN to L1C and L2A products (ESA S2 MPC, "Processing Baseline 04.00").
S2_OFFSET_BASELINE_DATE = "2022-01-25"
S2_BASELINE_OFFSET_DN = -1000


def sentinel2_offset(date: str | None, baseline: str | None) -> float:
    """The reflectance offset for a Sentinel-2 product, from its baseline or date."""
    if baseline:
        try:
            return S2_BASELINE_OFFSET_DN * 1e-4 if float(baseline) >= 4.0 else 0.0
        except ValueError:
            pass
    if date and date >= S2_OFFSET_BASELINE_DATE:
        return S2_BASELINE_OFFSET_DN * 1e-4
    return 0.0


def landsat_level2_scaling() -> tuple[float, float]:
    return _C2L2_SCALE, _C2L2_OFFSET


def identify_sensor(text: str) -> SensorSpec | None:
    """Guess a sensor from a file name, product id or metadata text."""
    tokens = set(re.split(r"[^a-z0-9]+", text.lower()))
    joined = normalise_token(text)
    if "msil2a" in joined or ({"s2", "sentinel2"} & tokens and "l2a" in tokens):
        return SENSORS["sentinel2_l2a"]
    if "msil1c" in joined or ({"s2", "sentinel2"} & tokens and "l1c" in tokens):
        return SENSORS["sentinel2_l1c"]
    if {"s2", "sentinel2", "s2a", "s2b", "s2c"} & tokens or "sentinel2" in joined:
        return SENSORS["sentinel2_l2a"]
    for key in ("landsat89_oli", "landsat7_etm", "landsat45_tm"):
        if set(SENSORS[key].aliases) & tokens:
            return SENSORS[key]
    if {"s1", "sentinel1", "s1a", "s1b", "grd", "sar"} & tokens or "sentinel1" in joined:
        return SENSORS["sentinel1_grd"]
    return None


def band_from_file_name(stem: str, sensor: SensorSpec | None) -> str | None:
    """Name the band a one-band file holds from its file name.

    Tries, in order: a common name anywhere in the stem ("S2_swir1", "red"), a sensor
    band id as the last token ("..._B8A", "SR_B4"), and Landsat 7's legacy two-digit
    ids ("lsat7_2000_40" is band 4; old ETM+ files were named B10..B80).
    """
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", stem) if p]
    for part in reversed(parts):
        name = common_name(part)
        if name and (len(part) > 2 or name in ("VV", "VH", "HH", "HV")):
            return name
    if not parts or sensor is None:
        return None
    last = parts[-1]
    band = sensor.band_by_id(last)
    if band and re.fullmatch(r"[Bb]?\d+[Aa]?|V[VH]|H[HV]", last, flags=re.IGNORECASE):
        return band.name
    if sensor.key == "landsat7_etm" and re.fullmatch(r"[Bb]?[1-8]0", last):
        legacy = sensor.band_by_id(last.lstrip("Bb")[0])
        return legacy.name if legacy else None
    return None
