"""The seeded, vectorised fleet simulator: contract-shaped metrics with ground-truth states.

`fleet` says which servers exist and who depends on whom, `episodes` when each is in trouble, `signals`
what its metrics read (FleetSimulator composes the three), `sink` writes a dataset to disk.
"""

from tftmon.data.simulate.fleet import ServerSpec, build_fleet, load_fleet_file
from tftmon.data.simulate.signals import FleetSimulator, simulate
from tftmon.data.simulate.sink import write_dataset

__all__ = ["FleetSimulator", "ServerSpec", "build_fleet", "load_fleet_file", "simulate", "write_dataset"]
