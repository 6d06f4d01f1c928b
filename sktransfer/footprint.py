"""Energy, average power and CO2 of a block of code: the lecture's footprint columns.

The lectures weigh fine-tuning against feature extraction by accuracy *and* footprint
(average power P_AVG, emissions E_CO2, time T). :func:`footprint` measures a ``with`` block;
:class:`FootprintCallback` measures each epoch of a skorch-trained estimator
(:class:`sktransfer.FineTuneClassifier` and the other training estimators).

The energy comes from codecarbon's offline tracker (an optional dependency:
``pip install 'sktransfer[footprint]'``), which needs no network. How each part was obtained
is kept next to the number (:attr:`FootprintRecord.sources`): *measured* where the hardware
exposes an energy counter (RAPL for Intel/AMD CPUs on Linux, NVML for NVIDIA GPUs),
otherwise an *estimate* (CPU: its load times a TDP from codecarbon's table of CPU models,
or 4 W per thread for a model it does not know; RAM: a power model of the memory size).
Without codecarbon the energy, power and CO2 are None and print as "not measured", never 0.

CO2 is energy times the carbon intensity of the grid: a country's (ISO 3166 alpha-3 code,
from codecarbon's table of national energy mixes), a value the user sets (g CO2e/kWh), or
by default the world average of that table. The grid never changes the energy, and a record
can be re-expressed for another grid (:meth:`FootprintRecord.in_grid`).

Everything that touches codecarbon's internals is in the ``_codecarbon_*`` functions below,
so one place changes when it does. codecarbon writes no file here (no ``emissions.csv``
unless ``codecarbon_params`` asks for one) and its log lines are held back while it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from numbers import Real

from skorch.callbacks import Callback

__all__ = ["FootprintCallback", "FootprintRecord", "footprint"]

NOT_MEASURED = "not measured"
INSTALL_HINT = "codecarbon is not installed; pip install 'sktransfer[footprint]' to measure"
_TRACKING_MODES = ("process", "machine")


@dataclasses.dataclass
class FootprintRecord:
    """What a measured block cost. Filled when the ``with`` block of :func:`footprint` ends.

    Attributes
    ----------
    seconds : float
        Wall time of the block (always measured).
    energy_kwh : float or None
        Energy drawn during the block (CPU, RAM and GPU as codecarbon sees them); None when
        it was not measured (see ``note``).
    carbon_intensity : float or None
        Grid carbon intensity in g CO2e/kWh used for ``co2_kg``.
    grid : str
        Where ``carbon_intensity`` comes from ("France (FRA), codecarbon's energy mix", ...).
    sources : dict
        Per hardware part, how its energy was obtained: "measured: ..." (RAPL, NVML
        counters) or "estimate: ..." (CPU load times TDP, RAM power model).
    note : str
        Why the energy was not measured, or the tracker's name and version.
    """

    seconds: float = math.nan
    energy_kwh: float | None = None
    carbon_intensity: float | None = None
    grid: str = ""
    sources: dict = dataclasses.field(default_factory=dict)
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.energy_kwh is not None

    @property
    def power_w(self) -> float | None:
        """Average power over the block, energy / seconds (W)."""
        if self.energy_kwh is None or not self.seconds > 0:
            return None
        return self.energy_kwh * 3.6e6 / self.seconds

    @property
    def co2_kg(self) -> float | None:
        """Emissions in kg CO2e: energy times the grid's carbon intensity."""
        if self.energy_kwh is None or self.carbon_intensity is None:
            return None
        return self.energy_kwh * self.carbon_intensity / 1000.0

    @property
    def how(self) -> str:
        """ "measured", "estimate" or "partly measured" (the parts differ), or "not measured"."""
        if not self.measured:
            return NOT_MEASURED
        kinds = {text.split(":")[0] for text in self.sources.values()}
        return kinds.pop() if len(kinds) == 1 else "partly measured"

    def in_grid(self, *, country=None, carbon_intensity=None) -> FootprintRecord:
        """The same measurement (same energy, power and time) on another grid."""
        intensity, grid = resolve_grid(country, carbon_intensity)
        return dataclasses.replace(self, carbon_intensity=intensity, grid=grid)

    def __add__(self, other: FootprintRecord) -> FootprintRecord:
        """Two blocks run one after the other (for example the fits of a grid search)."""
        if not isinstance(other, FootprintRecord):
            return NotImplemented
        if self.carbon_intensity != other.carbon_intensity:
            raise ValueError(
                f"Cannot add footprints measured for different grids ({self.grid!r} and "
                f"{other.grid!r}). Re-express one with .in_grid(...) first."
            )
        energy = None
        if self.measured and other.measured:
            energy = self.energy_kwh + other.energy_kwh
        sources = {**other.sources, **self.sources}
        for part in set(self.sources) & set(other.sources):
            if self.sources[part] != other.sources[part]:
                sources[part] = f"{self.sources[part]}; {other.sources[part]}"
        notes = dict.fromkeys(n for n in (self.note, other.note) if n)
        return FootprintRecord(
            seconds=self.seconds + other.seconds,
            energy_kwh=energy,
            carbon_intensity=self.carbon_intensity,
            grid=self.grid or other.grid,
            sources=sources,
            note="; ".join(notes),
        )

    def cells(self) -> dict:
        """P_AVG (W), energy (kWh), E_CO2 (kg) and T (s) as display strings (the units go
        in the column titles), each saying how it was obtained: "(meas.)" or "(est.)"."""
        tag = {"measured": " (meas.)", "estimate": " (est.)"}.get(self.how, " (part. meas.)")
        if not self.measured:
            energy = power = co2 = NOT_MEASURED
        else:
            power = f"{self.power_w:.1f}{tag}"
            energy = f"{self.energy_kwh:.3g}{tag}"
            co2 = f"{self.co2_kg:.3g}{tag}"
        return {"P_AVG": power, "energy": energy, "E_CO2": co2, "T": f"{self.seconds:.1f}"}

    def to_dict(self) -> dict:
        """Every field and the derived figures, for JSON (None where not measured)."""
        return {
            **dataclasses.asdict(self),
            "power_w": self.power_w,
            "co2_kg": self.co2_kg,
            "how": self.how,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FootprintRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@contextlib.contextmanager
def footprint(
    *, country=None, carbon_intensity=None, tracking_mode="process", codecarbon_params=None
):
    """Measure the time, energy, average power and CO2 of a ``with`` block.

    Parameters
    ----------
    country : str or None, default=None
        ISO 3166 alpha-3 code of the country whose grid powers the machine ("FRA", "USA"),
        for its carbon intensity from codecarbon's table of energy mixes.
    carbon_intensity : float or None, default=None
        The grid's carbon intensity in g CO2e/kWh, when you know it. Neither set: the world
        average of codecarbon's table. Setting both raises.
    tracking_mode : {"process", "machine"}, default="process"
        "process" counts this process and its children (other jobs on a shared machine are
        left out); "machine" counts the whole machine.
    codecarbon_params : dict or None, default=None
        More keyword arguments for ``codecarbon.OfflineEmissionsTracker``, for example
        ``{"force_cpu_power": 95}`` (the CPU's TDP in W, when codecarbon's table lacks the
        model) or ``{"output_methods": [codecarbon.OutputMethod.CSV], "output_dir": "runs"}``
        to keep its CSV file.

    Yields
    ------
    record : FootprintRecord
        Filled when the block ends (also when it raises). Without codecarbon its energy,
        power and CO2 are None ("not measured") and its ``note`` says why.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sktransfer.footprint import footprint
    >>> X = np.random.default_rng(0).normal(size=(100, 5))
    >>> with footprint(country="FRA") as fp:
    ...     model = LogisticRegression().fit(X, X[:, 0] > 0)
    >>> fp.seconds > 0
    True
    >>> fp.grid
    "France (FRA), codecarbon's energy mix"
    >>> fp.measured == (fp.power_w is not None) == (fp.co2_kg is not None)
    True
    """
    intensity, grid = resolve_grid(country, carbon_intensity)
    if tracking_mode not in _TRACKING_MODES:
        raise ValueError(
            f"tracking_mode must be one of {_TRACKING_MODES}. Got {tracking_mode!r} instead."
        )
    if codecarbon_params is not None and not isinstance(codecarbon_params, dict):
        raise TypeError(
            "codecarbon_params must be a dict of OfflineEmissionsTracker keyword arguments "
            f"or None. Got {type(codecarbon_params).__name__} instead."
        )
    record = FootprintRecord(carbon_intensity=intensity, grid=grid)
    with contextlib.ExitStack() as quiet:
        tracker = _codecarbon_start(tracking_mode, intensity, codecarbon_params or {}, quiet)
        if tracker is None:
            record.note = INSTALL_HINT
        start = time.perf_counter()
        try:
            yield record
        finally:
            record.seconds = time.perf_counter() - start
            _fill_from_tracker(record, tracker, tracking_mode)


def _fill_from_tracker(record: FootprintRecord, tracker, tracking_mode: str) -> None:
    if tracker is not None:
        record.energy_kwh = _codecarbon_stop(tracker)
        record.note = _codecarbon_version()
        if record.energy_kwh is None:
            record.note += f": {NOT_MEASURED}, the tracker failed"
        else:
            record.sources = _codecarbon_sources(tracker, tracking_mode)


class FootprintCallback(Callback):
    """A skorch callback measuring each training epoch with :func:`footprint`.

    Each epoch's ``energy_kwh``, ``power_w`` and ``co2_kg`` go into the net's history (only
    when measured: without codecarbon the history has no such keys); ``footprint_`` is the
    sum over the epochs of the last training. The estimators copy their callbacks at ``fit``,
    so read the copy through the net.

    Parameters
    ----------
    country, carbon_intensity, tracking_mode, codecarbon_params
        As for :func:`footprint`.

    Attributes
    ----------
    footprint_ : FootprintRecord
        The epochs of the last training together.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> from sktransfer import FineTuneClassifier
    >>> from sktransfer.footprint import FootprintCallback
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(4, 10))
    >>> X = np.random.default_rng(0).random((8, 12, 12, 3), dtype=np.float32)
    >>> clf = FineTuneClassifier(net, weights=None, max_epochs=2, random_state=0,
    ...     callbacks=[("footprint", FootprintCallback(carbon_intensity=56.0))])
    >>> clf = clf.fit(X, [0, 1] * 4)
    >>> record = dict(clf.net_.callbacks_)["footprint"].footprint_
    >>> record.grid, record.seconds > 0
    ('set by the user: 56 g CO2e/kWh', True)
    """

    def __init__(
        self,
        *,
        country=None,
        carbon_intensity=None,
        tracking_mode="process",
        codecarbon_params=None,
    ):
        self.country = country
        self.carbon_intensity = carbon_intensity
        self.tracking_mode = tracking_mode
        self.codecarbon_params = codecarbon_params

    def on_train_begin(self, net, **kwargs):
        self._close_epoch()  # a previous training that raised mid-epoch
        intensity, grid = resolve_grid(self.country, self.carbon_intensity)
        # the sum starts from zero epochs: 0 s and 0 kWh, "not measured" once an epoch is
        self.footprint_ = FootprintRecord(
            seconds=0.0, energy_kwh=0.0, carbon_intensity=intensity, grid=grid
        )

    def on_epoch_begin(self, net, **kwargs):
        self._epoch = footprint(
            country=self.country,
            carbon_intensity=self.carbon_intensity,
            tracking_mode=self.tracking_mode,
            codecarbon_params=self.codecarbon_params,
        )
        self._epoch_record = self._epoch.__enter__()

    def on_epoch_end(self, net, **kwargs):
        self._record_epoch(net)

    def on_train_end(self, net, **kwargs):
        # early stopping ends training from the on_epoch_end of a callback run before this one
        self._record_epoch(net)

    def _record_epoch(self, net) -> None:
        record = self._close_epoch()
        if record is None:
            return
        self.footprint_ = self.footprint_ + record
        if record.measured:
            net.history.record("energy_kwh", record.energy_kwh)
            net.history.record("power_w", record.power_w)
            net.history.record("co2_kg", record.co2_kg)

    def _close_epoch(self) -> FootprintRecord | None:
        epoch = self.__dict__.pop("_epoch", None)
        if epoch is None:
            return None
        epoch.__exit__(None, None, None)
        return self.__dict__.pop("_epoch_record")

    def __getstate__(self):
        state = self.__dict__.copy()  # a running tracker holds threads: never pickled
        state.pop("_epoch", None)
        state.pop("_epoch_record", None)
        return state


# ------------------------------------------------------------------------------ grid


def resolve_grid(country=None, carbon_intensity=None) -> tuple[float | None, str]:
    """The carbon intensity (g CO2e/kWh) and its description for a grid setting.

    Without codecarbon a country or the world average cannot be looked up: the intensity
    is None (CO2 not measured) unless set by the user.
    """
    if country is not None and carbon_intensity is not None:
        raise ValueError(
            f"Set either country or carbon_intensity, not both. Got country={country!r} and "
            f"carbon_intensity={carbon_intensity!r}."
        )
    if carbon_intensity is not None:
        if (
            isinstance(carbon_intensity, bool)
            or not isinstance(carbon_intensity, Real)
            or not carbon_intensity >= 0
            or math.isinf(carbon_intensity)
        ):
            raise ValueError(
                "carbon_intensity must be a finite number of g CO2e/kWh, 0 or more. Got "
                f"{carbon_intensity!r} instead."
            )
        return float(carbon_intensity), f"set by the user: {carbon_intensity:g} g CO2e/kWh"
    if country is not None and not (isinstance(country, str) and len(country) == 3):
        raise ValueError(
            "country must be an ISO 3166 alpha-3 code such as 'FRA' or 'USA'. Got "
            f"{country!r} instead."
        )
    if not _codecarbon_installed():
        where = f"country {country}" if country else "the world average"
        return None, f"{where}: {NOT_MEASURED} ({INSTALL_HINT})"
    return _codecarbon_intensity(country.upper() if country else None)


# ------------------------------------------------------------- codecarbon, in one place


def _codecarbon_installed() -> bool:
    try:
        import codecarbon  # noqa: F401
    except ImportError:
        return False
    return True


def _codecarbon_version() -> str:
    import codecarbon

    return f"codecarbon {codecarbon.__version__} (offline tracker)"


@contextlib.contextmanager
def _quiet_codecarbon():
    """codecarbon logs at INFO and WARNING while it starts, measures (every few seconds, from
    a thread) and stops, and sets its own level only after some of them: hold its logger at
    ERROR meanwhile, then restore it."""
    logger = logging.getLogger("codecarbon")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _codecarbon_intensity(country: str | None) -> tuple[float, str]:
    from codecarbon.core.emissions import Emissions
    from codecarbon.input import DataSource

    source = DataSource()
    if country is None:
        world = source.get_carbon_intensity_per_source_data()["world_average"]
        return float(world), "world average of codecarbon's table"
    mixes = source.get_global_energy_mix_data()
    if country not in mixes:
        import difflib

        close = difflib.get_close_matches(country, mixes, n=3)
        raise ValueError(
            f"country {country!r} is not in codecarbon's table of energy mixes"
            + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ".")
            + " Use an ISO 3166 alpha-3 code, or set carbon_intensity (g CO2e/kWh)."
        )
    with _quiet_codecarbon():
        rate = Emissions._global_energy_mix_to_emissions_rate(mixes[country])
    name = mixes[country].get("country_name", country)
    return rate.kgs_per_kWh * 1000.0, f"{name} ({country}), codecarbon's energy mix"


