"""Hardware: chips as validated data files (peaks per dtype and unit, memory levels, links, power, price)."""

from xpusim.hardware.chip import Chip, ChipError, all_chips, catalog_names, load_chip

__all__ = ["Chip", "ChipError", "all_chips", "catalog_names", "load_chip"]
