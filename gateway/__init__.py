"""mw-gateway: shop-floor edge gateway that turns machine signals into maintenance work."""

__version__ = "0.1.0"
