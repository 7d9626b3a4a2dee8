"""Client devices and the simulated clock every algorithm reports time on (ASYNC.md §1)."""

from flip.devices.clock import Clock, CycleWork
from flip.devices.profiles import MB, PRESETS, DeviceProfile, Devices, build_devices

__all__ = ["MB", "PRESETS", "Clock", "CycleWork", "DeviceProfile", "Devices", "build_devices"]
