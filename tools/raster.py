"""Opening scenes: multiband files or folders of one-band files, band naming,
reflectance scaling, a common pixel grid, windowed reading and pixel areas.

A `Scene` never holds pixels: it knows where each named band lives and reads any
window of them on the scene's grid as float32, with nodata and NaN set to NaN and
the sensor's scale and offset applied. Bands stored at another resolution or on
another grid are warped onto the scene grid window by window, so memory stays flat
however large the scene.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.warp import reproject
from rasterio.windows import Window

from tools.errors import BandError, GridMismatchError, InputFileError, one_line
from tools.sensors import (
    SENSORS,
    SensorSpec,
    band_from_file_name,
    common_name,
    identify_sensor,
    landsat_level2_scaling,
    sentinel2_offset,
)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg", ".vrt", ".img")
SAR_NAMES = ("VV", "VH", "HH", "HV")
# Pixels per window when a scene is streamed: ~16 MB per float32 band.
DEFAULT_WINDOW_PIXELS = 4_194_304
# GDAL's block cache defaults to 5% of RAM and all of it counts against the process;
# windowed reading decodes each block once, so a small cache loses nothing
# (bench/raster_bench.py: peak RSS 1196 -> 492 MB on a 10980 x 10980 scene).
os.environ.setdefault("GDAL_CACHEMAX", "256")
_GEOD = Geod(ellps="WGS84")
# Pillow's DecompressionBombError limit (2 x 89.5 Mpx), applied to untiled image formats.
MAX_IMAGE_PIXELS = 178_956_970
UNTILED_IMAGE_DRIVERS = frozenset({"PNG", "JPEG", "GIF", "BMP"})


def pixel_to_map(
    transform: Affine, cols: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of (fractional) pixel positions under an affine transform."""
    t = transform
    return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f


