"""mpmarket: a producer-consumer marketplace of real processes.

The layers, each importing only those above it: ``products``, ``marketplace``,
``workload``, ``agents``, ``server``, ``runner``, ``report``, ``cli``.
"""

from mpmarket.core.market import Marketplace
from mpmarket.errors import MarketError, MpmarketError
from mpmarket.products import Coffee, Product, Tea

__all__ = ["Coffee", "MarketError", "Marketplace", "MpmarketError", "Product", "Tea", "__version__"]

__version__ = "0.1.0"