def _codecarbon_start(tracking_mode: str, intensity, params: dict, quiet):
    """A started OfflineEmissionsTracker writing no file, or None without codecarbon. Its
    logger stays at ERROR until ``quiet`` (an ExitStack) closes, after the tracker stops."""
    if not _codecarbon_installed():
        return None
    from codecarbon import OfflineEmissionsTracker

    settings = {
        "output_methods": [],  # no emissions.csv in the working folder unless asked
        "log_level": "error",
        "tracking_mode": tracking_mode,
        "measure_power_secs": 5,
        # CO2 is computed here from the energy; a set intensity keeps the tracker from
        # looking up a location
        "force_carbon_intensity_g_co2e_kwh": intensity if intensity is not None else 0.0,
        **params,
    }
    quiet.enter_context(_quiet_codecarbon())
    tracker = OfflineEmissionsTracker(**settings)
    tracker.start()
    return tracker


def _codecarbon_stop(tracker) -> float | None:
    """The energy (kWh) codecarbon integrated from its start to its stop."""
    with _quiet_codecarbon():
        tracker.stop()
    data = tracker.final_emissions_data
    # codecarbon's stop() catches its own errors: no data means nothing was measured
    return None if data is None else float(data.energy_consumed)


def _codecarbon_sources(tracker, tracking_mode: str) -> dict:
    """How codecarbon obtained each part's energy (its hardware objects are private)."""
    sources = {}
    scope = "this process" if tracking_mode == "process" else "the whole machine"
    for hardware in getattr(tracker, "_hardware", []):
        kind = type(hardware).__name__
        if kind == "CPU":
            sources["cpu"] = _cpu_source(
                hardware, scope, getattr(tracker, "_force_cpu_power", None)
            )
        elif kind == "GPU":
            sources["gpu"] = "measured: NVML energy counter"
        elif kind == "RAM":
            forced = getattr(hardware, "_force_ram_power", None)
            sources["ram"] = (
                f"estimate: {forced:g} W set by the user"
                if forced is not None
                else f"estimate: codecarbon's RAM power model, memory of {scope}"
            )
        else:
            sources[kind.lower()] = f"{kind} via codecarbon"
    return sources