@dataclass(frozen=True)
class Grid:
    """A pixel grid: where every pixel of a scene or result lies on the Earth."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    def describe(self) -> str:
        crs = self.crs.to_string() if self.crs else "no CRS"
        res_x, res_y = self.resolution
        return f"{self.width}x{self.height} px, {crs}, pixel {res_x:.6g} x {res_y:.6g}"

    @property
    def resolution(self) -> tuple[float, float]:
        t = self.transform
        return (math.hypot(t.a, t.d), math.hypot(t.b, t.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = pixel_to_map(
            self.transform,
            np.array([0, self.width, 0, self.width]),
            np.array([0, 0, self.height, self.height]),
        )
        return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))

    def same_as(self, other: Grid, tolerance: float = 1e-6) -> bool:
        if self.shape != other.shape or (self.crs is None) != (other.crs is None):
            return False
        if self.crs is not None and other.crs is not None and self.crs != other.crs:
            return False
        pixel = max(self.resolution)
        return all(
            abs(a - b) <= tolerance * max(pixel, 1e-12)
            for a, b in zip(self.transform[:6], other.transform[:6], strict=True)
        )

    def window_transform(self, window: Window) -> Affine:
        t = self.transform
        x, y = pixel_to_map(t, window.col_off, window.row_off)
        return Affine(t.a, t.b, float(x), t.d, t.e, float(y))

    def windows(
        self, max_pixels: int = DEFAULT_WINDOW_PIXELS, block_height: int = 1
    ) -> Iterator[Window]:
        """Full-width strips of at most `max_pixels`, their height a multiple of the
        file's block height so that each stored block is decoded once."""
        rows = max(1, max_pixels // max(self.width, 1))
        if block_height > 1 and 2 * rows >= block_height:
            rows = max(block_height, rows - rows % block_height)
        for row in range(0, self.height, rows):
            yield Window(0, row, self.width, min(rows, self.height - row))

    @cached_property
    def _area_model(self) -> _PixelAreaModel:
        return _PixelAreaModel(self)

    def pixel_area_m2(self, window: Window | None = None) -> np.ndarray | None:
        """Ground area of each pixel in m², broadcastable to the window's shape.

        Geographic CRS: exact ellipsoidal area per row (cells shrink with latitude).
        Projected CRS: planar area times the ratio of geodesic (WGS84) to planar area
        measured on blocks of pixels, so Web Mercator, or UTM far from its central
        meridian, still give true ground area.
        None when the grid has no CRS.
        """
        if self.crs is None:
            return None
        window = window or Window(0, 0, self.width, self.height)
        return self._area_model.area(window)

    def area_m2(self, mask: np.ndarray, window: Window | None = None) -> float | None:
        """Ground area in m² of the True pixels of `mask` (shaped like the window)."""
        area = self.pixel_area_m2(window)
        if area is None:
            return None
        if area.size == 1:
            return float(np.count_nonzero(mask)) * float(area.reshape(-1)[0])
        return float(np.sum(np.broadcast_to(area, mask.shape), where=mask.astype(bool)))


class _PixelAreaModel:
    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self._recent: dict[tuple[int, int, int, int], np.ndarray] = {}
        if grid.crs is None:
            raise ValueError("pixel areas need a CRS")
        crs = CRS.from_user_input(grid.crs.to_wkt())
        t = grid.transform
        self.geographic = crs.is_geographic and t.b == 0 and t.d == 0
        if self.geographic:
            ellipsoid = crs.ellipsoid
            if ellipsoid is None:
                raise ValueError(f"{crs} has no ellipsoid")
            self.a = ellipsoid.semi_major_metre
            f = 1.0 / ellipsoid.inverse_flattening if ellipsoid.inverse_flattening else 0.0
            self.e2 = f * (2 - f)
            unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else math.pi / 180
            self.unit_rad = unit
        else:
            unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
            self.planar_m2 = abs(t.a * t.e - t.b * t.d) * unit * unit
            self._to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def area(self, window: Window) -> np.ndarray:
        # Tools ask for the same window more than once (water and valid area, say).
        key = (int(window.row_off), int(window.col_off), int(window.height), int(window.width))
        cached = self._recent.get(key)
        if cached is None:
            cached = self._geographic_rows(window) if self.geographic else self._projected(window)
            if len(self._recent) >= 4:
                self._recent.pop(next(iter(self._recent)))
            self._recent[key] = cached
        return cached

    def _geographic_rows(self, window: Window) -> np.ndarray:
        t = self.grid.transform
        rows = np.arange(window.row_off, window.row_off + window.height + 1, dtype=np.float64)
        lat = np.clip((t.f + rows * t.e) * self.unit_rad, -math.pi / 2, math.pi / 2)
        dlon = abs(t.a) * self.unit_rad
        # Area between two parallels on the ellipsoid, per radian of longitude:
        # b^2/2 * [q(phi)] with q the authalic-latitude function (Snyder 1987, eq. 3-12).
        e2 = self.e2
        s = np.sin(lat)
        if e2 > 0:
            e = math.sqrt(e2)
            q = s / (1 - e2 * s * s) + np.log((1 + e * s) / (1 - e * s)) / (2 * e)
        else:
            q = 2 * s
        b2 = self.a * self.a * (1 - e2)
        band_area = 0.5 * b2 * np.abs(np.diff(q)) * dlon
        return band_area.reshape(-1, 1)

    def _projected(self, window: Window) -> np.ndarray:
        return self.planar_m2 * self._ground_over_planar(window)

    def _ground_over_planar(self, window: Window) -> np.ndarray:
        """Ratio of true (geodesic) to planar pixel area, sampled on a coarse lattice
        of pixel blocks and interpolated bilinearly: it varies smoothly, and a geodesic
        polygon per pixel would cost far more than the index computation itself."""
        h, w = int(window.height), int(window.width)
        n_r, n_c = min(h, 9), min(w, 9)
        rows = np.linspace(window.row_off + 0.5, window.row_off + h - 0.5, n_r)
        cols = np.linspace(window.col_off + 0.5, window.col_off + w - 0.5, n_c)
        half = 4.0  # an 8x8-pixel block keeps the polygon area well above rounding noise
        ratio = np.empty((n_r, n_c))
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                ratio[i, j] = self._block_ratio(r, c, half)
        if not np.all(np.isfinite(ratio)) or np.any(ratio <= 0):
            return np.ones((1, 1))
        if n_r == 1 or n_c == 1 or np.ptp(ratio) <= 1e-7 * ratio.mean():
            return np.full((1, 1), ratio.mean())
        # Bilinear on the lattice, separably: along columns for each lattice row, then
        # between lattice rows (pixel centres all lie inside the lattice span).
        r_full = np.arange(window.row_off, window.row_off + h) + 0.5
        c_full = np.arange(window.col_off, window.col_off + w) + 0.5
        by_col = np.stack([np.interp(c_full, cols, ratio[i]) for i in range(n_r)])
        position = np.interp(r_full, rows, np.arange(n_r, dtype=np.float64))
        lower = np.minimum(position.astype(np.int64), n_r - 2)
        weight = (position - lower)[:, np.newaxis]
        return (1 - weight) * by_col[lower] + weight * by_col[lower + 1]

    def _block_ratio(self, row: float, col: float, half: float) -> float:
        cols = np.array([col - half, col + half, col + half, col - half])
        rows = np.array([row - half, row - half, row + half, row + half])
        x, y = pixel_to_map(self.grid.transform, cols, rows)
        lon, lat = self._to_lonlat.transform(x, y)
        ground = abs(_GEOD.polygon_area_perimeter(lon, lat)[0])
        planar = self.planar_m2 * (2 * half) ** 2
        return ground / planar


@dataclass(frozen=True)
class Band:
    """Where one named band lives and how to turn its stored values into physics."""

    name: str
    path: str
    index: int  # 1-based band index within the file
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    units: str = "reflectance"
    band_id: str | None = None
    linear_to_db: bool = False  # SAR stored as linear power, read as dB


@dataclass
class Scene:
    """A scene: named bands on one grid, read lazily in windows."""

    source: str
    bands: dict[str, Band]
    grid: Grid
    sensor: SensorSpec | None = None
    date: str | None = None
    notes: list[str] = field(default_factory=list)
    _handles: dict[str, rasterio.io.DatasetReader] = field(default_factory=dict, repr=False)
    _grids: dict[str, Grid] = field(default_factory=dict, repr=False)

    # -- context management: datasets are opened on first read and kept open --
    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        with contextlib.suppress(Exception):
            self.close()

    @property
    def band_names(self) -> list[str]:
        return list(self.bands)

    @property
    def sensor_name(self) -> str:
        return self.sensor.title if self.sensor else "unknown sensor"

    @property
    def block_height(self) -> int:
        first = next(iter(self.bands.values()))
        return int(self._dataset(first.path).block_shapes[0][0])

    def has(self, *names: str) -> bool:
        return all(n in self.bands for n in names)

    def require(self, names: list[str] | tuple[str, ...], purpose: str) -> None:
        missing = [n for n in names if n not in self.bands]
        if missing:
            raise BandError(
                f"{purpose} needs band(s) {', '.join(missing)} but {Path(self.source).name} has "
                f"{', '.join(self.bands) or 'no named bands'}; map bands explicitly "
                f"(e.g. --bands nir=4,red=3) or use a scene that has them."
            )

    def regridded(self, grid: Grid) -> Scene:
        """The same bands, read onto another grid (warped on the fly)."""
        return replace(self, grid=grid, _handles={}, _grids={})

    def windows(self, max_pixels: int = DEFAULT_WINDOW_PIXELS) -> Iterator[Window]:
        return self.grid.windows(max_pixels, self.block_height)

    def _dataset(self, path: str) -> rasterio.io.DatasetReader:
        handle = self._handles.get(path)
        if handle is None or handle.closed:
            handle = _open_dataset(path)
            self._handles[path] = handle
            self._grids[path] = Grid(handle.crs, handle.transform, handle.width, handle.height)
        return handle

    def read(
        self, names: list[str] | tuple[str, ...], window: Window | None = None
    ) -> dict[str, np.ndarray]:
        """Bands as float32 arrays on the scene grid; invalid pixels are NaN."""
        self.require(list(names), "This computation")
        window = window or Window(0, 0, self.grid.width, self.grid.height)
        out: dict[str, np.ndarray] = {}
        # Bands of one file on the scene grid are read in one call, so a
        # pixel-interleaved tile is decoded once for all of them.
        direct: dict[str, list[Band]] = {}
        for name in dict.fromkeys(names):
            band = self.bands[name]
            dataset = self._dataset(band.path)
            if self._grids[band.path].same_as(self.grid):
                direct.setdefault(band.path, []).append(band)
            else:
                with self._io_errors(band):
                    out[name] = self._to_physical(band, self._warp_band(dataset, band, window))
        for path, bands in direct.items():
            with self._io_errors(bands[0]):
                raws = self._dataset(path).read([b.index for b in bands], window=window)
            for band, raw in zip(bands, raws, strict=True):
                data = raw.astype(np.float32, copy=False)
                if band.nodata is not None and not math.isnan(band.nodata):
                    data[raw == band.nodata] = np.nan
                out[band.name] = self._to_physical(band, data)
        return {name: out[name] for name in names}

    def read_band(self, name: str, window: Window | None = None) -> np.ndarray:
        return self.read([name], window)[name]

    @contextlib.contextmanager
    def _io_errors(self, band: Band) -> Iterator[None]:
        try:
            yield
        except RasterioIOError as exc:
            raise InputFileError(
                f"Could not read band {band.name} from {band.path}: {one_line(str(exc))}. The "
                "file may be truncated or corrupt; re-download or re-export it."
            ) from exc

    @staticmethod
    def _to_physical(band: Band, data: np.ndarray) -> np.ndarray:
        if band.linear_to_db:
            with np.errstate(divide="ignore", invalid="ignore"):
                data = np.where(data > 0, 10 * np.log10(data), np.nan).astype(np.float32)
        if band.scale != 1.0:
            data *= np.float32(band.scale)
        if band.offset != 0.0:
            data += np.float32(band.offset)
        return data

    def _warp_band(
        self, dataset: rasterio.io.DatasetReader, band: Band, window: Window
    ) -> np.ndarray:
        if self.grid.crs is None or dataset.crs is None:
            raise GridMismatchError(
                f"Band {band.name} ({band.path}) is on a different grid and has no CRS to "
                "resample it with; give bands of the same size or georeferenced files."
            )
        dest = np.full((int(window.height), int(window.width)), np.nan, dtype=np.float32)
        # Bilinear keeps reflectances physical when a 20 m band meets a 10 m grid;
        # nodata and areas outside the band stay NaN and never enter the average.
        reproject(
            source=rasterio.band(dataset, band.index),
            destination=dest,
            src_nodata=band.nodata,
            dst_transform=self.grid.window_transform(window),
            dst_crs=self.grid.crs,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
            init_dest_nodata=True,
        )
        return dest

    def summary(self) -> dict[str, object]:
        west, south, east, north = self.grid.bounds
        bounds_4326 = None
        if self.grid.crs is not None:
            bounds_4326 = list(
                rasterio.warp.transform_bounds(self.grid.crs, "EPSG:4326", west, south, east, north)
            )
        return {
            "source": self.source,
            "sensor": self.sensor.key if self.sensor else None,
            "sensor_title": self.sensor_name,
            "date": self.date,
            "bands": {
                n: {
                    "file": Path(b.path).name,
                    "index": b.index,
                    "band_id": b.band_id,
                    "units": b.units,
                    "scale": b.scale,
                    "offset": b.offset,
                }
                for n, b in self.bands.items()
            },
            "width": self.grid.width,
            "height": self.grid.height,
            "crs": self.grid.crs.to_string() if self.grid.crs else None,
            "resolution": list(self.grid.resolution),
            "bounds": [west, south, east, north],
            "bounds_epsg4326": bounds_4326,
            "notes": self.notes,
        }


def _open_dataset(path: str) -> rasterio.io.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        if not Path(path).exists():
            raise InputFileError(f"No such file: {path}; check the path.") from exc
        raise InputFileError(
            f"Cannot open {path} as a raster ({str(exc).splitlines()[0]}); the file may be "
            "truncated or corrupt, or not an image: re-download or re-export it as GeoTIFF."
        ) from exc


BandMap = Mapping[str, int | str]


def open_scene(
    path: str | Path,
    band_map: BandMap | None = None,
    sensor: str | None = None,
) -> Scene:
    """Open a multiband raster, or a folder of one-band rasters, as a Scene.

    `band_map` names bands explicitly: {"nir": 4, "red": 3} for band indices of a
    multiband file, {"nir": "B08"} for band ids, or {"nir": "my_nir.tif"} for files
    of a folder. `sensor` forces a sensor key from `tools.sensors.SENSORS`.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"No such file or folder: {path}; check the path.")
    spec = _sensor_from_key(sensor) if sensor else None
    if band_map:
        band_map = _check_band_map(band_map)
    if path.is_dir():
        scene = _open_folder(path, band_map, spec)
    else:
        scene = _open_file(path, band_map, spec)
    if not scene.bands:
        raise BandError(
            f"Could not name any band of {path.name}; give a band mapping such as "
            "--bands red=1,green=2,blue=3,nir=4."
        )
    if scene.grid.width == 0 or scene.grid.height == 0:
        raise InputFileError(
            f"{path.name} has no pixels ({scene.grid.width}x{scene.grid.height}); "
            "use another scene."
        )
    return scene


def _sensor_from_key(key: str) -> SensorSpec:
    if key not in SENSORS:
        raise BandError(f"Unknown sensor '{key}'; choose one of {', '.join(SENSORS)}.")
    return SENSORS[key]


def _check_band_map(band_map: BandMap) -> dict[str, int | str]:
    checked: dict[str, int | str] = {}
    seen: dict[str, str] = {}
    for raw_name, where in band_map.items():
        name = common_name(raw_name) or raw_name
        if name in checked:
            raise BandError(f"Band mapping names '{name}' twice; give each band once.")
        key = str(where).lower()
        if key in seen:
            raise BandError(
                f"Band mapping assigns source '{where}' to both {seen[key]} and {name}; "
                "each source band can have one name."
            )
        seen[key] = name
        checked[name] = where
    return checked


def _date_from(text: str, tags: Mapping[str, str] | None = None) -> str | None:
    for key in (
        "ACQUISITION_DATE",
        "DATE_ACQUIRED",
        "SENSING_TIME",
        "DATETIME",
        "TIFFTAG_DATETIME",
    ):
        value = (tags or {}).get(key)
        if value:
            match = re.search(r"((?:19|20)\d\d)[-:/]?(\d\d)[-:/]?(\d\d)", value)
            if match:
                return "-".join(match.groups())
    match = re.search(
        r"(?<!\d)((?:19|20)\d\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?:T|\b|_|$)", text
    )
    return "-".join(match.groups()) if match else None


def _scaling_for(
    spec: SensorSpec | None, dtype: str, text: str, date: str | None, tags: Mapping[str, str]
) -> tuple[float, float, str, list[str]]:
    """(scale, offset, units, notes) for the stored values of a sensor."""
    notes: list[str] = []
    if spec is None:
        if dtype == "uint8":
            return 1 / 255, 0.0, "DN", ["8-bit imagery scaled to 0-1; not calibrated reflectance."]
        return 1.0, 0.0, "unknown", ["Unknown sensor: values used as stored."]
    if spec.key.startswith("sentinel2"):
        offset = sentinel2_offset(date, tags.get("PROCESSING_BASELINE") or _baseline_from(text))
        if offset:
            notes.append("Sentinel-2 baseline >= 04.00: -1000 DN offset removed.")
        if spec.notes:
            notes.append(spec.notes)
        return spec.scale, offset, "reflectance", notes
    if spec.key.startswith("landsat"):
        if re.search(r"L2SP|L2SR|SR_B\d", text, flags=re.IGNORECASE):
            scale, offset = landsat_level2_scaling()
            return scale, offset, "reflectance", notes
        notes.append(
            f"{spec.title} values look like raw DN, not surface reflectance: indices are "
            "approximations (use Collection 2 Level-2 SR_B* files for calibrated values)."
        )
        return 1.0, 0.0, "DN", notes
    if spec.key == "rgb" and dtype == "uint8":
        return 1 / 255, 0.0, "DN", [spec.notes]
    return spec.scale, spec.offset, spec.units, ([spec.notes] if spec.notes else [])


def _baseline_from(text: str) -> str | None:
    match = re.search(r"_N(\d{2})(\d{2})_", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _open_file(path: Path, band_map: BandMap | None, spec: SensorSpec | None) -> Scene:
    dataset = _open_dataset(str(path))
    with dataset:
        _refuse_image_bomb(dataset, path)
        tags = dataset.tags()
        descriptions = list(dataset.descriptions)
        count, dtype = dataset.count, dataset.dtypes[0]
        colorinterp = list(dataset.colorinterp)
        grid = Grid(dataset.crs, dataset.transform, dataset.width, dataset.height)
        nodata = dataset.nodata
        file_scales, file_offsets = list(dataset.scales), list(dataset.offsets)
        sample = _sample(dataset) if count <= 4 and dtype.startswith("float") else None
    text = f"{path.name} {' '.join(d or '' for d in descriptions)} {tags.get('SENSOR', '')}"
    spec = spec or identify_sensor(path.stem) or _sensor_from_descriptions(descriptions, count)
    names = _name_bands(descriptions, colorinterp, count, dtype, spec, band_map, path.name)
    if spec is None and set(names.values()) <= {"red", "green", "blue"} and len(names) == 3:
        spec = SENSORS["rgb"]
    date = _date_from(path.name, tags)
    scale, offset, units, notes = _scaling_for(spec, dtype, text, date, tags)
    bands: dict[str, Band] = {}
    for index, name in names.items():
        b_scale, b_offset, b_units, to_db = scale, offset, units, False
        if file_scales[index - 1] not in (None, 1.0) or file_offsets[index - 1] not in (None, 0.0):
            b_scale, b_offset = float(file_scales[index - 1]), float(file_offsets[index - 1])
        if name in SAR_NAMES:
            b_scale, b_offset, b_units = 1.0, 0.0, "dB"
            to_db = sample is not None and _looks_linear(sample[index - 1])
        band_id = descriptions[index - 1] or (
            spec.bands[index - 1].band_id if spec and len(spec.bands) >= index else str(index)
        )
        bands[name] = Band(
            name, str(path), index, b_scale, b_offset, nodata, b_units, band_id, to_db
        )
    if any(b.linear_to_db for b in bands.values()):
        notes.append("SAR backscatter stored as linear power; converted to dB.")
    if spec is None and any(n.startswith("band_") for n in names.values()):
        notes.append("Some bands could not be named; map them with --bands (e.g. nir=4).")
    return Scene(str(path), bands, grid, spec, date, notes)


def _refuse_image_bomb(dataset: rasterio.io.DatasetReader, path: Path) -> None:
    """PNG/JPEG/GIF/BMP are decoded whole-row by GDAL and cannot be read in tiles: a
    small file can unpack to gigapixels. Refuse them above Pillow's own bomb limit."""
    pixels = dataset.width * dataset.height
    if dataset.driver in UNTILED_IMAGE_DRIVERS and pixels > MAX_IMAGE_PIXELS:
        raise InputFileError(
            f"{path.name} is a {dataset.driver} of {dataset.width}x{dataset.height} px "
            f"({pixels / 1e6:.0f} Mpx), above the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx limit for "
            "untiled images (a decompression-bomb guard); crop it or convert it to a tiled "
            "GeoTIFF (gdal_translate -co TILED=YES)."
        )


def _sample(dataset: rasterio.io.DatasetReader) -> list[np.ndarray]:
    h, w = min(dataset.height, 256), min(dataset.width, 256)
    out = []
    for i in range(1, dataset.count + 1):
        data = dataset.read(i, out_shape=(h, w), masked=True).astype(np.float64)
        out.append(data.compressed())
    return out


def _looks_linear(values: np.ndarray) -> bool:
    """dB backscatter is mostly negative; linear power is positive and mostly < 1."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool(np.mean(finite < 0) < 0.05)


def _sensor_from_descriptions(descriptions: list[str | None], count: int) -> SensorSpec | None:
    ids = {(d or "").upper().replace("B0", "B") for d in descriptions}
    if {"VV", "VH"} & ids or {"HH", "HV"} & ids:
        return SENSORS["sentinel1_grd"]
    s2_ids = {b.band_id for b in SENSORS["sentinel2_l1c"].bands}
    if len(ids & s2_ids) >= 4:
        return SENSORS["sentinel2_l1c"] if "B10" in ids or count == 13 else SENSORS["sentinel2_l2a"]
    return None


def _name_bands(
    descriptions: list[str | None],
    colorinterp: list[ColorInterp],
    count: int,
    dtype: str,
    spec: SensorSpec | None,
    band_map: BandMap | None,
    label: str,
) -> dict[int, str]:
    """1-based band index -> common name."""
    if band_map:
        return _apply_band_map_to_file(band_map, descriptions, count, spec, label)
    names: dict[int, str] = {}
    for i, description in enumerate(descriptions, start=1):
        name = None
        if description:
            band = spec.band_by_id(description) if spec else None
            name = band.name if band else common_name(description)
        if name is None and spec is not None and len(spec.bands) == count and spec.key != "rgb":
            name = spec.bands[i - 1].name
        if name is None:
            name = {
                ColorInterp.red: "red",
                ColorInterp.green: "green",
                ColorInterp.blue: "blue",
            }.get(colorinterp[i - 1])
        if name is None and count in (3, 4) and dtype == "uint8" and i <= 3:
            name = ("red", "green", "blue")[i - 1]
        if name is None or name in names.values():
            name = f"band_{i}"
        names[i] = name
    return names


def _apply_band_map_to_file(
    band_map: BandMap,
    descriptions: list[str | None],
    count: int,
    spec: SensorSpec | None,
    label: str,
) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, where in band_map.items():
        index = _resolve_index(where, descriptions, spec)
        if index is None or not 1 <= index <= count:
            named = [d for d in descriptions if d]
            known = ", " + ", ".join(named) if named else ""
            raise BandError(
                f"Band mapping {name}={where} does not match a band of {label} "
                f"(it has {count} band(s){known}); "
                "use a 1-based index or a band description."
            )
        names[index] = name
    return names


def _resolve_index(
    where: int | str, descriptions: list[str | None], spec: SensorSpec | None
) -> int | None:
    if isinstance(where, int) or str(where).isdigit():
        return int(where)
    wanted = str(where).upper()
    for i, description in enumerate(descriptions, start=1):
        if description and description.upper() == wanted:
            return i
    if spec is not None:
        for i, band in enumerate(spec.bands, start=1):
            if band.band_id.upper() == wanted.replace("B0", "B"):
                return i
    return None


def _open_folder(folder: Path, band_map: BandMap | None, spec: SensorSpec | None) -> Scene:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    if not files:
        raise InputFileError(
            f"{folder} holds no raster files ({', '.join(RASTER_SUFFIXES)}); "
            "point at a file or a folder of band files."
        )
    spec = spec or identify_sensor(folder.name) or identify_sensor(files[0].stem)
    by_name: dict[str, Path] = {}
    if band_map:
        for name, where in band_map.items():
            match = [
                f
                for f in files
                if f.name == str(where)
                or f.stem == str(where)
                or f.stem.upper().endswith("_" + str(where).upper())
            ]
            if len(match) != 1:
                raise BandError(
                    f"Band mapping {name}={where} matches {len(match)} files in "
                    f"{folder.name}; name one file."
                )
            by_name[name] = match[0]
    else:
        for f in files:
            named = band_from_file_name(f.stem, spec)
            if named is None:
                with _open_dataset(str(f)) as ds:
                    named = common_name(ds.descriptions[0] or "") if ds.count == 1 else None
            if named and named not in by_name:
                by_name[named] = f
    if not by_name:
        raise BandError(
            f"Could not name the band of any file in {folder.name}; name files after their "
            "band (red.tif, B08.tif) or give a mapping like --bands nir=B08.tif."
        )
    meta = _folder_metadata(folder)
    date: str | None = (
        meta.get("acquisition_date") or _date_from(folder.name) or _date_from(files[0].name)
    )
    if date:
        date = date[:10].replace("/", "-")
    bands: dict[str, Band] = {}
    grids: list[tuple[float, Grid]] = []
    dtype = "float32"
    for name, f in by_name.items():
        with _open_dataset(str(f)) as ds:
            if ds.count != 1:
                raise BandError(
                    f"{f.name} has {ds.count} bands; a band folder needs one-band files, "
                    "or map a multiband file directly."
                )
            grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
            grids.append((max(grid.resolution), grid))
            dtype = ds.dtypes[0]
            tags = ds.tags()
            scale, offset, units, notes = _scaling_for(spec, dtype, f.name, date, tags)
            to_db = False
            if name in SAR_NAMES:
                scale, offset, units = 1.0, 0.0, "dB"
                to_db = ds.dtypes[0].startswith("float") and _looks_linear(_sample(ds)[0])
            band_id = tags.get("source_band") or f.stem.rsplit("_", 1)[-1]
            bands[name] = Band(name, str(f), 1, scale, offset, ds.nodata, units, band_id, to_db)
    # The scene grid is the finest band's grid; coarser bands are warped onto it.
    grid = min(grids, key=lambda item: item[0])[1]
    order = [n for n in (*_vocabulary_order(),) if n in bands]
    bands = {n: bands[n] for n in order + [n for n in bands if n not in order]}
    _, _, _, notes = _scaling_for(spec, dtype, folder.name, date, {})
    if len({g.shape for _, g in grids}) > 1:
        notes.append(
            "Bands at different resolutions were resampled (bilinear) onto the finest grid."
        )
    return Scene(str(folder), bands, grid, spec, date, notes)


def _vocabulary_order() -> tuple[str, ...]:
    from tools.sensors import COMMON_NAMES

    return COMMON_NAMES


def _folder_metadata(folder: Path) -> dict[str, str]:
    for meta in folder.glob("*metadata*.json"):
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return {k: str(v) for k, v in data.items() if isinstance(v, str | int | float)}
    return {}


def check_same_grid(pre: Scene, post: Scene, align: bool = False) -> Scene:
    """Return `pre` on `post`'s grid: as is when they match, warped when `align`."""
    if pre.grid.same_as(post.grid):
        return pre
    if align and pre.grid.crs is not None and post.grid.crs is not None:
        return pre.regridded(post.grid)
    raise GridMismatchError(
        f"pre and post are on different grids (pre {pre.grid.describe()}; post "
        f"{post.grid.describe()}); pass --align to resample pre onto post, "
        "or co-register them first."
    )