def _cpu_source(cpu, scope: str, forced_power) -> str:
    mode = getattr(cpu, "_mode", "")
    if mode == "intel_rapl":
        return "measured: RAPL energy counter (whole package)"
    if mode in ("intel_power_gadget", "windows_emi"):
        return f"measured: {mode.replace('_', ' ')} counter"
    tdp = getattr(cpu, "_tdp", None)
    model = getattr(cpu, "_model", None) or "unknown CPU"
    if forced_power is not None:
        origin = "set by the user"
    else:
        origin = _tdp_origin(model)
    if mode == "cpu_load":
        return f"estimate: CPU load of {scope} x TDP {tdp} W ({model}: {origin})"
    return f"estimate: a constant share of TDP {tdp} W ({model}: {origin})"


@functools.lru_cache(maxsize=8)
def _tdp_origin(model: str) -> str:
    """Whether codecarbon's table knows the CPU model (else it takes 4 W per thread)."""
    try:
        from codecarbon.core.cpu import TDP

        with _quiet_codecarbon():
            known = TDP.__new__(TDP)._get_cpu_power_from_registry(model)  # no detection
    except Exception:  # a private API: a change must not break the measurement
        return "TDP from codecarbon"
    if known:
        return "TDP from codecarbon's table of CPU models"
    return "not in codecarbon's table, which then takes 4 W per thread"
